#!/usr/bin/env bash
# `make run`: migrate, load the demo catalogue, and start the whole system in the foreground:
# web, three Celery workers (routine factory work and sweeps, shortages, notifications), beat, Flower,
# the legacy factory simulator and local stand-ins for Slack and FCM. Ctrl-C stops all of it.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=.venv/bin/python
mkdir -p var
PROCFILE=var/Procfile
: > "$PROCFILE"

export DJANGO_DEBUG="${DJANGO_DEBUG:-1}"
# A throwaway signing key, made once and kept in var/ (git-ignored) so sessions survive a restart.
[ -s var/secret-key ] || head -c 48 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' > var/secret-key
export DJANGO_SECRET_KEY="${DJANGO_SECRET_KEY:-$(cat var/secret-key)}"
export PORT="${PORT:-8000}" FLOWER_PORT="${FLOWER_PORT:-5555}"
export PUBLIC_BASE_URL="${PUBLIC_BASE_URL:-http://127.0.0.1:$PORT}"
export FLOWER_URL="${FLOWER_URL:-http://127.0.0.1:$FLOWER_PORT}"  # linked from alerts
# /metrics is off unless someone may read it: on this machine, this machine may.
export METRICS_ALLOWED_IPS="${METRICS_ALLOWED_IPS:-127.0.0.1}"

# A port taken (most often by a make run still running, here or in another checkout) would end in a
# traceback halfway through the start, after the migrations and the demo data: say so before anything.
PORTS="$PORT $FLOWER_PORT"
[ -n "${FACTORY_API_URL:-}" ] || PORTS="$PORTS 8081"
[ -n "${SLACK_WEBHOOK_URL:-}" ] || [ -n "${FCM_PROJECT_ID:-}" ] || PORTS="$PORTS 8091 8092"
for port in $PORTS; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "run: port $port is taken (is make run already running, here or in another checkout?); stop it first" >&2
        exit 1
    fi
done

# Redis: make run's own redis-server (port RUN_REDIS_PORT, data in var/redis, so `make clean` clears
# queues, dead-letter copies, kombu bindings and login lockouts), not the databases of a Redis that other
# projects and test runs share. Set CELERY_BROKER_URL and REDIS_URL to use another one.
REDIS_PID=
# Stop our redis-server when make run stops (Ctrl-C or an error).
trap '[ -z "$REDIS_PID" ] || kill "$REDIS_PID" 2>/dev/null || true' EXIT
if [ -z "${CELERY_BROKER_URL:-}" ]; then
    RUN_REDIS_PORT="${RUN_REDIS_PORT:-6380}"
    export CELERY_BROKER_URL="redis://127.0.0.1:$RUN_REDIS_PORT/0"
    export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:$RUN_REDIS_PORT/1}"
    redis_up() { $PY -c 'import os, redis; redis.Redis.from_url(os.environ["CELERY_BROKER_URL"], socket_connect_timeout=1).ping()' 2>/dev/null; }
    if redis_up; then
        # Ours from an earlier make run (its data in this checkout's var/redis): use it. Another checkout's
        # or another program's: refuse, or this run's workers would join its queues.
        REDIS_DIR=$($PY -c 'import os, redis; print(redis.Redis.from_url(os.environ["CELERY_BROKER_URL"]).config_get("dir")["dir"])' 2>/dev/null || true)
        if [ "$REDIS_DIR" != "$(pwd -P)/var/redis" ]; then
            echo "run: port $RUN_REDIS_PORT has a Redis that is not this checkout's (its data: ${REDIS_DIR:-unknown}); stop it, or set RUN_REDIS_PORT to a free port" >&2
            exit 1
        fi
        echo "run: this checkout's Redis already answers on port $RUN_REDIS_PORT; using it"
    else
        command -v redis-server >/dev/null || { echo "run: no redis-server; install it or set CELERY_BROKER_URL and REDIS_URL" >&2; exit 1; }
        mkdir -p var/redis
        redis-server --port "$RUN_REDIS_PORT" --bind 127.0.0.1 --dir var/redis --save '' --appendonly yes \
            --loglevel warning > var/redis/redis.log 2>&1 &
        REDIS_PID=$!
        for _ in $(seq 50); do redis_up && break; sleep 0.1; done
        redis_up || { echo "run: redis-server did not start; see var/redis/redis.log" >&2; exit 1; }
    fi
fi
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/1}"

# The factory: the local simulator unless FACTORY_API_URL points elsewhere.
if [ -z "${FACTORY_API_URL:-}" ]; then
    export FACTORY_API_URL=http://127.0.0.1:8081
    # Its orders are kept in var/ (make clean deletes them), so after a restart the order ids the app's rows
    # hold name the same orders, as at the real factory, and production under way finishes with its callback.
    SIMULATOR_STATE=var/factory-simulator.json
    echo "factory: $PY manage.py run_legacy_factory --port 8081 --production-seconds 3 --state-file $SIMULATOR_STATE" >> "$PROCFILE"
fi

# Alerts: local stand-ins for Slack and FCM unless real ones are configured.
if [ -z "${SLACK_WEBHOOK_URL:-}" ] && [ -z "${FCM_PROJECT_ID:-}" ]; then
    export SLACK_WEBHOOK_URL=http://127.0.0.1:8091/services/dev
    export FCM_ENDPOINT=http://127.0.0.1:8092 FCM_PROJECT_ID=donut-dev FCM_ACCESS_TOKEN=dev-fcm-token
    echo "alerts: $PY -m testsupport.fake_slack_fcm --slack-port 8091 --fcm-port 8092 --fcm-token dev-fcm-token" >> "$PROCFILE"
fi

# Flower sits behind basic auth even here; the password is made once and kept in var/.
[ -s var/flower-auth ] || echo "ops:$(head -c 12 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')" > var/flower-auth
export FLOWER_BASIC_AUTH="${FLOWER_BASIC_AUTH:-$(cat var/flower-auth)}"

# The settings above go to .env, which settings.py reads when present: `manage.py` then works from a
# second terminal exactly as in the README. A .env not written here (say, production values for compose)
# is left alone.
ENV_MARK="# Written by make run (scripts/run.sh) at every start; make clean deletes it."
if [ ! -e .env ] || [ "$(head -n 1 .env)" = "$ENV_MARK" ]; then
    {
        echo "$ENV_MARK"
        for name in DJANGO_DEBUG DJANGO_SECRET_KEY DATABASE_URL CELERY_BROKER_URL REDIS_URL PUBLIC_BASE_URL \
            METRICS_ALLOWED_IPS FACTORY_API_URL FACTORY_API_KEY FACTORY_CALLBACK_SECRET SLACK_WEBHOOK_URL \
            FCM_ENDPOINT FCM_PROJECT_ID FCM_ACCESS_TOKEN FLOWER_BASIC_AUTH FLOWER_URL; do
            [ -z "${!name:-}" ] || printf '%s=%s\n' "$name" "${!name}"
        done
    } > .env
else
    echo "run: .env was not written by make run; leaving it alone (manage.py in another terminal reads it)" >&2
fi

$PY manage.py database_create  # a DATABASE_URL naming a database the server does not have yet
$PY manage.py migrate --no-input -v 0
# A new database (db.sqlite3 deleted, another DATABASE_URL) numbers its restocks from 1 again: the simulator's
# orders from the last one are set aside, or it would answer restock-1 with the old order.
[ -z "${SIMULATOR_STATE:-}" ] || $PY manage.py simulator_state_for_database "$SIMULATOR_STATE"
$PY manage.py seed_demo
# The demo key is kept in var/ (git-ignored) and made again if this database does not know it.
if ! [ -s var/demo-api-key ] || ! $PY manage.py shell -v 0 -c "
import sys; from clients.auth import api_client_for_key
sys.exit(0 if api_client_for_key(open('var/demo-api-key').read().strip()) else 1)" 2>/dev/null; then
    $PY manage.py create_api_key "demo-$(date +%s)" | tail -n 1 > var/demo-api-key
fi
KEY=$(cat var/demo-api-key)
# An admin login, like the demo key: the password is made once and kept in var/. It is set again at a start
# only if it differs: setting it makes a new hash, which would end every admin session at each start.
[ -s var/admin-password ] || head -c 12 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' > var/admin-password
ADMIN_PASSWORD=$(cat var/admin-password) $PY manage.py shell -v 0 -c "
import os; from django.contrib.auth import get_user_model
user, _ = get_user_model().objects.get_or_create(username='admin')
user.is_staff = user.is_superuser = user.is_active = True
if not user.check_password(os.environ['ADMIN_PASSWORD']):
    user.set_password(os.environ['ADMIN_PASSWORD'])
user.save()"

# The web server is production's gunicorn (gunicorn.conf.py, sync workers), four of them unless GUNICORN_WORKERS
# says otherwise (production's two per CPU would be 32 on a 16-core laptop), with its access log on, so that
# `make run` takes a rush as production does: runserver's listen backlog of 10 reset connections and kept
# buyers waiting seconds under 50 of them.
cat >> "$PROCFILE" <<PROCS
web: env GUNICORN_BIND=127.0.0.1:$PORT GUNICORN_WORKERS=${GUNICORN_WORKERS:-4} GUNICORN_ACCESS_LOG=- $PY -m gunicorn -c gunicorn.conf.py
worker: .venv/bin/celery -A donutsite worker -l info -P threads -c 16 -Q default,factory,maintenance -n factory@%h --without-gossip --without-mingle
urgent-worker: .venv/bin/celery -A donutsite worker -l info -P threads -c 16 -Q factory_urgent -n urgent@%h --without-gossip --without-mingle
notifications-worker: .venv/bin/celery -A donutsite worker -l info --concurrency 2 -Q notifications -n notifications@%h --without-gossip --without-mingle
beat: .venv/bin/celery -A donutsite beat -l info --schedule var/celerybeat-schedule
flower: $PY -m donutsite.flower --port=$FLOWER_PORT --address=127.0.0.1
PROCS

cat <<INFO

  donut-states is starting (Ctrl-C stops everything):
    API        http://127.0.0.1:$PORT/api/v1/products/
    API docs   http://127.0.0.1:$PORT/api/docs/
    Admin      http://127.0.0.1:$PORT/admin/   (login admin / $(cat var/admin-password))
    Dashboard  http://127.0.0.1:$PORT/admin/dashboard/
    Metrics    http://127.0.0.1:$PORT/metrics   (from this machine only)
    Flower     http://127.0.0.1:$FLOWER_PORT/   (login ${FLOWER_BASIC_AUTH%%:*} / ${FLOWER_BASIC_AUTH#*:})
    Factory    $FACTORY_API_URL   (simulator; its orders: $FACTORY_API_URL/_sim/orders)
    Redis      $CELERY_BROKER_URL (broker), $REDIS_URL (cache)

  manage.py in another terminal reads these settings from .env, e.g.
    .venv/bin/python manage.py redrive --all

  Buy a donut:
    curl -s -X POST http://127.0.0.1:$PORT/api/v1/sales/ \\
      -H 'Authorization: Api-Key $KEY' -H 'Content-Type: application/json' \\
      -d '{"items": [{"sku": "GLAZED", "quantity": 2}]}'

INFO
.venv/bin/honcho start -d . -f "$PROCFILE"

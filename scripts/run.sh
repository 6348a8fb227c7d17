#!/usr/bin/env bash
# `make run`: migrate, load the demo catalogue, and start the whole system in the foreground:
# web, two Celery workers (factory/maintenance and notifications), beat, Flower, the legacy factory
# simulator and local stand-ins for Slack and FCM. Ctrl-C stops all of it.
set -euo pipefail
cd "$(dirname "$0")/.."

export DJANGO_DEBUG="${DJANGO_DEBUG:-1}"
export DJANGO_SECRET_KEY="${DJANGO_SECRET_KEY:-dev-only-insecure-$(hostname)}"
export CELERY_BROKER_URL="${CELERY_BROKER_URL:-redis://127.0.0.1:6379/0}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/1}"
export PORT="${PORT:-8000}" FLOWER_PORT="${FLOWER_PORT:-5555}"
export PUBLIC_BASE_URL="${PUBLIC_BASE_URL:-http://127.0.0.1:$PORT}"
# /metrics is off unless someone may read it: on this machine, this machine may.
export METRICS_ALLOWED_IPS="${METRICS_ALLOWED_IPS:-127.0.0.1}"
PY=.venv/bin/python
mkdir -p var
PROCFILE=var/Procfile
: > "$PROCFILE"

# Redis is the broker: use the one configured, or start a private one if nothing answers there.
if ! $PY -c 'import os, redis; redis.Redis.from_url(os.environ["CELERY_BROKER_URL"], socket_connect_timeout=1).ping()' 2>/dev/null; then
    command -v redis-server >/dev/null || { echo "run: nothing answers at $CELERY_BROKER_URL and there is no redis-server" >&2; exit 1; }
    port=$($PY -c 'import os, urllib.parse; print(urllib.parse.urlparse(os.environ["CELERY_BROKER_URL"]).port or 6379)')
    echo "run: nothing answers at $CELERY_BROKER_URL; starting a private redis-server on port $port"
    echo "redis: redis-server --port $port --bind 127.0.0.1 --save '' --appendonly no --dir var" >> "$PROCFILE"
fi

# The factory: the local simulator unless FACTORY_API_URL points elsewhere.
if [ -z "${FACTORY_API_URL:-}" ]; then
    export FACTORY_API_URL=http://127.0.0.1:8081
    echo "factory: $PY manage.py run_legacy_factory --port 8081 --production-seconds 3" >> "$PROCFILE"
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

$PY manage.py migrate --no-input -v 0
$PY manage.py seed_demo
# The demo key is kept in var/ (git-ignored) and made again if this database does not know it.
if ! [ -s var/demo-api-key ] || ! $PY manage.py shell -c "
import sys; from clients.auth import api_client_for_key
sys.exit(0 if api_client_for_key(open('var/demo-api-key').read().strip()) else 1)" 2>/dev/null; then
    $PY manage.py create_api_key "demo-$(date +%s)" | tail -n 1 > var/demo-api-key
fi
KEY=$(cat var/demo-api-key)

cat >> "$PROCFILE" <<PROCS
web: $PY manage.py runserver 127.0.0.1:$PORT --noreload
worker: .venv/bin/celery -A donutsite worker -l info --concurrency 2 -Q default,factory,maintenance -n worker@%h
alerts-worker: .venv/bin/celery -A donutsite worker -l info --concurrency 2 -Q notifications -n alerts@%h
beat: .venv/bin/celery -A donutsite beat -l info --schedule var/celerybeat-schedule
flower: $PY -m donutsite.flower --port=$FLOWER_PORT --address=127.0.0.1
PROCS

cat <<INFO

  donut-states is starting (Ctrl-C stops everything):
    API        http://127.0.0.1:$PORT/api/v1/products/
    API docs   http://127.0.0.1:$PORT/api/docs/
    Admin      http://127.0.0.1:$PORT/admin/   (make a login: .venv/bin/python manage.py createsuperuser)
    Dashboard  http://127.0.0.1:$PORT/admin/dashboard/
    Metrics    http://127.0.0.1:$PORT/metrics   (from this machine only)
    Flower     http://127.0.0.1:$FLOWER_PORT/   (login ${FLOWER_BASIC_AUTH%%:*} / ${FLOWER_BASIC_AUTH#*:})
    Factory    $FACTORY_API_URL   (simulator; its orders: $FACTORY_API_URL/_sim/orders)

  Buy a donut:
    curl -s -X POST http://127.0.0.1:$PORT/api/v1/sales/ \\
      -H 'Authorization: Api-Key $KEY' -H 'Content-Type: application/json' \\
      -d '{"items": [{"sku": "GLAZED", "quantity": 2}]}'

INFO
exec .venv/bin/honcho start -d . -f "$PROCFILE"

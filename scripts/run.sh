#!/usr/bin/env bash
# `make run`: migrate, load the demo catalogue, and start web, worker, beat and Flower together.
# Ctrl-C stops all of it.
set -euo pipefail
cd "$(dirname "$0")/.."

export DJANGO_DEBUG="${DJANGO_DEBUG:-1}"
export DJANGO_SECRET_KEY="${DJANGO_SECRET_KEY:-dev-only-insecure-$(hostname)}"
export CELERY_BROKER_URL="${CELERY_BROKER_URL:-redis://127.0.0.1:6379/0}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379/1}"
export PORT="${PORT:-8000}" FLOWER_PORT="${FLOWER_PORT:-5555}"
PY=.venv/bin/python
mkdir -p var

# Redis is the broker: use the one configured, or start a private one if nothing answers there.
PROCFILE=var/Procfile
: > "$PROCFILE"
if ! $PY -c 'import os, redis; redis.Redis.from_url(os.environ["CELERY_BROKER_URL"], socket_connect_timeout=1).ping()' 2>/dev/null; then
    command -v redis-server >/dev/null || { echo "run: nothing answers at $CELERY_BROKER_URL and there is no redis-server" >&2; exit 1; }
    port=$($PY -c 'import os, urllib.parse; print(urllib.parse.urlparse(os.environ["CELERY_BROKER_URL"]).port or 6379)')
    echo "run: nothing answers at $CELERY_BROKER_URL; starting a private redis-server on port $port"
    echo "redis: redis-server --port $port --bind 127.0.0.1 --save '' --appendonly no --dir var" >> "$PROCFILE"
fi

$PY manage.py migrate --no-input -v 0
$PY manage.py seed_demo
# The demo key is kept in var/ (git-ignored) and made again if this database does not know it.
if ! [ -s var/demo-api-key ] || ! $PY manage.py shell -c "
import sys; from inventory.auth import api_client_for_key
sys.exit(0 if api_client_for_key(open('var/demo-api-key').read().strip()) else 1)" 2>/dev/null; then
    $PY manage.py create_api_key "demo-$(date +%s)" | tail -n 1 > var/demo-api-key
fi
KEY=$(cat var/demo-api-key)

cat >> "$PROCFILE" <<PROCS
web: $PY manage.py runserver 127.0.0.1:$PORT --noreload
worker: .venv/bin/celery -A donutsite worker -l info --concurrency 2 -X dead_letter -n worker@%h
beat: .venv/bin/celery -A donutsite beat -l info --schedule var/celerybeat-schedule
flower: .venv/bin/celery -A donutsite flower --port=$FLOWER_PORT --address=127.0.0.1
PROCS

cat <<INFO

  donut-states is starting (Ctrl-C stops everything):
    API        http://127.0.0.1:$PORT/api/v1/products/
    API docs   http://127.0.0.1:$PORT/api/docs/
    Admin      http://127.0.0.1:$PORT/admin/   (create a login: .venv/bin/python manage.py createsuperuser)
    Flower     http://127.0.0.1:$FLOWER_PORT/

  Buy a donut:
    curl -s -X POST http://127.0.0.1:$PORT/api/v1/sales/ \\
      -H 'Authorization: Api-Key $KEY' -H 'Content-Type: application/json' \\
      -d '{"items": [{"sku": "GLAZED", "quantity": 2}]}'

INFO
exec .venv/bin/honcho start -d . -f "$PROCFILE"

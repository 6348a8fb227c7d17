#!/usr/bin/env bash
# The whole suite against MariaDB and Redis (never SQLite: row locks do nothing there).
set -euo pipefail
cd "$(dirname "$0")/.."
# Never the .env that make run writes: tests set everything they need here.
export DJANGO_ENV_FILE=
export DJANGO_SECRET_KEY="${DJANGO_SECRET_KEY:-test-only-not-secret}"
export DATABASE_URL="${TEST_DATABASE_URL:-mysql://root@127.0.0.1:3306/donut_states}"
export CELERY_BROKER_URL="${TEST_CELERY_BROKER_URL:-redis://127.0.0.1:6379/14}"
export REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379/15}"
export DJANGO_DEBUG=0 DJANGO_SECURE_SSL_REDIRECT=0
export FACTORY_API_KEY="${FACTORY_API_KEY:-test-factory-key}" FACTORY_CALLBACK_SECRET="${FACTORY_CALLBACK_SECRET:-test-callback-secret}"
# The per-address limits would count every test's requests from 127.0.0.1 together; their own tests set them.
export ANON_THROTTLE_RATE="${ANON_THROTTLE_RATE:-100000/minute}" FAILED_AUTH_THROTTLE_RATE="${FAILED_AUTH_THROTTLE_RATE:-100000/minute}"
# A restock's failed calls in a test come within milliseconds; the retry window's own tests set it.
export FACTORY_RETRY_FOR_SECONDS="${FACTORY_RETRY_FOR_SECONDS:-0}"
mkdir -p test-output
# Branch coverage (pyproject.toml [tool.coverage]), its data private to this run: several people run the
# suite on one machine at once, and the subprocesses' data files are combined from that directory.
COVERAGE_DIR=$(mktemp -d)
trap 'rm -rf "$COVERAGE_DIR"' EXIT
export COVERAGE_FILE="$COVERAGE_DIR/.coverage"
# A second pytest-xdist worker's Redis databases (testsupport/workers.py), for `-n 2` here or below: 2 and 3
# beside the default 14 and 15 (the benchmarks take 11 to 13, make run's own Redis is apart). A run given Redis
# databases of its own (TEST_CELERY_BROKER_URL, TEST_REDIS_URL) names its second worker's too, or that worker
# is refused: on a shared machine, 2 and 3 may be someone else's, and the tests empty their databases.
GW1_BROKER= GW1_REDIS=
if [ -z "${TEST_CELERY_BROKER_URL:-}${TEST_REDIS_URL:-}" ]; then
    GW1_BROKER=redis://127.0.0.1:6379/2 GW1_REDIS=redis://127.0.0.1:6379/3
fi
export CELERY_BROKER_URL_GW1="${TEST_CELERY_BROKER_URL_GW1:-$GW1_BROKER}"
export REDIS_URL_GW1="${TEST_REDIS_URL_GW1:-$GW1_REDIS}"
PYTEST=(.venv/bin/python -m pytest)  # `-m`: the repository on sys.path for `-p testsupport.workers`
REPORTS=(--cov-report=term-missing:skip-covered --cov-report=xml:test-output/coverage.xml)
if [ $# -gt 0 ]; then  # a partial run, as asked: it only reports its coverage figure
    "${PYTEST[@]}" --cov "${REPORTS[@]}" "$@"
    exit
fi
# The whole suite, as CI runs it. Two pytest processes (pytest-xdist, a test file at a time on each) share
# the machine's two cores; each has a test database (pytest-django's _gw0 and _gw1) and Redis databases of
# its own (testsupport/workers.py). The chaos scenarios come after, alone: they start a shop of processes
# each and measure how it answers; so do the tests marked serial (pytest-xdist would pass a schemathesis
# test with a failing operation). Coverage adds both up and must keep 90%.
status=0
"${PYTEST[@]}" --cov --cov-report= -n 2 -m "not chaos and not serial" || status=$?
"${PYTEST[@]}" --cov --cov-append "${REPORTS[@]}" --cov-fail-under=90 -m "chaos or serial" || status=$?
exit $status

#!/usr/bin/env bash
# `make bench`: the sales benchmark (bench/sales.py) against MariaDB, with wrk as the load generator.
# Arguments go to bench/sales.py, e.g. `scripts/bench.sh --duration 20` or `make bench` for the defaults.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null 2>&1; then
    echo "bench: wrk is missing; installing it from the distribution"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
fi

export BENCH_DATABASE_URL="${BENCH_DATABASE_URL:-mysql://root@127.0.0.1:3306/donut_bench}"
exec .venv/bin/python -m bench.sales "$@"

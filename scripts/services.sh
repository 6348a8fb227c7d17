#!/usr/bin/env bash
# Make sure MariaDB and Redis answer on 127.0.0.1, starting the machine's own servers when they are down.
set -euo pipefail

wait_for() {  # name, check command
    for _ in $(seq 1 60); do
        if eval "$2" >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    echo "services: $1 did not come up" >&2
    return 1
}

if ! mysqladmin -h 127.0.0.1 -u root ping >/dev/null 2>&1; then
    echo "services: starting MariaDB"
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
    wait_for MariaDB "mysqladmin -h 127.0.0.1 -u root ping"
fi

if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    echo "services: starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
    wait_for Redis "redis-cli -h 127.0.0.1 -p 6379 ping"
fi

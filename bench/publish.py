"""How long an after-commit publish keeps its caller when the broker is up, refused, or hung.

Compares donutsite.celery.task_publish (one try, pooled connections made with max_retries=0 and a
BROKER_PUBLISH_TIMEOUT_SECONDS socket timeout: alert deliveries and back-in-stock pushes, whose rows the
notifications sweep resends) with Celery's send_task on a connection with the project's transport
options (what restock_dispatch and every other send_task get), against:
  up       the bench's Redis database (BENCH_PUBLISH_BROKER_URL, default Redis db 12, flushed after)
  refused  a port where nothing listens
  hung     a socket that accepts connections and never answers
Each publish sends `bench.publish_probe` (no worker consumes it). Prints, per case, how many messages
left and the median and max time of a publish.

    .venv/bin/python -m bench.publish [--samples 200]
"""

import argparse
import os
import socket
import statistics
import time

from bench.common import bench_environ


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200, help="publishes per case (send_task to a broker away: 3)")
    args = parser.parse_args()
    bench_environ(
        database_url="BENCH_PUBLISH_DATABASE_URL=mysql://root@127.0.0.1:3306/donut_bench_publish",
        broker_url="BENCH_PUBLISH_BROKER_URL=redis://127.0.0.1:6379/12",
    )
    import django

    django.setup()
    import redis
    from celery import current_app as app
    from django.conf import settings

    from donutsite.celery import task_publish

    up = os.environ["BENCH_PUBLISH_BROKER_URL"]
    refused = socket.socket()
    refused.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
    hung = socket.socket()
    hung.bind(("127.0.0.1", 0))
    hung.listen(512)
    brokers = {
        "up": up,
        "refused": f"redis://127.0.0.1:{refused.getsockname()[1]}/0",
        "hung": f"redis://127.0.0.1:{hung.getsockname()[1]}/0",
    }
    print(f"BROKER_PUBLISH_TIMEOUT_SECONDS={settings.BROKER_PUBLISH_TIMEOUT_SECONDS}")
    try:
        for state, url in brokers.items():
            app.conf.broker_write_url = url  # task_publish's pools are per URL
            with app.connection_for_write(url) as connection:
                cases = (
                    ("task_publish", lambda: task_publish("bench.publish_probe", [1]), args.samples),
                    # Celery's reconnect loop makes each try against a broker away last seconds: 3 samples.
                    ("send_task", lambda c=connection: _send_task(app, c), args.samples if state == "up" else 3),
                )
                for name, publish, samples in cases:
                    times, sent = [], 0
                    for _ in range(samples):
                        started = time.perf_counter()
                        sent += bool(publish())
                        times.append((time.perf_counter() - started) * 1000)
                    print(
                        f"{state:8} {name:12} sent {sent:3}/{samples:<3} median {statistics.median(times):8.2f} ms"
                        f"   max {max(times):8.2f} ms"
                    )
    finally:
        redis.Redis.from_url(up).flushdb()
        refused.close()
        hung.close()


def _send_task(app, connection) -> bool:
    from kombu.exceptions import OperationalError

    try:
        app.send_task("bench.publish_probe", args=[1], connection=connection)
    except OperationalError:
        return False
    return True


if __name__ == "__main__":
    main()

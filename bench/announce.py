"""The comeback's and the sell-out's writes to subscriptions: how long they hold the product's lock.

A receipt that brings a SKU back marks its unused subscriptions owed a push (`back_in_stock_announce`), and
the sale that takes the last one takes back the pushes still owed (`back_in_stock_withdraw`), both in the
transaction that holds the product's row lock: every sale of that SKU waits for them. They reach the rows
by primary key, in its order (donutsite/rows.py), so that they never deadlock with a device's unregister
or a tap of "notify me"; that costs a read of the ids first.

Baseline, in the same run on the same rows: the one UPDATE through the SKU's index that each used to be
(`one UPDATE`), which deadlocked. For each size: `--subscribers` subscriptions to the SKU, one device each,
half as many again to two other SKUs (so that MariaDB uses the SKU's index, as on a real table), then
`--rounds` alternating timings of each, every one in its own transaction on a table put back between
them. Prints the median of each and the ratio.

Runs on a database created fresh (BENCH_ANNOUNCE_DATABASE_URL, default donut_bench_announce) and a broker
database of its own (BENCH_ANNOUNCE_BROKER_URL, default Redis db 13, flushed after): no worker, so the
comebacks' pushes wait there unsent.

    .venv/bin/python -m bench.announce --subscribers 1000,5000,20000
"""

import argparse
import os
import statistics
import time

from bench.common import bench_environ, database_recreate

SKU = "VIRAL"


def setup(subscribers: int) -> None:
    from clients.models import ApiClient
    from notifications.models import Device, Subscription

    Subscription.objects.all().delete()
    Device.objects.all().delete()
    client = ApiClient.objects.first() or ApiClient.objects.create(name="bench", key_prefix="bench")
    devices = Device.objects.bulk_create(
        (Device(token=f"bench-{i:07d}", platform="android", client=client) for i in range(subscribers)),
        batch_size=5000,
    )
    rows = [Subscription(device=d, sku=SKU) for d in devices]
    rows += [Subscription(device=d, sku=other) for d in devices[: subscribers // 4] for other in ("OTHER1", "OTHER2")]
    Subscription.objects.bulk_create(rows, batch_size=5000)


def timed(write) -> float:
    """Seconds the write takes in its transaction (the commit, and the announce's hand-over to the broker
    after it, run once the lock is let go)."""
    from django.db import transaction

    with transaction.atomic():
        started = time.perf_counter()
        write()
        return time.perf_counter() - started


def measure(rounds: int) -> dict[str, list[float]]:
    from django.utils import timezone

    from notifications.models import Subscription
    from notifications.subscriptions import back_in_stock_announce, back_in_stock_withdraw

    unused = Subscription.objects.filter(sku=SKU, notified_at__isnull=True)
    writes = {
        "announce": lambda: back_in_stock_announce(SKU, SKU),
        "announce, one UPDATE": lambda: unused.update(due_at=timezone.now(), product_name=SKU),
        "withdraw": lambda: back_in_stock_withdraw(SKU),
        "withdraw, one UPDATE": lambda: unused.filter(due_at__isnull=False).update(due_at=None),
    }
    before = {"announce": None, "withdraw": timezone.now()}  # due_at each starts from: none owed, all owed
    seconds = {name: [] for name in writes}
    for _ in range(rounds):
        for name, write in writes.items():
            Subscription.objects.filter(sku=SKU).update(due_at=before[name.split(",")[0]])
            seconds[name].append(timed(write))
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", default="1000,5000,20000", help="comma-separated sizes")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    bench_environ(
        database_url="BENCH_ANNOUNCE_DATABASE_URL=mysql://root@127.0.0.1:3306/donut_bench_announce",
        broker_url="BENCH_ANNOUNCE_BROKER_URL=redis://127.0.0.1:6379/13",
    )
    os.environ.update(FCM_PROJECT_ID="donut-bench", FCM_ACCESS_TOKEN="bench-fcm-token")  # announced, not sent
    _, guard = database_recreate("BENCH_ANNOUNCE_DATABASE_URL")  # held until the run ends
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)

    print(f"median of {args.rounds} alternating rounds, ms in the product's transaction:")
    for size in (int(n) for n in args.subscribers.split(",")):
        setup(size)
        seconds = measure(args.rounds)
        ms = {name: statistics.median(values) * 1000 for name, values in seconds.items()}
        for what in ("announce", "withdraw"):
            base = ms[f"{what}, one UPDATE"]
            print(
                f"  {size:>7} subscribers  {what:<8} by primary key {ms[what]:8.1f}"
                f"   one UPDATE {base:8.1f}   ratio {ms[what] / base:4.2f}"
            )
    import redis

    redis.Redis.from_url(os.environ["CELERY_BROKER_URL"]).flushdb()
    guard.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

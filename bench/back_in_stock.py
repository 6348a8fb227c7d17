"""The back-in-stock bench: how long after a receipt brings a SKU back its subscribers all have their push.

A SKU with `--subscribers` subscriptions (one customer device each) comes back: the bench calls
`back_in_stock_announce` in a transaction, as a receipt does, and the pushes go out after commit through
the real `notifications` worker (prefork, 2 processes, as docker-compose.yml's notifications-worker) and
beat (which runs the notifications sweep every RECONCILE_INTERVAL_SECONDS, as in production). FCM is the
stand-in (testsupport.fake_slack_fcm) in this process, answering each push in `--fcm-latency-ms`, as a
remote FCM would, so that both ends are timed on one clock, time.time().

Baseline, measured in the same run against the same stand-in: the same number of pushes sent one after
another from this process through the app's own FcmChannel (`floor`): what one sender cannot beat. The
app's figure is the time from the announce to the last subscriber's push, and its ratio to the floor.

It prints when the first push, half of them, 99% and the last arrived, the ratio, and checks that every
subscriber got exactly one push and every subscription is used up (exit 1 otherwise).

Runs on a database created fresh (BENCH_BIS_DATABASE_URL, default donut_bench_bis) and a broker database
of its own (BENCH_BIS_BROKER_URL, default Redis db 13, flushed before and after). Logs: var/bench/.

    .venv/bin/python -m bench.back_in_stock --help
"""

import argparse
import collections
import os
import sys
import time
from pathlib import Path

from bench.common import Child, bench_environ, database_recreate, percentile

SKU = "VIRAL"


def setup(subscribers: int) -> None:
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    from clients.models import ApiClient
    from inventory.services import product_set_stock
    from notifications.models import Device, Subscription

    product_set_stock(sku=SKU, quantity=0, price="1.50", name=SKU, create=True)
    client = ApiClient(name="bench")
    client.set_new_key()
    client.save()
    devices = Device.objects.bulk_create(
        Device(kind=Device.Kind.CUSTOMER, token=f"bench-device-{i:06d}", platform="android", client=client)
        for i in range(subscribers)
    )
    Subscription.objects.bulk_create(Subscription(device=device, sku=SKU) for device in devices)


def floor(fcm_url: str, n: int) -> float:
    """Seconds for n pushes sent one after another through the app's FcmChannel."""
    from notifications.channels.base import Message
    from notifications.channels.fcm import FcmChannel

    channel = FcmChannel(fcm_url, "donut-bench", access_token="bench-fcm-token")  # noqa: S106 - stand-in's
    message = Message(title="Back in stock", text="floor", severity="info", kind="back_in_stock")
    started = time.time()
    for i in range(n):
        channel.send_to_token(f"floor-{i}", message)
    return time.time() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--fcm-latency-ms", type=float, default=20.0, help="the FCM stand-in's answer time")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up waiting after this many seconds")
    args = parser.parse_args(argv)

    bench_environ(
        database_url="BENCH_BIS_DATABASE_URL=mysql://root@127.0.0.1:3306/donut_bench_bis",
        broker_url="BENCH_BIS_BROKER_URL=redis://127.0.0.1:6379/13",
    )
    from testsupport.fake_slack_fcm import FcmStandIn

    fcm = FcmStandIn(token="bench-fcm-token", project_id="donut-bench")
    fcm.latency_seconds = args.fcm_latency_ms / 1000
    fcm.start()
    # Before anything reads the settings (database_recreate does).
    os.environ.update(FCM_ENDPOINT=fcm.url, FCM_PROJECT_ID="donut-bench", FCM_ACCESS_TOKEN="bench-fcm-token")
    _, guard = database_recreate("BENCH_BIS_DATABASE_URL")  # held until the run ends
    import redis

    broker = redis.Redis.from_url(os.environ["CELERY_BROKER_URL"])
    broker.flushdb()
    setup(args.subscribers)

    floor_seconds = floor(fcm.url, args.subscribers)
    fcm.clear()

    bin_dir = Path(sys.executable).parent
    env = dict(os.environ)
    worker = Child(
        "bis-notifications-worker",
        [str(bin_dir / "celery"), "-A", "donutsite", "worker", "-l", "info", "-Q", "notifications", "-c", "2"],
        env,
    )
    beat = Child(
        "bis-beat",
        [
            str(bin_dir / "celery"),
            "-A",
            "donutsite",
            "beat",
            "-l",
            "info",
            "--schedule",
            "var/bench/bis-celerybeat-schedule",
        ],
        env,
    )
    try:
        worker.wait_ready("ready.")
        beat.wait_ready("beat: Starting")
        from django.db import transaction

        from notifications.subscriptions import back_in_stock_announce

        started = time.time()
        with transaction.atomic():
            owed = back_in_stock_announce(SKU, SKU)
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline and len(fcm.received) < owed:
            time.sleep(0.2)
        time.sleep(1)  # any push sent twice arrives now
        return report(args, fcm.received, started, owed, floor_seconds)
    finally:
        Child.stop_all()
        fcm.stop()
        broker.flushdb()


def report(args, received: list[dict], started: float, owed: int, floor_seconds: float) -> int:
    from notifications.models import Subscription

    tokens = [r["body"]["message"].get("token") for r in received if r.get("status") == 200]
    arrivals = sorted(r["time"] - started for r in received if r.get("status") == 200)
    twice = sum(n - 1 for n in collections.Counter(tokens).values() if n > 1)
    unused = Subscription.objects.filter(sku=SKU, notified_at__isnull=True).count()
    print(
        f"back in stock: {owed} subscribers, FCM stand-in answering in {args.fcm_latency_ms:g} ms; "
        f"notifications worker prefork:2, beat every RECONCILE_INTERVAL_SECONDS"
    )
    print(f"  floor (one sender in this process, one push after another): {floor_seconds:.1f} s")
    if arrivals:
        print(
            f"  the app, announce -> push received: first {arrivals[0]:.2f} s, half {percentile(arrivals, 50):.1f} s, "
            f"99% {percentile(arrivals, 99):.1f} s, last {arrivals[-1]:.1f} s "
            f"({arrivals[-1] / floor_seconds:.2f} x the floor)"
        )
    problems = []
    if len(set(tokens)) != owed:
        problems.append(f"{owed - len(set(tokens))} subscribers got no push within {args.timeout:g} s")
    if twice:
        problems.append(f"{twice} pushes sent twice")
    if unused:
        problems.append(f"{unused} subscriptions not used up")
    for problem in problems:
        print(f"  PROBLEM: {problem}")
    if not problems:
        print("  every subscriber got one push; every subscription is used up")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

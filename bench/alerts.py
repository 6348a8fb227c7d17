"""The alert benchmark: from the failure that dead-letters a restock to Slack and FCM receiving the alert.

The failure is recorded here, in this process, through `factory.retries.dead_letter_record` with a real
exception (OutOfAttempts raised from FactoryUnavailable), as a factory task's on_failure records it: the
dead letter and its critical alert in one transaction, one delivery per channel (log, Slack, FCM) handed
to the `notifications` queue on commit. Real Celery workers, started as `make run` starts them, deliver
it to the Slack and FCM stand-ins (testsupport.fake_slack_fcm), which also run in this process, so that both
ends are timed on one clock, time.time():

  t0         just before dead_letter_record is called
  commit     when its transaction's COMMIT returns (the delivery tasks are sent right after)
  returned   when the call returns (after the on-commit sends and the dead-letter queue copy)
  received   the stand-in's `time` for the POST that carries the alert

Each sample has its own task name (bench.alert_probe_<n>), hence its own dedupe key: alerts with one key
inside ALERT_GROUP_WINDOW_SECONDS are grouped on purpose (only the first goes out at once), and this
measures delivery, not grouping. The bench checks that no sample was grouped.

Two layouts of workers, each measured idle and behind a backlog of factory work:
  split   a worker for -Q default,factory,maintenance and another for -Q notifications (make run, README)
  single  one worker on every queue but dead_letter (-X dead_letter, as docker-compose.yml's `worker`)
and in each: a first alert right after the workers start (cold, reported apart), a few warm-up alerts,
then
  idle     `--samples` alerts `--spacing-ms` apart on empty queues (200 ms: 5 alerts, 15 delivery tasks a
           second; much closer together and a two-process alerts worker on two busy cores falls behind, so
           the figures would measure its throughput instead of one alert's latency)
  backlog  `--backlog` factory.restock_place tasks for other SKUs queued first (restock_dispatch, against
           the factory simulator in this process answering every order in `--factory-latency-ms`, so the
           factory worker stays busy for backlog * latency / concurrency seconds), then the same alerts

It prints p50/p95/p99/max of failure -> received for Slack and FCM, MET / NOT MET against p99 < 1 s.
Everything runs on a database created fresh (BENCH_ALERTS_DATABASE_URL, default donut_bench_alerts) and a
broker database of its own (BENCH_ALERTS_BROKER_URL, default Redis db 11, flushed before and after).
Worker logs go to var/bench/alerts-bench-*.log.

    .venv/bin/python -m bench.alerts --help
"""

import argparse
import json
import logging
import os
import re
import signal
import sys
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.common import (
    Child,
    Pool,
    bench_environ,
    database_recreate,
    machine_busy_seconds,
    percentile,
    summary,
)

bench_environ(
    database_url="BENCH_ALERTS_DATABASE_URL=mysql://root@127.0.0.1:3306/donut_bench_alerts",
    broker_url="BENCH_ALERTS_BROKER_URL=redis://127.0.0.1:6379/11",
)
# The stand-ins' addresses are added once they listen, before Django reads its settings.
FCM_PROJECT_ID = "donut-bench"
FCM_TOKEN = "bench-fcm-token"  # noqa: S105 - the stand-in's token, not a secret
os.environ["FCM_PROJECT_ID"] = FCM_PROJECT_ID
os.environ["FCM_ACCESS_TOKEN"] = FCM_TOKEN
for _name in ("FCM_CREDENTIALS_FILE", "ALERTS_DISABLED_KINDS", "SLACK_MIN_SEVERITY", "FCM_MIN_SEVERITY"):
    os.environ.pop(_name, None)

TARGET_MS = 1000.0
PROBE = re.compile(r"bench\.alert_probe_(\d+)\b")
TASK_DONE = re.compile(r"Task notifications\.deliver\[[^\]]+\] succeeded in ([0-9.]+)s")
CHANNELS = ("slack", "fcm")


# --- workers ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Which workers run, and which of them delivers alerts."""

    name: str
    workers: tuple[tuple[str, Pool, tuple[str, ...]], ...]  # (name, pool, queue arguments)
    alerts_worker: str

    def describe(self) -> str:
        return "; ".join(f"{name} {pool} {' '.join(queues)}" for name, pool, queues in self.workers)


def workers_start(layout: Layout, env: dict) -> dict[str, Child]:
    """The layout's workers, as `make run` starts them (production flags: gossip, mingle and heartbeat on)."""
    celery = str(Path(sys.executable).parent / "celery")
    children = {}
    for name, pool, queues in layout.workers:
        argv = [celery, "-A", "donutsite", "worker", "-l", "info", "-P", pool.kind, "-c", str(pool.concurrency)]
        argv += [*queues, "-n", f"{name}@%h"]
        children[name] = Child(name, argv, env)
    for child in children.values():
        child.wait_ready("ready.")
    return children


# --- figures ---------------------------------------------------------------------------------------


@dataclass
class Sample:
    n: int
    t0: float  # time.time() just before dead_letter_record
    commit: float  # when its COMMIT returned
    returned: float  # when it returned
    factory_queued: int  # messages in the factory queue just before the call
    received: dict[str, float] = field(default_factory=dict)  # channel -> stand-in's arrival time

    def latency_ms(self, channel: str) -> float | None:
        at = self.received.get(channel)
        return None if at is None else (at - self.t0) * 1000


@dataclass
class Phase:
    layout: str
    name: str
    samples: list[Sample]
    spacing_ms: float
    factory_orders_during: int = 0  # orders the factory simulator answered while the alerts went out
    task_run_ms: list[float] = field(default_factory=list)  # notifications.deliver run times (all 3 channels)
    machine_cores: float = 0.0
    load: float = 0.0

    def latencies(self, channel: str) -> list[float]:
        return [ms for s in self.samples if (ms := s.latency_ms(channel)) is not None]

    def missing(self, channel: str) -> int:
        return sum(1 for s in self.samples if channel not in s.received)

    def p99(self, channel: str) -> float:
        """Missing alerts count as infinitely late."""
        values = self.latencies(channel) + [float("inf")] * self.missing(channel)
        return percentile(sorted(values), 99)

    def met(self) -> bool:
        return all(self.p99(c) < TARGET_MS for c in CHANNELS)


# --- this process's side ---------------------------------------------------------------------------


class Bench:
    """The stand-ins, the factory simulator, the broker, and dead letters recorded through the real path."""

    def __init__(self, factory_latency_ms: float):
        from testsupport.fake_slack_fcm import FcmStandIn, SlackStandIn

        self.slack = SlackStandIn()
        self.fcm = FcmStandIn(token=FCM_TOKEN, project_id=FCM_PROJECT_ID)
        self.arrived: dict[str, dict[int, float]] = {c: {} for c in CHANNELS}
        self.repeats = {c: 0 for c in CHANNELS}
        self.refused: list[str] = []
        self.changed = threading.Condition()
        self.slack.on_receive = self.fcm.on_receive = self._on_receive
        os.environ["SLACK_WEBHOOK_URL"] = f"{self.slack.start()}/services/bench/x"
        os.environ["FCM_ENDPOINT"] = self.fcm.start()

        import django

        django.setup()
        import redis
        from django.db import connections

        from factory.simulator import FaultConfig, LegacyFactory

        # dead_letter_record logs every dead letter at ERROR; hundreds of them would bury the figures.
        logging.getLogger("factory.retries").setLevel(logging.CRITICAL)

        self.factory = LegacyFactory(
            config=FaultConfig(latency_ms=(factory_latency_ms, factory_latency_ms), production_seconds=24 * 3600),
            api_key=os.environ["FACTORY_API_KEY"],
            callback_secret=os.environ["FACTORY_CALLBACK_SECRET"],
            log=None,
        )
        self.factory_url = self.factory.start()
        self.redis = redis.Redis.from_url(os.environ["CELERY_BROKER_URL"])
        self.env = {**os.environ, "FACTORY_API_URL": self.factory_url, "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "INFO"}
        self.counter = 0
        self.labels = 0
        # The moment a COMMIT returns, before Django runs the on-commit hooks (the delivery sends).
        self.last_commit = 0.0
        connection = connections["default"]
        original_commit = connection.commit

        def timed_commit():
            original_commit()
            self.last_commit = time.time()

        connection.commit = timed_commit

    def _on_receive(self, record: dict) -> None:
        channel = record["channel"]
        title = (self.slack if channel == "slack" else self.fcm).title_of(record)
        match = PROBE.search(title)
        if match is None:
            return
        n = int(match[1])
        with self.changed:
            if record.get("status") != 200:
                self.refused.append(f"{channel} {record.get('status')}: {record.get('raw', '')[:200]}")
            elif n in self.arrived[channel]:
                self.repeats[channel] += 1
            else:
                self.arrived[channel][n] = record["time"]
            self.changed.notify_all()

    def setup_database(self) -> None:
        from django.core.management import call_command

        call_command("migrate", verbosity=0, interactive=False)

    def stop(self) -> None:
        self.factory.stop()
        self.slack.stop()
        self.fcm.stop()

    def queue_length(self, queue: str) -> int:
        from kombu.transport.redis import PRIORITY_STEPS

        keys = [queue] + [f"{queue}\x06\x16{p}" for p in PRIORITY_STEPS if p]
        pipe = self.redis.pipeline()
        for key in keys:
            pipe.llen(key)
        return sum(pipe.execute())

    def restocks_create(self, n: int, label: str) -> list[tuple[int, str]]:
        """N products, each with a pending restock: (restock id, SKU)."""
        from inventory import selectors
        from inventory.models import Product, Restock

        self.labels += 1
        skus = [f"{label}-{self.labels}-{i:05d}" for i in range(n)]
        Product.objects.bulk_create(Product(sku=sku, name=sku, price="1.50") for sku in skus)
        selectors.forget_product_ids()
        products = list(Product.objects.filter(sku__in=skus).order_by("pk"))
        Restock.objects.bulk_create(Restock(product=p, quantity=100, reason=Restock.Reason.SHORTAGE) for p in products)
        return list(Restock.objects.filter(product__in=products).order_by("pk").values_list("pk", "product__sku"))

    def dead_letter(self, restock_id: int, sku: str) -> Sample:
        """One restock failing for good, recorded as RestockPlaceTask.on_failure records it."""
        from factory.client import FactoryUnavailable
        from factory.retries import OutOfAttempts, dead_letter_record

        self.counter += 1
        n = self.counter
        try:
            try:
                raise FactoryUnavailable("factory: HTTP 503 Service Unavailable", status_code=503, latency_ms=12)
            except FactoryUnavailable as cause:
                raise OutOfAttempts(f"6 failed attempts; last: {cause}") from cause
        except OutOfAttempts as failure:
            exc = failure
            trace = "".join(traceback.format_exception(failure))
        queued = self.queue_length("factory")
        t0 = time.time()
        dead_letter_record(
            task_name=f"bench.alert_probe_{n}",
            task_id=f"bench-probe-{n}",
            args=[restock_id],
            kwargs={},
            queue="factory",
            exc=exc,
            traceback=trace,
            attempts=6,
            correlation_id=f"bench-{n}",
            context={"restock_id": restock_id, "sku": sku},
        )
        returned = time.time()
        return Sample(n=n, t0=t0, commit=self.last_commit, returned=returned, factory_queued=queued)

    def wait_received(self, samples: list[Sample], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        wanted = [s.n for s in samples]
        with self.changed:
            while not all(n in self.arrived[c] for c in CHANNELS for n in wanted):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.changed.wait(left)
            for s in samples:
                s.received = {c: self.arrived[c][s.n] for c in CHANNELS if s.n in self.arrived[c]}

    def factory_orders(self) -> int:
        return self.factory.stats()["orders_created"]

    def backlog_enqueue(self, n: int) -> tuple[int, float]:
        """N restocks of other SKUs handed to the factory queue, as a sale's on-commit hook hands them."""
        from factory.services import restock_dispatch

        restocks = self.restocks_create(n, "BACKLOG")
        started = time.monotonic()
        for restock_id, _ in restocks:
            restock_dispatch(restock_id)
        return self.queue_length("factory"), time.monotonic() - started

    def phase(self, layout: Layout, name: str, count: int, spacing: float, alerts_log: Child, timeout: float) -> Phase:
        restocks = self.restocks_create(count, name.upper())
        log_start = alerts_log.size()
        orders_before = self.factory_orders()
        cpu_before = machine_busy_seconds(), time.monotonic()
        samples = []
        started = time.monotonic()
        for i, (restock_id, sku) in enumerate(restocks):
            time.sleep(max(0.0, started + i * spacing - time.monotonic()))
            samples.append(self.dead_letter(restock_id, sku))
        self.wait_received(samples, timeout)
        cpu_after = machine_busy_seconds(), time.monotonic()
        phase = Phase(layout.name, name, samples, spacing * 1000)
        phase.factory_orders_during = self.factory_orders() - orders_before
        time.sleep(0.3)  # the last tasks' "succeeded" lines
        phase.task_run_ms = [float(t) * 1000 for t in TASK_DONE.findall(alerts_log.output(log_start))]
        phase.machine_cores = (cpu_after[0] - cpu_before[0]) / (cpu_after[1] - cpu_before[1])
        phase.load = os.getloadavg()[0]
        return phase


def alerts_check(samples: list[Sample]) -> dict:
    """What the database says about the samples' alerts: none grouped, every Slack/FCM delivery sent."""
    from django.db.models import Count

    from notifications.models import Alert, AlertDelivery

    names = [f"bench.alert_probe_{s.n}" for s in samples]
    alerts = Alert.objects.filter(context__task__in=names)
    deliveries = AlertDelivery.objects.filter(alert__in=alerts)
    return {
        "alerts": alerts.count(),
        "grouped": sum(alerts.values_list("suppressed_count", flat=True)),
        "deliveries": {
            f"{c}:{s}": n for c, s, n in deliveries.values_list("channel", "status").annotate(n=Count("pk")).order_by()
        },
        "attempts_over_1": deliveries.filter(attempts__gt=1).count(),
    }


# --- one layout, measured --------------------------------------------------------------------------


def layout_run(bench: Bench, layout: Layout, args) -> dict:
    bench.redis.flushdb()
    started = time.monotonic()
    workers = workers_start(layout, bench.env)
    alerts_log = workers[layout.alerts_worker]
    result = {"layout": layout.name, "workers": layout.describe(), "start_seconds": time.monotonic() - started}
    try:
        # The first alert after the workers start (connections, HTTP sessions), then a few to warm both pools.
        cold = bench.phase(layout, "cold", 1, 0, alerts_log, timeout=60)
        warm = bench.phase(layout, "warm", args.warmup, 0.1, alerts_log, timeout=60)
        result["cold"] = cold
        result["warm_missing"] = sum(warm.missing(c) for c in CHANNELS)
        result["idle"] = bench.phase(layout, "idle", args.samples, args.spacing_ms / 1000, alerts_log, args.timeout)
        queued, seconds = bench.backlog_enqueue(args.backlog)
        result["backlog_queued"], result["backlog_enqueue_seconds"] = queued, seconds
        # Wait until the factory worker is busy with it before the first alert.
        deadline = time.monotonic() + 30
        while args.backlog and bench.factory_orders() < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        result["backlog"] = bench.phase(
            layout, "backlog", args.samples, args.spacing_ms / 1000, alerts_log, args.timeout
        )
        result["backlog_left"] = bench.queue_length("factory")
    finally:
        for child in workers.values():
            child.stop()
        bench.redis.flushdb()
    return result


def _ms(value: float, unit: str = "") -> str:
    """Milliseconds; `lost` for a p99 that falls on an alert that never arrived."""
    return "lost" if value == float("inf") else f"{value:.0f}{unit}"


def _print_phase(phase: Phase, note: str) -> None:
    print(f"    {phase.name}: {len(phase.samples)} dead letters {phase.spacing_ms:.0f} ms apart{note}")
    for channel in CHANNELS:
        s = summary(phase.latencies(channel))
        missing = phase.missing(channel)
        p99 = _ms(phase.p99(channel))
        print(
            f"      failure -> {channel:<5} received  p50 {s[50]:6.0f}  p95 {s[95]:6.0f}  p99 {p99:>6}"
            f"  max {s['max']:6.0f} ms" + (f"  ({missing} never arrived)" if missing else "")
        )
    call = summary([(s.returned - s.t0) * 1000 for s in phase.samples])
    commit = summary([(s.commit - s.t0) * 1000 for s in phase.samples])
    runs = summary(phase.task_run_ms)
    print(
        f"      dead_letter_record call p50 {call[50]:.1f} p99 {call[99]:.1f} ms, of which failure -> COMMIT "
        f"p50 {commit[50]:.1f} p99 {commit[99]:.1f} ms; notifications.deliver run time (log+Slack+FCM tasks, "
        f"{len(phase.task_run_ms)}) p50 {runs[50]:.1f} p99 {runs[99]:.1f} max {runs['max']:.1f} ms"
    )
    arrivals = [t for s in phase.samples for t in s.received.values()]
    if arrivals and len(phase.samples) > 1:
        span = max(arrivals) - phase.samples[0].t0
        print(
            f"      all {len(phase.samples)} in {span:.1f} s ({len(phase.samples) / span:.1f} alerts/s "
            f"delivered; recorded at {len(phase.samples) / (phase.samples[-1].returned - phase.samples[0].t0):.1f}/s)"
        )
    print(f"      machine: {phase.machine_cores:.2f} of {os.cpu_count()} cores busy, load average {phase.load:.2f}")


def _print_layout(r: dict) -> None:
    print(f"\n  [{r['layout']}] {r['workers']} (ready in {r['start_seconds']:.1f} s)")
    cold = r["cold"]
    print(
        "    first alert after the workers start: "
        + ", ".join(f"{c} {_ms(cold.p99(c), unit=' ms')}" for c in CHANNELS)
        + (f"; {r['warm_missing']} warm-up deliveries missing" if r["warm_missing"] else "")
    )
    _print_phase(r["idle"], "")
    back = r["backlog"]
    ahead = [s.factory_queued for s in back.samples]
    _print_phase(
        back,
        f", {r['backlog_queued']} restock_place tasks queued ({r['backlog_enqueue_seconds']:.1f} s to enqueue), "
        f"{min(ahead)}-{max(ahead)} still queued as the alerts went out, {r['backlog_left']} left after; "
        f"the factory answered {back.factory_orders_during} orders meanwhile",
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=100, help="dead letters per phase (default 100)")
    parser.add_argument(
        "--spacing-ms",
        type=float,
        default=200.0,
        help="between dead letters (default 200; 0 sends them all at once, a burst that measures throughput)",
    )
    parser.add_argument("--warmup", type=int, default=4, help="warm-up dead letters after the cold one (4)")
    parser.add_argument("--backlog", type=int, default=1000, help="factory tasks queued first (default 1000)")
    parser.add_argument("--factory-latency-ms", type=float, default=200.0, help="factory answer time (200)")
    parser.add_argument("--pool", type=Pool.parse, default=Pool.parse("prefork:2"), help="every worker (prefork:2)")
    parser.add_argument("--layouts", default="split,single", help="split, single or both (default split,single)")
    parser.add_argument("--timeout", type=float, default=120.0, help="wait for a phase's alerts (120 s)")
    parser.add_argument("--json", type=Path, help="also write every sample to this file")
    args = parser.parse_args(argv)
    if args.samples < 1 or args.warmup < 0 or args.backlog < 0:
        parser.error("--samples must be at least 1; --warmup and --backlog at least 0")
    layouts = {
        "split": Layout(
            "split",
            (
                ("alerts-bench-factory", args.pool, ("-Q", "default,factory,maintenance")),
                ("alerts-bench-notifications", args.pool, ("-Q", "notifications")),
            ),
            alerts_worker="alerts-bench-notifications",
        ),
        "single": Layout(
            "single", (("alerts-bench-all", args.pool, ("-X", "dead_letter")),), alerts_worker="alerts-bench-all"
        ),
    }
    chosen = [name.strip() for name in args.layouts.split(",") if name.strip()]
    if not chosen or set(chosen) - set(layouts):
        parser.error(f"--layouts: choose from {', '.join(layouts)}")
    if re.search(r"/0?$", os.environ["CELERY_BROKER_URL"]):
        raise SystemExit("refusing to flush Redis db 0 (the broker `make run` uses); set BENCH_ALERTS_BROKER_URL")

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    # SIGINT too: a shell without job control starts background jobs with it ignored.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    started = time.monotonic()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{os.cpu_count()} CPUs, load average {load} before the run (other work on the machine skews the figures)")
    bench = None
    results = []
    checks = {}
    try:
        bench = Bench(args.factory_latency_ms)
        db, _guard = database_recreate("BENCH_ALERTS_DATABASE_URL")  # held until the process exits
        bench.setup_database()
        bench.redis.flushdb()
        print(
            f"database {db['NAME']} migrated, broker {os.environ['CELERY_BROKER_URL']}, stand-ins Slack "
            f"{bench.slack.url} FCM {bench.fcm.url}, factory simulator {bench.factory_url} answering in "
            f"{args.factory_latency_ms:.0f} ms; setup {time.monotonic() - started:.0f} s",
            flush=True,
        )
        for name in chosen:
            result = layout_run(bench, layouts[name], args)
            results.append(result)
            _print_layout(result)
            checks[name] = alerts_check(result["idle"].samples + result["backlog"].samples)
    finally:
        Child.stop_all()
        if bench is not None:
            bench.stop()
            bench.redis.flushdb()

    print(f"\nSummary: failure -> alert received, p99 against {TARGET_MS / 1000:g} s")
    for r in results:
        for phase in (r["idle"], r["backlog"]):
            what = "idle" if phase.name == "idle" else f"{r['backlog_queued']} factory tasks queued"
            verdict = "MET" if phase.met() else "NOT MET"
            p99s = "  ".join(f"{c} p99 {_ms(phase.p99(c), unit=' ms'):>9}" for c in CHANNELS)
            print(f"  {r['layout']:<6} {what:<26} {p99s}  {verdict}")
    for name, check in checks.items():
        print(
            f"  {name}: {check['alerts']} alerts, {check['grouped']} grouped; deliveries {check['deliveries']}, "
            f"{check['attempts_over_1']} took more than one attempt"
        )
    print(f"  stand-ins: repeated posts {bench.repeats}, refused {len(bench.refused)}")
    for line in bench.refused[:5]:
        print(f"    {line}")
    print(f"\ntotal time {time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(
            json.dumps(
                [
                    {k: asdict(v) if isinstance(v, Phase) else v for k, v in r.items()}
                    | {"checks": checks.get(r["layout"])}
                    for r in results
                ],
                indent=2,
            )
        )
    lost = any(phase.missing(c) for r in results for phase in (r["idle"], r["backlog"]) for c in CHANNELS)
    split = next((r for r in results if r["layout"] == "split"), None)
    return 1 if lost or bench.refused or (split and not (split["idle"].met() and split["backlog"].met())) else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        Child.stop_all()
        sys.exit(130)

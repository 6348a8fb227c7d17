"""The restock benchmark: from the sale that finds a shortage to the factory holding the order.

A shortage is made here, in this process, through `inventory.services.sale_create` (it commits, then
hands the restock to the `factory_urgent` queue on commit). Two real Celery worker processes, started
with the project's settings in the worker layout of docker-compose.yml (its `worker` on `factory`, its
`urgent-worker` on `factory_urgent`, each with the pool and concurrency compose gives it), run
`factory.restock_place` against the factory simulator, which also runs in this process so that both
ends are timed on one clock: the commit's time is taken the moment COMMIT returns, the factory's when
its POST /v1/orders arrives and when it has created the order and answers.

  1  idle: one shortage at a time, each waits for the factory to answer before the next
  2  behind a backlog: `--backlog` reorder-point restocks of other SKUs are queued on `factory` (the
     routine worker's consumer paused, the restocks dispatched with `restock_dispatch`, the consumer
     resumed), then shortages are made `--spacing` seconds apart (0.1) while it drains
  3  restocks per second: how fast the routine worker drains that backlog against a factory that takes
     `--latency-ms` to answer; `--compare` repeats a smaller 1+2+3 for other routine-worker pools

Targets (issue 11): idle p99 commit -> order accepted <= 250 ms, behind 1,000 queued restocks <= 300 ms,
drain >= 50 restocks/s, with a factory answering in 200 ms.
Everything runs on a database created fresh (BENCH_RESTOCK_DATABASE_URL, default donut_bench_restock)
and a broker database of its own (BENCH_RESTOCK_BROKER_URL, default Redis db 13, flushed).
Other processes' CPU use moves the figures; the bench prints it.

    .venv/bin/python -m bench.restock --help
"""

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.common import (
    LOG_DIR,
    Child,
    Pool,
    bench_environ,
    database_recreate,
    machine_busy_seconds,
    pids_named,
    process_seconds,
    process_tree,
    summary,
)

bench_environ(
    database_url="BENCH_RESTOCK_DATABASE_URL=mysql://root@127.0.0.1:3306/donut_bench_restock",
    broker_url="BENCH_RESTOCK_BROKER_URL=redis://127.0.0.1:6379/13",
)

TARGET_IDLE_MS = 250.0
TARGET_BACKLOG_MS = 300.0
TARGET_DRAIN_PER_SECOND = 50.0
QUEUE = "factory"  # routine restocks; the backlog
URGENT_QUEUE = "factory_urgent"  # shortages' first attempts
URGENT_NAME = "restock-urgent"


def compose_pools() -> tuple[Pool, Pool]:
    """The pools docker-compose.yml gives its `worker` (routine) and `urgent-worker`."""
    import yaml

    services = yaml.safe_load((Path(__file__).resolve().parent.parent / "docker-compose.yml").read_text())["services"]

    def pool(service: str) -> Pool:
        command = services[service]["command"]
        option = dict(zip(command, command[1:], strict=False))
        return Pool(option.get("-P", "prefork"), int(option.get("-c", os.cpu_count())))

    return pool("worker"), pool("urgent-worker")


def worker_start(pool: Pool, env: dict, *, queues: str = QUEUE, name: str = "restock-bench") -> Child:
    """A Celery worker with the project's settings, as production starts it, on `queues` only."""
    app = "bench.worker_trace" if env.get("BENCH_TRACE_FILE") else "donutsite"
    argv = [str(Path(sys.executable).parent / "celery"), "-A", app, "worker", "-l", "info"]
    argv += ["-P", pool.kind, "-c", str(pool.concurrency), "-Q", queues, "-n", f"{name}@%h"]
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
    child = Child(f"{name}-{pool.kind}-{pool.concurrency}", argv, env)
    child.wait_ready("ready.")
    return child


def node_name(name: str = "restock-bench") -> str:
    return f"{name}@{socket.gethostname()}"


# --- the factory, timed ----------------------------------------------------------------------------


def recording_factory_class():
    from factory.simulator import LegacyFactory

    class RecordingFactory(LegacyFactory):
        """The simulator, noting when each order's first POST arrives and when it is answered."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.arrived: dict[str, float] = {}
            self.answered: dict[str, float] = {}
            self.statuses: dict[str, int] = {}
            self.repeats = 0
            self.changed = threading.Condition()

        def handle(self, method, target, headers, body, client_ip):
            if method != "POST" or target.split("?", 1)[0] != "/v1/orders":
                return super().handle(method, target, headers, body, client_ip)
            arrived = time.perf_counter()
            response = super().handle(method, target, headers, body, client_ip)
            answered = time.perf_counter()
            try:
                reference = str(json.loads(body)["reference"])
            except (ValueError, KeyError, TypeError):
                return response
            with self.changed:
                if reference in self.arrived:
                    self.repeats += 1
                else:
                    self.arrived[reference] = arrived
                    self.answered[reference] = answered
                    self.statuses[reference] = response.status
                self.changed.notify_all()
            return response

        def wait_answered(self, references, timeout: float, stall: float = 60.0) -> bool:
            """Wait until every reference has been answered; give up after `timeout`, or after `stall`
            seconds in which no order at all arrived (longer than the visibility timeout, so a message
            that Redis hands out again is waited for)."""
            deadline = time.monotonic() + timeout
            with self.changed:
                seen, progress = len(self.answered), time.monotonic()
                while not all(ref in self.answered for ref in references):
                    now = time.monotonic()
                    if len(self.answered) != seen:
                        seen, progress = len(self.answered), now
                    left = min(deadline, progress + stall) - now
                    if left <= 0:
                        return False
                    self.changed.wait(min(left, 1.0))
            return True

    return RecordingFactory


TRACE_STEPS = ("received", "prerun", "call", "connected")


def worker_trace_read(path) -> tuple[dict[int, dict[str, float]], list[list[float]]]:
    """bench/worker_trace.py's lines: restock id -> step -> perf_counter() of its first occurrence, and
    each full garbage collection in a worker as [pid, started, ended]."""
    steps: dict[int, dict[str, float]] = {}
    collections: list[list[float]] = []
    if path and os.path.exists(path):
        with open(path) as f:
            for line in f:
                step, restock_id, at = json.loads(line)
                if step == "gc":  # its second field is [pid, started, ended], not a restock id
                    collections.append(restock_id)
                else:
                    steps.setdefault(restock_id, {}).setdefault(step, at)
    return steps, collections


# --- setup -----------------------------------------------------------------------------------------


@dataclass
class Shortage:
    reference: str
    committed: float  # perf_counter() when the sale's COMMIT returned
    returned: float  # when sale_create returned (after the on-commit dispatch)
    queued_ahead: int  # messages in the routine factory queue just before the sale


@dataclass
class Latencies:
    """Milliseconds, per shortage: commit -> POST arrives, commit -> order accepted (answered)."""

    samples: int
    to_arrival: list[float] = field(default_factory=list)
    to_accepted: list[float] = field(default_factory=list)
    factory_answer: list[float] = field(default_factory=list)
    dispatch: list[float] = field(default_factory=list)
    queued_ahead: list[int] = field(default_factory=list)
    # With --trace: per shortage, ms from the commit to the urgent worker's consumer having the message,
    # then to a pool thread starting the task, to its factory call, to its connection being up, and to
    # the POST arriving at the simulator.
    steps: list[list[float]] = field(default_factory=list)
    # With --trace: the full garbage collections (worker pid, ms) that overlapped each shortage's way.
    gc_pauses: list[list] = field(default_factory=list)

    def summary(self, name: str) -> dict:
        return summary(getattr(self, name))


class Bench:
    """This process's side: the timed simulator, the broker, and shortages made through sale_create."""

    def __init__(self, latency_ms: float):
        import django

        django.setup()
        import redis
        from django.db import connections

        from factory.simulator import FaultConfig

        self.latency_ms = latency_ms
        self.factory = recording_factory_class()(
            config=FaultConfig(latency_ms=(latency_ms, latency_ms), production_seconds=24 * 3600),
            api_key=os.environ["FACTORY_API_KEY"],
            callback_secret=os.environ["FACTORY_CALLBACK_SECRET"],
            log=None,
        )
        self.factory_url = self.factory.start()
        self.redis = redis.Redis.from_url(os.environ["CELERY_BROKER_URL"])
        self.env = {
            **os.environ,
            "FACTORY_API_URL": self.factory_url,
            "PYTHONUNBUFFERED": "1",
            "LOG_LEVEL": "INFO",
        }
        self.sku_counter = 0
        self.client = None
        # The moment the sale's COMMIT returns, before Django runs the on-commit dispatch.
        self.last_commit = 0.0
        connection = connections["default"]
        original_commit = connection.commit

        def timed_commit():
            original_commit()
            self.last_commit = time.perf_counter()

        connection.commit = timed_commit

    def setup_database(self) -> None:
        from django.core.management import call_command

        from clients.models import ApiClient

        call_command("migrate", verbosity=0, interactive=False)
        client = ApiClient(name="restock-bench")
        client.set_new_key()
        client.save()
        self.client = client

    def stop(self) -> None:
        self.factory.stop()

    def queue_length(self, queue: str = QUEUE) -> int:
        from kombu.transport.redis import PRIORITY_STEPS

        keys = [queue] + [f"{queue}\x06\x16{p}" for p in PRIORITY_STEPS if p]
        pipe = self.redis.pipeline()
        for key in keys:
            pipe.llen(key)
        return sum(pipe.execute())

    def products_create(self, n: int, label: str) -> list:
        """N products with nothing on hand (no ledger rows needed: on-hand 0 = empty ledger)."""
        from inventory import selectors
        from inventory.models import Product

        self.sku_counter += 1
        skus = [f"{label}-{self.sku_counter}-{i:05d}" for i in range(n)]
        Product.objects.bulk_create(Product(sku=sku, name=sku, price="1.50") for sku in skus)
        selectors.forget_product_ids()
        return list(Product.objects.filter(sku__in=skus).order_by("pk"))

    def shortage(self, sku: str, queue: str = QUEUE) -> Shortage:
        from django.conf import settings

        from inventory.errors import OutOfStock
        from inventory.services import SaleItem, sale_create

        ahead = self.queue_length(queue)
        try:
            sale_create(client=self.client, items=[SaleItem(sku=sku, quantity=1)])
        except OutOfStock as exc:
            returned = time.perf_counter()
            restock_id = exc.details["shortages"][0]["restock"]["id"]
        else:
            raise RuntimeError(f"{sku} had stock: the bench expects every sale to be short")
        return Shortage(f"{settings.FACTORY_REFERENCE_PREFIX}-{restock_id}", self.last_commit, returned, ahead)

    def latencies(self, shortages: list[Shortage]) -> Latencies:
        f = self.factory
        result = Latencies(samples=len(shortages))
        trace, collections = worker_trace_read(self.env.get("BENCH_TRACE_FILE"))
        for s in shortages:
            if trace:
                at = trace.get(int(s.reference.rsplit("-", 1)[1]), {})
                times = [s.committed, *(at.get(step, float("nan")) for step in TRACE_STEPS), f.arrived[s.reference]]
                result.steps.append([(b - a) * 1000 for a, b in zip(times, times[1:], strict=False)])
                result.gc_pauses.append(
                    [
                        [pid, round((end - start) * 1000, 1)]
                        for pid, start, end in collections
                        if start < times[-1] and end > times[0]
                    ]
                )
            result.to_arrival.append((f.arrived[s.reference] - s.committed) * 1000)
            result.to_accepted.append((f.answered[s.reference] - s.committed) * 1000)
            result.factory_answer.append((f.answered[s.reference] - f.arrived[s.reference]) * 1000)
            result.dispatch.append((s.returned - s.committed) * 1000)
            result.queued_ahead.append(s.queued_ahead)
        return result

    def wait_recorded(self, after_id: int, timeout: float = 30) -> None:
        """The factory answered every order; wait for the worker to record them (before it is stopped)."""
        from inventory.models import Restock

        deadline = time.monotonic() + timeout
        pending = Restock.objects.pending().filter(pk__gt=after_id)
        while pending.exists() and time.monotonic() < deadline:
            time.sleep(0.1)

    @staticmethod
    def last_restock_id() -> int:
        from inventory.models import Restock

        return Restock.objects.order_by("-pk").values_list("pk", flat=True).first() or 0

    def warm(self, pool: Pool, urgent: Pool) -> None:
        """Give every slot of both pools a first task (its database connection, imports) before timing."""
        from django.conf import settings

        from factory.services import restock_dispatch
        from inventory.models import Restock

        products = self.products_create(2 * urgent.concurrency, "WARM")
        refs = [self.shortage(p.sku).reference for p in products]
        routine = self.products_create(2 * pool.concurrency, "WARMR")
        for restock in Restock.objects.bulk_create(
            Restock(product=p, quantity=100, reason=Restock.Reason.REORDER_POINT) for p in routine
        ):
            restock_dispatch(restock.pk)
            refs.append(f"{settings.FACTORY_REFERENCE_PREFIX}-{restock.pk}")
        if not self.factory.wait_answered(refs, timeout=120):
            raise SystemExit("warm-up restocks never reached the factory; see the workers' logs")

    def idle_phase(self, samples: int) -> Latencies:
        """One shortage at a time on an empty queue."""
        products = self.products_create(samples, "IDLE")
        shortages = []
        for product in products:
            s = self.shortage(product.sku)
            if not self.factory.wait_answered([s.reference], timeout=60):
                raise SystemExit(f"{s.reference} never reached the factory; see the worker's log")
            shortages.append(s)
            time.sleep(random.uniform(0.02, 0.05))  # the worker records the outcome; the queue is empty again
        return self.latencies(shortages)

    def backlog_phase(
        self, backlog: int, samples: int, *, spacing: float = 0.0, dispatch=None, pause_node: str | None = None
    ) -> dict:
        """`backlog` restocks of other SKUs queued first, then `samples` shortages, `spacing` seconds apart
        (0: at once, so every one of them is behind the whole backlog).

        The worker's consumer is paused while the backlog is dispatched, so the queue really holds them all
        when the shortages are made; the time to drain it gives restocks per second. `dispatch` replaces
        restock_dispatch for the backlog only (routing experiments).
        """
        from celery import current_app
        from django.conf import settings

        from factory.services import restock_dispatch
        from inventory.models import Restock

        dispatch = dispatch or restock_dispatch
        products = self.products_create(backlog, "BACK")
        Restock.objects.bulk_create(
            Restock(product=p, quantity=100, reason=Restock.Reason.REORDER_POINT) for p in products
        )
        restock_ids = list(Restock.objects.filter(product__in=products).order_by("pk").values_list("pk", flat=True))
        targets = self.products_create(samples, "SHORT")

        control = current_app.control
        node = pause_node or node_name()
        if not control.cancel_consumer(QUEUE, destination=[node], reply=True, timeout=5):
            raise SystemExit(f"worker {node} did not answer cancel_consumer")
        started = time.perf_counter()
        for restock_id in restock_ids:
            dispatch(restock_id)
        dispatch_seconds = time.perf_counter() - started
        queued = self.queue_length()
        if not control.add_consumer(QUEUE, destination=[node], reply=True, timeout=5):
            raise SystemExit(f"worker {node} did not answer add_consumer")
        resumed = time.perf_counter()
        shortages = []
        for n, product in enumerate(targets):
            if spacing:
                time.sleep(max(0.0, resumed + n * spacing - time.perf_counter()))
            shortages.append(self.shortage(product.sku))
        backlog_refs = [f"{settings.FACTORY_REFERENCE_PREFIX}-{pk}" for pk in restock_ids]
        refs = backlog_refs + [s.reference for s in shortages]
        expected = max(60.0, 3 * len(refs) * self.latency_ms / 1000)
        if not self.factory.wait_answered(refs, timeout=expected):
            missing = sum(1 for r in refs if r not in self.factory.answered)
            pending = Restock.objects.pending().count()
            raise SystemExit(
                f"{missing} restocks never reached the factory ({pending} pending in the database, "
                f"{self.queue_length()} messages in the queue); see the worker's log in {LOG_DIR}"
            )
        answered = sorted(self.factory.answered[r] for r in refs)
        lo, hi = answered[len(answered) // 10], answered[len(answered) * 9 // 10]
        steady = (len(answered) * 8 // 10) / (hi - lo) if hi > lo else float("nan")
        return {
            "latencies": self.latencies(shortages),
            "queued": queued,
            "dispatch_per_second": len(restock_ids) / dispatch_seconds,
            "drain_seconds": answered[-1] - resumed,
            "restocks_per_second": len(refs) / (answered[-1] - resumed),
            "steady_per_second": steady,
        }


# --- measuring the worker's cost -------------------------------------------------------------------


class CpuMeter:
    """Cores used by the workers' process trees, MariaDB, this process (simulator + sales), and the machine."""

    def __init__(self, *worker_pids: int):
        self.worker_pids = worker_pids

    def __enter__(self):
        self.before = self._sample()
        return self

    def __exit__(self, *exc):
        after = self._sample()
        wall = after["wall"] - self.before["wall"]
        self.cores = {k: (after[k] - self.before[k]) / wall for k in after if k != "wall"}
        self.cores["other"] = max(
            0.0, self.cores["machine"] - self.cores["worker"] - self.cores["mariadb"] - self.cores["bench"]
        )
        self.worker_cpu_seconds = after["worker"] - self.before["worker"]
        self.worker_rss_mb = sum(_rss_kb(p) for w in self.worker_pids for p in process_tree(w)) / 1024

    def _sample(self) -> dict:
        return {
            "wall": time.monotonic(),
            "machine": machine_busy_seconds(),
            "worker": sum(process_seconds(p) for w in self.worker_pids for p in process_tree(w)),
            "mariadb": sum(process_seconds(p) for p in pids_named("mariadbd")),
            "bench": process_seconds(os.getpid()),
        }


def _rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
    except OSError:
        return 0


class ConnectionCounter:
    """The most connections the worker held to the bench database, sampled every 0.2 s from a thread."""

    def __enter__(self):
        from django.conf import settings

        self.name = settings.DATABASES["default"]["NAME"]
        self.most = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopped.set()
        self.thread.join()

    def _run(self):
        from django.db import connection

        try:
            while not self.stopped.wait(0.2):
                with connection.cursor() as cur:
                    cur.execute("SELECT COUNT(*) FROM information_schema.processlist WHERE db = %s", [self.name])
                    # Not this process's own two (the main thread's and this one's).
                    self.most = max(self.most, cur.fetchone()[0] - 2)
        finally:
            connection.close()


def restock_outcomes() -> dict:
    from django.db.models import Count

    from factory.models import DeadLetter
    from inventory.models import Restock

    statuses = dict(Restock.objects.values_list("status").annotate(n=Count("pk")).values_list("status", "n"))
    return {"statuses": statuses, "dead_letters": DeadLetter.objects.count()}


# --- one pool, measured ----------------------------------------------------------------------------


def pool_run(
    bench: Bench,
    pool: Pool,
    urgent: Pool,
    *,
    idle: int,
    backlog: int,
    backlog_samples: int,
    env: dict,
    spacing: float = 0.0,
) -> dict:
    bench.redis.flushdb()
    first_id = bench.last_restock_id()
    worker = worker_start(pool, env)
    urgent_worker = worker_start(urgent, env, queues=URGENT_QUEUE, name=URGENT_NAME)
    pids = (worker.popen.pid, urgent_worker.popen.pid)
    print(f"  worker pids: routine {worker.popen.pid}, urgent {urgent_worker.popen.pid}", flush=True)
    try:
        bench.warm(pool, urgent)
        with CpuMeter(*pids) as idle_meter:
            result = {"pool": str(pool), "urgent_pool": str(urgent), "idle": bench.idle_phase(idle)}
        result["idle_cores"] = idle_meter.cores
        with CpuMeter(*pids) as meter, ConnectionCounter() as connections:
            result |= bench.backlog_phase(backlog, backlog_samples, spacing=spacing)
        result["spacing"] = spacing
        drained = backlog + backlog_samples
        result["cores"] = meter.cores
        result["worker_cpu_ms_per_restock"] = meter.worker_cpu_seconds / drained * 1000
        result["worker_rss_mb"] = meter.worker_rss_mb
        result["db_connections"] = connections.most
        bench.wait_recorded(first_id)
    finally:
        worker.stop()
        urgent_worker.stop()
    return result


def _print_pool(r: dict, latency_ms: float) -> None:
    idle, back = r["idle"], r["latencies"]
    i, b = idle.summary("to_accepted"), back.summary("to_accepted")
    ia = idle.summary("to_arrival")
    print(f"\n  [routine worker {r['pool']}, urgent worker {r['urgent_pool']}]")
    print(
        f"  1 idle, {idle.samples} shortages: commit -> order accepted p50 {i[50]:.1f} p95 {i[95]:.1f} "
        f"p99 {i[99]:.1f} max {i['max']:.1f} ms; factory answer {latency_ms:.0f} ms configured, "
        f"p99 over it {i[99] - latency_ms:+.1f} ms"
    )
    print(
        f"    commit -> POST arrives p50 {ia[50]:.1f} p99 {ia[99]:.1f} ms; "
        "commit -> sale_create returns (after the on-commit dispatch) "
        f"p50 {idle.summary('dispatch')[50]:.2f} ms; "
        f"factory's own answer p99 {idle.summary('factory_answer')[99]:.1f} ms"
    )
    ic = r["idle_cores"]
    print(f"    cores busy meanwhile {ic['machine']:.2f}, of which other processes {ic['other']:.2f}")
    print(
        f"  2 behind {r['queued']} queued restocks ({back.samples} shortages made "
        f"{f'{spacing:g} s apart' if (spacing := r['spacing']) else 'at once'}, "
        f"{min(back.queued_ahead)}-{max(back.queued_ahead)} routine messages queued as each was made): "
        f"commit -> order accepted p50 {b[50]:.1f} p95 {b[95]:.1f} p99 {b[99]:.1f} max {b['max']:.1f} ms"
    )
    if back.steps:
        names = ("commit->consumer", "->thread", "->call", "->connected", "->POST arrives")
        medians = [summary([row[i] for row in back.steps])[50] for i in range(len(names))]
        steps = ", ".join(f"{n} {m:.1f}" for n, m in zip(names, medians, strict=True))
        print(f"    where the time went (ms), median: {steps}")
        slowest = sorted(range(back.samples), key=lambda i: back.to_arrival[i])[-3:]
        for i in reversed(slowest):
            row = ", ".join(f"{n} {v:.1f}" for n, v in zip(names, back.steps[i], strict=True))
            gcs = "; ".join(f"pid {pid} {ms} ms" for pid, ms in back.gc_pauses[i]) or "none"
            print(f"      shortage {i + 1}: commit->POST arrives {back.to_arrival[i]:.1f}: {row}; full GCs: {gcs}")
    c = r["cores"]
    print(
        f"  3 drain: {r['restocks_per_second']:.1f} restocks/s overall, {r['steady_per_second']:.1f}/s steady "
        f"(ideal {int(r['pool'].split(':')[1]) * 1000 / latency_ms:.0f}/s = concurrency / answer time); "
        f"workers {r['worker_cpu_ms_per_restock']:.1f} ms CPU per restock, RSS {r['worker_rss_mb']:.0f} MB, "
        f"up to {r['db_connections']} DB connections"
    )
    print(
        f"    cores busy {c['machine']:.2f}: workers {c['worker']:.2f}, MariaDB {c['mariadb']:.2f}, "
        f"simulator+bench {c['bench']:.2f}, other processes {c['other']:.2f}; "
        f"backlog dispatched at {r['dispatch_per_second']:.0f}/s"
    )


def machine_busy(seconds: float = 3.0) -> float:
    """Cores busy over the next `seconds`, whoever uses them."""
    before = machine_busy_seconds()
    time.sleep(seconds)
    return (machine_busy_seconds() - before) / seconds


def quiet_wait(limit: float) -> None:
    """On a shared machine, wait up to `limit` seconds for the CPUs to be nearly idle before measuring."""
    deadline = time.monotonic() + limit
    while limit > 0:
        busy = machine_busy()
        if busy < 0.2:
            print(f"  (machine quiet: {busy:.2f} cores busy)", flush=True)
            return
        if time.monotonic() > deadline:
            print(f"  (machine still busy after {limit:.0f} s: {busy:.2f} cores; measuring anyway)", flush=True)
            return


def gevent_available(env: dict) -> bool:
    probe = subprocess.run([sys.executable, "-c", "import gevent"], env=env, capture_output=True, check=False)
    return probe.returncode == 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    compose_pool, compose_urgent = compose_pools()
    parser.add_argument(
        "--pool", type=Pool.parse, default=compose_pool, help=f"the routine worker's (compose: {compose_pool})"
    )
    parser.add_argument(
        "--urgent-pool", type=Pool.parse, default=compose_urgent, help=f"the urgent worker's ({compose_urgent})"
    )
    parser.add_argument("--latency-ms", type=float, default=200.0, help="the factory's answer time (default 200)")
    parser.add_argument("--idle", type=int, default=150, help="shortages on an idle queue (default 150)")
    parser.add_argument("--backlog", type=int, default=1000, help="restocks queued ahead (default 1000)")
    parser.add_argument("--backlog-samples", type=int, default=50, help="shortages behind the backlog (50)")
    parser.add_argument(
        "--spacing",
        type=float,
        default=0.1,
        metavar="S",
        help="seconds between the shortages made behind the backlog (default 0.1: 10 a second while it "
        "drains; 0 makes them all at once, so they also queue behind each other)",
    )
    parser.add_argument(
        "--compare",
        default="",
        help="other routine-worker pools for a shorter run each, e.g. threads:32,prefork:2 (default: none)",
    )
    parser.add_argument("--compare-idle", type=int, default=40, help="idle shortages per compared pool (40)")
    parser.add_argument("--compare-backlog", type=int, default=300, help="backlog per compared pool (300)")
    parser.add_argument(
        "--worker-pythonpath",
        default=os.environ.get("BENCH_WORKER_PYTHONPATH", ""),
        help="extra PYTHONPATH for the worker, e.g. a `pip install --target DIR gevent` (gevent is not a "
        "project dependency)",
    )
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=0,
        metavar="S",
        help="before each pool's run, wait up to S seconds for the machine's CPUs to be idle (shared machines)",
    )
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--trace",
        action="store_true",
        help="run the workers with bench/worker_trace.py and print where the slowest shortages' time went",
    )
    args = parser.parse_args(argv)
    compare = [Pool.parse(p) for p in args.compare.split(",") if p.strip()]

    def on_signal(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    # Both, explicitly: a shell that starts us in the background may have left SIGINT ignored.
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    started = time.monotonic()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{os.cpu_count()} CPUs, load average {load} before the run (other work on the machine skews the figures)")
    bench = None
    results = []
    failures = []
    try:
        bench = Bench(args.latency_ms)
        db, _guard = database_recreate("BENCH_RESTOCK_DATABASE_URL")  # held until the process exits
        bench.setup_database()
        bench.redis.flushdb()
        if args.trace:
            trace_path = LOG_DIR / "worker-trace.jsonl"
            LOG_DIR.mkdir(parents=True, exist_ok=True)
            trace_path.write_text("")
            bench.env["BENCH_TRACE_FILE"] = str(trace_path)
        env = dict(bench.env)
        if args.worker_pythonpath:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [args.worker_pythonpath, env.get("PYTHONPATH", "")]))
        print(
            f"database {db['NAME']} migrated, broker {os.environ['CELERY_BROKER_URL']}, factory simulator at "
            f"{bench.factory_url} answering in {args.latency_ms:.0f} ms; setup {time.monotonic() - started:.0f} s",
            flush=True,
        )
        runs = [(args.pool, args.idle, args.backlog, args.backlog_samples)]
        runs += [(p, args.compare_idle, args.compare_backlog, 10) for p in compare if p != args.pool]
        for pool, idle, backlog, samples in runs:
            if pool.kind == "gevent" and not gevent_available(env):
                print(f"\n  [{pool}] skipped: gevent is not importable by the worker (see --worker-pythonpath)")
                continue
            quiet_wait(args.quiet_wait)
            try:
                result = pool_run(
                    bench,
                    pool,
                    args.urgent_pool,
                    idle=idle,
                    backlog=backlog,
                    backlog_samples=samples,
                    env=env,
                    spacing=args.spacing,
                )
            except SystemExit as exc:
                if pool == args.pool:
                    raise
                failures.append(f"{pool}: {exc}")
                print(f"\n  [{pool}] FAILED: {exc}", flush=True)
                continue
            results.append(result)
            _print_pool(result, args.latency_ms)
        outcomes = restock_outcomes()
    finally:
        Child.stop_all()
        if bench is not None:
            bench.stop()
            bench.redis.flushdb()

    main_result = results[0]
    idle99 = main_result["idle"].summary("to_accepted")[99]
    back99 = main_result["latencies"].summary("to_accepted")[99]
    drain = main_result["restocks_per_second"]
    verdicts = {
        "idle": idle99 <= TARGET_IDLE_MS,
        "backlog": back99 <= TARGET_BACKLOG_MS,
        "drain": drain >= TARGET_DRAIN_PER_SECOND,
    }

    def verdict(name):
        return "MET" if verdicts[name] else "NOT MET"

    print(
        f"\nSummary (routine worker {args.pool}, urgent worker {args.urgent_pool}, factory answering in "
        f"{args.latency_ms:.0f} ms; other processes used {main_result['idle_cores']['other']:.2f} cores idle, "
        f"{main_result['cores']['other']:.2f} during the backlog):"
    )
    print(f"  idle: p99 commit -> order accepted {idle99:.1f} ms (target <= {TARGET_IDLE_MS:.0f}): {verdict('idle')}")
    print(
        f"  behind {main_result['queued']} queued routine restocks: p99 {back99:.1f} ms "
        f"(target <= {TARGET_BACKLOG_MS:.0f}): {verdict('backlog')}"
    )
    print(
        f"  routine worker drain: {drain:.1f} restocks/s (target >= {TARGET_DRAIN_PER_SECOND:.0f}): {verdict('drain')}"
    )
    if len(results) > 1:
        print("\n  routine pool  idle p50/p99 ms  backlog p99 ms  restocks/s (steady)  workers CPU ms/restock  RSS MB")
        for r in results:
            s = r["idle"].summary("to_accepted")
            b = r["latencies"].summary("to_accepted")
            print(
                f"  {r['pool']:12} {s[50]:7.1f} /{s[99]:7.1f}  {b[99]:9.1f}     "
                f"{r['restocks_per_second']:7.1f} ({r['steady_per_second']:6.1f})"
                f"   {r['worker_cpu_ms_per_restock']:12.1f}            {r['worker_rss_mb']:6.0f}"
            )
    print(f"  restocks by status at the end: {outcomes['statuses']}; dead letters: {outcomes['dead_letters']}")
    print(f"  factory: {len(bench.factory.arrived)} orders, {bench.factory.repeats} repeated POSTs")
    for failure in failures:
        print(f"  FAILED {failure}")
    print(f"\ntotal time {time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(
            json.dumps(
                [{k: asdict(v) if isinstance(v, Latencies) else v for k, v in r.items()} for r in results], indent=2
            )
        )
    problems = failures or outcomes["dead_letters"] or set(outcomes["statuses"]) - {"placed"}
    return 1 if problems else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        Child.stop_all()
        print("interrupted; the worker processes are stopped", file=sys.stderr)
        sys.exit(130)

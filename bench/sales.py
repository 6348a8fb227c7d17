"""The sales benchmark (`make bench`): how fast can we sell donuts, against what the stack allows?

One run, on a database created fresh (BENCH_DATABASE_URL, default donut_bench on 127.0.0.1):

  a   GET  /bench/bare/ on the same gunicorn server: a bare Django JsonResponse (Django + gunicorn floor)
  b   POST /api/v1/sales/ selling 1 of one hot SKU, from `--connections` wrk connections
  c   the same spread over 1,000 SKUs, one picked at random per request (bench/sales.lua)
  e   POST /api/v1/sales/ buying 1 of a SKU at 0 with an open restock: every answer a 409 (a sold-out rush)
  f   the same with a fresh Idempotency-Key per request (each refusal is stored under its key)
  d1  the database's limit for a sale: a bare MySQLdb client with workers*threads connections running
      BEGIN; SELECT .. FOR UPDATE; UPDATE; INSERT; COMMIT on one hot row of its own small tables
  d2  the same spread over 1,000 rows

It prints requests/s, p50/p95/p99 and non-2xx responses per phase, the ratios b/d1, c/a, e/a and f/a against
the targets, then checks that nothing was oversold and the ledger balances (exit 1 if not; missed
targets only print NOT MET). `--configs` runs phases against several gunicorn configurations in turn,
`--profile N` profiles N sales of workload b in this process. `--floors` adds phases that run other
designs of the sale on the same server (bench/floors.py): where the API's cost goes, and what designs
the app does not use would reach.

    .venv/bin/python -m bench.sales --help
"""

import argparse
import cProfile
import io
import json
import os
import pstats
import random
import resource
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import (
    LOG_DIR,
    ROOT,
    database_recreate,
    machine_busy_seconds,
    mysql_args,
    percentile,
    pids_named,
    process_seconds,
    process_tree,
)

LUA = ROOT / "bench" / "sales.lua"
os.environ["DJANGO_SETTINGS_MODULE"] = "bench.settings"  # forced: this script drops its database

HOT_SKU = "HOT"
SOLD_OUT_SKU = "SOLDOUT"  # at 0 with an open restock; bench/sales.lua names it too
INITIAL_STOCK = 10_000_000  # far more than any run sells, so no sale is refused and no restock opens
TARGET_B_OVER_D1 = 0.50
TARGET_B_P99_MS = 100.0
TARGET_C_OVER_A = 0.30
TARGET_E_OVER_A = 0.50
TARGET_E_P99_MS = 100.0
TARGET_F_OVER_A = 0.30

# --floors: phase -> (title, wrk mode, path); run after a, b and c on the first configuration.
FLOORS = {
    "drf": ("floor: DRF stack, no database", "spread", "/bench/floor/drf/"),
    "sql-b": ("floor: sale SQL, plain view, hot", "hot", "/bench/floor/sql/"),
    "sql-c": ("floor: sale SQL, plain view, spread", "spread", "/bench/floor/sql/"),
    "proc-b": ("floor: DRF + procedure, hot", "hot", "/bench/floor/proc/"),
    "proc-c": ("floor: DRF + procedure, spread", "spread", "/bench/floor/proc/"),
    "refuse-view": ("floor: sold-out read, plain view", "soldout", "/bench/floor/refuse-view/"),
    "refuse-drf": ("floor: sold-out read, DRF", "soldout", "/bench/floor/refuse-drf/"),
    "refuse-view-key": ("floor: sold-out read + key row, plain view", "soldout-keys", "/bench/floor/refuse-view/"),
}

PHASE_TITLES = {
    "a": "bare JsonResponse (GET)",
    "b": "sale, 1 hot SKU",
    "c": "sale, random of {skus} SKUs",
    "e": "sold out (409), 1 SKU at 0",
    "f": "sold out (409), fresh Idempotency-Key",
    "d1": "DB-only sale txn, 1 hot row",
    "d2": "DB-only sale txn, {skus} rows",
    **{phase: title for phase, (title, _, _) in FLOORS.items()},
}


@dataclass
class PhaseResult:
    phase: str
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    requests: int
    non2xx: int
    errors: int  # socket errors and timeouts (wrk) or failed transactions (d)
    statuses: dict = field(default_factory=dict)
    note: str = ""
    cores: dict = field(default_factory=dict)


@dataclass
class GunicornConfig:
    worker_class: str
    workers: int
    threads: int

    @classmethod
    def parse(cls, text: str) -> "GunicornConfig":
        """`sync:4`, `gthread:2x4` (workers x threads)."""
        kind, _, shape = text.partition(":")
        workers, _, threads = shape.partition("x")
        return cls(kind, int(workers), int(threads or 1))

    @classmethod
    def from_conf_file(cls) -> "GunicornConfig":
        """What gunicorn.conf.py chooses with the current environment: the production defaults."""
        import runpy

        conf = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
        return cls(conf["worker_class"], conf["workers"], conf["threads"])

    @property
    def slots(self) -> int:
        """Requests the server runs at once, so database connections it can hold."""
        return self.workers * (self.threads if self.worker_class == "gthread" else 1)

    def __str__(self):
        return f"{self.worker_class} {self.workers}x{self.threads}"


# --- setup -----------------------------------------------------------------------------------------


def _procedure_create(db: dict) -> None:
    import MySQLdb

    from bench.floors import procedure_create

    conn = MySQLdb.connect(**mysql_args(db))
    try:
        procedure_create(conn.cursor())
    finally:
        conn.close()


def app_setup(skus: int) -> tuple[str, dict[str, int]]:
    """Migrate, stock the products through the service (so the ledger has their opening rows), make a key."""
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)

    from django.db import connections

    from clients.models import ApiClient
    from inventory.models import Restock
    from inventory.services import product_set_stock

    initial = {}
    for sku in [HOT_SKU, *(spread_sku(i) for i in range(skus))]:
        product_set_stock(sku=sku, quantity=INITIAL_STOCK, price="1.50", name=sku, create=True)
        initial[sku] = INITIAL_STOCK
    # Sold out, its restock already open (never sent: no worker runs), as after the first minute of a rush.
    # set_stock opens it already when the product is created at or below its reorder point.
    sold_out = product_set_stock(sku=SOLD_OUT_SKU, quantity=0, price="1.50", name=SOLD_OUT_SKU, create=True)
    if not Restock.objects.open().filter(product=sold_out).exists():
        Restock.objects.create(product=sold_out, quantity=100, reason=Restock.Reason.SHORTAGE)
    initial[SOLD_OUT_SKU] = 0
    client = ApiClient(name="bench")
    key = client.set_new_key()
    client.save()
    connections.close_all()
    return key, initial


def spread_sku(i: int) -> str:
    return f"S{i:04d}"  # bench/sales.lua builds the same names


def db_tables_create(db: dict, rows: int) -> None:
    import MySQLdb

    conn = MySQLdb.connect(**mysql_args(db), autocommit=True)
    try:
        cur = conn.cursor()
        cur.execute("CREATE TABLE bench_stock (id INT PRIMARY KEY, on_hand INT NOT NULL) ENGINE=InnoDB")
        cur.execute(
            "CREATE TABLE bench_sale (id BIGINT AUTO_INCREMENT PRIMARY KEY, stock_id INT NOT NULL, "
            "quantity INT NOT NULL, created_at DATETIME(6) NOT NULL, KEY (stock_id)) ENGINE=InnoDB"
        )
        cur.executemany(
            "INSERT INTO bench_stock (id, on_hand) VALUES (%s, %s)", [(i, INITIAL_STOCK) for i in range(1, rows + 1)]
        )
    finally:
        conn.close()


# --- the gunicorn server and wrk -------------------------------------------------------------------


class Server:
    """gunicorn with gunicorn.conf.py and the bench settings, on a port of its own."""

    def __init__(self, config: GunicornConfig, port: int, log_path: Path):
        self.config, self.port, self.log_path = config, port, log_path
        self.proc = None

    def __enter__(self):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", self.port)) == 0:
                raise SystemExit(f"something already listens on 127.0.0.1:{self.port}; pick another --port")
        env = {
            **os.environ,
            "GUNICORN_BIND": f"127.0.0.1:{self.port}",
            "GUNICORN_WORKERS": str(self.config.workers),
            "GUNICORN_THREADS": str(self.config.threads),
            "GUNICORN_WORKER_CLASS": self.config.worker_class,
        }
        env.pop("GUNICORN_ACCESS_LOG", None)
        self.log = open(self.log_path, "ab")  # closed in __exit__
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py")],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"gunicorn exited with {self.proc.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/bench/bare/", timeout=2) as r:  # noqa: S310
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"gunicorn did not answer within 60 s; see {self.log_path}")

    def __exit__(self, *exc):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class CpuMeter:
    """Cores busy during a phase and who used them, read from /proc: the app server (gunicorn and its
    workers), MariaDB, the load generator (wrk, or this process's threads for d1/d2) and everything
    else on the machine, which is noise in the figures when it is not near zero."""

    def __init__(self, server_pid: int | None = None):
        self.server_pid = server_pid
        self.cores: dict[str, float] = {}

    def __enter__(self):
        self.pids = {"app": process_tree(self.server_pid) if self.server_pid else [], "db": pids_named("mariadbd")}
        self.before = self._sample()
        return self

    def __exit__(self, *exc):
        after = self._sample()
        seconds = after["wall"] - self.before["wall"]
        used = {k: (after[k] - self.before[k]) / seconds for k in ("machine", "app", "db", "load")}
        used["other"] = max(0.0, used["machine"] - used["app"] - used["db"] - used["load"])
        self.cores = used

    def _sample(self) -> dict:
        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk once it has exited; not gunicorn
        return {
            "wall": time.monotonic(),
            "machine": machine_busy_seconds(),
            "app": sum(process_seconds(p) for p in self.pids["app"]),
            "db": sum(process_seconds(p) for p in self.pids["db"]),
            "load": own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime,
        }

    def __str__(self):
        c = self.cores
        return f"cores used: app {c['app']:.2f}, db {c['db']:.2f}, load gen {c['load']:.2f}, other {c['other']:.2f}"


def wrk_run(
    url: str, mode: str, seconds: int, args, api_key: str, meter: CpuMeter | None = None, path: str = ""
) -> PhaseResult:
    env = {**os.environ, "BENCH_MODE": mode, "BENCH_API_KEY": api_key, "BENCH_SKUS": str(args.skus)}
    if path:
        env["BENCH_PATH"] = path
    cmd = ["wrk", f"-t{args.wrk_threads}", f"-c{args.connections}", f"-d{seconds}s", "--timeout", "10s"]
    cmd += ["-s", str(LUA), url]
    with meter or CpuMeter():
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=seconds + 60, check=False)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    lat = data["latency_us"]
    return PhaseResult(
        phase=mode,
        rps=data["requests"] / (data["duration_us"] / 1e6),
        p50_ms=lat["p50"] / 1000,
        p95_ms=lat["p95"] / 1000,
        p99_ms=lat["p99"] / 1000,
        max_ms=lat["max"] / 1000,
        requests=data["requests"],
        non2xx=data["non2xx"],
        errors=sum(data["errors"].values()),
        statuses={int(k): v for k, v in data["statuses"].items()},
    )


# --- the database's own limit (d1, d2) -------------------------------------------------------------


def db_sale_phase(db: dict, rows: int, connections: int, seconds: float, warmup: float) -> PhaseResult:
    """The minimal sale transaction from `connections` threads, each with its own connection."""
    import MySQLdb

    stop = threading.Event()
    done: list[list[tuple[float, float]]] = [[] for _ in range(connections)]  # (finished at, latency)
    failures = [0] * connections

    def worker(n: int):
        rng = random.Random(n)
        conn = MySQLdb.connect(**mysql_args(db), autocommit=True)
        cur = conn.cursor()
        cur.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")  # as the app's connections
        mine = done[n]
        while not stop.is_set():
            stock_id = 1 if rows == 1 else rng.randint(1, rows)
            started = time.perf_counter()
            try:
                cur.execute("BEGIN")
                cur.execute("SELECT on_hand FROM bench_stock WHERE id = %s FOR UPDATE", (stock_id,))
                (on_hand,) = cur.fetchone()
                if on_hand < 1:
                    cur.execute("ROLLBACK")
                    continue
                cur.execute("UPDATE bench_stock SET on_hand = %s WHERE id = %s", (on_hand - 1, stock_id))
                cur.execute(
                    "INSERT INTO bench_sale (stock_id, quantity, created_at) VALUES (%s, 1, NOW(6))", (stock_id,)
                )
                cur.execute("COMMIT")
            except MySQLdb.Error:
                failures[n] += 1
                cur.execute("ROLLBACK")
                continue
            finished = time.perf_counter()
            mine.append((finished, finished - started))
        conn.close()

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(connections)]
    for t in threads:
        t.start()
    time.sleep(warmup)
    with CpuMeter() as meter:
        window_start = time.perf_counter()
        time.sleep(seconds)
        window_end = time.perf_counter()
    stop.set()
    for t in threads:
        t.join()
    latencies = sorted(lat for per in done for (at, lat) in per if window_start <= at < window_end)
    return PhaseResult(
        phase="d1" if rows == 1 else "d2",
        rps=len(latencies) / (window_end - window_start),
        p50_ms=percentile(latencies, 50) * 1000,
        p95_ms=percentile(latencies, 95) * 1000,
        p99_ms=percentile(latencies, 99) * 1000,
        max_ms=(latencies[-1] if latencies else 0) * 1000,
        requests=len(latencies),
        non2xx=0,
        errors=sum(failures),
        note=f"{connections} connections",
        cores=meter.cores,
    )


# --- checks ----------------------------------------------------------------------------------------


def invariants_check(initial: dict[str, int], db: dict, db_rows: int, responses_201: int) -> list[str]:
    """Everything that must hold after the run; an empty list means it all did."""
    import MySQLdb
    from django.db.models import Sum

    from inventory.models import Product, Restock, Sale, SaleLine

    problems = []
    open_restocks = Restock.objects.open().filter(product__sku=SOLD_OUT_SKU).count()
    if open_restocks != 1:
        problems.append(f"{SOLD_OUT_SKU}: {open_restocks} open restocks, not 1")
    sold = dict(SaleLine.objects.values("product__sku").annotate(n=Sum("quantity")).values_list("product__sku", "n"))
    for product in Product.objects.order_by("pk"):
        if product.on_hand < 0:
            problems.append(f"oversold: {product.sku} on hand {product.on_hand}")
        expected = initial[product.sku] - (sold.get(product.sku) or 0)
        if product.on_hand != expected:
            problems.append(f"{product.sku}: on hand {product.on_hand}, initial - sold = {expected}")
    sales = Sale.objects.count()
    # A sale committed while wrk was stopping may have no counted response; a 201 without a sale is a bug.
    if responses_201 > sales:
        problems.append(f"{responses_201} responses said 201 Created but only {sales} sales exist")
    print(f"  sales recorded: {sales}; 201 responses counted by wrk: {responses_201}")

    ledger = subprocess.run(
        [sys.executable, "manage.py", "check_ledger", "--settings=bench.settings"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    print(f"  manage.py check_ledger: exit {ledger.returncode}: {(ledger.stdout + ledger.stderr).strip()}")
    if ledger.returncode != 0:
        problems.append("check_ledger failed")

    conn = MySQLdb.connect(**mysql_args(db))
    try:
        cur = conn.cursor()
        cur.execute(
            "SELECT COUNT(*) FROM bench_stock s LEFT JOIN (SELECT stock_id, SUM(quantity) q FROM bench_sale "
            "GROUP BY stock_id) t ON t.stock_id = s.id WHERE s.on_hand < 0 OR s.on_hand + COALESCE(t.q, 0) != %s",
            (INITIAL_STOCK,),
        )
        (bad_rows,) = cur.fetchone()
    finally:
        conn.close()
    if bad_rows:
        problems.append(f"d tables: {bad_rows} of {db_rows} stock rows disagree with their sales")
    return problems


# --- profile (--profile N) -------------------------------------------------------------------------


def profile_sales(n: int, api_key: str) -> int:
    """N sales of workload b through the real WSGI handler in this process, one at a time (no contention).

    Not the test client: it skips close_old_connections, so it would hide the per-request health-check ping.
    """
    import MySQLdb.connections
    from django.core.wsgi import get_wsgi_application
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    app = get_wsgi_application()
    body = json.dumps({"items": [{"sku": HOT_SKU, "quantity": 1}]}).encode()

    def call(method: str, path: str, data: bytes = b"") -> int:
        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": "127.0.0.1",
            "HTTP_AUTHORIZATION": f"Api-Key {api_key}",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(data)),
            "wsgi.input": io.BytesIO(data),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "wsgi.version": (1, 0),
        }
        status = []
        result = app(environ, lambda s, h, exc_info=None: status.append(s))
        try:
            b"".join(result)
        finally:
            result.close()
        return int(status[0].split()[0])

    def sell() -> int:
        return call("POST", "/api/v1/sales/", body)

    for _ in range(50):  # warm imports, caches, the connection
        assert sell() == 201 and call("GET", "/bench/bare/") == 200

    # Round trips to MariaDB: statements, plus commit/ping/autocommit calls that are not cursor statements.
    counts: dict[str, int] = {}
    conn_cls = MySQLdb.connections.Connection
    originals = {name: getattr(conn_cls, name) for name in ("query", "commit", "rollback", "ping", "autocommit")}

    def counting(name):
        original = originals[name]

        def wrapper(self, *a):
            if name != "autocommit" or self.get_autocommit() != bool(a[0]):
                counts[name] = counts.get(name, 0) + 1
            return original(self, *a)

        return wrapper

    for name in originals:
        setattr(conn_cls, name, counting(name))
    try:
        with CaptureQueriesContext(connection) as captured:
            assert sell() == 201
    finally:
        for name, original in originals.items():
            setattr(conn_cls, name, original)
    print(f"\nProfile of one sale (workload b), single-threaded, {n} requests:")
    statements = [q["sql"] for q in captured.captured_queries if q["sql"] not in ("BEGIN", "COMMIT", "ROLLBACK")]
    print(f"  SQL statements: {len(statements)} (not counting the BEGIN and COMMIT markers Django logs):")
    for sql in statements:
        print(f"    {sql[:150]}")
    other = {k: v for k, v in counts.items() if k != "query"}
    print(f"  MariaDB round trips: {sum(counts.values())} ({counts.get('query', 0)} queries, other calls {other})")

    for label, fn in (("bare view", lambda: call("GET", "/bench/bare/")), ("sale", sell)):
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(n):
            fn()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(f"  {label:9}: {wall / n * 1000:.2f} ms wall, {cpu / n * 1000:.2f} ms CPU in this process per request")

    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(n):
        sell()
    profiler.disable()
    stats = pstats.Stats(profiler)
    areas = [
        ("whole request (WSGIHandler.__call__)", "django/core/handlers/wsgi.py", "__call__"),
        ("  close_old_connections (request start/end)", "django/db/__init__.py", "close_old_connections"),
        ("  DRF APIView.dispatch", "rest_framework/views.py", "dispatch"),
        ("    authentication (Api-Key, cached)", "clients/auth.py", "authenticate"),
        ("    throttle (one Redis INCR per request)", "clients/throttles.py", "allow_request"),
        ("    body validation (sale_items_validate)", "inventory/serializers.py", "sale_items_validate"),
        ("    services.sale_create", "inventory/services.py", "sale_create"),
        ("      products_lock (SELECT .. FOR UPDATE)", "inventory/services.py", "products_lock"),
        ("      _sale_write (UPDATE, 3 INSERTs)", "inventory/services.py", "_sale_write"),
        ("      atomic __exit__ (COMMIT, autocommit on)", "django/db/transaction.py", "__exit__"),
        ("      atomic __enter__ (health-check ping, autocommit off)", "django/db/transaction.py", "__enter__"),
        ("    sale counter (one Redis HINCRBY per answer)", "donutsite/sale_counters.py", "count_sale_outcome"),
        ("    sale_representation", "inventory/serializers.py", "sale_representation"),
        ("    JSONRenderer / finalize_response", "rest_framework/views.py", "finalize_response"),
        ("  SQL compile (SQLCompiler.as_sql, all)", "django/db/models/sql/compiler.py", "as_sql"),
        ("  MySQLdb query round trips (C, wall)", "MySQLdb/cursors.py", "_query"),
        ("  MySQLdb commit (C, wall)", "~", "<method 'commit' of '_mysql.connection' objects>"),
        ("  MySQLdb ping (C, wall)", "~", "<method 'ping' of '_mysql.connection' objects>"),
    ]
    print("  where the time goes (cumulative, profiled, ms per request; the profiler inflates Python time):")
    for label, file_end, func in areas:
        cum = sum(v[3] for (f, _, fn), v in stats.stats.items() if f.endswith(file_end) and fn == func)
        print(f"    {label:62} {cum / n * 1000:7.3f}")
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
    print("  top functions by own time:")
    print("\n".join("    " + ln for ln in out.getvalue().splitlines() if ln.strip())[:6000])
    return 50 + 1 + 2 * n  # the sales it made


# --- main ------------------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds measured per phase (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of unmeasured load before each phase")
    parser.add_argument("--connections", type=int, default=64, help="concurrent clients (default 64)")
    parser.add_argument("--skus", type=int, default=1000, help="SKUs (and d2 rows) in the spread workloads")
    parser.add_argument("--phases", default="a,b,c,e,f,d1,d2", help="comma-separated subset of a,b,c,e,f,d1,d2")
    parser.add_argument(
        "--configs",
        default="",
        help="gunicorn configurations to run a/b/c against, e.g. 'sync:4,gthread:2x4' "
        "(default: what gunicorn.conf.py picks from the environment)",
    )
    parser.add_argument("--port", type=int, default=0, help="port for the bench gunicorn (default: a free one)")
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (default 1: leave the CPUs to the app)")
    parser.add_argument(
        "--floors", action="store_true", help="also run other designs of the sale (bench/floors.py) after a, b, c"
    )
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="also profile N sales in-process")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if not args.port:
        with socket.socket() as s:  # a port nobody listens on now (the server binds it a moment later)
            s.bind(("127.0.0.1", 0))
            args.port = s.getsockname()[1]
    phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if unknown := set(phases) - set(PHASE_TITLES):
        parser.error(f"unknown phase(s) {', '.join(sorted(unknown))}; choose from {', '.join(PHASE_TITLES)}")
    configs = [GunicornConfig.parse(c) for c in args.configs.split(",") if c.strip()] or [
        GunicornConfig.from_conf_file()
    ]
    LOG_DIR.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{os.cpu_count()} CPUs, load average {load} before the run (other work on the machine skews the figures)")
    db, _guard = database_recreate("BENCH_DATABASE_URL")  # held until the process exits
    print(f"database {db['NAME']} created; migrating and stocking {args.skus + 1} products ...", flush=True)
    api_key, initial = app_setup(args.skus)
    db_tables_create(db, args.skus)
    if args.floors:
        phases += [p for p in FLOORS if p not in phases]
        _procedure_create(db)
    print(f"setup took {time.monotonic() - started:.0f} s", flush=True)

    results: dict[str, dict[str, PhaseResult]] = {}
    responses_201 = 0
    modes = {"a": "bare", "b": "hot", "c": "spread", "e": "soldout", "f": "soldout-keys"}
    for config in configs:
        http_phases = [p for p in phases if p in modes or (p in FLOORS and config is configs[0])]
        if not http_phases:
            break
        print(f"\ngunicorn {config} on port {args.port}, {args.connections} connections:", flush=True)
        with Server(config, args.port, LOG_DIR / "gunicorn.log") as server:
            for phase in http_phases:
                mode, path = (FLOORS[phase][1:]) if phase in FLOORS else (modes[phase], "")
                if args.warmup:
                    warm = wrk_run(server.url, mode, args.warmup, args, api_key, path=path)
                    responses_201 += warm.statuses.get(201, 0)
                meter = CpuMeter(server.proc.pid)
                result = wrk_run(server.url, mode, args.duration, args, api_key, meter, path=path)
                result.cores = meter.cores
                responses_201 += result.statuses.get(201, 0)
                result.phase = phase
                results.setdefault(str(config), {})[phase] = result
                _print_row(result, args.skus)

    db_slots = configs[0].slots
    for phase, rows in (("d1", 1), ("d2", args.skus)):
        if phase in phases:
            if phase == "d1" or "d1" not in phases:
                print(f"\ndatabase alone, {db_slots} connections (= {configs[0]} server's threads):", flush=True)
            result = db_sale_phase(db, rows, db_slots, args.duration, args.warmup)
            results.setdefault("db", {})[phase] = result
            _print_row(result, args.skus)

    if args.profile:
        responses_201 += profile_sales(args.profile, api_key)

    _print_summary(results, configs, phases)
    print("\nInvariants:")
    problems = invariants_check(initial, db, args.skus, responses_201)
    if args.json:
        args.json.write_text(
            json.dumps({k: {p: vars(r) for p, r in v.items()} for k, v in results.items()}, indent=2, default=str)
        )
    print(f"\ntotal time {time.monotonic() - started:.0f} s")
    if problems:
        print("INVARIANTS BROKEN:\n  " + "\n  ".join(problems))
        return 1
    print("invariants hold: nothing oversold, stock = initial - sold for every product, ledger balanced")
    return 0


def _print_row(r: PhaseResult, skus: int) -> None:
    title = PHASE_TITLES[r.phase].format(skus=f"{skus:,}")
    statuses = ", ".join(f"{k}:{v}" for k, v in sorted(r.statuses.items()) if not 200 <= k < 300)
    print(
        f"  {r.phase:6} {title:36} {r.rps:8.1f} req/s   p50 {r.p50_ms:7.2f} ms  p95 {r.p95_ms:7.2f} ms  "
        f"p99 {r.p99_ms:7.2f} ms   non-2xx {r.non2xx}{f' ({statuses})' if statuses else ''}  errors {r.errors}",
        flush=True,
    )
    if r.cores:
        c = r.cores
        print(
            f"      cores busy {c['machine']:.2f}: app {c['app']:.2f}, MariaDB {c['db']:.2f}, "
            f"load generator {c['load']:.2f}, other processes {c['other']:.2f}",
            flush=True,
        )


def _print_target(name, phase, base, target, p99_target) -> None:
    """One target line: the phase's req/s over its baseline's, and its p99 where the target has one."""
    ratio = phase.rps / base.rps
    met = ratio >= target and (p99_target is None or phase.p99_ms < p99_target)
    line = f"  {name:4} = {phase.rps:.1f} / {base.rps:.1f} = {ratio:.0%} (target >= {target:.0%})"
    if p99_target is not None:
        p99_name = name.partition("/")[0]
        line += f", p99({p99_name}) = {phase.p99_ms:.1f} ms (target < {p99_target:.0f} ms)"
    print(f"{line}: {'MET' if met else 'NOT MET'}")


def _print_summary(results, configs, phases) -> None:
    main_config = str(configs[0])
    ours = results.get(main_config, {})
    db = results.get("db", {})
    print(f"\nTargets (gunicorn {main_config}):")
    a, b, c, e, f = (ours.get(p) for p in "abcef")
    d1 = db.get("d1")
    for name, phase, base, target, p99_target in (
        ("b/d1", b, d1, TARGET_B_OVER_D1, TARGET_B_P99_MS),
        ("c/a", c, a, TARGET_C_OVER_A, None),
        ("e/a", e, a, TARGET_E_OVER_A, TARGET_E_P99_MS),
        ("f/a", f, a, TARGET_F_OVER_A, None),
    ):
        if phase and base:
            _print_target(name, phase, base, target, p99_target)
    floors = [(p, ours[p]) for p in FLOORS if p in ours]
    if floors:
        print("\nOther designs of the sale on the same server (bench/floors.py; not the app):")
        for phase, r in floors:
            base, name = (d1, "d1") if FLOORS[phase][1] == "hot" else (a, "a")
            ratio = f"{r.rps / base.rps:4.0%} of {name}" if base else ""
            print(f"  {phase:6} {FLOORS[phase][0]:36} {r.rps:8.1f} req/s  p99 {r.p99_ms:6.1f} ms  {ratio}")
    if len(configs) > 1:
        print("\nConfigurations compared (req/s, p99 ms, cores the app used, cores other processes took):")
        for config in configs:
            row = results.get(str(config), {})
            cells = [
                f"{p}: {r.rps:7.1f} req/s p99 {r.p99_ms:7.1f} app {r.cores['app']:.2f} other {r.cores['other']:.2f}"
                for p, r in sorted(row.items())
            ]
            print(f"  {str(config):14} " + "   ".join(cells))


if __name__ == "__main__":
    sys.exit(main())

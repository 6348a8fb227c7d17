"""Faults, load and bookkeeping for the chaos scenarios (donutsite/tests/test_chaos.py).

Everything here is real: private Redis and MariaDB servers the scenarios may SIGKILL and restart (the
machine's own servers are shared and never touched), the app's processes (testsupport.processes.System plus
beat and a second web server), client threads buying over HTTP with an Idempotency-Key on every request,
and `check_invariants`, which every scenario ends with. Only 127.0.0.1 is ever contacted.

`CHAOS_SCALE` (default 1; `make chaos` uses 5) multiplies purchases and durations.
"""

import http.client
import itertools
import json
import os
import random
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from django.db import connections
from django.db.models import Sum

from testsupport.processes import BIN, ROOT, Process, System, Worker, free_port, wait_until

SCALE = float(os.environ.get("CHAOS_SCALE") or 1)
TOOLS = {name: shutil.which(name) or name for name in ("redis-server", "mariadb-install-db", "mariadb", "mariadb-dump")}
OUTPUT = ROOT / "test-output" / "chaos"


def scaled(n: float) -> int:
    return max(1, round(n * SCALE))


def logs_dir() -> Path:
    """This run's directory for the processes' logs; those of runs that have ended are removed."""
    root = OUTPUT / "logs"
    root.mkdir(parents=True, exist_ok=True)
    for old in root.iterdir():
        if old.name.isdigit() and int(old.name) != os.getpid() and not _alive(int(old.name)):
            shutil.rmtree(old, ignore_errors=True)
    return root / str(os.getpid())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def record(name: str, figures: dict) -> Path:
    """Print a scenario's figures and write them to test-output/chaos/<name>.json."""
    OUTPUT.mkdir(parents=True, exist_ok=True)
    path = OUTPUT / f"{name}.json"
    text = json.dumps(figures, indent=2, sort_keys=False, default=str)
    partial = path.with_suffix(f".json.{os.getpid()}")
    partial.write_text(text + "\n")
    partial.replace(path)  # whole or not at all, if two runs write at once
    print(f"\n--- chaos scenario {name} ---\n{text}")
    return path


# --- private servers ----------------------------------------------------------------------------------


class RedisServer:
    """A redis-server of our own (no persistence: a restart loses every queued message, on purpose)."""

    def __init__(self, log_dir: Path):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="chaos-redis-")
        self.log_dir = log_dir
        self.starts = 0
        self.process: Process | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self, *, wait: bool = True) -> Process:
        self.starts += 1
        argv = [TOOLS["redis-server"], "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir]
        argv += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        self.process = Process(
            f"redis-{self.starts}",
            argv,
            {**os.environ},
            ready="Ready to accept connections",
            log_dir=self.log_dir,
            wait=wait,
        )
        return self.process

    def kill(self) -> None:
        self.process.kill(signal.SIGKILL)

    def client(self, db: int = 0):
        import redis

        return redis.Redis.from_url(self.url(db), socket_timeout=5)

    def queued(self) -> int:
        """Messages waiting in the queues plus those delivered but not yet acknowledged."""
        client = self.client()
        lists = [key for key in client.scan_iter() if client.type(key) == b"list"]
        return sum(client.llen(key) for key in lists) + client.hlen("unacked")

    def forget_messages(self) -> None:
        """Drop every message (queued, unacked) but keep kombu's exchange bindings, as a fresh broker would
        have them after the workers declared their queues."""
        client = self.client()
        for key in list(client.scan_iter()):
            if not key.startswith(b"_kombu.binding"):
                client.delete(key)

    def stop(self) -> None:
        if self.process:
            self.process.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class MariaDbServer:
    """A mariadbd of our own on a free port, root without a password, data in a temporary directory.

    Durability is MariaDB's default (innodb_flush_log_at_trx_commit=1): SIGKILL loses no committed
    transaction, which is what production's MySQL is configured to promise too."""

    def __init__(self, log_dir: Path):
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="chaos-mariadb-"))
        self.datadir = self.dir / "data"
        self.log_dir = log_dir
        self.starts = 0
        self.process: Process | None = None
        as_root = ["--user=root"] if os.geteuid() == 0 else []
        subprocess.run(  # noqa: S603 - fixed argv
            [
                TOOLS["mariadb-install-db"],
                "--no-defaults",
                *as_root,
                f"--datadir={self.datadir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        self.argv = [
            "/usr/sbin/mariadbd",
            "--no-defaults",
            *as_root,
            f"--datadir={self.datadir}",
            f"--port={self.port}",
            f"--socket={self.dir / 'sock'}",
            "--bind-address=127.0.0.1",
            "--skip-name-resolve",
            "--innodb-buffer-pool-size=64M",
            "--max-connections=300",
        ]

    def url(self, name: str) -> str:
        return f"mysql://root@127.0.0.1:{self.port}/{name}"

    def start(self) -> Process:
        self.starts += 1
        self.process = Process(
            f"mariadb-{self.starts}", self.argv, {**os.environ}, ready="ready for connections", log_dir=self.log_dir
        )
        return self.process

    def kill(self) -> None:
        self.process.kill(signal.SIGKILL)

    def sql(self, statement: str, *, database: str = "") -> None:
        argv = [
            TOOLS["mariadb"],
            "-h",
            "127.0.0.1",
            "-P",
            str(self.port),
            "-u",
            "root",
            *([database] if database else []),
        ]
        subprocess.run(argv, input=statement.encode(), check=True, capture_output=True, timeout=60)  # noqa: S603

    def copy_schema(self, source: dict, name: str) -> None:
        """Create database `name` with the tables of the test database `source` (a settings dict)."""
        self.sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
        dump = subprocess.run(  # noqa: S603 - fixed argv
            [
                TOOLS["mariadb-dump"],
                "-h",
                source["HOST"] or "127.0.0.1",
                "-P",
                str(source["PORT"] or 3306),
                "-u",
                source["USER"] or "root",
                *([f"-p{source['PASSWORD']}"] if source["PASSWORD"] else []),
                "--no-data",
                "--skip-add-drop-table",
                source["NAME"],
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        self.sql(dump.stdout.decode(), database=name)

    def stop(self) -> None:
        if self.process:
            self.process.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def database_swapped(url: str):
    """Point this process's ORM (the invariant checks, the test data) at another database for a while."""
    import environ

    config = environ.Env.db_url_config(url)
    default = connections["default"]
    saved = {key: default.settings_dict[key] for key in ("HOST", "PORT", "NAME", "USER", "PASSWORD")}
    default.close()
    default.settings_dict.update({key: config.get(key) or "" for key in saved})
    try:
        yield
    finally:
        default.close()
        default.settings_dict.update(saved)


# --- the app's processes ------------------------------------------------------------------------------


class ChaosSystem(System):
    """System with the sweeps run by a real beat, any number of web servers sharing one port
    (SO_REUSEPORT, as behind a load balancer), and workers that can be killed and replaced."""

    TIMING = {**System.TIMING, "RECONCILE_INTERVAL_SECONDS": "1"}

    def __init__(self, redis: RedisServer, *, database_url: str | None = None, log_dir: Path):
        super().__init__(redis.url(0), database_url=database_url, log_dir=log_dir)
        self.redis = redis
        self.dir = tempfile.mkdtemp(prefix="chaos-system-")
        self.env.update(REDIS_URL=redis.url(1), LOG_FORMAT="plain", PYTHONPATH=str(ROOT))
        self.names = itertools.count(1)
        self.worker_args: dict[str, tuple[str, ...]] = {}

    def running(self, role: str) -> list[str]:
        return [name for name, p in self.processes.items() if name.startswith(role) and p.popen.poll() is None]

    def start_web_server(self, *, wait: bool = True) -> Process:
        name = f"web-{next(self.names)}"
        argv = [str(BIN / "gunicorn"), "donutsite.wsgi", "-b", f"127.0.0.1:{self.web_port}", "--reuse-port"]
        argv += ["-w", "2", "--threads", "4", "--graceful-timeout", "20"]
        return self._replace(name, argv, ready="Booting worker", wait=wait)

    def start_worker_process(self, *args: str, wait: bool = True) -> Process:
        """A worker on every queue but dead_letter, or as `args` say (-P, -c, -Q); the supervisor restarts
        it with the same arguments. Ready once it answers a ping, as System.start_worker's: a scenario
        that counts the workers answering, or kills one to replace it, must not meet one still deaf."""
        name = f"worker-{next(self.names)}"
        argv = [str(BIN / "celery"), "-A", "donutsite", "worker", "-l", "info", "-c", "2", "-X", "dead_letter"]
        argv += ["-n", f"{name}-{os.getpid()}@%h", "--without-gossip", "--without-mingle", *args]
        self.worker_args[name] = args
        return self._replace(name, argv, ready="ready.", wait=wait, kind=Worker)

    def start_beat(self, *, wait: bool = True) -> Process:
        argv = [str(BIN / "celery"), "-A", "donutsite", "beat", "-l", "info"]
        argv += ["-s", os.path.join(self.dir, "beat-schedule"), "--pidfile="]
        return self._replace("beat", argv, ready="beat: Starting", wait=wait)

    def ensure(self, *, webs: int = 1, workers: int = 2, beat: bool = True) -> None:
        """Start what is missing (at once, then wait for all of it)."""
        started = [self.start_web_server(wait=False) for _ in range(webs - len(self.running("web-")))]
        started += [self.start_worker_process(wait=False) for _ in range(workers - len(self.running("worker-")))]
        if beat and not self.running("beat"):
            started.append(self.start_beat(wait=False))
        for process in started:
            process.wait_ready()

    @contextmanager
    def supervised(self):
        """Restart workers and beat that exit on their own, as the production compose file's
        `restart: unless-stopped` does; yields the list of those restarts (name, exit code, last error)."""
        restarts: list[dict] = []
        stop = threading.Event()

        def watch():
            while not stop.wait(0.5):
                for name, process in list(self.processes.items()):
                    if process.popen.poll() is None or not name.startswith(("worker-", "beat")):
                        continue
                    errors = [
                        line for line in process.output().splitlines() if "CRITICAL" in line or "Unrecoverable" in line
                    ]
                    restarts.append({"process": name, "exit_code": process.popen.returncode, "error": errors[-1:]})
                    self.processes.pop(name).stop()
                    if name == "beat":
                        self.start_beat(wait=False)
                    else:
                        self.start_worker_process(*self.worker_args.pop(name, ()), wait=False)

        thread = threading.Thread(target=watch, name="supervisor", daemon=True)
        thread.start()
        try:
            yield restarts
        finally:
            stop.set()
            thread.join()
            for process in self.processes.values():
                process.wait_ready()

    def signal_all(self, role: str, sig: int) -> None:
        """Send a signal to every process (with its children) of a role, e.g. SIGSTOP the workers."""
        for name in self.running(role):
            os.killpg(self.processes[name].popen.pid, sig)

    def forget_stopped(self) -> None:
        for name in [n for n, p in self.processes.items() if p.popen.poll() is not None]:
            self.processes.pop(name).stop()  # closes its log

    def pool_children(self, name: str) -> list[int]:
        pid = self.processes[name].popen.pid
        try:
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        except OSError:
            return []
        return [int(child) for child in children]

    def manage(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run a manage.py command the way ops would, against the system's database and broker."""
        return subprocess.run(  # noqa: S603 - our own command
            [str(BIN / "python"), "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )

    def workers_answering(self) -> list[str]:
        """The workers that answer a remote-control ping within 3 s (a stuck one would not)."""
        done = subprocess.run(  # noqa: S603 - our own command
            [str(BIN / "celery"), "-A", "donutsite", "inspect", "ping", "--timeout", "3", "--json"],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        try:
            return sorted(json.loads(done.stdout.strip().splitlines()[-1]))
        except (ValueError, IndexError):
            return []

    def stop(self) -> None:
        for process in self.processes.values():  # all at once, then wait for each
            if process.popen.poll() is None:
                os.killpg(process.popen.pid, signal.SIGTERM)
        super().stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def compose_worker_args() -> dict[str, tuple[str, ...]]:
    """The pool, concurrency and queues (-P, -c, -Q) of each Celery worker in docker-compose.yml."""
    import yaml

    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    workers = {}
    for name, service in services.items():
        command = service.get("command", [])
        if command[:4] == ["celery", "-A", "donutsite", "worker"]:
            option = dict(zip(command, command[1:], strict=False))
            workers[name] = tuple(
                part for flag in ("-P", "-c", "-Q") if flag in option for part in (flag, option[flag])
            )
    return workers


# --- the shop's stock and clients -----------------------------------------------------------------------


@dataclass
class Catalogue:
    skus: list[str]
    initial: dict[str, int]
    api_keys: list[str]


def catalogue_make(
    prefix: str, *, products: int = 10, on_hand=(10, 25), reorder_point: int = 8, reorder_quantity: int = 30, seed=0
) -> Catalogue:
    """Products with a ledger-backed starting stock, and API clients to buy them."""
    from testsupport.data import make_api_client, make_product

    rng = random.Random(seed)
    initial = {}
    for n in range(products):
        sku = f"{prefix}-{n:02d}"
        initial[sku] = rng.randint(*on_hand)
        make_product(
            sku, on_hand=initial[sku], price="1.50", reorder_point=reorder_point, reorder_quantity=reorder_quantity
        )
    keys = [make_api_client(f"{prefix}-client-{n}-{uuid.uuid4().hex[:6]}")[1] for n in range(6)]
    return Catalogue(skus=list(initial), initial=initial, api_keys=keys)


# --- load -------------------------------------------------------------------------------------------------


@dataclass
class Purchase:
    key: str
    api_key: str
    items: list[dict]
    cut: bool  # the first attempt's connection is dropped after sending, before the answer
    attempts: list[dict] = field(default_factory=list)  # {"answer": status or error, "ms", "at", "ended"}
    status: int | None = None
    code: str = ""
    sale_id: int | None = None
    replayed: bool = False
    gave_up: bool = False

    @property
    def had_trouble(self) -> bool:
        """Some attempt ended without an answer, or with a 503: it may have sold without saying so."""
        return any(not isinstance(a["answer"], int) or a["answer"] == 503 for a in self.attempts)


class Load:
    """Client apps buying over HTTP from `threads` threads: each purchase has its own Idempotency-Key and
    is retried with that key after a connection error, a timeout, a 503 or a 429 (Retry-After honoured),
    until it gets an answer or `give_up_after` seconds pass. With `duration`, purchases are spread evenly
    over that many seconds, so faults injected meanwhile hit a system under load."""

    RETRY_ON = (503, 429)

    def __init__(
        self,
        url: str,
        catalogue: Catalogue,
        *,
        purchases: int,
        threads: int = 16,
        duration: float | None = None,
        multi_rate: float = 0.3,
        cut_rate: float = 0.03,
        seed: int = 0,
        attempt_timeout: float = 15.0,
        give_up_after: float = 60.0,
    ):
        host, port = url.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        self.threads = threads
        self.duration = duration
        self.attempt_timeout = attempt_timeout
        self.give_up_after = give_up_after
        rng = random.Random(seed)
        self.purchases = []
        for n in range(purchases):
            lines = rng.choice((2, 3)) if rng.random() < multi_rate else 1
            skus = rng.sample(catalogue.skus, lines)  # random order: the service must lock in key order
            self.purchases.append(
                Purchase(
                    key=f"chaos-{seed}-{n}-{uuid.uuid4().hex[:8]}",
                    api_key=rng.choice(catalogue.api_keys),
                    items=[{"sku": sku, "quantity": rng.randint(1, 3)} for sku in skus],
                    cut=rng.random() < cut_rate,
                )
            )
        self._next = itertools.count()
        self._lock = threading.Lock()
        self.finished = 0
        self._threads: list[threading.Thread] = []
        self.started_at = self.ended_at = None

    def start(self) -> "Load":
        self.started_at = time.monotonic()
        for n in range(self.threads):
            thread = threading.Thread(target=self._run, name=f"shopper-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def wait(self, timeout: float | None = None) -> None:
        if self.ended_at is not None:
            return
        deadline = time.monotonic() + (timeout or self.give_up_after + (self.duration or 0) + 120)
        for thread in self._threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in self._threads):
            raise AssertionError("shopper threads did not finish in time")
        self.ended_at = time.monotonic()

    @property
    def done(self) -> bool:
        return self.finished >= len(self.purchases)

    def wait_for(self, fraction: float, timeout: float = 120) -> None:
        """Until this share of the purchases has been answered (or given up)."""
        wanted = int(len(self.purchases) * fraction)
        wait_until(lambda: self.finished >= wanted, timeout=timeout, interval=0.05, what=f"{fraction:.0%} of the load")

    def _run(self) -> None:
        while True:
            with self._lock:
                n = next(self._next)
            if n >= len(self.purchases):
                return
            if self.duration:
                start_at = self.started_at + n * self.duration / len(self.purchases)
                time.sleep(max(0.0, start_at - time.monotonic()))
            self._buy(self.purchases[n])
            with self._lock:
                self.finished += 1

    def _buy(self, purchase: Purchase) -> None:
        body = json.dumps({"items": purchase.items}).encode()
        headers = {
            "Authorization": f"Api-Key {purchase.api_key}",
            "Content-Type": "application/json",
            "Idempotency-Key": purchase.key,
        }
        first = time.monotonic()
        for n in itertools.count():
            cut = purchase.cut and n == 0
            status, answer_headers, data = self._attempt(purchase, body, headers, cut=cut)
            if status == 201:
                sale = json.loads(data)
                purchase.status, purchase.sale_id = 201, sale["id"]
                purchase.replayed = answer_headers.get("Idempotent-Replayed") == "true"
                return
            retry = not isinstance(status, int) or status in self.RETRY_ON
            if not retry:
                purchase.status = status
                try:
                    purchase.code = json.loads(data).get("code", "")
                except ValueError:
                    purchase.code = "not json"
                return
            if time.monotonic() - first > self.give_up_after or n > 200:
                purchase.gave_up = True
                return
            if isinstance(status, int):
                wait = min(2.0, float(answer_headers.get("Retry-After") or 0.5)) * random.uniform(0.5, 1.0)  # noqa: S311
            elif status == "refused":  # the request never reached a server: try again soon
                wait = min(1.0, 0.05 * 2 ** min(n, 5)) * random.uniform(0.5, 1.0)  # noqa: S311
            else:
                # It may have reached the server and still be running there: retry when a client's read
                # timeout would have fired, not at once, as a real client would.
                wait = random.uniform(1.0, 2.0)  # noqa: S311
            time.sleep(wait)

    def _attempt(self, purchase, body, headers, *, cut: bool):
        connection = http.client.HTTPConnection(self.host, self.port, timeout=self.attempt_timeout)
        started = time.monotonic()
        status, answer_headers, data = None, {}, b""
        try:
            connection.request("POST", "/api/v1/sales/", body=body, headers=headers)
            if cut:
                status = "cut"
            else:
                response = connection.getresponse()
                status, answer_headers, data = response.status, response.headers, response.read()
        except ConnectionRefusedError:
            status = "refused"
        except (ConnectionResetError, BrokenPipeError, http.client.RemoteDisconnected):
            status = "reset"
        except TimeoutError:
            status = "timeout"
        except (OSError, http.client.HTTPException) as exc:
            status = type(exc).__name__
        finally:
            connection.close()
        ended = time.monotonic()
        wall = time.time() - (ended - started)
        purchase.attempts.append(
            {"answer": status, "ms": round((ended - started) * 1000, 1), "at": started, "ended": ended, "wall": wall}
        )
        return status, answer_headers, data

    def attempts(self):
        return [a for p in self.purchases for a in p.attempts]

    def figures(self) -> dict:
        attempts = self.attempts()
        answered = sorted(a["ms"] for a in attempts if isinstance(a["answer"], int))
        finals = Counter(str(p.status) if p.status else "gave up" for p in self.purchases)
        return {
            "purchases": len(self.purchases),
            "multi_sku_purchases": sum(len(p.items) > 1 for p in self.purchases),
            "requests": len(attempts),
            "retries": len(attempts) - len(self.purchases),
            "sales": sum(p.status == 201 for p in self.purchases),
            "sales_told_by_a_replay": sum(p.status == 201 and p.replayed for p in self.purchases),
            "out_of_stock_409": sum(p.status == 409 for p in self.purchases),
            "gave_up": sum(p.gave_up for p in self.purchases),
            "final_answers": dict(sorted(finals.items())),
            "answers_by_status": dict(sorted(Counter(str(a["answer"]) for a in attempts).items())),
            "connections_cut_by_the_client": sum(p.cut for p in self.purchases),
            "latency_ms": {
                "p50": _percentile(answered, 50),
                "p95": _percentile(answered, 95),
                "p99": _percentile(answered, 99),
                "max": answered[-1] if answered else None,
            },
            "load_seconds": round((self.ended_at or time.monotonic()) - self.started_at, 1),
        }


def _clock(timestamp: float) -> str:
    return time.strftime("%H:%M:%S", time.gmtime(timestamp)) + f".{int(timestamp % 1 * 1000):03d}"


def _percentile(values: list[float], p: float):
    if not values:
        return None
    return values[min(len(values) - 1, int(len(values) * p / 100))]


# --- settling and the invariants --------------------------------------------------------------------------


def settle(*, timeout: float = 90, also=None) -> float:
    """Wait (bounded) until no restock is pending or placed, twice 1 s apart, and `also()` is true if given;
    returns the seconds it took. The sweeps run in beat, as in production."""
    from inventory.models import Restock

    started = time.monotonic()
    quiet_since = None
    while True:
        open_ = Restock.objects.open().count()
        if open_ == 0 and (also is None or also()):
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since >= 1.0:
                return round(quiet_since - started, 1)
        else:
            quiet_since = None
        if time.monotonic() - started > timeout:
            return None
        time.sleep(0.25)


def production_unreceived(factory_orders: list[dict], restocks=None) -> list[str]:
    """The orders the factory finished whose restock does not show it (yet): a lost callback is brought in
    by the sweep's poll, also for a restock that failed although the factory had stored its order."""
    from inventory.models import Restock

    by_reference = {r.reference: r for r in (restocks if restocks is not None else Restock.objects.all())}
    unreceived = []
    for order in factory_orders:
        restock = by_reference.get(order["reference"])
        if restock is None:
            continue
        if order["status"] == "completed" and (
            restock.status != Restock.Status.FULFILLED or restock.quantity_received != order["quantity_produced"]
        ):
            unreceived.append(f"{order['order_id']} -> restock {restock.pk} {restock.status}")
        elif order["status"] == "cancelled" and restock.status != Restock.Status.CANCELLED:
            unreceived.append(f"{order['order_id']} cancelled -> restock {restock.pk} {restock.status}")
    return unreceived


def check_invariants(
    load: Load | list[Load],
    catalogue: Catalogue,
    *,
    factory_orders: list[dict],
    allowed_answers: set,
    settle_seconds: float | None,
) -> tuple[dict, list[str]]:
    """Every scenario's invariants. Returns (figures, violations); the caller records then asserts.

    1. Stock never negative: on hand, and the ledger's running balance of each product in commit order.
    2. initial + received - sold (+ adjustments) = on hand for every product; ledger_differences() == [].
    3. Every sale a client got a 201 for exists once, with the lines it asked for; no sale per key twice;
       no sale exists that its client was not told of (except a purchase given up after a cut).
    4. Settled: every restock fulfilled, cancelled, or failed with a dead letter.
    5. At most one factory order per restock reference; whatever the factory produced was received.
    6. Every dead letter is counted once by a dead-letter alert (a group's leader counts the alerts it held
       back, which write no row), every such alert's dead letter exists, and every dead-lettered SKU is
       named by an alert or its open group.
    7. Clients saw only `allowed_answers` (never a 500).
    """
    from factory.models import DeadLetter, FactoryAttempt, FactoryOrder
    from inventory.models import Product, Restock, Sale, SaleLine, StockMovement
    from inventory.selectors import ledger_differences
    from notifications.models import Alert, AlertGroup

    loads = load if isinstance(load, list) else [load]
    purchases = [p for one in loads for p in one.purchases]
    violations: list[str] = []

    # 1. never negative
    products = {p.sku: p for p in Product.objects.filter(sku__in=catalogue.skus)}
    violations += [f"{sku} on hand is {p.on_hand}" for sku, p in products.items() if p.on_hand < 0]
    balance: dict[int, int] = defaultdict(int)
    went_negative = set()
    for product_id, quantity in StockMovement.objects.order_by("pk").values_list("product_id", "quantity"):
        balance[product_id] += quantity
        if balance[product_id] < 0:
            went_negative.add(product_id)
    violations += [f"the ledger of product {pid} went below zero" for pid in sorted(went_negative)]

    # 2. the books balance
    differences = ledger_differences()
    if differences:
        violations.append(f"ledger_differences: {differences}")
    by_kind = defaultdict(int)
    for product_id, kind, total in StockMovement.objects.values_list("product_id", "kind").annotate(
        total=Sum("quantity")
    ):
        by_kind[(product_id, kind)] = total
    sold = dict(SaleLine.objects.values_list("product_id").annotate(total=Sum("quantity")))
    received = dict(
        Restock.objects.filter(quantity_received__isnull=False)
        .values_list("product_id")
        .annotate(total=Sum("quantity_received"))
    )
    for sku, product in products.items():
        adjustments = by_kind[(product.pk, "adjustment")] - catalogue.initial[sku]
        expected = catalogue.initial[sku] + received.get(product.pk, 0) - sold.get(product.pk, 0) + adjustments
        if expected != product.on_hand:
            violations.append(f"{sku}: initial + received - sold + adjustments = {expected}, on hand {product.on_hand}")
        if by_kind[(product.pk, "receipt")] != received.get(product.pk, 0):
            violations.append(f"{sku}: receipts in the ledger differ from restocks received")
        if -by_kind[(product.pk, "sale")] != sold.get(product.pk, 0):
            violations.append(f"{sku}: sales in the ledger differ from sale lines")

    # 3. sales: told once, exist once
    sales = {
        sale.pk: sale
        for sale in Sale.objects.prefetch_related("lines__product")
        .filter(lines__product__sku__in=catalogue.skus)
        .distinct()
    }
    per_key = Counter(sale.idempotency_key for sale in sales.values())
    violations += [f"{count} sales for one Idempotency-Key {key!r}" for key, count in per_key.items() if count > 1]
    told = {p.key: p for p in purchases if p.status == 201}
    for purchase in told.values():
        sale = sales.get(purchase.sale_id)
        if sale is None:
            violations.append(f"sale {purchase.sale_id} answered 201 for {purchase.key} does not exist")
            continue
        lines = sorted((line.product.sku, line.quantity) for line in sale.lines.all())
        if sale.idempotency_key != purchase.key or lines != sorted((i["sku"], i["quantity"]) for i in purchase.items):
            violations.append(f"sale {sale.pk} is not what {purchase.key} bought")
    if len({p.sale_id for p in told.values()}) != len(told):
        violations.append("two purchases were told the same sale id")
    by_key = {p.key: p for p in purchases}
    unknown_outcome = 0
    for sale in sales.values():
        if sale.idempotency_key in told:
            continue
        purchase = by_key.get(sale.idempotency_key)
        if purchase is not None and purchase.gave_up and purchase.had_trouble:
            unknown_outcome += 1  # the client gave up after a cut connection: it sold, nobody heard
        else:
            heard = [(a["answer"], _clock(a["wall"]), a["ms"]) for a in purchase.attempts] if purchase else "nothing"
            violations.append(
                f"sale {sale.pk} ({sale.idempotency_key!r}, made at {_clock(sale.created_at.timestamp())}) exists "
                f"but its client was told (answer, sent at, ms): {heard}"
            )

    # 7. answers
    answers = Counter(str(a["answer"]) for p in purchases for a in p.attempts)
    unexpected = {answer: n for answer, n in answers.items() if answer not in {str(a) for a in allowed_answers}}
    if unexpected:
        violations.append(f"unexpected answers: {unexpected}")

    # 4. settled
    restocks = list(Restock.objects.filter(product__sku__in=catalogue.skus).select_related("product"))
    dead_letters = list(DeadLetter.objects.select_related("restock__product"))
    dead_restocks = {d.restock_id for d in dead_letters}
    if settle_seconds is None:
        violations.append("the system did not settle in time")
    for restock in restocks:
        if restock.status in Restock.OPEN_STATUSES:
            violations.append(f"restock {restock.pk} ({restock.product.sku}) is still {restock.status}")
        if restock.status == Restock.Status.FAILED and restock.pk not in dead_restocks:
            violations.append(f"restock {restock.pk} failed without a dead letter")

    # 5. the factory
    by_reference = Counter(order["reference"] for order in factory_orders)
    violations += [f"{n} factory orders for {ref}" for ref, n in by_reference.items() if n > 1]
    restock_by_reference = {r.reference: r for r in restocks}
    violations += [
        f"factory order {order['order_id']} ({order['reference']}) has no restock"
        for order in factory_orders
        if order["reference"] not in restock_by_reference
    ]
    never_received = production_unreceived(factory_orders, restocks)
    if never_received:
        violations.append(f"factory production not received: {never_received}")

    # 6. alerts
    dead_letter_alerts = list(Alert.objects.filter(kind="dead_letter", is_summary=False))
    counted = sum(1 + a.suppressed_count for a in dead_letter_alerts)
    if counted != len(dead_letters):
        violations.append(f"{len(dead_letters)} dead letters, {counted} counted by dead-letter alerts")
    alerted = Counter(a.context.get("dead_letter_id") for a in dead_letter_alerts)
    dead_ids = {d.pk for d in dead_letters}
    violations += [f"dead-letter alert for {pk}, which does not exist" for pk in sorted(set(alerted) - dead_ids)]
    violations += [f"{n} alerts lead with dead letter {pk}" for pk, n in alerted.items() if n > 1]
    named = " ".join(
        [f"{a.title} {a.context.get('sku', '')}" for a in Alert.objects.filter(kind="dead_letter")]
        + [" ".join(g.facts) for g in AlertGroup.objects.filter(dedupe_key__startswith="dead_letter:")]
    )
    for dead in dead_letters:
        sku = dead.restock.product.sku if dead.restock_id else None
        if sku and not re.search(rf"(?<![\w-]){re.escape(sku)}(?![\w-])", named):
            violations.append(f"dead letter {dead.pk}: no alert names {sku}")

    alerts = Alert.objects.all()
    figures = {
        **_merged_load_figures(loads),
        "sales_in_database": len(sales),
        "sold_with_outcome_unknown_to_the_client": unknown_outcome,
        "units_sold": sum(sold.get(p.pk, 0) for p in products.values()),
        "units_received": sum(received.get(p.pk, 0) for p in products.values()),
        "restocks": len(restocks),
        "restocks_by_state": dict(sorted(Counter(r.status for r in restocks).items())),
        "restock_messages_sent_again": sum(
            max(0, count - 1) for count in FactoryOrder.objects.values_list("dispatch_count", flat=True)
        ),
        "factory_calls_by_outcome": dict(
            sorted(Counter(FactoryAttempt.objects.values_list("outcome", flat=True)).items())
        ),
        "factory_orders": len(factory_orders),
        "dead_letters": len(dead_letters),
        "dead_letters_by_exception": dict(Counter(d.exception_type.rsplit(".", 1)[-1] for d in dead_letters)),
        "alerts": {
            "total": alerts.count(),
            "by_kind": dict(sorted(Counter(alerts.values_list("kind", flat=True)).items())),
            "dead_letter_alerts": len(dead_letter_alerts),
            "dead_letter_alerts_sent": len(dead_letter_alerts),
            "dead_letter_alerts_grouped": sum(a.suppressed_count for a in dead_letter_alerts),
            "summaries": alerts.filter(is_summary=True).count(),
        },
        "time_to_settle_s": settle_seconds,
        "on_hand_after": {sku: products[sku].on_hand for sku in catalogue.skus},
        "violations": violations,
    }
    return figures, violations


def _merged_load_figures(loads: list[Load]) -> dict:
    if len(loads) == 1:
        return loads[0].figures()
    merged = [one.figures() for one in loads]
    return {"loads": merged}

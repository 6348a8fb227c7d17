"""What the benchmark scripts share: their environment, child processes, a throwaway database, /proc
readings and percentiles. Nothing here imports Django at module level: `bench_environ` must run first."""

import argparse
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOG_DIR = ROOT / "var" / "bench"


def bench_environ(*, database_url: str, broker_url: str) -> None:
    """Point the project's settings at the bench's own database and Redis number, with throwaway secrets.

    Forced, not defaulted: a bench drops its database and flushes its broker database. `database_url`
    and `broker_url` name the variables a user may set (for example BENCH_RESTOCK_DATABASE_URL) and
    their defaults, as "NAME=default"."""
    for spec in (database_url, broker_url):
        name, _, default = spec.partition("=")
        os.environ.setdefault(name, default)
    os.environ["DJANGO_SETTINGS_MODULE"] = "donutsite.settings"
    os.environ["DATABASE_URL"] = os.environ[database_url.partition("=")[0]]
    os.environ["CELERY_BROKER_URL"] = os.environ["REDIS_URL"] = os.environ[broker_url.partition("=")[0]]
    os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-not-secret")
    os.environ.setdefault("DJANGO_SECURE_SSL_REDIRECT", "0")
    os.environ.setdefault("FACTORY_API_KEY", "bench-factory-key")
    os.environ.setdefault("FACTORY_CALLBACK_SECRET", "bench-callback-secret")
    # Callbacks would go nowhere (port 9, discard); the simulator's production time is set far beyond
    # the run, so it never sends one.
    os.environ.setdefault("PUBLIC_BASE_URL", "http://127.0.0.1:9")
    os.environ.setdefault("LOG_LEVEL", "WARNING")


# --- child processes -------------------------------------------------------------------------------


class Child:
    """A process of our own in a session of its own (as testsupport.processes.Process), so that stopping it
    reaches a prefork worker's children too; logs go to var/bench/."""

    running: list["Child"] = []

    def __init__(self, name: str, argv: list[str], env: dict):
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.log_path = LOG_DIR / f"{name}.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(  # noqa: S603 - our own commands
            argv, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        Child.running.append(self)

    def wait_ready(self, ready: str, timeout: float = 60) -> None:
        """Wait for `ready` in the log; stop the process and exit if it dies or takes too long."""
        deadline = time.monotonic() + timeout
        while ready not in self.output():
            if self.popen.poll() is not None:
                self.stop()
                raise SystemExit(f"{self.name} exited with {self.popen.returncode}:\n{self.output()[-3000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"{self.name} not ready after {timeout:g} s; see {self.log_path}")
            time.sleep(0.1)

    def output(self, start: int = 0) -> str:
        with open(self.log_path, errors="replace") as f:
            f.seek(start)
            return f.read()

    def size(self) -> int:
        return self.log_path.stat().st_size

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)
        self.log.close()
        if self in Child.running:
            Child.running.remove(self)

    @classmethod
    def stop_all(cls) -> None:
        for child in list(cls.running):
            try:
                child.stop()
            except Exception as exc:  # keep stopping the others
                print(f"could not stop {child.name}: {exc!r}", file=sys.stderr)


@dataclass(frozen=True)
class Pool:
    """A Celery worker pool, `prefork:2`, `threads:32` or `gevent:64`."""

    kind: str
    concurrency: int

    @classmethod
    def parse(cls, text: str) -> "Pool":
        kind, _, number = text.strip().partition(":")
        if kind not in ("prefork", "threads", "gevent") or not number.isdigit() or int(number) < 1:
            raise argparse.ArgumentTypeError(f"{text!r}: expected prefork:N, threads:N or gevent:N")
        return cls(kind, int(number))

    def __str__(self):
        return f"{self.kind}:{self.concurrency}"


# --- the database ----------------------------------------------------------------------------------


def mysql_args(db: dict, *, with_db: bool = True) -> dict:
    """MySQLdb.connect() arguments for a Django DATABASES entry."""
    args = {
        "host": db["HOST"] or "127.0.0.1",
        "port": int(db["PORT"] or 3306),
        "user": db["USER"],
        "password": db["PASSWORD"] or "",
        "charset": "utf8mb4",
    }
    if with_db:
        args["database"] = db["NAME"]
    return args


def database_recreate(url_variable: str) -> tuple[dict, object]:
    """Drop and create the settings' database, whose name must contain 'bench'; its DATABASES entry and
    the connection that holds a MariaDB named lock on it for the whole run (keep it until the process
    exits): a second run against the same database would otherwise drop it under the first.
    `url_variable` is the setting that moves the database elsewhere, for the message when it is taken."""
    import MySQLdb
    from django.conf import settings

    db = settings.DATABASES["default"]
    if "bench" not in db["NAME"]:
        raise SystemExit(f"refusing to drop {db['NAME']!r}: the bench database's name must contain 'bench'")
    guard = MySQLdb.connect(**mysql_args(db, with_db=False))
    cur = guard.cursor()
    cur.execute("SELECT GET_LOCK(%s, 0)", (f"bench:{db['NAME']}",))
    if cur.fetchone()[0] != 1:
        raise SystemExit(f"another bench run is using the database {db['NAME']}; wait for it or set {url_variable}")
    cur.execute(f"DROP DATABASE IF EXISTS `{db['NAME']}`")
    cur.execute(f"CREATE DATABASE `{db['NAME']}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    return db, guard


# --- figures ---------------------------------------------------------------------------------------


def percentile(ordered: list[float], p: float) -> float:
    """Nearest rank; NaN for no values."""
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


def summary(values: list[float]) -> dict:
    """p50, p95, p99 and max."""
    ordered = sorted(values)
    return {p: percentile(ordered, p) for p in (50, 95, 99)} | {"max": ordered[-1] if ordered else float("nan")}


# --- /proc -----------------------------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy, from /proc/stat."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in f.readline().split()[1:8])
    return (user + nice + system + irq + softirq) / TICK


def process_stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()  # [state, ppid, ...]; comm may hold spaces
    except OSError:
        return None


def process_seconds(pid: int) -> float:
    """CPU seconds (user + system) a process has used; 0 once it is gone."""
    fields = process_stat(pid)
    return (int(fields[11]) + int(fields[12])) / TICK if fields else 0.0


def process_tree(pid: int) -> list[int]:
    """The process and its children (one level: gunicorn's or a Celery worker's)."""
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    return [pid] + [p for p in pids if (fields := process_stat(p)) and int(fields[1]) == pid]


def pids_named(name: str) -> list[int]:
    found = []
    for p in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            with open(f"/proc/{p}/comm") as f:
                if f.read().strip() == name:
                    found.append(int(p))
        except OSError:
            pass
    return found

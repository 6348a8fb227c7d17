"""Real processes for end-to-end tests: the web server (gunicorn), Celery workers and the factory simulator,
all pointed at the pytest test database and a broker database of their own."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import redis
from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# A directory per pytest-xdist worker: two workers' processes of one name (web, worker1) log apart.
OUTPUT = ROOT / "test-output" / "e2e" / os.environ.get("PYTEST_XDIST_WORKER", "")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition, *, timeout: float, interval: float = 0.1, what: str = "condition"):
    """Poll until condition() is truthy and return its value; fail the test with `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


class HungServer:
    """A port that accepts connections and never answers: a hung Redis or broker. Use as a context
    manager; `url(db)` is a redis:// URL for it."""

    def __init__(self):
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(128)  # the kernel completes the handshakes; nobody ever reads
        self.port = self._socket.getsockname()[1]

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._socket.close()


def closed_port_url(db: int = 0) -> str:
    """A redis:// URL where nothing listens: a refused Redis or broker."""
    return f"redis://127.0.0.1:{free_port()}/{db}"


class Process:
    """A child process in a session of its own, its output in `<log_dir>/<name>.log` (default OUTPUT).

    With `ready`, wait until that text shows in the output; with `wait=False`, call `wait_ready()` later
    (to start several processes at once)."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict,
        ready: str | None = None,
        *,
        log_dir: Path | None = None,
        wait: bool = True,
    ):
        log_dir = log_dir or OUTPUT
        log_dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.ready = ready
        self.log_path = log_dir / f"{name}.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(  # noqa: S603 - our own commands
            argv, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True
        )
        if wait:
            try:
                self.wait_ready()
            except BaseException:
                self.stop()  # never handed to its caller, so nobody else would stop it
                raise

    def wait_ready(self, timeout: float = 60) -> None:
        if not self.ready:
            return
        ready = self.ready
        wait_until(lambda: ready in self.output() or self.popen.poll() is not None, timeout=timeout, what=self.name)
        if self.popen.poll() is not None:
            raise RuntimeError(f"{self.name} exited early:\n{self.output()[-3000:]}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self, sig=signal.SIGKILL) -> None:
        """Signal the whole process group (a prefork worker's children too)."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, sig)
        self.popen.wait(timeout=30)

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM to the main process only, as an orchestrator stops a container: gunicorn's master and
        Celery's main process then shut down gracefully. Waits for the exit and returns its code."""
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGTERM)
        return self.popen.wait(timeout=timeout)

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


class Worker(Process):
    """A Celery worker, ready once it has logged "ready." and answered a ping on its broker (the
    `CELERY_BROKER_URL` of `env`). It logs "ready." before its event loop has subscribed to the broker's
    broadcasts, and a ping or an inspection sent meanwhile is lost: worker_alive, run just after, found a
    running worker silent (test_health). Started with `wait=False`, it is waited for by `wait_ready()`."""

    def __init__(self, name: str, argv: list[str], env: dict, ready: str = "ready.", **options):
        self.broker_url = env["CELERY_BROKER_URL"]
        self.answered = False
        super().__init__(name, argv, env, ready, **options)

    def wait_ready(self, timeout: float = 60) -> None:
        super().wait_ready(timeout)
        # Once: a worker stopped later (SIGSTOP in a chaos scenario) was ready, and waiting on it again
        # would only hang.
        if not self.answered:
            self._wait_answering_pings(timeout)
            self.answered = True

    def _wait_answering_pings(self, timeout: float) -> None:
        from celery import Celery
        from kombu.exceptions import OperationalError

        # The node name its banner shows: the last -n of its arguments.
        node = re.search(r"^ -+ (\S+@\S+) v\d", self.output(), re.MULTILINE).group(1)
        # An app of its own: the test process's app publishes broadcasts through its own broker's pool,
        # whatever connection it is given, and a worker may have a broker of its own (a RedisServer). Its
        # write URL, not its broker URL: Celery lets the CELERY_BROKER_URL variable win over the latter.
        pinger = Celery(set_as_current=False)
        pinger.conf.broker_write_url = self.broker_url
        # One try per ping, a second at most: kombu's defaults wait on a hung broker forever, and wait_until
        # can only give up between pings.
        pinger.conf.broker_transport_options = {"max_retries": 0, "socket_connect_timeout": 1, "socket_timeout": 1}

        def answering():
            try:
                return pinger.control.ping(destination=[node], timeout=0.5)
            except (OperationalError, redis.RedisError, OSError):
                # A broker refusing or not answering (restarting, paused), or a connection it closed (one
                # made before it restarted: kombu reads the reply queue with redis-py's own error, not its
                # OperationalError): ping again, on a new connection.
                return None

        try:
            wait_until(answering, timeout=timeout, what=f"{node} to answer a ping")
        finally:
            pinger.close()


class System:
    """The app's processes around the test database. `env` holds what they share."""

    # Short timings so a test sees retries, redelivery and overdue polls within seconds. They keep the
    # order the start-up check demands: HTTP (connect + read) < soft < hard < visibility timeout.
    TIMING = {
        "FACTORY_TIMEOUT_SECONDS": "2",
        "CELERY_TASK_SOFT_TIME_LIMIT": "5",
        "CELERY_TASK_TIME_LIMIT": "6",
        "CELERY_VISIBILITY_TIMEOUT": "14",
        "FACTORY_RETRY_BACKOFF_SECONDS": "0.2",
        "FACTORY_RETRY_BACKOFF_MAX_SECONDS": "2",
        "NOTIFICATIONS_RETRY_BACKOFF_MAX_SECONDS": "2",
        "FACTORY_MAX_ATTEMPTS": "5",  # more than Celery's default budget of 3 retries, on purpose
        "FACTORY_RETRY_FOR_SECONDS": "2",
        "FACTORY_OVERDUE_GRACE_SECONDS": "1",
        "OUTBOX_RESEND_AFTER_SECONDS": "3",
    }

    def __init__(self, broker_url: str, *, database_url: str | None = None, log_dir: Path | None = None):
        """`database_url`: another database than the test process's (a private server); `log_dir`: where
        the processes' logs go (default OUTPUT)."""
        self.web_port, self.factory_port = free_port(), free_port()
        self.web_url = f"http://127.0.0.1:{self.web_port}"
        self.factory_url = f"http://127.0.0.1:{self.factory_port}"
        self.log_dir = log_dir
        db = settings.DATABASES["default"]
        self.broker_url = broker_url  # the test process's own, so what it sends the workers receive
        self.env = {
            **os.environ,
            **self.TIMING,
            "DATABASE_URL": database_url
            or f"mysql://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 3306}/"
            f"{connection.settings_dict['NAME']}",
            "CELERY_BROKER_URL": self.broker_url,
            "PUBLIC_BASE_URL": self.web_url,
            "FACTORY_API_URL": self.factory_url,
            "DJANGO_SECURE_SSL_REDIRECT": "0",
            "PYTHONUNBUFFERED": "1",
        }
        self.processes: dict[str, Process] = {}
        self.workers = 0

    def flush_broker(self) -> None:
        import redis

        redis.Redis.from_url(self.broker_url).flushdb()

    def start_factory(self, *args: str) -> Process:
        self._replace(
            "factory",
            [str(BIN / "python"), "manage.py", "run_legacy_factory", "--port", str(self.factory_port), *args],
            ready="listening",
        )
        return self.processes["factory"]

    def start_web(self) -> Process:
        return self._replace(
            "web",
            [str(BIN / "gunicorn"), "donutsite.wsgi", "-b", f"127.0.0.1:{self.web_port}", "-w", "2", "--threads", "4"],
            ready="Booting worker",
        )

    def start_worker(self, *args: str) -> Process:
        """A Celery worker, returned once it takes tasks and answers pings."""
        self.workers += 1
        name = f"worker{self.workers}"
        return self._replace(
            name,
            [
                str(BIN / "celery"),
                "-A",
                "donutsite",
                "worker",
                "-l",
                "info",
                "-c",
                "2",
                "-X",
                "dead_letter",
                "-n",
                f"{name}@%h",
                "--without-gossip",
                "--without-mingle",
                *args,
            ],
            ready="ready.",
            kind=Worker,
        )

    def _replace(
        self, name: str, argv: list[str], ready: str, *, wait: bool = True, kind: type[Process] = Process
    ) -> Process:
        if name in self.processes:
            self.processes[name].stop()
        self.processes[name] = kind(name, argv, self.env, ready=ready, log_dir=self.log_dir, wait=wait)
        return self.processes[name]

    def stop(self) -> None:
        for process in self.processes.values():
            process.stop()

    # The simulator's control endpoints (not part of the factory's contract).
    def factory_get(self, path: str):
        with urllib.request.urlopen(self.factory_url + path, timeout=5) as response:  # noqa: S310 - local
            return json.loads(response.read())

    def factory_configure(self, **config) -> None:
        self.factory_post("/_sim/config", config)

    def factory_post(self, path: str, body: dict):
        request = urllib.request.Request(  # noqa: S310 - local
            self.factory_url + path,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310 - local
            return json.loads(response.read())

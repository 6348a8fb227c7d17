"""testsupport.processes itself: a wait for a process gives up with its own message, never hangs."""

import os
import sys
import threading
import time

import pytest

from testsupport.chaos import RedisServer
from testsupport.processes import HungServer, Worker, closed_port_url

# What a Celery worker prints before it is ready, its node name in the banner; it never answers a ping.
DEAF_WORKER = [
    sys.executable,
    "-c",
    "import time; print(' -------------- deaf@host v5.7.0 (x)'); print('ready.', flush=True); time.sleep(60)",
]


@pytest.mark.parametrize("broker", ["refused", "hung"])
def test_a_worker_whose_broker_does_not_answer_times_out_waiting_for_its_ping(tmp_path, broker):
    # A refused broker raised kombu's OperationalError out of the wait at the first ping; a hung one (a paused
    # Redis) held the ping, and the wait, forever.
    with HungServer() as hung:
        url = closed_port_url() if broker == "refused" else hung.url()
        worker = Worker("deaf", DEAF_WORKER, {"CELERY_BROKER_URL": url}, log_dir=tmp_path, wait=False)
        try:
            with pytest.raises(AssertionError, match="waiting for deaf@host to answer a ping"):
                worker.wait_ready(timeout=3)
        finally:
            worker.stop()


def test_a_worker_whose_broker_restarts_during_the_wait_times_out_waiting_for_its_ping(tmp_path):
    # The pings' connection, made before the restart, was closed by it: the next ping read "Connection closed
    # by server", redis-py's own error, which kombu passes on as it is, and it escaped from the wait (seen in
    # the rolling restart chaos scenario, run after the one restarting Redis).
    broker = RedisServer(tmp_path)
    broker.start()
    worker = Worker("deaf", DEAF_WORKER, {"CELERY_BROKER_URL": broker.url()}, log_dir=tmp_path, wait=False)
    outcome = []

    def wait():
        try:
            worker.wait_ready(timeout=6)
        except BaseException as exc:  # what the wait ended with, for the assertion below
            outcome.append(exc)

    waiting = threading.Thread(target=wait)
    try:
        waiting.start()
        time.sleep(2)  # a few pings in, their connection made
        broker.kill()
        broker.start()
        waiting.join(timeout=30)
    finally:
        worker.stop()
        broker.kill()
    assert len(outcome) == 1 and isinstance(outcome[0], AssertionError), outcome
    assert "waiting for deaf@host to answer a ping" in str(outcome[0])


def test_a_process_that_never_gets_ready_is_stopped_when_its_start_gives_up(tmp_path):
    # Started with wait=True, a worker whose wait failed was never handed to its caller, so nothing stopped it:
    # a failed chaos scenario left one running, with its pool, after the suite had ended.
    pid_file = tmp_path / "pid"
    deaf = [DEAF_WORKER[0], "-c", f"import os; open({str(pid_file)!r}, 'w').write(str(os.getpid())); " + DEAF_WORKER[2]]

    class QuickWorker(Worker):
        def wait_ready(self, timeout: float = 3) -> None:
            super().wait_ready(timeout)

    with pytest.raises(AssertionError, match="waiting for deaf@host to answer a ping"):
        QuickWorker("deaf", deaf, {"CELERY_BROKER_URL": closed_port_url()}, log_dir=tmp_path)
    pid = int(pid_file.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)

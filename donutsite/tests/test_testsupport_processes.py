"""testsupport.processes itself: a wait for a process gives up with its own message, never hangs."""

import sys

import pytest

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

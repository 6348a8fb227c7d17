"""A Celery worker outlives its broker going away: it reconnects when Redis is back instead of exiting."""

import os
import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from testsupport.chaos import RedisServer
from testsupport.processes import OUTPUT, System, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

TASK = "inventory.idempotency_keys_purge"  # a quick task of the maintenance queue, seen by what it deletes


def _expired_key():
    from clients.models import ApiClient
    from inventory.models import IdempotencyKey

    client = ApiClient.objects.create(name="broker-loss")
    key = IdempotencyKey.objects.create(client=client, key="old", request_hash="-", refusal={"shortages": []})
    IdempotencyKey.objects.filter(pk=key.pk).update(created_at=timezone.now() - timedelta(days=30))
    return IdempotencyKey.objects.filter(pk=key.pk)


def _pool_processes_killed_at_once(worker) -> None:
    """SIGKILL a prefork worker's pool processes while its main process is stopped (as a busy one is not
    polling), so it finds them all gone in one look, as in the chaos scenarios; then wait for the new ones.
    The oldest dies first, so the worker handles its exit first and cleaning up both gives the younger's
    closed fd numbers to the new processes before it reads the younger's exit: what made Celery stop
    watching a new process (docs/reliability.md)."""
    pid = worker.popen.pid

    def children():
        return {int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}

    killed = children()
    os.kill(pid, signal.SIGSTOP)
    try:
        for child in sorted(killed):  # in the order the worker started them
            os.kill(child, signal.SIGKILL)
            time.sleep(0.2)
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_until(lambda: len(children() - killed) == 2, timeout=15, what="the worker's new pool processes")


@pytest.mark.parametrize(
    "pool, pool_processes_killed",
    [
        ("threads", False),  # the factory workers' pool
        ("prefork", False),  # the notifications worker's
        ("prefork", True),  # ... after its pool processes were killed (the OOM killer) and replaced
    ],
)
def test_a_worker_holding_unacknowledged_messages_survives_a_redis_restart(pool, pool_processes_killed):
    """Redis dies while the worker holds messages it has not acknowledged (here tasks waiting for their
    countdown, as a retry does). The worker keeps running, reconnects when Redis is back, and takes new
    messages (those it held died with this Redis, which keeps nothing; production's keeps them)."""
    from donutsite.celery import app

    log_dir = OUTPUT / "worker_broker_loss" / (f"{pool}-pool-killed" if pool_processes_killed else pool)
    redis = RedisServer(log_dir)
    redis.start()
    system = System(redis.url(0), log_dir=log_dir)
    system.env["REDIS_URL"] = redis.url(1)
    try:
        worker = system.start_worker("-P", pool, "-Q", "maintenance")
        if pool_processes_killed:
            _pool_processes_killed_at_once(worker)
        with app.connection_for_write(redis.url(0)) as connection:
            for _ in range(3):
                app.send_task(TASK, queue="maintenance", countdown=60, connection=connection)
        wait_until(lambda: redis.client().hlen("unacked") == 3, timeout=15, what="the worker holding the messages")

        redis.kill()
        time.sleep(3)
        assert worker.popen.poll() is None, worker.output()[-3000:]
        redis.start()
        wait_until(
            lambda: "Connected to redis" in worker.output().rpartition("Connection to broker lost")[2],
            timeout=30,
            what="the worker reconnecting",
        )
        expired = _expired_key()
        with app.connection_for_write(redis.url(0)) as connection:
            app.send_task(TASK, queue="maintenance", connection=connection)
        wait_until(lambda: not expired.exists(), timeout=30, what="the worker running a task sent after the restart")
        assert worker.popen.poll() is None, worker.output()[-3000:]
    finally:
        system.stop()
        redis.process.stop()


def test_a_prefork_pool_registers_again_with_a_pool_process_it_no_longer_watches():
    """Celery watches each pool process's exit through a copy of its sentinel fd. When the pool processes
    die together, the event of the second can arrive after the first's clean-up closed that copy and a new
    process's copy took its number: Celery then drops the new, live process's watch (`_sentinel_poll` is
    None). Registering with the event loop again, as every reconnect to the broker does, handed that None
    to kombu, whose ValueError Celery 5.7.0 did not expect: the worker exited. The start-up hook skips that
    process, and the pool's periodic check still replaces it once it exits."""
    from celery.concurrency.asynpool import AsynPool
    from kombu.asynchronous import Hub

    from donutsite.celery import stale_pool_watches_skipped

    stale_pool_watches_skipped()  # as a worker's start does
    hub = Hub()
    pool = AsynPool(processes=1, threads=False)
    try:
        pool.register_with_event_loop(hub)
        process = pool._pool[0]
        pool._event_process_exit(hub, process)  # what the late event does to the live process
        assert process._sentinel_poll is None
        assert process.exitcode is None

        pool.register_with_event_loop(hub)  # the broker reconnected

        assert pool._pool == [process]
        os.kill(process.pid, signal.SIGKILL)
        wait_until(lambda: process.exitcode is not None, timeout=10, what="the pool process gone")
        pool.maintain_pool()  # the periodic check
        assert pool._pool != [process]
        assert isinstance(pool._pool[0]._sentinel_poll, int)  # its replacement is watched
    finally:
        pool.terminate()
        hub.close()

"""A Celery worker outlives its broker going away: it reconnects when Redis is back instead of exiting."""

import time
from datetime import timedelta

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


@pytest.mark.parametrize("pool", ["threads", "prefork"])  # the factory workers' pool, the notifications worker's
def test_a_worker_holding_unacknowledged_messages_survives_a_redis_restart(pool):
    """Redis dies while the worker holds messages it has not acknowledged (here tasks waiting for their
    countdown, as a retry does). The worker keeps running, reconnects when Redis is back, and takes new
    messages (those it held died with this Redis, which keeps nothing; production's keeps them)."""
    from donutsite.celery import app

    log_dir = OUTPUT / "worker_broker_loss" / pool
    redis = RedisServer(log_dir)
    redis.start()
    system = System(redis.url(0), log_dir=log_dir)
    system.env["REDIS_URL"] = redis.url(1)
    try:
        worker = system.start_worker("-P", pool, "-Q", "maintenance")
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

"""donutsite.celery.task_publish: one short try at the broker, then the breaker; the message arrives when
the broker answers."""

from urllib.parse import urlsplit

import kombu.pools
import pytest
from celery import current_app

from donutsite.celery import task_publish
from donutsite.dependencies import breakers
from testsupport.processes import HungServer, closed_port_url


def broker_at(url):
    current_app.conf.broker_write_url = url
    current_app._pool = None
    current_app.amqp._producer_pool = None
    kombu.pools.reset()


def test_a_task_published_from_the_web_reaches_its_queue(queues):
    assert task_publish("factory.restock_place", [41]) is True

    assert queues("factory") == [("factory.restock_place", [41])]


@pytest.mark.parametrize("state", ["refused", "hung"])
def test_a_broker_refused_or_hung_is_tried_once_then_skipped_with_one_warning(queues, state, caplog):
    trips_before = breakers["broker"].trips
    with HungServer() as hung:
        broker_at(hung.url() if state == "hung" else closed_port_url())
        try:
            first = task_publish("factory.restock_place", [42])
            second = task_publish("factory.restock_place", [43])
        finally:
            broker_at(None)

    assert (first, second) == (False, False)
    assert breakers["broker"].is_open and breakers["broker"].trips == trips_before + 1, "the second send did not try"
    warnings = [r.getMessage() for r in caplog.records if "circuit open" in r.getMessage()]
    assert len(warnings) == 1 and "tasks are left to the outbox sweep" in warnings[0]
    breakers["broker"].close()  # the pause is over
    assert task_publish("factory.restock_place", [44]) is True
    assert queues("factory") == [("factory.restock_place", [44])]


def test_one_server_behind_redis_and_the_broker_opens_both_breakers_at_its_first_failure(settings, caplog):
    # compose and make run keep the throttle's counters and the queues in one Redis: a request that meets
    # it hung pays for one short try, not one for the throttle and another for the publish after commit.
    broker_trips = breakers["broker"].trips
    with HungServer() as hung:
        settings.REDIS_URL = hung.url(1)
        broker_at(hung.url(0))
        try:
            from donutsite import ratelimit

            assert ratelimit.hit("anon:192.0.2.1", 60) == (0, 0)  # the first request's one try at Redis
            published = task_publish("factory.restock_place", [45])
        finally:
            broker_at(None)

    assert published is False and breakers["broker"].is_open
    assert breakers["broker"].trips == broker_trips, "the publish did not try the server Redis found hung"
    assert len([r for r in caplog.records if "circuit open" in r.getMessage()]) == 2, "one warning per breaker"


def test_a_broker_of_another_kind_is_never_taken_for_the_redis_server(settings):
    redis = urlsplit(settings.REDIS_URL)  # the test's Redis, and an AMQP broker at its very address
    broker_at(f"amqp://guest:guest@{redis.hostname}:{redis.port or 6379}//")
    try:
        breakers["redis"].trip(ConnectionError("refused"))
    finally:
        broker_at(None)

    assert not breakers["broker"].is_open


def test_a_broker_outage_over_several_pauses_is_one_warning_at_each_end_and_a_line_per_task_not_sent(
    queues, settings, caplog
):
    import time

    settings.WEB_DEPENDENCY_PAUSE_SECONDS = 0.1
    broker_at(closed_port_url())
    try:
        outage_ends, restock_ids = time.monotonic() + 0.6, iter(range(100, 10_000))
        while time.monotonic() < outage_ends:  # a try after each pause, all failing
            assert task_publish("factory.restock_place", [next(restock_ids)]) is False
            time.sleep(0.01)
    finally:
        broker_at(None)
    not_sent = next(restock_ids) - 100
    time.sleep(0.15)  # the last pause is over
    assert task_publish("factory.restock_place", [1]) is True

    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name.startswith("donutsite")]
    begins, ends = [message for level, message in lines if level == "WARNING"]
    assert begins.startswith("broker unavailable") and begins.endswith("(circuit open)"), lines
    assert ends.startswith("broker answers again after") and ends.endswith("(circuit closed)"), lines
    assert len([message for _, message in lines if " not sent" in message]) == not_sent, "one line per task"

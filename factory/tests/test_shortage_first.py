"""Shortage first, end to end: gunicorn, the bulk and the urgent Celery workers as make run and compose
start them, the factory simulator, MariaDB and Redis. A shortage's restock reaches the factory while
the worker of routine restocks is stopped with a backlog queued in front of it."""

import os
import signal

import pytest
from django.db import transaction

from inventory.models import Restock
from inventory.services import restocks_open
from testsupport.api import buy_over_http
from testsupport.data import make_api_client, make_product
from testsupport.processes import System, wait_until
from testsupport.queues import queued_restocks

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

BACKLOG = 40


@pytest.fixture
def system(django_db_setup, django_db_blocker):
    from celery import current_app

    running = System(broker_url=current_app.conf.broker_url)
    running.flush_broker()
    try:
        running.start_factory("--production-seconds", "3600", "--seed", "11")
        running.start_web()
        running.start_worker("-P", "threads", "-c", "8", "-Q", "default,factory,maintenance")  # worker1: bulk
        running.start_worker("-P", "threads", "-c", "2", "-Q", "factory_urgent")  # worker2: shortages
        yield running
    finally:
        for process in running.processes.values():
            if process.popen.poll() is None:
                os.killpg(process.popen.pid, signal.SIGCONT)  # a stopped worker cannot act on SIGTERM
        running.stop()
        running.flush_broker()


def factory_references(system) -> list[str]:
    return [order["reference"] for order in system.factory_get("/_sim/orders")["results"]]


def test_a_shortage_reaches_the_factory_while_the_routine_restocks_wait_behind_a_stopped_worker(system):
    _, key = make_api_client()
    make_product("VIRAL", on_hand=1, reorder_quantity=20)
    bulk = system.processes["worker1"]
    os.killpg(bulk.popen.pid, signal.SIGSTOP)
    with transaction.atomic():
        routine = restocks_open(
            [make_product(f"ROUTINE{i}", on_hand=0) for i in range(BACKLOG)], reason=Restock.Reason.REORDER_POINT
        )
    backlog = sorted(r.pk for r in routine.values())
    # The stopped worker's pending fetch may already hold the first message or two; the rest wait in Redis.
    waiting = sorted(queued_restocks())
    assert set(waiting) <= set(backlog) and len(waiting) >= BACKLOG - 2

    status, body = buy_over_http(system, key, "VIRAL", 2)

    assert status == 409 and body["code"] == "out_of_stock"
    shortage = Restock.objects.get(product__sku="VIRAL")
    wait_until(
        lambda: shortage.reference in factory_references(system),
        timeout=30,
        what="the shortage's restock to reach the factory past the backlog",
    )
    # The worker records the factory's answer a moment after the factory has the order.
    wait_until(lambda: Restock.objects.get(pk=shortage.pk).status == "placed", timeout=10, what="the shortage placed")
    assert sorted(queued_restocks()) == waiting, "the routine restocks are still waiting for their worker"
    assert not set(factory_references(system)) & {r.reference for r in routine.values()}

    os.killpg(bulk.popen.pid, signal.SIGCONT)

    wait_until(
        lambda: Restock.objects.filter(pk__in=backlog, status="placed").count() == BACKLOG,
        timeout=60,
        what="the backlog to drain once its worker runs again",
    )
    references = factory_references(system)
    assert sorted(references) == sorted([shortage.reference, *(r.reference for r in routine.values())])

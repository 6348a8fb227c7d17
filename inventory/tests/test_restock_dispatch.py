"""Restocks reach the real Redis broker only after commit, and the outbox sweep resends what never left."""

import ast
import json
from datetime import timedelta

import pytest
import redis
from celery import current_app
from django.conf import settings
from django.core.management import call_command
from django.db import OperationalError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from factory.models import DeadLetter, FactoryAttempt, FactoryOrder
from inventory.errors import OutOfStock
from inventory.models import Restock
from inventory.services import SaleItem, restocks_open, sale_create
from testsupport.data import make_api_client, make_product, restock_give_up

pytestmark = pytest.mark.django_db(transaction=True)


RESTOCK_QUEUES = ("factory", "factory_urgent", "dead_letter")


@pytest.fixture
def factory_queue():
    """The `factory` and `factory_urgent` queues in the test broker, emptied before and after; yields a
    reader of the restock ids waiting in one of them (`factory` unless told)."""
    broker = redis.Redis.from_url(current_app.conf.broker_url)
    broker.delete(*RESTOCK_QUEUES)

    def restock_ids(queue="factory"):
        messages = [json.loads(raw) for raw in broker.lrange(queue, 0, -1)]
        assert all(m["headers"]["task"] == "factory.restock_place" for m in messages)
        return sorted(ast.literal_eval(m["headers"]["argsrepr"])[0] for m in messages)

    yield restock_ids
    broker.delete(*RESTOCK_QUEUES)


def test_a_shortage_hands_its_restock_to_the_urgent_queue(factory_queue):
    make_product("VIRAL", on_hand=0)
    client, _ = make_api_client()

    with pytest.raises(Exception, match="Not enough stock"):
        sale_create(client=client, items=[SaleItem("VIRAL", 1)])

    restock = Restock.objects.get()
    assert factory_queue("factory_urgent") == [restock.pk]
    assert factory_queue() == [], "not behind the routine restocks"
    order = FactoryOrder.objects.get(restock=restock)  # written by the factory side, after commit
    assert order.dispatched_at is not None and order.dispatch_count == 1


def test_a_shortage_after_the_products_restock_failed_sends_that_restock_again_with_a_fresh_budget(factory_queue):
    # Its calls failed or timed out, and one may have created the order at the factory: only its
    # reference has the factory answer with that order instead of making a second one.
    from testsupport.data import make_failed_restock

    product = make_product("VIRAL", on_hand=0, reorder_quantity=80)
    failed, dead_letter = make_failed_restock(product)  # 50 ordered, when the reorder quantity was 50
    FactoryOrder.objects.filter(restock=failed).update(attempt_count=6)  # the whole budget spent
    client, _ = make_api_client()

    with pytest.raises(OutOfStock) as refused:
        sale_create(client=client, items=[SaleItem("VIRAL", 1)])

    assert refused.value.details["shortages"][0]["restock"] == {
        "id": failed.pk,
        "status": "pending",
        "quantity": 50,
        "expected_at": None,
    }
    assert list(Restock.objects.values_list("pk", "status", "quantity", "reason")) == [
        (failed.pk, "pending", 50, "shortage")
    ], "no second restock, and the same order as before"
    assert factory_queue("factory_urgent") == [failed.pk], "sent at once, on the shortage's queue"
    order = FactoryOrder.objects.get(restock=failed)
    assert (order.attempt_count, order.attempts_this_run) == (6, 0), "a fresh budget: not given up at its first failure"
    assert order.redriven_at is not None and order.dispatch_count == 1
    dead_letter.refresh_from_db()
    assert not dead_letter.is_resolved, "it waits until the factory takes the order"


def reopened_by_a_shortage():
    """A failed VIRAL restock with its open dead letter, reopened by a sale that found VIRAL short."""
    from testsupport.data import make_failed_restock

    failed, dead_letter = make_failed_restock(make_product("VIRAL", on_hand=0))
    client, _ = make_api_client()
    with pytest.raises(OutOfStock):
        sale_create(client=client, items=[SaleItem("VIRAL", 1)])
    return failed, dead_letter


def fails_again(restock):
    """The restock's run gives up again on the shortage's queue, as restock_place's task does after its
    last attempt (5 of them this run)."""
    from factory.client import FactoryUnavailable

    return restock_give_up(restock, FactoryUnavailable("503 Service Unavailable"), attempts=5, queue="factory_urgent")


def test_a_reopened_restock_that_fails_again_keeps_its_one_dead_letter_up_to_date(factory_queue):
    # A factory outage: each need reopened the failed restock and each run gave up again, leaving a dead
    # letter, a page and a copy in Flower's dead_letter queue per need for one restock of one product.
    from notifications.models import Alert

    failed, dead_letter = reopened_by_a_shortage()
    pages = Alert.objects.filter(kind="dead_letter").count()

    again = fails_again(failed)

    assert Restock.objects.get(pk=failed.pk).status == "failed"
    assert again.pk == dead_letter.pk and DeadLetter.objects.count() == 1
    dead_letter.refresh_from_db()
    assert dead_letter.exception_type == "factory.client.FactoryUnavailable" and dead_letter.attempts == 6
    assert dead_letter.last_failed_at > dead_letter.first_failed_at
    assert Alert.objects.filter(kind="dead_letter").count() == pages, "its page is still the one"
    assert factory_queue("dead_letter") == [failed.pk], "one copy for Flower"


def test_a_redrive_during_the_outage_leaves_a_reopened_restocks_dead_letter_open_and_it_stays_the_one(factory_queue):
    # Ops press "Redrive all" while the factory is still down. A need had reopened the failed restock, so it
    # is pending and on its way again: the redrive has nothing to send, but it settled the dead letter as if
    # its work were done. The restock then failed again against the down factory, and a second dead letter
    # with a second page came for the same restock (6 restocks of 40 in a rush, redriven from the admin).
    from io import StringIO

    from notifications.models import Alert

    failed, dead_letter = reopened_by_a_shortage()
    dry_run, out = StringIO(), StringIO()
    call_command("redrive", "--all", "--dry-run", stdout=dry_run)
    call_command("redrive", "--all", stdout=out)

    dead_letter.refresh_from_db()
    assert not dead_letter.is_resolved, "it is still failing: it waits until the factory takes the order"
    # Neither redriven nor settled: its restock is pending, and its dead letter open.
    assert out.getvalue().splitlines() == [
        f"dead letter {dead_letter.pk}: factory.restock_place({failed.pk},), restock {failed.pk} (pending): "
        "already sent again (a new need reopened its restock): left open until the factory takes it",
        "0 dead letters sent again; 0 had nothing to do (redriven or settled already). "
        "1 already sent again (a new need reopened its restock): left open until the factory takes it.",
    ]
    assert dry_run.getvalue().splitlines()[-1] == (
        "Dry run: 0 dead letters would be sent again; 0 had nothing to do (redriven or settled already). "
        "1 already sent again (a new need reopened its restock): left open until the factory takes it. "
        "Nothing changed."
    )
    assert factory_queue("factory_urgent") == [failed.pk], "nothing sent twice"
    pages = Alert.objects.filter(kind="dead_letter").count()

    fails_again(failed)

    assert list(DeadLetter.objects.values_list("pk", flat=True)) == [dead_letter.pk], "one dead letter per restock"
    assert Alert.objects.filter(kind="dead_letter").count() == pages, "no second page"


def test_a_shortage_after_the_factory_refused_the_products_restock_opens_a_new_one(factory_queue):
    # A 409 (its reference taken by another order) or a 400: the same call is refused again, and reopening
    # it for every need after it left the product with no way to be ordered again.
    from testsupport.data import make_failed_restock

    product = make_product("VIRAL", on_hand=0, reorder_quantity=80)
    refused, _ = make_failed_restock(product)
    FactoryAttempt.objects.create(restock=refused, number=1, outcome="permanent", status_code=409, latency_ms=40)
    client, _ = make_api_client()

    with pytest.raises(OutOfStock) as short:
        sale_create(client=client, items=[SaleItem("VIRAL", 1)])

    new = Restock.objects.get(status="pending")
    assert new.pk != refused.pk and new.quantity == 80
    assert short.value.details["shortages"][0]["restock"]["id"] == new.pk
    assert Restock.objects.get(pk=refused.pk).status == "failed"
    assert factory_queue("factory_urgent") == [new.pk]


def test_a_sale_that_takes_the_last_one_hurries_its_queued_restock_to_the_urgent_queue(factory_queue):
    product = make_product("LOW", on_hand=3, reorder_point=5)
    with transaction.atomic():
        routine = restocks_open([product], reason=Restock.Reason.REORDER_POINT)[product.pk]
    client, _ = make_api_client()

    sale_create(client=client, items=[SaleItem("LOW", 3)])

    assert factory_queue() == [routine.pk], "the routine message is still queued"
    assert factory_queue("factory_urgent") == [routine.pk], "and the sold-out product's order jumps the queue"
    assert Restock.objects.get().reason == "reorder_point", "it stays what it was opened as"


def test_a_restock_opened_by_the_sale_that_takes_the_last_one_is_sent_once_on_the_urgent_queue(factory_queue):
    # It is as urgent as a shortage's from the start: one message on the shortage route, not a routine one
    # and then a hurried copy of it.
    make_product("LOW", on_hand=2, reorder_point=1)
    client, _ = make_api_client()

    sale_create(client=client, items=[SaleItem("LOW", 2)])

    restock = Restock.objects.get()
    assert factory_queue("factory_urgent") == [restock.pk]
    assert factory_queue() == [], "no routine copy left behind it"
    assert FactoryOrder.objects.get(restock=restock).dispatch_count == 1
    assert restock.reason == "reorder_point", "it stays what it was opened as"


def test_a_sold_out_products_restock_already_tried_keeps_its_backoff(factory_queue):
    product = make_product("LOW", on_hand=3, reorder_point=5)
    with transaction.atomic():
        routine = restocks_open([product], reason=Restock.Reason.REORDER_POINT)[product.pk]
    FactoryOrder.objects.filter(restock=routine).update(attempt_count=1)  # the factory was busy once
    client, _ = make_api_client()

    sale_create(client=client, items=[SaleItem("LOW", 3)])

    assert factory_queue("factory_urgent") == []


def test_reorder_point_and_manual_restocks_go_behind_the_urgent_queue(factory_queue):
    make_product("LOW", on_hand=3, reorder_point=2)
    client, _ = make_api_client()

    sale_create(client=client, items=[SaleItem("LOW", 1)])
    with transaction.atomic():
        restocks_open([make_product("ASKED", on_hand=50)], reason=Restock.Reason.MANUAL)

    by_reason = dict(Restock.objects.values_list("reason", "pk"))
    assert set(by_reason) == {"reorder_point", "manual"}
    assert factory_queue() == sorted(by_reason.values())
    assert factory_queue("factory_urgent") == []


# The queue each reason's first send takes. A reason added to Restock.Reason fails below until someone
# decides (Restock.URGENT_REASONS) and writes it here.
FIRST_QUEUE = {"shortage": "factory_urgent", "reorder_point": "factory", "manual": "factory"}


@pytest.mark.parametrize("reason", Restock.Reason.values)
def test_each_reasons_first_send_takes_its_queue(factory_queue, reason):
    assert reason in FIRST_QUEUE, f"decide which queue a {reason!r} restock's first send takes"
    with transaction.atomic():
        product = make_product(on_hand=50)
        restock = restocks_open([product], reason=reason)[product.pk]

    assert factory_queue(FIRST_QUEUE[reason]) == [restock.pk]
    assert {queue: factory_queue(queue) for queue in RESTOCK_QUEUES if queue != FIRST_QUEUE[reason]} == {
        queue: [] for queue in RESTOCK_QUEUES if queue != FIRST_QUEUE[reason]
    }


def test_a_rolled_back_transaction_enqueues_nothing(factory_queue):
    product = make_product("VIRAL", on_hand=0)

    with pytest.raises(RuntimeError), transaction.atomic():
        restocks_open([product], reason=Restock.Reason.MANUAL)
        raise RuntimeError("something later in the transaction failed")

    assert factory_queue() == []
    assert not Restock.objects.exists()


def test_with_the_broker_down_a_sale_still_succeeds_and_keeps_its_restock(factory_queue, broker_down):
    make_product("VIRAL", on_hand=1, reorder_point=1)
    client, _ = make_api_client()

    outcome = sale_create(client=client, items=[SaleItem("VIRAL", 1)])

    assert outcome.sale is not None, "the sale itself does not depend on the broker"
    restock = Restock.objects.get()
    assert restock.status == "pending", "left for the outbox sweep"
    assert not FactoryOrder.objects.filter(restock=restock, dispatched_at__isnull=False).exists(), "never noted as sent"


@pytest.mark.parametrize("breaker", ["closed", "open"])
def test_with_the_broker_away_a_sale_that_takes_the_last_one_logs_its_restock_not_sent_once(
    factory_queue, broker_down, caplog, breaker
):
    # Seen under make run with Redis away: "factory.restock_place[N] not sent: the broker's breaker is
    # open" twice for one sale, its restock's first send and a hurried copy of it.
    from donutsite.dependencies import breakers

    make_product("VIRAL", on_hand=1, reorder_point=1)
    client, _ = make_api_client()
    if breaker == "open":
        breakers["broker"].trip(ConnectionError("refused by an earlier request"))

    sale_create(client=client, items=[SaleItem("VIRAL", 1)])

    restock = Restock.objects.get()
    lines = [r.getMessage() for r in caplog.records if f"factory.restock_place[{restock.pk}]" in r.getMessage()]
    assert len(lines) == 1, lines
    assert FactoryOrder.objects.get(restock=restock).next_attempt_at is not None, "due for the next sweep"


def test_a_restock_the_broker_refused_is_sent_by_the_next_sweep_not_a_minute_later(factory_queue, broker_down):
    from donutsite.dependencies import breakers

    make_product("VIRAL", on_hand=0, reorder_point=0)
    client, _ = make_api_client()
    with pytest.raises(OutOfStock):
        sale_create(client=client, items=[SaleItem("VIRAL", 1)])  # the shortage opens the restock
    restock = Restock.objects.get()
    assert restock.reason == "shortage" and factory_queue("factory_urgent") == []

    broker_down.back()
    breakers["broker"].close()
    call_command("reconcile")

    assert factory_queue() == [restock.pk], "known not sent: nothing of it can still be on its way"
    assert FactoryOrder.objects.get(restock=restock).dispatch_count == 1


def test_a_sale_whose_outbox_note_fails_after_commit_still_answers_the_sale(factory_queue, monkeypatch):
    # test_chaos saw the note's UPDATE lose a deadlock to the worker recording the factory's answer for
    # that very restock; raised from the on-commit hook, it turned a committed sale into a 500.
    make_product("VIRAL", on_hand=1, reorder_point=1)
    client, _ = make_api_client()
    real_update = QuerySet.update

    def deadlocking_update(self, **fields):
        if self.model is FactoryOrder and "dispatched_at" in fields:
            raise OperationalError(1213, "Deadlock found when trying to get lock; try restarting transaction")
        return real_update(self, **fields)

    monkeypatch.setattr(QuerySet, "update", deadlocking_update)
    outcome = sale_create(client=client, items=[SaleItem("VIRAL", 1)])

    assert outcome.sale is not None
    restock = Restock.objects.get()
    assert factory_queue("factory_urgent") == [restock.pk], "the message left (urgent: the sale took the last one)"
    unnoted = FactoryOrder.objects.filter(restock=restock, dispatched_at__isnull=False).exists()
    assert not unnoted, "unnoted: the sweep may send it again, which is harmless"


def test_reconcile_resends_restocks_that_never_reached_the_broker(factory_queue):
    product = make_product("VIRAL", on_hand=0)
    # Committed but never dispatched: the process died between commit and send, or Redis was down.
    lost = Restock.objects.create(product=product, quantity=10, reason="shortage")
    Restock.objects.filter(pk=lost.pk).update(
        created_at=timezone.now() - timedelta(seconds=settings.OUTBOX_RESEND_AFTER_SECONDS + 1)
    )
    closed = Restock.objects.create(product=make_product("GONE"), quantity=10, reason="shortage", status="failed")

    call_command("reconcile")
    call_command("reconcile")

    assert factory_queue() == [lost.pk], "sent once; the second sweep saw it dispatched; closed ones never"
    assert factory_queue("factory_urgent") == [], "a resend, even of a shortage's restock, is routine work"
    order = FactoryOrder.objects.get(restock=lost)
    assert order.dispatched_at is not None and order.dispatch_count == 1
    assert closed.pk not in factory_queue()


def test_reconcile_waits_before_resending_a_fresh_restock(factory_queue):
    product = make_product("VIRAL", on_hand=0)
    Restock.objects.create(product=product, quantity=10, reason="shortage")

    call_command("reconcile")

    assert factory_queue() == [], "a restock written a moment ago may still be on its way"


def test_a_dispatch_noted_after_a_worker_already_scheduled_the_retry_keeps_the_retrys_wait(factory_queue):
    # A worker can take the message, fail and schedule its retry before the dispatch notes that it left:
    # that note must not move the next attempt back to now, or a resend would cut the backoff short.
    from factory.services import restock_dispatch

    restock = Restock.objects.create(product=make_product("GLAZED", on_hand=0), quantity=10, reason="reorder_point")
    retry_at = timezone.now() + timedelta(seconds=40)
    FactoryOrder.objects.create(restock=restock, attempt_count=1, next_attempt_at=retry_at)

    assert restock_dispatch(restock.pk)

    order = FactoryOrder.objects.get(restock=restock)
    assert order.next_attempt_at == retry_at and order.dispatch_count == 1
    restock_dispatch(Restock.objects.create(product=make_product("BOSTON"), quantity=10, reason="manual").pk)
    assert FactoryOrder.objects.get(restock__product__sku="BOSTON").next_attempt_at is not None, "a new one: now"


def test_a_dispatch_noted_after_a_worker_already_parked_the_restock_leaves_it_parked(factory_queue):
    # The sweep sends a restock; a worker takes the message, the factory answers 429 with a long Retry-After
    # and the worker parks it (no message in flight), all before the sweep notes that the message left.
    # Noted over as in flight, the park was resent only as a lost message, OUTBOX_RESEND_AFTER_SECONDS past
    # the time the factory asked for: a rate-limited restock waited a minute longer than it had to.
    from factory.services import reconcile, restock_dispatch, restock_park

    restock = Restock.objects.create(product=make_product("GLAZED", on_hand=0), quantity=10, reason="shortage")
    FactoryOrder.objects.create(restock=restock, attempt_count=1)
    restock_park(restock.pk, until=timezone.now() + timedelta(seconds=30))

    assert restock_dispatch(restock.pk)
    factory_queue_before = factory_queue()
    FactoryOrder.objects.filter(restock=restock).update(next_attempt_at=timezone.now())  # the 30 s are over

    reconcile()

    assert factory_queue() == [*factory_queue_before, restock.pk], "sent again when the factory asked, not later"

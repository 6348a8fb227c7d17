"""The factory tasks' bodies, called in process against a real local HTTP server standing in for the
factory and the real test broker: what a refusal, a busy factory, a long Retry-After, running out of
attempts and a lost callback do to the restock, the queue and ops. (With real workers: test_e2e.py.)"""

import json
from contextlib import contextmanager
from datetime import timedelta

import pytest
import redis
from celery import current_app
from celery.exceptions import Retry
from django.db import transaction
from django.utils import timezone

from factory.client import FactoryRejected
from factory.models import DeadLetter, FactoryAttempt, FactoryOrder
from factory.redrive import dead_letters_redrive
from factory.retries import DEAD_LETTER_QUEUE, OutOfAttempts
from factory.services import restock_place, restocks_overdue_alert
from factory.tasks import restock_place_task, restock_poll_task
from inventory.models import Product, Restock
from inventory.selectors import ledger_differences
from inventory.services import products_lock, restocks_open
from notifications.alerts import alert_groups_flush
from notifications.models import Alert, AlertGroup
from testsupport.data import make_product
from testsupport.scripted_factory import ORDER, Scripted

pytestmark = pytest.mark.django_db


@pytest.fixture
def factory(settings):
    with Scripted() as server:
        settings.FACTORY_API_URL = server.url
        yield server


def pending_restock(**order) -> Restock:
    product = make_product("GLAZED", on_hand=0)
    restock = Restock.objects.create(product=product, quantity=120, reason="shortage")
    if order:
        FactoryOrder.objects.create(restock=restock, **order)
    return restock


def order_of(restock) -> FactoryOrder:
    return FactoryOrder.objects.get(restock=restock)


def retry_due(restock) -> None:
    """The wait before the restock's next call (a retry's backoff, a factory's Retry-After) is over."""
    FactoryOrder.objects.filter(restock=restock).update(next_attempt_at=timezone.now())


def run(task, *args, retries=0, queue="factory"):
    """Run a task's body as a worker would for its `retries`-th retry of a message from `queue` (a
    worker's request, not eager mode)."""
    task.push_request(
        id="task-1",
        args=list(args),
        kwargs={},
        retries=retries,
        delivery_info={"exchange": "", "routing_key": queue},
    )
    task.request.called_directly = False
    try:
        return task(*args)
    finally:
        task.pop_request()


def fail(task, exc, *args):
    """What Celery does when the body raised something it does not retry."""
    task.push_request(id="task-1", args=list(args), kwargs={}, retries=0, delivery_info={"routing_key": "factory"})
    try:
        task.on_failure(exc, "task-1", list(args), {}, None)
    finally:
        task.pop_request()


def test_a_busy_factory_is_retried_later_through_the_broker(factory, queues):
    factory.answer(503, b"<html>busy</html>", {"Content-Type": "text/html"})
    restock = pending_restock()
    before = timezone.now()

    with pytest.raises(Retry):
        run(restock_place_task, restock.pk)

    restock.refresh_from_db()
    order = order_of(restock)
    assert (restock.status, order.attempt_count, order.claimed_at) == ("pending", 1, None)
    assert "503" in order.last_error
    # Full jitter may pick a wait near zero; the cap (FACTORY_RETRY_BACKOFF_MAX_SECONDS, 15 s) bounds it above.
    assert before <= order.next_attempt_at <= timezone.now() + timedelta(seconds=15)
    attempt = FactoryAttempt.objects.get(restock=restock)
    assert (attempt.outcome, attempt.status_code) == ("transient", 503)
    assert queues("factory") == [("factory.restock_place", [restock.pk])]


def test_a_shortage_whose_urgent_first_attempt_fails_retries_behind_the_routine_restocks(factory, queues):
    factory.answer(503, {"error": "busy"})
    restock = pending_restock()

    with pytest.raises(Retry):
        run(restock_place_task, restock.pk, queue="factory_urgent")

    assert queues("factory_urgent") == []
    assert queues("factory") == [("factory.restock_place", [restock.pk])]


def test_a_retry_after_longer_than_the_broker_may_hold_parks_the_restock_in_the_database(factory, queues):
    factory.answer(429, {"error": "slow down"}, {"Retry-After": "600"})
    restock = pending_restock(dispatched_at=timezone.now())

    assert run(restock_place_task, restock.pk) is None

    restock.refresh_from_db()
    order = order_of(restock)
    assert restock.status == "pending" and order.dispatched_at is None  # no message on its way
    assert order.next_attempt_at > timezone.now() + timedelta(seconds=590)  # the reconcile sweep sends it then
    assert queues("factory") == []
    assert FactoryAttempt.objects.get(restock=restock).outcome == "rate_limited"


def test_a_parked_restock_is_sent_by_the_first_sweep_once_its_retry_after_is_over(factory, queues, settings):
    # A park leaves no message on its way, so OUTBOX_RESEND_AFTER_SECONDS (the wait for one that may still
    # be) does not apply: the reconcile sweep, every RECONCILE_INTERVAL_SECONDS, sends it once the factory's
    # Retry-After is over, not a minute later. A message held for it in Redis (a countdown or an eta) would
    # outlive the visibility timeout and be handed out again: the park is the database's for that reason.
    from factory.services import reconcile

    settings.OUTBOX_RESEND_AFTER_SECONDS = 60
    factory.answer(429, {"error": "slow down"}, {"Retry-After": "20"})
    restock = pending_restock(dispatched_at=timezone.now())
    assert run(restock_place_task, restock.pk) is None
    parked_until = order_of(restock).next_attempt_at

    assert reconcile()["restocks_resent"] == 0, "not before the factory's Retry-After is over"
    retry_due(restock)  # ... and now it is
    assert reconcile()["restocks_resent"] == 1
    assert queues("factory") == [("factory.restock_place", [restock.pk])]
    assert parked_until > timezone.now() + timedelta(seconds=settings.FACTORY_RETRY_BACKOFF_MAX_SECONDS)


def test_the_last_allowed_attempt_failing_dead_letters_fails_the_restock_and_alerts_ops(factory, queues, settings):
    factory.answer(503, {"error": "down"})
    restock = pending_restock(attempt_count=settings.FACTORY_MAX_ATTEMPTS - 1)

    with pytest.raises(OutOfAttempts) as raised:
        run(restock_place_task, restock.pk)
    fail(restock_place_task, raised.value, restock.pk)

    restock.refresh_from_db()
    assert restock.status == "failed" and "OutOfAttempts" in order_of(restock).last_error
    dead_letter = DeadLetter.objects.get()
    assert (dead_letter.restock_id, dead_letter.args, dead_letter.queue) == (restock.pk, [restock.pk], "factory")
    alert = Alert.objects.get(kind="dead_letter")
    assert alert.severity == "critical" and "GLAZED" in alert.title
    assert queues(DEAD_LETTER_QUEUE) == [("factory.restock_place", [restock.pk])]
    assert queues("factory") == []  # not retried


def test_two_messages_giving_up_on_one_restock_leave_one_dead_letter(factory, queues, settings):
    # A sweep's resend beside a retry: both run out of attempts on the same restock.
    factory.answer(503, {"error": "down"})
    restock = pending_restock(attempt_count=settings.FACTORY_MAX_ATTEMPTS - 1)
    with pytest.raises(OutOfAttempts) as raised:
        run(restock_place_task, restock.pk)

    fail(restock_place_task, raised.value, restock.pk)
    fail(restock_place_task, raised.value, restock.pk)

    assert Restock.objects.get(pk=restock.pk).status == "failed"
    assert DeadLetter.objects.filter(restock=restock).count() == 1
    assert queues(DEAD_LETTER_QUEUE) == [("factory.restock_place", [restock.pk])]


def a_call_held_in_flight(monkeypatch):
    """The factory client's place_order, held once it is called until the returned `go` is set; `calling` is
    set when it is. The call itself then goes to the factory stand-in."""
    import threading

    from factory import services

    calling, go = threading.Event(), threading.Event()
    real = services.FactoryClient.place_order

    def held(self, **kwargs):
        calling.set()
        go.wait(10)
        return real(self, **kwargs)

    monkeypatch.setattr(services.FactoryClient, "place_order", held)
    return calling, go


@pytest.mark.django_db(transaction=True)
def test_a_message_giving_up_while_another_is_calling_the_factory_pages_nobody_if_that_call_is_accepted(
    factory, queues, settings, monkeypatch
):
    # A retry and the sweep's resend of it (the queue was backlogged): the retry's last allowed call fails,
    # and before it gives up the other message claims the restock and calls. Given up meanwhile, the
    # restock was failed and paged ops as a dead letter while the factory took its order.
    from testsupport.threads import thread_keeping

    factory.answer(503, {"error": "busy"})
    restock = pending_restock(attempt_count=settings.FACTORY_MAX_ATTEMPTS - 1)
    with pytest.raises(OutOfAttempts) as raised:
        run(restock_place_task, restock.pk)
    factory.answer(202, {**ORDER, "reference": restock.reference, "order_id": "F-000777"})
    calling, go = a_call_held_in_flight(monkeypatch)
    outcomes = {}
    resend = thread_keeping(outcomes, "resend", lambda: run(restock_place_task, restock.pk))
    resend.start()
    assert calling.wait(5)

    fail(restock_place_task, raised.value, restock.pk)  # the retry gives up while the resend's call is out
    go.set()
    resend.join(10)

    assert outcomes == {"resend": "placed"}
    restock.refresh_from_db()
    assert (restock.status, order_of(restock).order_id) == ("placed", "F-000777")
    assert not DeadLetter.objects.exists() and not Alert.objects.filter(kind="dead_letter").exists()
    assert queues(DEAD_LETTER_QUEUE) == []


@pytest.mark.django_db(transaction=True)
def test_a_message_giving_up_while_another_is_calling_leaves_the_dead_letter_to_that_call_if_it_fails(
    factory, queues, settings, monkeypatch
):
    from testsupport.threads import thread_keeping

    factory.answer(503, {"error": "busy"})
    restock = pending_restock(attempt_count=settings.FACTORY_MAX_ATTEMPTS - 1)
    with pytest.raises(OutOfAttempts) as raised:
        run(restock_place_task, restock.pk)
    factory.answer(503, {"error": "still busy"})
    calling, go = a_call_held_in_flight(monkeypatch)
    outcomes = {}
    resend = thread_keeping(outcomes, "resend", lambda: run(restock_place_task, restock.pk))
    resend.start()
    assert calling.wait(5)
    fail(restock_place_task, raised.value, restock.pk)
    go.set()
    resend.join(10)

    assert isinstance(outcomes["resend"], OutOfAttempts)
    fail(restock_place_task, outcomes["resend"], restock.pk)
    assert Restock.objects.get(pk=restock.pk).status == "failed"
    dead_letter = DeadLetter.objects.get()
    assert "still busy" in dead_letter.exception_message and dead_letter.restock_id == restock.pk
    assert Alert.objects.filter(kind="dead_letter").count() == 1


def test_a_refusal_is_dead_lettered_at_once_without_a_retry(factory, queues):
    factory.answer(409, {"error": "reference already used with another sku"})
    restock = pending_restock()

    with pytest.raises(FactoryRejected) as raised:
        run(restock_place_task, restock.pk)
    fail(restock_place_task, raised.value, restock.pk)

    restock.refresh_from_db()
    assert restock.status == "failed" and "reference already used" in order_of(restock).last_error
    assert DeadLetter.objects.get().exception_type == "factory.client.FactoryRejected"
    assert queues("factory") == []


def test_a_bug_during_the_call_still_dead_letters_the_restock(factory, queues, monkeypatch):
    # Not a factory answer (a bug, a worker's time limit): nothing recorded the call, so its claim was still
    # live when the message gave up, and the restock waited, claimed, with no dead letter and no page.
    def broken(*args, **kwargs):
        raise RuntimeError("a bug in the client")

    monkeypatch.setattr("factory.client.FactoryClient.place_order", broken)
    restock = pending_restock()

    with pytest.raises(RuntimeError) as raised:
        run(restock_place_task, restock.pk)
    fail(restock_place_task, raised.value, restock.pk)

    restock.refresh_from_db()
    assert restock.status == "failed" and order_of(restock).claimed_at is None
    assert DeadLetter.objects.get().exception_message == "a bug in the client"


def test_an_accepted_order_is_placed(factory, queues):
    factory.answer(202, {**ORDER, "order_id": "F-000777"})
    restock = pending_restock()

    assert run(restock_place_task, restock.pk) == "placed"

    restock.refresh_from_db()
    assert (restock.status, order_of(restock).order_id) == ("placed", "F-000777")


def test_failed_calls_in_a_row_warn_ops_that_the_factory_is_in_trouble(factory, settings):
    settings.FACTORY_FAILURE_STREAK_ALERT = 3
    restock = pending_restock()

    for failures in (1, 2, 3):
        factory.answer(500, {"error": "boom"})
        with pytest.raises(Exception):  # noqa: B017 - FactoryUnavailable, retried by the task
            restock_place(restock.pk)
        assert Alert.objects.filter(kind="factory_degraded").exists() == (failures == 3)

    alert = Alert.objects.get(kind="factory_degraded")
    assert alert.severity == "warning" and alert.context["sku"] == "GLAZED"
    assert alert.title == "The factory failed 3 calls in a row"


def test_rate_limits_in_a_row_warn_ops_without_threatening_dead_letters(factory, settings):
    settings.FACTORY_FAILURE_STREAK_ALERT = 2
    restock = pending_restock()

    for _ in range(2):
        factory.answer(429, {"error": "slow down"}, {"Retry-After": "1"})
        with pytest.raises(Exception):  # noqa: B017 - FactoryRateLimited, retried by the task
            restock_place(restock.pk)

    alert = Alert.objects.get(kind="factory_degraded")
    assert alert.title == "The factory rate limited 2 calls in a row", "it failed none: it asked us to wait"
    assert "429" in alert.text and "rate limit" in alert.text and "dead-letter" not in alert.text


def test_the_factory_answering_again_closes_its_failing_in_a_row_warning(factory, settings):
    # Left open, it was pushed to the ops phones ALERT_ESCALATE_AFTER_SECONDS later, long after the trouble.
    settings.FACTORY_FAILURE_STREAK_ALERT = 2
    restock = pending_restock()
    for _ in range(2):
        factory.answer(500, {"error": "boom"})
        with pytest.raises(Exception):  # noqa: B017 - FactoryUnavailable, retried by the task
            restock_place(restock.pk)
    assert Alert.objects.get(kind="factory_degraded").acknowledged_at is None

    factory.answer(202, {**ORDER, "reference": restock.reference})
    assert restock_place(restock.pk) == "placed"

    alert = Alert.objects.get(kind="factory_degraded")
    assert alert.acknowledged_at is not None and alert.acknowledged_by is None


def test_the_factory_answering_again_also_settles_the_warnings_its_window_held_back(factory, settings):
    # Every failed call of an outage past the streak raises the warning again, held back in its group's
    # window: their summary came out after the window as an open warning, escalated to the ops phones
    # ALERT_ESCALATE_AFTER_SECONDS later, about a trouble that had passed.
    settings.FACTORY_FAILURE_STREAK_ALERT = 2
    restock = pending_restock()
    for _ in range(4):  # the 2nd call raises the warning, the 3rd and 4th are held back in its window
        factory.answer(500, {"error": "boom"})
        with pytest.raises(Exception):  # noqa: B017 - FactoryUnavailable, retried by the task
            restock_place(restock.pk)
    assert AlertGroup.objects.get(dedupe_key="factory_degraded").suppressed_count == 2

    factory.answer(202, {**ORDER, "reference": restock.reference})
    assert restock_place(restock.pk) == "placed"
    AlertGroup.objects.filter(dedupe_key="factory_degraded").update(
        window_ends_at=timezone.now() - timedelta(seconds=1), flush_at=timezone.now() - timedelta(seconds=1)
    )
    alert_groups_flush()  # the window closes

    open_warnings = Alert.objects.filter(kind="factory_degraded", severity="warning", acknowledged_at__isnull=True)
    assert not open_warnings.exists(), "nothing left for alerts_escalate to push to the phones"


def test_a_second_outage_minutes_after_the_first_is_told_at_the_next_sweep_not_at_the_old_windows_end(
    factory, settings
):
    # The factory fails, its warning goes out, the factory answers again (the warning is settled). A few
    # minutes later, inside the first warning's group window, it fails again: ops must hear of it as soon as
    # a new critical fact would be (ALERT_CRITICAL_FLUSH_SECONDS, plus one sweep), not when the first
    # outage's window ends (ALERT_GROUP_WINDOW_SECONDS after it began).
    settings.FACTORY_FAILURE_STREAK_ALERT = 2
    settings.ALERT_CRITICAL_FLUSH_SECONDS = 0  # "soon" is the next sweep
    settings.SLACK_WEBHOOK_URL = "http://127.0.0.1:9/slack"
    first = pending_restock()
    second = Restock.objects.create(product=make_product("MAPLE", on_hand=0), quantity=120, reason="shortage")
    for _ in range(2):
        factory.answer(500, {"error": "boom"})
        with pytest.raises(Exception):  # noqa: B017 - FactoryUnavailable, retried by the task
            restock_place(first.pk)
    factory.answer(202, {**ORDER, "reference": first.reference})
    assert restock_place(first.pk) == "placed"
    assert not Alert.objects.filter(kind="factory_degraded", acknowledged_at__isnull=True).exists(), "settled"

    for _ in range(2):  # the second outage
        factory.answer(503, {"error": "down again"})
        with pytest.raises(Exception):  # noqa: B017 - FactoryUnavailable, retried by the task
            restock_place(second.pk)
    group = AlertGroup.objects.get(dedupe_key="factory_degraded")
    assert group.window_ends_at > timezone.now(), "still inside the first outage's window"
    assert alert_groups_flush() == 1, "the next sweep tells ops"

    told = Alert.objects.get(kind="factory_degraded", acknowledged_at__isnull=True)
    assert (told.severity, told.title) == ("warning", "Factory degraded: +1 more (new: MAPLE)")
    assert "slack" in told.deliveries.values_list("channel", flat=True)


def test_a_flapping_factory_is_one_line_per_window_not_one_per_recovery(factory, settings):
    # A factory failing about two calls in three fails a streak and answers again every few seconds: each
    # answer settled what the streak held back with a "(all settled since)" line at once, ~30 in 100 s of
    # Slack about trouble nobody had been told of. The first recovery still says so at once (it closes the
    # warning ops saw); the later ones are one line when the window ends.
    settings.FACTORY_FAILURE_STREAK_ALERT = 2

    def flap(restock: Restock) -> None:
        for _ in range(3):  # a streak: its 2nd and 3rd failed calls raise the warning
            factory.answer(500, {"error": "boom"})
            with pytest.raises(Exception):  # noqa: B017 - FactoryUnavailable, retried by the task
                restock_place(restock.pk)
        factory.answer(202, {**ORDER, "reference": restock.reference})
        assert restock_place(restock.pk) == "placed"

    flap(pending_restock())
    told = list(Alert.objects.filter(kind="factory_degraded").order_by("pk").values_list("title", flat=True))
    assert told == ["The factory failed 2 calls in a row", "Factory degraded (all settled since): +1 more (GLAZED)"]
    for sku in ("MAPLE", "BOSTON", "CRULLER", "MATCHA"):
        flap(Restock.objects.create(product=make_product(sku, on_hand=0), quantity=120, reason="shortage"))
    assert Alert.objects.filter(kind="factory_degraded").count() == 2, "nothing more while it flaps"

    AlertGroup.objects.filter(dedupe_key="factory_degraded").update(
        window_ends_at=timezone.now() - timedelta(seconds=1), flush_at=timezone.now() - timedelta(seconds=1)
    )
    assert alert_groups_flush() == 1  # the window closes

    last = Alert.objects.filter(kind="factory_degraded").latest("pk")
    assert last.title == "Factory degraded (all settled since): +8 more (MAPLE, BOSTON, CRULLER, MATCHA)"
    assert "new" not in last.context and "New since" not in last.text, "nothing in an all-settled line is news"
    assert (last.severity, last.acknowledged_at is not None) == ("info", True)
    assert not Alert.objects.filter(kind="factory_degraded", acknowledged_at__isnull=True).exists()


def test_a_flap_that_does_not_recover_is_told_as_a_second_outage(factory, settings):
    # After a recovery that waits for the window's end, the next streak is still news: summarized as a
    # warning within ALERT_CRITICAL_FLUSH_SECONDS if the factory does not answer again by then.
    settings.FACTORY_FAILURE_STREAK_ALERT = 2
    settings.ALERT_CRITICAL_FLUSH_SECONDS = 0  # "soon" is the next sweep
    first = pending_restock()
    second, third = (
        Restock.objects.create(product=make_product(sku, on_hand=0), quantity=120, reason="shortage")
        for sku in ("MAPLE", "BOSTON")
    )
    for restock, calls in ((first, 3), (second, 3)):
        for _ in range(calls):
            factory.answer(500, {"error": "boom"})
            with pytest.raises(Exception):  # noqa: B017 - FactoryUnavailable, retried by the task
                restock_place(restock.pk)
        factory.answer(202, {**ORDER, "reference": restock.reference})
        assert restock_place(restock.pk) == "placed"
    assert Alert.objects.filter(kind="factory_degraded").count() == 2, "the second recovery's line waits"

    for _ in range(2):  # down again, and it stays down
        factory.answer(503, {"error": "down again"})
        with pytest.raises(Exception):  # noqa: B017 - FactoryUnavailable, retried by the task
            restock_place(third.pk)
    assert alert_groups_flush() == 1, "the next sweep tells ops"

    told = Alert.objects.get(kind="factory_degraded", acknowledged_at__isnull=True)
    assert told.severity == "warning" and told.title == "Factory degraded: +3 more (new: MAPLE, BOSTON)"


def placed_restock() -> Restock:
    restock = pending_restock()
    Restock.objects.filter(pk=restock.pk).update(status="placed")
    FactoryOrder.objects.create(restock=restock, order_id="F-000123")
    return Restock.objects.get(pk=restock.pk)


def test_polling_an_overdue_order_receives_what_the_factory_made_when_the_callback_was_lost(factory):
    restock = placed_restock()
    factory.answer(200, {**ORDER, "reference": restock.reference, "status": "completed", "quantity_produced": 90})

    assert run(restock_poll_task, restock.pk) == "completed"

    restock.refresh_from_db()
    assert (restock.status, restock.quantity_received) == ("fulfilled", 90)
    assert Product.objects.get(sku="GLAZED").on_hand == 90
    assert ledger_differences() == []
    assert factory.requests[0]["path"] == "/v1/orders/F-000123"


def test_polling_an_order_the_factory_has_under_another_quantity_receives_it_and_tells_ops(factory):
    # The same receipt as the callback's: a lost callback must not make the factory's disagreement silent.
    restock = placed_restock()
    factory.answer(
        200,
        {**ORDER, "reference": restock.reference, "quantity": 100, "status": "completed", "quantity_produced": 90},
    )

    assert run(restock_poll_task, restock.pk) == "completed"

    assert Product.objects.get(sku="GLAZED").on_hand == 90
    (alert,) = Alert.objects.all()
    assert alert.kind == "factory_quantity_mismatch"
    assert alert.title == "The factory has our order of GLAZED as 100, not 120"


def test_polling_an_order_still_in_production_updates_when_it_is_expected(factory):
    restock = placed_restock()
    factory.answer(
        200,
        {
            **ORDER,
            "reference": restock.reference,
            "status": "in_production",
            "estimated_ready_at": "2026-11-22T04:00:00Z",
        },
    )

    assert run(restock_poll_task, restock.pk) == "in_production"

    restock.refresh_from_db()
    assert restock.status == "placed" and restock.expected_at.isoformat() == "2026-11-22T04:00:00+00:00"
    assert order_of(restock).last_polled_at is not None


def test_polling_an_order_placed_before_the_reference_prefix_changed_receives_it(factory, settings):
    # FACTORY_REFERENCE_PREFIX changed in a deploy while the order was at the factory, which keeps the
    # reference it was placed under. Its callback is credited by the order id; a poll refusing it left the
    # restock placed for good, the product never reordered, and ops told the factory reported nothing.
    restock = placed_restock()
    placed_under = restock.reference
    settings.FACTORY_REFERENCE_PREFIX = "donuts-eu"
    factory.answer(200, {**ORDER, "reference": placed_under, "status": "completed", "quantity_produced": 90})

    assert run(restock_poll_task, restock.pk) == "completed"

    assert Restock.objects.get(pk=restock.pk).status == "fulfilled"
    assert Product.objects.get(sku="GLAZED").on_hand == 90


def test_polling_answered_with_another_orders_production_leaves_when_it_is_expected(factory, caplog):
    # The factory answered our order id with another restock's order, still in production: its estimate is
    # not when this restock's donuts arrive.
    restock = placed_restock()
    other = another_restock()
    factory.answer(200, {**ORDER, "reference": other.reference, "status": "in_production"})

    assert "asked again by the next sweep" in run(restock_poll_task, restock.pk)

    assert Restock.objects.get(pk=restock.pk).expected_at is None
    [warning] = [r for r in caplog.records if "cannot be used" in r.getMessage()]
    assert warning.levelname == "WARNING" and other.reference in warning.getMessage()


def test_a_placed_order_the_factory_does_not_know_is_placed_again_under_its_reference(
    factory, queues, django_capture_on_commit_callbacks
):
    # Left placed, it stayed open for ever: the product (one open restock at most) was never ordered again.
    restock = placed_restock()
    factory.answer(404, {"error": "no such order"})  # by id
    factory.answer(200, {"results": []})  # by reference

    with django_capture_on_commit_callbacks(execute=True):
        assert run(restock_poll_task, restock.pk) == "placed again"

    assert factory.requests[1]["path"] == f"/v1/orders?reference={restock.reference}"
    assert Restock.objects.get(pk=restock.pk).status == "pending"
    assert queues("factory") == [("factory.restock_place", [restock.pk])], "on its way again, behind shortages"
    factory.answer(202, {**ORDER, "order_id": "F-000999", "reference": restock.reference})
    assert run(restock_place_task, restock.pk) == "placed"
    assert json.loads(factory.requests[2]["body"])["reference"] == restock.reference
    restock.refresh_from_db()
    assert (restock.status, order_of(restock).order_id) == ("placed", "F-000999")


def test_a_failed_restock_the_factory_does_not_know_waits_for_its_redrive(factory, queues):
    restock = placed_restock()
    Restock.objects.filter(pk=restock.pk).update(status="failed")
    factory.answer(404, {"error": "no such order"})
    factory.answer(200, {"results": []})

    assert run(restock_poll_task, restock.pk) == "unknown at the factory"

    assert Restock.objects.get(pk=restock.pk).status == "failed" and queues("factory") == []


def test_polling_a_restock_that_is_no_longer_placed_does_not_call_the_factory(factory):
    restock = pending_restock()

    assert run(restock_poll_task, restock.pk) == "not placed"

    assert factory.requests == []


def test_polling_a_busy_factory_is_left_to_the_next_sweep_without_a_dead_letter(factory, queues):
    restock = placed_restock()
    factory.answer(503, {"error": "down"})

    assert run(restock_poll_task, restock.pk).startswith("factory unavailable")

    assert not DeadLetter.objects.exists() and not Alert.objects.filter(kind="dead_letter").exists()
    assert Restock.objects.get(pk=restock.pk).status == "placed"  # the order is still at the factory
    assert queues("factory") == []  # the sweep asks again after FACTORY_OVERDUE_GRACE_SECONDS


def overdue_and_polled(restock, factory, *answers) -> str:
    """The text of the overdue warning raised for `restock`, placed and late, after one poll the factory
    answered with `answers`."""
    long_ago = timezone.now() - timedelta(hours=2)
    Restock.objects.filter(pk=restock.pk).update(placed_at=long_ago, expected_at=long_ago)
    for status, body in answers:
        factory.answer(status, body)
    run(restock_poll_task, restock.pk)
    restocks_overdue_alert()
    [alert] = Alert.objects.filter(kind="restock_overdue")
    return alert.text


def test_an_overdue_warning_after_a_poll_the_factory_did_not_answer_says_so(factory):
    # It said "the factory did not report one when asked": the on-call read it as the factory still making
    # the donuts, and waited, while the factory could not be reached at all.
    text = overdue_and_polled(placed_restock(), factory, (503, {"error": "maintenance"}))

    assert "did not report" not in text
    assert "asking the factory failed: 503: maintenance" in text


def test_an_overdue_warning_after_a_poll_answered_with_another_order_says_so(factory):
    restock = placed_restock()
    other = another_restock()

    text = overdue_and_polled(restock, factory, (200, {**ORDER, "reference": other.reference}))

    assert "did not report" not in text
    assert "answer was about another order" in text and other.reference in text


def test_an_overdue_warning_after_a_poll_that_found_the_order_in_production_says_the_factory_reported_none(
    factory,
):
    restock = placed_restock()
    FactoryOrder.objects.filter(restock_id=restock.pk).update(last_error="503: an earlier poll's")

    text = overdue_and_polled(restock, factory, (200, {**ORDER, "reference": restock.reference}))

    assert "the factory did not report one" in text and "earlier poll" not in text


def another_restock() -> Restock:
    return Restock.objects.create(product=make_product("MAPLE"), quantity=10, reason="manual")


@pytest.mark.parametrize(
    "answer",
    [
        lambda restock: (401, {"error": "bad key"}),
        lambda restock: (200, {**ORDER, "reference": restock.reference, "sku": "MAPLE", "status": "completed"}),
        lambda restock: (
            200,
            {**ORDER, "reference": another_restock().reference, "sku": "GLAZED", "status": "completed"},
        ),
        # Another client's order under our order id, same SKU: a factory that reused an id (the simulator
        # restarted). No restock has its reference, so it was taken for ours by the order id alone (its
        # number is not our restock's: that would be our order under an earlier reference prefix).
        lambda restock: (
            200,
            {**ORDER, "reference": f"other-shop-{restock.pk + 1}", "sku": "GLAZED", "status": "completed"},
        ),
    ],
    ids=["refused", "another-skus-order", "another-restocks-order", "another-clients-order"],
)
def test_a_poll_the_factory_refuses_or_contradicts_is_left_to_the_sweep_without_a_dead_letter(
    factory, queues, answer, caplog
):
    """A poll changes nothing by itself: an answer it cannot use is asked again by the next sweep, and an
    order that stays overdue has its overdue alert. A critical dead letter per sweep would page ops over
    and over about a read, naming no restock."""
    restock = placed_restock()
    status, body = answer(restock)
    factory.answer(status, {**body, "quantity_produced": 5} if status == 200 else body)

    assert "asked again by the next sweep" in run(restock_poll_task, restock.pk)

    assert [r.levelname for r in caplog.records if "cannot be used" in r.getMessage()] == ["WARNING"]

    assert not DeadLetter.objects.exists() and not Alert.objects.filter(kind="dead_letter").exists()
    assert Restock.objects.get(pk=restock.pk).status == "placed"
    assert Product.objects.get(sku="GLAZED").on_hand == 0
    assert queues("factory") == []


def test_the_budget_is_the_database_count_not_the_message_redelivery_count(factory, queues, settings):
    factory.answer(503, {"error": "down"})
    restock = pending_restock()

    # A message Celery has retried many times (redelivered, resent by the sweep) with one call recorded.
    with pytest.raises(Retry):
        run(restock_place_task, restock.pk, retries=settings.FACTORY_MAX_ATTEMPTS + 3)

    assert not DeadLetter.objects.exists()
    assert queues("factory") == [("factory.restock_place", [restock.pk])]


def test_work_that_dies_while_the_broker_is_down_still_leaves_its_dead_letter(factory, broker_down):
    factory.answer(409, {"error": "no"})
    restock = pending_restock()

    with pytest.raises(FactoryRejected) as raised:
        run(restock_place_task, restock.pk)
    fail(restock_place_task, raised.value, restock.pk)

    assert DeadLetter.objects.get().restock_id == restock.pk  # the row is the record; the queue copy is lost
    assert Restock.objects.get(pk=restock.pk).status == "failed"


@pytest.mark.parametrize(
    ("task", "queue"),
    [
        ("factory.restock_place", "factory"),
        ("factory.restock_poll", "factory"),
        ("factory.reconcile", "maintenance"),  # never behind the factory calls it rescues
        ("factory.dead_letter_copies_sync", "maintenance"),
        ("inventory.idempotency_keys_purge", "maintenance"),
    ],
)
def test_each_task_lands_on_the_queue_its_route_names(task, queue):
    broker = redis.Redis.from_url(current_app.conf.broker_url)
    broker.delete(queue)
    try:
        current_app.send_task(task, args=[0] if task.startswith("factory.restock") else [])

        assert [json.loads(raw)["headers"]["task"] for raw in broker.lrange(queue, 0, -1)] == [task]
        import inventory.tasks  # noqa: F401 - registers its task as a worker's autodiscovery would

        assert getattr(current_app.tasks[task], "queue", None) is None, "declared once, in CELERY_TASK_ROUTES"
    finally:
        broker.delete(queue)


def test_a_redriven_restock_gets_a_fresh_budget_and_its_calls_are_numbered_on(factory, queues, settings):
    factory.answer(503, {"error": "down"})
    restock = pending_restock(attempt_count=settings.FACTORY_MAX_ATTEMPTS - 1)
    with pytest.raises(OutOfAttempts) as raised:
        run(restock_place_task, restock.pk)
    fail(restock_place_task, raised.value, restock.pk)
    assert Restock.objects.get(pk=restock.pk).status == "failed"

    dead_letters_redrive(DeadLetter.objects.all(), by="ops")
    factory.answer(503, {"error": "still down"})
    with pytest.raises(Retry):  # not OutOfAttempts: the redrive gave it a whole budget again
        run(restock_place_task, restock.pk)
    factory.answer(202, {**ORDER, "order_id": "F-000778"})
    retry_due(restock)
    assert run(restock_place_task, restock.pk) == "placed"

    numbers = list(FactoryAttempt.objects.filter(restock=restock).values_list("number", "outcome"))
    last_run = settings.FACTORY_MAX_ATTEMPTS
    assert numbers == [(last_run, "transient"), (last_run + 1, "transient"), (last_run + 2, "accepted")]


def calls_made(restock, outcomes) -> None:
    """The restock's calls so far in this run, as the worker that made them recorded them."""
    FactoryOrder.objects.create(restock=restock, attempt_count=len(outcomes))
    FactoryAttempt.objects.bulk_create(
        FactoryAttempt(restock=restock, number=number, outcome=outcome, latency_ms=5)
        for number, outcome in enumerate(outcomes, 1)
    )


def test_a_factory_rate_limiting_a_restock_past_the_budget_does_not_give_it_up(factory, queues, settings):
    # "Under load it answers 429 or 503 in bursts": a 429 is the factory up and asking us to wait, not a
    # failure. A rush's burst of them must not dead-letter restocks and page ops by the dozen.
    restock = pending_restock()
    calls_made(restock, ["rate_limited"] * (settings.FACTORY_MAX_ATTEMPTS + 2))
    factory.answer(429, {"error": "slow down"}, {"Retry-After": "1"})

    with pytest.raises(Retry):
        run(restock_place_task, restock.pk)

    assert Restock.objects.get(pk=restock.pk).status == "pending"
    assert not DeadLetter.objects.exists() and not Alert.objects.filter(kind="dead_letter").exists()
    assert queues("factory") == [("factory.restock_place", [restock.pk])]


def test_a_rate_limited_call_is_logged_as_rate_limited_not_failed(factory, queues, caplog):
    # A 429 uses up no attempt and is no failure (docs/operations.md): an on-call engineer reading "attempt 1
    # failed (... 429 ...)" in a rush looked for an outage that was not there.
    restock = pending_restock()
    factory.answer(429, {"error": "slow down"}, {"Retry-After": "1"})

    with pytest.raises(Retry):
        run(restock_place_task, restock.pk)

    (line,) = [r.getMessage() for r in caplog.records if r.name == "factory.retries" and "attempt 1" in r.getMessage()]
    assert "attempt 1 rate limited (" in line and "failed" not in line, line


def test_a_restock_rate_limited_for_hours_is_still_retried_not_dead_lettered(factory, queues, settings):
    # A 429 spends no attempt, so the calls of one run are no longer bounded by FACTORY_MAX_ATTEMPTS: a
    # factory rate limiting a restock for a few hours (a call every few seconds) makes it 1100 calls. The
    # backoff of its next call must still be a wait, not an error that dead-letters it and pages ops.
    restock = pending_restock()
    calls_made(restock, ["rate_limited"] * 1100)
    factory.answer(429, {"error": "slow down"}, {"Retry-After": "1"})

    with pytest.raises(Retry):
        run(restock_place_task, restock.pk)

    assert Restock.objects.get(pk=restock.pk).status == "pending"
    assert order_of(restock).next_attempt_at <= timezone.now() + timedelta(
        seconds=settings.FACTORY_RETRY_BACKOFF_MAX_SECONDS
    )
    assert queues("factory") == [("factory.restock_place", [restock.pk])]


def test_failed_calls_between_rate_limits_still_use_up_the_budget(factory, queues, settings):
    restock = pending_restock()
    calls_made(restock, ["transient", "rate_limited", "rate_limited"] * (settings.FACTORY_MAX_ATTEMPTS - 1))
    factory.answer(503, {"error": "down"})

    with pytest.raises(OutOfAttempts) as raised:
        run(restock_place_task, restock.pk)

    assert str(raised.value).startswith(f"{settings.FACTORY_MAX_ATTEMPTS} failed attempts in 0 s (and ")
    assert "rate limited" in str(raised.value) and "503" in str(raised.value)


def test_rate_limits_before_a_redrive_spare_none_of_the_new_runs_failures(factory, queues, settings):
    # Five 429s and a refusal, then ops redrove it: a fresh budget, in which the earlier 429s spare nothing.
    # All but one of that budget failed since.
    restock = pending_restock()
    calls_made(restock, ["rate_limited"] * 5 + ["permanent"])
    failed = settings.FACTORY_MAX_ATTEMPTS - 1
    FactoryOrder.objects.filter(restock=restock).update(attempts_before_redrive=6, attempt_count=6 + failed)
    FactoryAttempt.objects.bulk_create(
        FactoryAttempt(restock=restock, number=n, outcome="transient", latency_ms=5) for n in range(7, 7 + failed)
    )
    factory.answer(503, {"error": "down"})

    with pytest.raises(OutOfAttempts) as raised:
        run(restock_place_task, restock.pk)

    assert str(raised.value).startswith(f"{settings.FACTORY_MAX_ATTEMPTS} failed attempts in 0 s; last: 503")


def failed_calls_since(restock, seconds_ago: float, outcomes) -> None:
    """calls_made, the first of them `seconds_ago`."""
    calls_made(restock, outcomes)
    FactoryAttempt.objects.filter(restock=restock).update(created_at=timezone.now() - timedelta(seconds=seconds_ago))


def test_a_503_burst_shorter_than_the_retry_window_gives_no_restock_up(factory, queues, settings):
    # "Under load it answers 429 or 503 in bursts": six calls fail in some 20 s of backoff, and a 30 s
    # burst in a rush dead-lettered the restocks and paged the ops phones, then cleared by itself.
    settings.FACTORY_RETRY_FOR_SECONDS = 90
    restock = pending_restock()
    failed_calls_since(restock, 30, ["transient"] * (settings.FACTORY_MAX_ATTEMPTS - 1))
    factory.answer(503, {"error": "busy"})

    with pytest.raises(Retry):
        run(restock_place_task, restock.pk)

    assert Restock.objects.get(pk=restock.pk).status == "pending"
    assert not DeadLetter.objects.exists() and not Alert.objects.filter(kind="dead_letter").exists()
    assert queues("factory") == [("factory.restock_place", [restock.pk])]
    assert order_of(restock).next_attempt_at <= timezone.now() + timedelta(
        seconds=settings.FACTORY_RETRY_BACKOFF_MAX_SECONDS
    ), "retried at the usual backoff"


def test_failures_past_the_budget_and_the_retry_window_dead_letter(factory, queues, settings):
    settings.FACTORY_RETRY_FOR_SECONDS = 90
    restock = pending_restock()
    failed_calls_since(restock, 95, ["transient"] * (settings.FACTORY_MAX_ATTEMPTS - 1))
    factory.answer(503, {"error": "down"})

    with pytest.raises(OutOfAttempts) as raised:
        run(restock_place_task, restock.pk)

    assert str(raised.value).startswith(f"{settings.FACTORY_MAX_ATTEMPTS} failed attempts in 95 s; last: 503")


def test_the_retry_window_starts_at_the_runs_first_failed_call(factory, queues, settings):
    # Rate limits long before, and a run ops redrove since, do not make the window older than the failures.
    settings.FACTORY_RETRY_FOR_SECONDS = 90
    restock = pending_restock()
    failed_calls_since(restock, 300, ["rate_limited"] * 3 + ["transient"] * 3)
    failed = settings.FACTORY_MAX_ATTEMPTS - 1
    FactoryOrder.objects.filter(restock=restock).update(attempts_before_redrive=6, attempt_count=6 + failed)
    FactoryAttempt.objects.bulk_create(
        FactoryAttempt(restock=restock, number=n, outcome="transient", latency_ms=5) for n in range(7, 7 + failed)
    )
    FactoryAttempt.objects.filter(restock=restock, number__gt=6).update(
        created_at=timezone.now() - timedelta(seconds=30)
    )
    factory.answer(503, {"error": "busy"})

    with pytest.raises(Retry):
        run(restock_place_task, restock.pk)

    assert not DeadLetter.objects.exists()


def test_a_rate_limit_once_the_retry_window_is_over_gives_no_restock_up(factory, queues, settings):
    # A 503 burst used up the budget inside the window, then the factory came back rate limiting us: its
    # 429 past the window gave the restock up and paged ops, though the factory was up and asked us to wait.
    settings.FACTORY_RETRY_FOR_SECONDS = 90
    restock = pending_restock()
    failed_calls_since(restock, 95, ["transient"] * settings.FACTORY_MAX_ATTEMPTS)
    factory.answer(429, {"error": "slow down"}, {"Retry-After": "1"})

    with pytest.raises(Retry):
        run(restock_place_task, restock.pk)

    assert Restock.objects.get(pk=restock.pk).status == "pending"
    assert queues("factory") == [("factory.restock_place", [restock.pk])]


def test_waits_between_rate_limited_calls_grow_as_between_failed_ones(factory, queues, settings, monkeypatch):
    from factory import retries

    monkeypatch.setattr(retries.random, "uniform", lambda low, high: high)  # the longest wait jitter may pick
    restock = pending_restock()
    calls_made(restock, ["rate_limited"] * 5)
    factory.answer(429, {"error": "slow down"}, {"Retry-After": "1"})
    before = timezone.now()

    with pytest.raises(Retry):
        run(restock_place_task, restock.pk)

    # The sixth call: backoff 1 s x 2**6, capped at 15 s; not the 1 s the factory asked for, again and again.
    cap = timedelta(seconds=settings.FACTORY_RETRY_BACKOFF_MAX_SECONDS)
    assert before + cap <= order_of(restock).next_attempt_at <= timezone.now() + cap


def test_an_enormous_retry_after_parks_no_longer_than_the_cap(factory, queues, settings):
    factory.answer(429, {"error": "come back next year"}, {"Retry-After": "31536000"})
    restock = pending_restock(dispatched_at=timezone.now())
    cap = timedelta(seconds=settings.FACTORY_RETRY_AFTER_MAX_SECONDS)
    before = timezone.now()

    assert run(restock_place_task, restock.pk) is None

    order = order_of(restock)
    assert order.dispatched_at is None and queues("factory") == []  # parked in the database
    assert before + cap <= order.next_attempt_at <= timezone.now() + cap  # the cap, not a year


def test_a_database_outage_during_an_attempt_is_retried_not_dead_lettered(factory, queues, monkeypatch):
    # MariaDB answering "Too many connections": the attempt fails, and so does reading its budget.
    from django.db import OperationalError

    from factory import tasks

    restock = pending_restock()
    outage = OperationalError(1040, "Too many connections")

    def database_away(*args, **kwargs):
        raise outage

    monkeypatch.setattr(tasks.services, "restock_place", database_away)
    monkeypatch.setattr(tasks.services, "restock_attempts_used", database_away)

    with pytest.raises(Retry):
        run(restock_place_task, restock.pk)

    restock.refresh_from_db()
    assert restock.status == "pending" and not DeadLetter.objects.exists()
    assert queues("factory") == [("factory.restock_place", [restock.pk])]


@pytest.fixture
def short_lock_waits():
    """This test's connection (the worker's, in these tests) waits 1 s for a row lock, not MariaDB's 50 s."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SET SESSION innodb_lock_wait_timeout = 1")
    yield
    with connection.cursor() as cursor:
        cursor.execute("SET SESSION innodb_lock_wait_timeout = DEFAULT")


@contextmanager
def restock_row_held_during_the_call(monkeypatch, restock, *, until=lambda worker_waiting: False):
    """Another transaction that locks the restock's row (as a callback receiving it does) once the worker
    has claimed the restock and is calling the factory, and holds it until `until(id of the worker's
    transaction waiting for it)` is true, or the with-block ends. Yields the holder's outcome ("let go" or
    "held", under "holder"), complete once the block has ended: run the worker inside it."""
    import threading

    from testsupport.threads import LOCK_POLL_SECONDS, connection_id, lock_waiting_transaction, thread_keeping

    calling, go = a_call_held_in_flight(monkeypatch)
    worker, let_go, outcomes = connection_id(), threading.Event(), {}

    def hold():
        assert calling.wait(10)
        with transaction.atomic():
            Restock.objects.select_for_update().filter(pk=restock.pk).exists()
            go.set()
            while not let_go.wait(LOCK_POLL_SECONDS):
                if until(lock_waiting_transaction(worker)):
                    return "let go"
        return "held"

    holder = thread_keeping(outcomes, "holder", hold)
    holder.start()
    try:
        yield outcomes
    finally:
        let_go.set()
        holder.join(10)


def lets_go_at_the_second_wait():
    """An `until` for restock_row_held_during_the_call: true once a second transaction of the worker waits
    (its record ran again after the first timed out)."""
    seen = set()

    def until(waiting):
        if waiting:
            seen.add(waiting)
        return len(seen) >= 2

    return until


def run_with_its_record_refused(monkeypatch, restock, raises):
    """Run the restock's task while another transaction holds the restock's row through the factory's call and
    longer than every try of its record waits: the factory's answer cannot be written down. Returns what the
    task raised (`raises`)."""
    with restock_row_held_during_the_call(monkeypatch, restock) as outcomes, pytest.raises(raises) as raised:
        run(restock_place_task, restock.pk)
    assert outcomes == {"holder": "held"}
    return raised.value


@pytest.mark.django_db(transaction=True)
def test_a_refusal_whose_record_cannot_be_written_is_still_dead_lettered_at_once(
    factory, queues, monkeypatch, short_lock_waits, caplog
):
    # The worker records the factory's 409 while another transaction holds the restock's row for longer
    # than any try waits. The database's error raised in place of the refusal was retried as a busy
    # factory, and the claim it left held kept that retry, and the dead letter and its page, back until
    # the claim's lease ran out and the sweep resent the restock.
    factory.answer(409, {"error": "reference already used with another sku"})
    restock = pending_restock()
    refused = run_with_its_record_refused(monkeypatch, restock, FactoryRejected)
    assert order_of(restock).claimed_at is None and not FactoryAttempt.objects.filter(restock=restock).exists()
    assert "could not be recorded" in caplog.text

    fail(restock_place_task, refused, restock.pk)

    restock.refresh_from_db()
    assert restock.status == "failed"
    assert DeadLetter.objects.get().exception_type == "factory.client.FactoryRejected"
    assert Alert.objects.get(kind="dead_letter").severity == "critical"
    assert queues("factory") == [] and len(factory.requests) == 1


@pytest.mark.django_db(transaction=True)
def test_a_failed_call_whose_record_meets_a_lock_is_recorded_when_it_is_let_go(
    factory, queues, monkeypatch, short_lock_waits
):
    # A lock held a little longer than the record's wait (a callback, the sweep, an alert) times the record
    # out once; it is written at the next try, and the retry waits as the factory asked.
    factory.answer(429, {"error": "slow down"}, headers={"Retry-After": "7"})
    restock = pending_restock()
    before = timezone.now()
    held = restock_row_held_during_the_call(monkeypatch, restock, until=lets_go_at_the_second_wait())
    with held as outcomes, pytest.raises(Retry):
        run(restock_place_task, restock.pk)

    assert outcomes == {"holder": "let go"}
    attempt = FactoryAttempt.objects.get(restock=restock)
    assert (attempt.number, attempt.outcome, attempt.status_code) == (1, "rate_limited", 429)
    order = order_of(restock)
    assert order.claimed_at is None and order.next_attempt_at >= before + timedelta(seconds=7)


@pytest.mark.django_db(transaction=True)
def test_an_accepted_order_whose_record_meets_a_lock_is_placed_when_it_is_let_go(
    factory, queues, monkeypatch, short_lock_waits
):
    factory.answer(202, {**ORDER, "order_id": "F-000777"})
    restock = pending_restock()
    held = restock_row_held_during_the_call(monkeypatch, restock, until=lets_go_at_the_second_wait())
    with held as outcomes:
        outcome = run(restock_place_task, restock.pk)

    assert (outcome, outcomes) == ("placed", {"holder": "let go"})
    restock.refresh_from_db()
    assert (restock.status, order_of(restock).order_id, order_of(restock).claimed_at) == ("placed", "F-000777", None)
    assert list(FactoryAttempt.objects.values_list("outcome", flat=True)) == ["accepted"]


@pytest.mark.django_db(transaction=True)
def test_an_accepted_order_whose_record_cannot_be_written_is_answered_again_by_the_retry(
    factory, queues, monkeypatch, short_lock_waits
):
    # The factory has the order and we could not write it down: the database error is retried, and the claim
    # is let go so that the retry calls at once (not after the claim's lease) and the factory answers it
    # with the same order.
    factory.answer(202, {**ORDER, "order_id": "F-000777"})
    restock = pending_restock()
    run_with_its_record_refused(monkeypatch, restock, Retry)
    assert order_of(restock).claimed_at is None
    assert Restock.objects.get(pk=restock.pk).status == "pending"

    factory.answer(200, {**ORDER, "order_id": "F-000777"})
    retry_due(restock)
    assert run(restock_place_task, restock.pk, retries=1) == "placed"

    assert order_of(restock).order_id == "F-000777"
    assert list(FactoryAttempt.objects.values_list("outcome", flat=True)) == ["replayed"]


@pytest.mark.django_db(transaction=True)
def test_an_accepted_order_on_the_last_allowed_call_whose_record_cannot_be_written_is_not_given_up(
    factory, queues, settings, monkeypatch, short_lock_waits
):
    # The factory took the order at the restock's last allowed call, and we could not write it down. The call
    # stayed counted as a failed one, so the database's error ran the restock out of attempts: its dead letter
    # failed it and paged ops while the factory made the order.
    factory.answer(202, {**ORDER, "order_id": "F-000777"})
    restock = pending_restock(attempt_count=settings.FACTORY_MAX_ATTEMPTS - 1)
    run_with_its_record_refused(monkeypatch, restock, Retry)
    order = order_of(restock)
    assert (order.attempt_count, order.claimed_at) == (settings.FACTORY_MAX_ATTEMPTS - 1, None)
    assert Restock.objects.get(pk=restock.pk).status == "pending" and not DeadLetter.objects.exists()

    factory.answer(200, {**ORDER, "order_id": "F-000777"})
    retry_due(restock)
    assert run(restock_place_task, restock.pk, retries=1) == "placed"
    assert (order_of(restock).order_id, len(factory.requests)) == ("F-000777", 2)


@pytest.mark.django_db(transaction=True)
def test_a_rate_limited_call_whose_record_cannot_be_written_uses_up_no_attempt(
    factory, queues, settings, monkeypatch, short_lock_waits
):
    # The factory answered 429 and we could not write it down. A recorded 429 is spared by the budget (its
    # attempt row says rate limited); this one stayed counted on the order row with no row to spare it, so
    # the next failed call gave the restock up one call early, paging ops over a factory that asked us to wait.
    factory.answer(429, {"error": "slow down"}, headers={"Retry-After": "1"})
    restock = pending_restock(attempt_count=settings.FACTORY_MAX_ATTEMPTS - 2)
    run_with_its_record_refused(monkeypatch, restock, Retry)
    order = order_of(restock)
    assert (order.attempt_count, order.claimed_at) == (settings.FACTORY_MAX_ATTEMPTS - 2, None)

    factory.answer(503, {"error": "busy"})
    retry_due(restock)
    with pytest.raises(Retry):  # the budget's last allowed call is still to come
        run(restock_place_task, restock.pk, retries=1)
    assert Restock.objects.get(pk=restock.pk).status == "pending" and not DeadLetter.objects.exists()
    assert order_of(restock).attempt_count == settings.FACTORY_MAX_ATTEMPTS - 1


def test_a_second_message_never_cuts_a_retrys_wait_short(factory, queues):
    # A duplicate, or the same restock sent again on the urgent route: the factory answered 503, and the
    # retry waits its backoff. The other message must not call before it.
    factory.answer(503, {"error": "busy"})
    restock = pending_restock()
    with pytest.raises(Retry):
        run(restock_place_task, restock.pk, queue="factory_urgent")
    calls = FactoryAttempt.objects.filter(restock=restock).count()
    FactoryOrder.objects.filter(restock=restock).update(next_attempt_at=timezone.now() + timedelta(seconds=10))

    assert run(restock_place_task, restock.pk) == "skipped"
    assert FactoryAttempt.objects.filter(restock=restock).count() == calls == 1


@pytest.mark.django_db(transaction=True)
def test_a_failed_restock_whose_order_the_factory_had_after_all_is_received(factory, queues, settings):
    # A call answered 500 after the factory stored the order, the restock ran out of attempts, and the
    # callback was lost: without asking, what the factory made would never be received.
    from factory.services import restocks_overdue
    from testsupport.data import make_dead_letter

    settings.FACTORY_OVERDUE_GRACE_SECONDS = 0
    dead_letter = make_dead_letter()
    restock = Restock.objects.get(pk=dead_letter.restock_id)
    assert restocks_overdue() == [restock.pk], "the sweep asks about a failed restock whose dead letter waits"
    order = {**ORDER, "reference": restock.reference, "sku": restock.product.sku, "quantity": restock.quantity}
    factory.answer(200, {"results": [{**order, "status": "completed", "quantity_produced": 40}]})

    assert run(restock_poll_task, restock.pk) == "completed"

    restock.refresh_from_db()
    assert (restock.status, restock.quantity_received) == ("fulfilled", 40)
    assert DeadLetter.objects.get().is_resolved and restocks_overdue() == []
    assert factory.requests[0]["path"] == f"/v1/orders?reference={restock.reference}"


@pytest.mark.django_db(transaction=True)
def test_a_failed_restock_the_factory_is_still_making_is_placed_and_not_ordered_twice(factory, queues, settings):
    # Every call timed out or failed, but the first had created the order. Left failed, the product had no
    # open restock, and the next sale short of it ordered the same donuts a second time.
    from testsupport.data import make_dead_letter

    settings.FACTORY_OVERDUE_GRACE_SECONDS = 0
    dead_letter = make_dead_letter()
    restock = Restock.objects.get(pk=dead_letter.restock_id)
    order = {**ORDER, "reference": restock.reference, "sku": restock.product.sku, "quantity": restock.quantity}
    factory.answer(200, {"results": [{**order, "order_id": "F-000777", "status": "in_production"}]})

    assert run(restock_poll_task, restock.pk) == "in_production"

    restock.refresh_from_db()
    assert (restock.status, order_of(restock).order_id) == ("placed", "F-000777")
    assert restock.expected_at.isoformat() == "2026-11-22T03:05:00+00:00"
    assert DeadLetter.objects.get().is_resolved, "the factory has the order: nothing for ops to redrive"
    assert not Alert.objects.filter(kind="dead_letter", acknowledged_at__isnull=True).exists()
    assert restocks_open([restock.product], reason="shortage") == {restock.product_id: restock}, "no second order"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("other", "outcome"),
    [({"quantity": 999}, "in_production"), ({"sku": "OTHER"}, "asked again by the next sweep")],
    ids=["quantity", "sku"],
)
def test_a_failed_restock_whose_reference_names_another_order_stays_failed(factory, queues, settings, other, outcome):
    # The order a 409 named: our reference with another SKU or quantity is not the order we asked for.
    from testsupport.data import make_dead_letter

    settings.FACTORY_OVERDUE_GRACE_SECONDS = 0
    dead_letter = make_dead_letter()
    restock = Restock.objects.get(pk=dead_letter.restock_id)
    order = {**ORDER, "reference": restock.reference, "sku": restock.product.sku, "quantity": restock.quantity}
    factory.answer(200, {"results": [{**order, **other, "status": "in_production"}]})

    assert run(restock_poll_task, restock.pk).endswith(outcome)

    assert Restock.objects.get(pk=restock.pk).status == "failed"
    assert not DeadLetter.objects.get().is_resolved


def test_a_restock_whose_worker_died_mid_call_is_resent_once_not_at_every_sweep(queues, settings):
    # The worker was killed during the call: its claim outlived it, and the sweep hands the restock to the
    # queue again. That message may wait there a while (a backlog, the factory workers still down), and
    # the claim stays stale until it runs: the sweeps every few seconds must not add one message each.
    from factory.services import reconcile

    died = timezone.now() - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 30)
    restock = pending_restock(
        attempt_count=1, dispatched_at=died - timedelta(seconds=1), next_attempt_at=died, claimed_at=died
    )

    assert reconcile()["restocks_resent"] == 1
    assert reconcile()["restocks_resent"] == 0, "the resend is on its way"
    assert queues("factory") == [("factory.restock_place", [restock.pk])]

    # Lost too (no worker took it OUTBOX_RESEND_AFTER_SECONDS after it was sent): sent again, once.
    later = timezone.now() - timedelta(seconds=settings.OUTBOX_RESEND_AFTER_SECONDS + 1)
    FactoryOrder.objects.filter(restock=restock).update(dispatched_at=later, next_attempt_at=later)
    assert reconcile()["restocks_resent"] == 1
    assert reconcile()["restocks_resent"] == 0


def test_an_overdue_order_is_asked_about_once_however_many_sweeps_sent_a_poll_meanwhile(factory, queues, settings):
    # Polls wait in the `factory` queue behind the restocks. Until one runs the order still looks never
    # asked, so each sweep (every few seconds) sends another; a backlog of a minute is a dozen polls per
    # overdue order. Only the first may call the slow factory: the others find it asked just now.
    from factory.services import reconcile

    restock = placed_restock()
    late = timezone.now() - timedelta(seconds=settings.FACTORY_OVERDUE_GRACE_SECONDS + 60)
    Restock.objects.filter(pk=restock.pk).update(placed_at=late, expected_at=late)
    reconcile()
    reconcile()
    polls = queues("factory")
    assert polls == [("factory.restock_poll", [restock.pk])] * 2, "the sweep cannot see a poll on its way"
    factory.answer(200, {**ORDER, "reference": restock.reference, "status": "in_production"})

    outcomes = [run(restock_poll_task, *args) for _, args in polls]

    assert len(factory.requests) == 1, factory.requests
    assert outcomes[0] == "in_production"
    assert Restock.objects.get(pk=restock.pk).status == "placed"


@pytest.mark.django_db(transaction=True)
def test_a_claim_and_the_hand_over_noting_the_same_order_row_neither_deadlocks(factory, queues, monkeypatch, caplog):
    # In a rush the sweep (or a sale) hands a pending restock to the queue and a worker takes the message
    # at once: the hand-over notes the order row just as the worker's claim updates it. Neither may die
    # of a deadlock (the worker's call then waited for a retry, or the hand-over went unnoted and was sent
    # again), which the rush did every few seconds.
    import threading

    from factory import services
    from factory.services import restock_dispatch
    from testsupport.threads import thread_keeping

    restock = pending_restock(attempt_count=0)
    factory.answer(202, {**ORDER, "reference": restock.reference})
    sent, note = threading.Event(), threading.Event()
    in_claim, claim = threading.Event(), threading.Event()
    order_row, publish = services._order_row, services.task_publish
    outcomes = {}

    def publish_then_wait(*args, **kwargs):  # the hand-over: its message left, its note comes next
        published = publish(*args, **kwargs)
        sent.set()
        note.wait(5)
        return published

    def order_row_then_wait(restock_id):  # the worker, inside its claim
        order_row(restock_id)
        if threading.current_thread() is worker:
            in_claim.set()
            claim.wait(5)

    monkeypatch.setattr(services, "task_publish", publish_then_wait)
    monkeypatch.setattr(services, "_order_row", order_row_then_wait)
    hand_over = thread_keeping(outcomes, "hand-over", lambda: restock_dispatch(restock.pk))
    worker = thread_keeping(outcomes, "worker", lambda: restock_place(restock.pk))
    hand_over.start()
    assert sent.wait(5)
    worker.start()
    assert in_claim.wait(5)
    note.set()
    hand_over.join(1)  # its note reaches the order row the claim holds, and waits
    claim.set()
    worker.join(10)
    hand_over.join(10)

    assert outcomes == {"worker": "placed", "hand-over": True}
    assert (order_of(restock).attempt_count, order_of(restock).dispatch_count) == (1, 1)
    assert "noting it failed" not in caplog.text


def test_a_need_after_a_401_sends_the_failed_restock_again_under_its_reference(factory, queues):
    # Its first call timed out or failed after the factory stored the order; the next was refused for a
    # wrong key (rotated at the factory, say), which says nothing of that order. Once the key is right,
    # the next need must send the same reference, which the factory answers with the order it has (200):
    # a new restock under a new reference was a second order for the same donuts.
    factory.answer(503, {"error": "stored, then fell over"})
    restock = pending_restock()
    with pytest.raises(Retry):
        run(restock_place_task, restock.pk)
    factory.answer(401, {"error": "bad key"})
    retry_due(restock)
    with pytest.raises(FactoryRejected) as raised:
        run(restock_place_task, restock.pk, retries=1)
    fail(restock_place_task, raised.value, restock.pk)
    assert Restock.objects.get(pk=restock.pk).status == "failed"

    with transaction.atomic():  # the next shortage, with the key fixed
        product = products_lock([restock.product_id])[restock.product_id]
        opened = restocks_open([product], reason="shortage")[product.pk]
    factory.answer(200, {**ORDER, "reference": restock.reference, "order_id": "F-000900"})
    assert run(restock_place_task, opened.pk) == "placed"

    sent = [json.loads(request["body"])["reference"] for request in factory.requests]
    assert sent == [restock.reference] * 3, "one reference: one order at the factory"
    assert list(Restock.objects.values_list("pk", "status")) == [(restock.pk, "placed")]
    assert not DeadLetter.objects.unresolved().exists()


@pytest.mark.django_db(transaction=True)
def test_a_reconcile_run_that_finds_another_under_way_skips_and_the_restock_is_handed_over_once(queues):
    # After a Redis outage the maintenance worker took the two or three reconcile messages beat had queued
    # and ran them side by side: each resent the same due restocks. The first run is held inside the sweep
    # here (at the restock's order row, which another transaction locks); the second must not hand the
    # restock over again, and once the first ends the next run sweeps as usual.
    import threading

    from factory.tasks import reconcile_task
    from testsupport.threads import connection_id, thread_keeping, until_waiting, waiting_for_a_lock

    restock = pending_restock(attempt_count=0, next_attempt_at=timezone.now())  # its hand-over failed: due
    locked, release = threading.Event(), threading.Event()
    outcomes, connections_of = {}, {}

    def order_row_locked():
        with transaction.atomic():
            FactoryOrder.objects.select_for_update().get(restock=restock)
            locked.set()
            release.wait(10)

    def sweep(name):
        def run_sweep():
            connections_of[name] = connection_id()
            return reconcile_task()

        return thread_keeping(outcomes, name, run_sweep)

    def stopped_or_waiting(name, thread):
        return lambda: not thread.is_alive() or (name in connections_of and waiting_for_a_lock(connections_of[name]))

    holder = thread_keeping(outcomes, "holder", order_row_locked)
    holder.start()
    assert locked.wait(5)
    first, second = sweep("first"), sweep("second")
    first.start()
    assert until_waiting(stopped_or_waiting("first", first), timeout=10)
    assert first.is_alive(), outcomes
    second.start()
    until_waiting(stopped_or_waiting("second", second), timeout=10)  # it skipped, or waits beside the first
    release.set()
    for thread in (holder, first, second):
        thread.join(15)

    assert queues("factory") == [("factory.restock_place", [restock.pk])], "handed over once"
    assert outcomes["first"] == {"restocks_resent": 1, "overdue_polled": 0, "overdue_alerted": 0}
    assert outcomes["second"] == {"skipped": "another factory.reconcile run is under way"}
    assert reconcile_task() == {"restocks_resent": 0, "overdue_polled": 0, "overdue_alerted": 0}, "guard freed"

"""Restocks on the factory's side: hand them to the queue, place the order, reconcile, and tell ops of overdue
ones. Receiving the production (a callback or a poll) is factory/receipts.py's; redriving dead letters and
reopening failed restocks is factory/redrive.py's. Both import this module; it imports neither.

Network calls never run inside a transaction or under a row lock (CONTRIBUTING.md, rule 5): the work is claimed
with a short conditional update, the call is made, and the outcome recorded in a new short transaction.
"""

import logging
from datetime import timedelta
from functools import partial

from celery import current_app
from django.conf import settings
from django.db import DatabaseError, OperationalError, transaction
from django.db.models import Case, DateTimeField, F, Min, Q, Value, When
from django.db.models.functions import Coalesce, Greatest
from django.urls import reverse
from django.utils import timezone

from donutsite.celery import task_publish
from donutsite.context import request_id, request_id_bound
from donutsite.db import DEADLOCK, LOCK_WAIT_TIMEOUT, error_code
from factory.client import FactoryClient, FactoryError, FactoryRateLimited, FactoryUnavailable
from factory.models import DeadLetter, FactoryAttempt, FactoryOrder, restocks_never_sent
from factory.retries import dead_letter_copy_remove, dead_letter_dedupe_key
from inventory.models import Restock
from notifications.alerts import (
    alert_key_lock,
    alert_raise,
    alerts_acknowledge,
    alerts_escalated_with,
    alerts_escalation_stand_down,
    alerts_settle,
)

logger = logging.getLogger(__name__)


RESTOCK_PLACE_TASK = "factory.restock_place"
RESTOCK_POLL_TASK = "factory.restock_poll"


def callback_url() -> str:
    return settings.PUBLIC_BASE_URL + reverse("factory-callback")


def _order_row(restock_id: int) -> None:
    """Make sure the restock has its FactoryOrder row. The sale that opened the restock wrote only the
    restock; the first hand-over or claim adds this row (an insert that a concurrent one makes a no-op)."""
    FactoryOrder.objects.bulk_create([FactoryOrder(restock_id=restock_id)], ignore_conflicts=True)


def _order_row_locked(restock_id: int) -> None:
    """_order_row, with the row locked until the transaction ends, for a caller that updates it next. The
    insert that finds the row takes only a shared lock, and upgrading that for the update deadlocked with
    a hand-over noting the same row in between (restock_dispatch)."""
    FactoryOrder.objects.select_for_update().filter(restock_id=restock_id).exists()
    _order_row(restock_id)


def restock_dispatch(restock_id: int, *, shortage: bool = False) -> bool:
    """Hand a pending restock to the factory queue and note on its FactoryOrder that it left.

    Runs after commit (inventory's restock_opened signal, the reconcile sweep, a redrive). `shortage`
    (only the first send of a restock a shortage opened, or the sale that took the last of its product
    opened) takes the shortage route, which
    CELERY_TASK_ROUTES sends to the urgent queue; everything else goes behind it. If the broker is down
    nothing is noted and the sweep sends it later; a resend is harmless because the factory order
    reference is stable per restock.
    """
    try:
        # Before the message: the worker that claims it finds the row and never races this insert.
        _order_row(restock_id)
    except DatabaseError as exc:  # after the sale's commit: never an error answer; the worker adds the row
        logger.warning("restock %s: could not add its factory order row (%r)", restock_id, exc)
    if not task_publish(RESTOCK_PLACE_TASK, [restock_id], route_name=_route(shortage)):
        # One short try (a web request must not wait on the broker): the row is the source of truth,
        # and the reconcile sweep resends it.
        _hand_over_failed(restock_id)
        return False
    logger.info("restock %s handed to the factory queue%s", restock_id, " (shortage first)" if shortage else "")
    try:
        _hand_over_noted(restock_id)
    except DatabaseError as exc:
        # The message left; only its note did not (a deadlock with the worker already recording the
        # factory's answer, the database going away). This runs after the sale committed, so raising
        # would turn a sale into an error answer. Unnoted, the sweep may send it again: harmless.
        logger.warning("restock %s: sent, but noting it failed (%r)", restock_id, exc)
    return True


def _hand_over_noted(restock_id: int) -> None:
    """Note that a message for the restock left. A worker may have taken it and recorded the factory's answer
    first: a retry it scheduled keeps its wait (the next attempt is not moved back to now), and a park it
    made stands. A park is the only wait longer than any retry's backoff with no message in flight; noted over
    as in flight, it would be resent only as a lost message, OUTBOX_RESEND_AFTER_SECONDS after the time the
    factory asked for."""
    now = timezone.now()
    parked = Q(
        dispatched_at__isnull=True,
        next_attempt_at__gt=now + timedelta(seconds=settings.FACTORY_RETRY_BACKOFF_MAX_SECONDS),
    )
    # dispatched_at first: MariaDB's SET reads the columns assigned before it as already updated.
    FactoryOrder.objects.filter(restock_id=restock_id).update(
        dispatched_at=Case(When(parked, then=Value(None)), default=Value(now), output_field=DateTimeField()),
        first_dispatched_at=Coalesce("first_dispatched_at", Value(now)),
        next_attempt_at=Greatest(Coalesce("next_attempt_at", Value(now)), Value(now)),
        dispatch_count=F("dispatch_count") + 1,
    )


def _hand_over_failed(restock_id: int) -> None:
    """A first hand-over that did not leave is due at once: the sweep resends it at its next run, seconds
    away, instead of after OUTBOX_RESEND_AFTER_SECONDS, the wait that covers a message that may still be on
    its way (in a broker outage, a minute's wait for every restock it opened, shortages included)."""
    try:
        FactoryOrder.objects.filter(
            restock_id=restock_id, dispatched_at__isnull=True, next_attempt_at__isnull=True
        ).update(next_attempt_at=timezone.now())
    except DatabaseError as exc:  # after the sale's commit: never an error answer; the sweep finds it later
        logger.warning("restock %s: could not note that its hand-over failed (%r)", restock_id, exc)


def restock_hurry(restock_id: int) -> bool:
    """Its product sold out while this restock waited, unsent, behind routine ones: send it again on the
    shortage route. Placing is idempotent: the first message to claim it calls the factory, and the other
    finds it claimed, placed, or waiting for a retry it must not cut short (`not_waiting`), so the routine
    message still queued costs one skipped task. Only a restock not yet tried in this run is hurried, and
    its order row is left as it is. Runs after the sale's commit: a database error is logged, never an
    error answer for the sale."""
    untried = Q(factory_order__isnull=True) | Q(
        factory_order__attempt_count=F("factory_order__attempts_before_redrive")
    )
    try:
        if not Restock.objects.pending().filter(untried, pk=restock_id).exists():
            return False
    except DatabaseError as exc:
        logger.warning("restock %s: could not check it before hurrying it (%r)", restock_id, exc)
        return False
    if not task_publish(RESTOCK_PLACE_TASK, [restock_id], route_name=_route(True)):
        return False  # the routine message is still on its way; the sweep resends a lost one
    logger.info("restock %s: its product sold out; sent again on the urgent queue", restock_id)
    return True


def _route(shortage: bool) -> str | None:
    return settings.SHORTAGE_ROUTE if shortage else None  # None: routed by the task's own name


def restock_place(restock_id: int, *, client: FactoryClient | None = None) -> str:
    """Order a pending restock from the factory, once.

    Claims it in one short transaction (locks the restock row while it is pending and its order row, then
    a conditional update of the order row: claim free or stale, one more call counted); no lock or
    transaction is held during the HTTP call. Calls the factory with the restock's stable reference and
    records the attempt and its outcome. Returns what happened; raises FactoryUnavailable (retry) or
    FactoryRejected (dead letter).
    """
    with transaction.atomic():
        # The restock's row lock keeps it pending (no fail or redrive in between) while its order is claimed.
        if not Restock.objects.select_for_update().pending().filter(pk=restock_id).exists():
            return "skipped"  # not pending any more
        _order_row_locked(restock_id)
        claimed = (
            FactoryOrder.objects.unclaimed()
            .not_waiting()
            .filter(restock_id=restock_id)
            .update(claimed_at=timezone.now(), attempt_count=F("attempt_count") + 1)
        )
    if not claimed:
        return "skipped"  # another worker is calling right now, or a retry or park holds the next attempt
    restock = Restock.objects.select_related("product", "factory_order").get(pk=restock_id)

    client = client or FactoryClient()
    try:
        result = client.place_order(
            reference=restock.reference,
            sku=restock.product.sku,
            quantity=restock.quantity,
            callback_url=callback_url(),
            request_id=restock.correlation_id,
        )
    except FactoryError as exc:
        _failure_recorded(restock, exc)
        raise  # the factory's answer, whether or not it could be recorded: the task retries or gives up on it
    except Exception:
        # Not the factory's answer (a bug, a time limit): nothing to record, but the claim goes, or this
        # message, giving the restock up, would find its own call still out and leave it (restock_fail).
        _claim_let_go(restock.pk)
        raise

    try:
        _answer_recorded(partial(_placed_record, restock, result), restock.pk)
    except DatabaseError:
        # The factory has the order and we could not write it down. The error is transient for the task,
        # whose retry sends the same reference and is answered with the same order; the claim goes now, or
        # that retry would find it held and wait for its lease to run out and the sweep to resend it.
        _claim_let_go(restock.pk, spared=True)
        raise
    logger.info("restock %s placed as factory order %s", restock.pk, result.order.order_id)
    return "placed"


def _placed_record(restock: Restock, result) -> None:
    """The factory took the order (accepted, or answered it again): the call, the restock placed, the order's
    id, and what the factory answering again settles."""
    FactoryAttempt.objects.create(
        restock=restock,
        number=restock.factory_order.attempt_count,
        outcome=FactoryAttempt.Outcome.REPLAYED if result.replayed else FactoryAttempt.Outcome.ACCEPTED,
        status_code=result.status_code,
        latency_ms=result.latency_ms,
    )
    placed = (
        Restock.objects.pending()
        .filter(pk=restock.pk)
        .update(status=Restock.Status.PLACED, expected_at=result.order.estimated_ready_at, placed_at=timezone.now())
    )
    _order_placed(restock.pk, result.order.order_id)
    if placed:
        # A failed restock that a new need reopened keeps its dead letters until the factory takes it.
        _dead_letters_settled_by_factory(restock.pk, result.order.order_id)
    # The factory answers again: its "failed N calls in a row" warning is over, not escalated to the
    # ops phones ALERT_ESCALATE_AFTER_SECONDS later about a trouble that has passed; and the failed
    # calls its window held back: their summary goes out settled, not as an open warning.
    alerts_settle(FACTORY_DEGRADED)


# A record that met another transaction's locks (donutsite.db) may run again, and usually finds them let go:
# the other side (a callback, the sweep, an alert) holds them for a short transaction.
LOCK_CONFLICTS = (DEADLOCK, LOCK_WAIT_TIMEOUT)
RECORD_TRIES = 3


def _answer_recorded(record, restock_id: int) -> None:
    """Run `record`, which writes down the factory's answer to a call, in a transaction of its own, and again
    when it met another transaction's locks, RECORD_TRIES times in all. Raises the last try's error, and any
    other database error at once (a dropped connection: the task's own retry covers it). Durable: a
    deadlock rolls back the whole transaction, so only one of our own may be run again."""
    for tries_left in reversed(range(RECORD_TRIES)):
        try:
            with transaction.atomic(durable=True):
                record()
            return
        except OperationalError as exc:
            if not tries_left or error_code(exc) not in LOCK_CONFLICTS:
                raise
            logger.warning("restock %s: recording the factory's answer met a lock (%s); trying again", restock_id, exc)


def _failure_recorded(restock: Restock, exc: FactoryError) -> None:
    """Record a failed call (_record_failure). A database error that outlasts the tries (a lock held on,
    a dropped connection) is logged and the claim let go, and the caller raises the factory's error all
    the same. Raised in its place, the database error was retried as a busy factory's would be, a refusal
    included (no dead letter, no page), and the claim it left held kept that retry, or the dead letter,
    back until the claim's lease ran out and the sweep resent the restock. Unrecorded, a failed call is still
    counted on the order row (the claim counted it), so the budget sees it; its FactoryAttempt row is lost.
    A 429 is taken back off that count: recorded, its row spares it from the budget, which this one lacks."""
    try:
        _answer_recorded(partial(_record_failure, restock, exc), restock.pk)
    except DatabaseError as db_exc:
        logger.warning(
            "restock %s: the factory's answer (%s) could not be recorded (%r); acting on it unrecorded",
            restock.pk,
            exc,
            db_exc,
        )
        _claim_let_go(restock.pk, spared=isinstance(exc, FactoryRateLimited))


def _claim_let_go(restock_id: int, *, spared: bool = False) -> None:
    """The call is over and its answer not recorded: the claim goes, so the task's retry may call, and the
    dead letter giving the restock up may fail it (restock_fail waits while a claim is live). If the database
    refuses this too, the claim's lease runs out and the sweep resends the restock. `spared`: the call the
    claim counted is no failed one and is taken back. The factory took the order: counted, at the last allowed
    call, the database's error ran the restock out of attempts, and its dead letter failed it and paged ops
    while the factory made the order. Or it rate limited the call, which uses up no attempt: counted, the
    restock was given up one failed call early."""
    uncounted = {"attempt_count": F("attempt_count") - 1} if spared else {}
    try:
        FactoryOrder.objects.filter(restock_id=restock_id).update(claimed_at=None, **uncounted)
    except DatabaseError as exc:
        logger.warning("restock %s: its claim could not be let go (%r); the sweep resends it later", restock_id, exc)


def _order_placed(restock_id: int, order_id: str) -> None:
    """The factory has this restock's order: its id noted, and nothing left that held a call (the claim, a
    retry's wait, the last error)."""
    FactoryOrder.objects.filter(restock_id=restock_id).update(
        order_id=order_id, claimed_at=None, next_attempt_at=None, last_error=""
    )


def _record_failure(restock: Restock, exc: FactoryError) -> None:
    """The call failed: the attempt, its claim freed with the error kept, and a word to ops if the factory
    keeps failing. Run in a transaction (_answer_recorded)."""
    if isinstance(exc, FactoryRateLimited):
        outcome = FactoryAttempt.Outcome.RATE_LIMITED
    elif isinstance(exc, FactoryUnavailable):
        outcome = FactoryAttempt.Outcome.TRANSIENT
    else:
        outcome = FactoryAttempt.Outcome.PERMANENT
    FactoryAttempt.objects.create(
        restock=restock,
        number=restock.factory_order.attempt_count,
        outcome=outcome,
        status_code=exc.status_code,
        latency_ms=exc.latency_ms,
        error=str(exc)[:2000],
    )
    FactoryOrder.objects.filter(restock_id=restock.pk).update(claimed_at=None, last_error=str(exc)[:2000])
    _alert_if_failing_in_a_row(restock, exc)


FACTORY_DEGRADED = "factory_degraded"  # the alert's kind and dedupe key


def _streak_outlook(exc: FactoryError) -> str:
    if isinstance(exc, FactoryRateLimited):
        return (
            "The factory is rate limiting us: restocks wait as it asks (a rate limit uses up none of their "
            "attempts); one still not accepted after the grace is told as overdue."
        )
    return (
        "Restocks are retrying with backoff; they dead-letter if it goes on "
        f"(after {settings.FACTORY_RETRY_FOR_SECONDS} s at least)."
    )


def _alert_if_failing_in_a_row(restock: Restock, exc: FactoryError) -> None:
    """Several failed calls in a row, whichever restocks they were for, mean the factory is in trouble."""
    streak = settings.FACTORY_FAILURE_STREAK_ALERT
    latest = list(FactoryAttempt.objects.order_by("-pk").values_list("outcome", flat=True)[:streak])
    succeeded = (FactoryAttempt.Outcome.ACCEPTED, FactoryAttempt.Outcome.REPLAYED)
    if len(latest) == streak and not any(outcome in succeeded for outcome in latest):
        # "Failed" would send the on-call looking for an outage when the factory only asked us to wait.
        rate_limited = all(outcome == FactoryAttempt.Outcome.RATE_LIMITED for outcome in latest)
        alert_raise(
            kind=FACTORY_DEGRADED,
            severity="warning",
            title=f"The factory {'rate limited' if rate_limited else 'failed'} {streak} calls in a row",
            text=f"Last answer: {exc}. {_streak_outlook(exc)}",
            dedupe_key=FACTORY_DEGRADED,
            context={"sku": restock.product.sku, "restock_id": restock.pk, "error": str(exc)[:300]},
            correlation_id=restock.correlation_id,
        )


def restock_attempts_used(restock_id: int) -> int:
    """The restock's calls to the factory since it was opened or last redriven: the retry budget
    (factory/retries.py)."""
    order = FactoryOrder.objects.filter(restock_id=restock_id).first()
    return order.attempts_this_run if order else 0


def restock_attempts_rate_limited(restock_id: int) -> int:
    """Of restock_attempts_used, the calls the factory answered 429 (rate limited): spared by the budget."""
    return FactoryAttempt.objects.filter(
        restock_id=restock_id,
        outcome=FactoryAttempt.Outcome.RATE_LIMITED,
        number__gt=F("restock__factory_order__attempts_before_redrive"),  # this run's: since the last redrive
    ).count()


def restock_failing_since(restock_id: int):
    """When this run's first failed call to the factory was made (not a 429's), or None before any."""
    return FactoryAttempt.objects.filter(
        restock_id=restock_id,
        outcome=FactoryAttempt.Outcome.TRANSIENT,
        number__gt=F("restock__factory_order__attempts_before_redrive"),
    ).aggregate(since=Min("created_at"))["since"]


def restock_dead_letter_context(restock_id: int) -> dict:
    sku = Restock.objects.filter(pk=restock_id).values_list("product__sku", flat=True).first()
    return {"restock_id": restock_id, "sku": sku or ""}


def restock_retry_scheduled(restock_id: int, *, at) -> None:
    """The task will run again at `at` (a retry with countdown): the outbox must not resend before then."""
    FactoryOrder.objects.filter(restock_id=restock_id).update(next_attempt_at=at)


def restock_park(restock_id: int, *, until) -> None:
    """No message in flight; the reconcile sweep sends the restock when `until` has passed."""
    FactoryOrder.objects.filter(restock_id=restock_id).update(dispatched_at=None, next_attempt_at=until)


def restock_fail(restock_id: int, *, reason: str) -> bool:
    """Out of attempts or refused for good: the restock is failed until someone redrives it. False if it
    was no longer pending (settled, or failed already by another message for it). Its overdue warning is
    closed: its dead letter pages ops about it now, and the warning, escalated to the phones later, would
    page them twice, with a "parked until" long past. The order row is locked before, as by the receipt,
    so an overdue alert being raised meanwhile is committed (and closed here) or sees the restock failed.
    False too while another message's call for it is out (a live claim): that call's answer decides, and
    gives the restock up itself if it fails. Given up under it, a call the factory then accepted left the
    restock failed, and ops paged about a dead letter, while the factory made the order. Locks the restock's
    row, then its order row, as the claim does, so no claim starts while this looks."""
    with transaction.atomic():
        if not Restock.objects.select_for_update().pending().filter(pk=restock_id).exists():
            return False
        _order_row_locked(restock_id)
        if not FactoryOrder.objects.unclaimed().filter(restock_id=restock_id).exists():
            logger.info("restock %s: not given up, another call for it is out and its answer decides", restock_id)
            return False
        Restock.objects.filter(pk=restock_id).update(status=Restock.Status.FAILED, closed_at=timezone.now())
        FactoryOrder.objects.filter(restock_id=restock_id).update(claimed_at=None, last_error=reason[:2000])
        restock_warnings_close(restock_id)
    logger.error("restock %s failed: %s", restock_id, reason)
    return True


def restocks_due() -> list[int]:
    """Pending restocks whose work is not on its way: never sent, parked until now, lost by the broker,
    or claimed by a worker that died mid-call."""
    never_sent = restocks_never_sent().values_list("pk", flat=True)
    due = FactoryOrder.objects.of_pending().due().values_list("restock_id", flat=True)
    return sorted({*never_sent, *due})


def _not_asked_lately(now, field: str = "last_polled_at") -> Q:
    """A factory order never polled, or last polled FACTORY_OVERDUE_GRACE_SECONDS ago or more (`field`: its
    last_polled_at, as seen from the query's model)."""
    before = now - timedelta(seconds=settings.FACTORY_OVERDUE_GRACE_SECONDS)
    return Q(**{f"{field}__isnull": True}) | Q(**{f"{field}__lte": before})


def restocks_overdue() -> list[int]:
    """Placed restocks whose callback has not come some time after the factory said they would be ready,
    and failed ones whose dead letter waits (the factory may have the order after all: restock_poll)."""
    now = timezone.now()
    grace = timedelta(seconds=settings.FACTORY_OVERDUE_GRACE_SECONDS)
    late = Q(expected_at__lte=now - grace) | Q(expected_at__isnull=True, placed_at__lte=now - grace)
    not_just_asked = _not_asked_lately(now, "factory_order__last_polled_at")
    placed = Restock.objects.placed().filter(late & not_just_asked).values_list("pk", flat=True)
    failed = (
        Restock.objects.failed()
        .filter(not_just_asked, closed_at__lte=now - grace, dead_letters__in=DeadLetter.objects.unresolved())
        .values_list("pk", flat=True)
        .distinct()
    )
    return sorted({*placed, *failed})


def restocks_overdue_alert() -> int:
    """Tell ops, once per restock, about one that stays open FACTORY_OVERDUE_GRACE_SECONDS past its
    expected time: a pending one (the factory should accept it at once) past its opening, redrive and
    first hand-over to the queue since then (one opened while the broker was down has its grace from the
    broker's return), whether it is being retried, parked by the factory's Retry-After or resent by the
    sweep as lost (these move its next attempt or its last hand-over, not its first); a placed one past
    the factory's estimate and still unsettled after the sweep asked the factory. Its receipt closes the
    alert (restock_receive). Returns how many alerts were raised."""
    now = timezone.now()
    grace = timedelta(seconds=settings.FACTORY_OVERDUE_GRACE_SECONDS)
    late = now - grace
    not_told = Q(factory_order__isnull=True) | Q(factory_order__overdue_alerted_at__isnull=True)
    pending = Q(status=Restock.Status.PENDING, created_at__lte=late) & (
        Q(factory_order__isnull=True)
        | (
            (Q(factory_order__first_dispatched_at__isnull=True) | Q(factory_order__first_dispatched_at__lte=late))
            & (Q(factory_order__redriven_at__isnull=True) | Q(factory_order__redriven_at__lte=late))
        )
    )
    placed = Q(status=Restock.Status.PLACED, factory_order__last_polled_at__isnull=False) & (
        Q(expected_at__lte=late) | Q(expected_at__isnull=True, placed_at__lte=late)
    )
    raised = 0
    for restock in Restock.objects.filter(not_told & (pending | placed)).select_related("product", "factory_order"):
        order = getattr(restock, "factory_order", None)
        reason = _overdue_reason(restock, order, grace)
        # Under the sale's id, as the sweep's other work for a restock is: grepping it finds the warning.
        with _under_correlation_id(restock.correlation_id):
            if reason and _overdue_alert(restock, reason):
                raised += 1
    return raised


def _overdue_reason(restock: Restock, order: FactoryOrder | None, grace: timedelta) -> str:
    if restock.status == Restock.Status.PLACED:
        due = restock.expected_at or restock.placed_at
        if order is None or order.last_polled_at is None or order.last_polled_at < due + grace:
            return ""  # the sweep asks the factory first (restocks_overdue); a lost callback settles quietly
        placed = f"placed as factory order {order.order_id or '(unknown)'}, expected by {due:%Y-%m-%d %H:%M} UTC"
        asked = f"{order.last_polled_at:%H:%M:%S}"
        if order.last_error:  # the poll told nothing (_poll_noted)
            return f"{placed}; no completion yet; at {asked} {order.last_error[:300]}"
        return f"{placed}; no completion yet, and the factory did not report one when asked at {asked}"
    reason = "not accepted by the factory yet"
    calls = order.attempts_this_run if order is not None else 0
    if not calls:  # where the on-call should look: it never reached a worker
        if order is not None and order.first_dispatched_at is not None:
            return (
                f"{reason}; no worker has taken it since it was handed to the queue at "
                f"{order.first_dispatched_at:%H:%M:%S} UTC (the factory queues' backlog, or their workers down)"
            )
        return f"{reason}; not handed to the task queue yet (is the broker up?)"
    if order.next_attempt_at and order.dispatched_at is None:
        reason += f"; parked until {order.next_attempt_at:%Y-%m-%d %H:%M:%S} UTC"
    if order.last_error:
        reason += f"; {calls} call(s), last error: {order.last_error[:300]}"
    return reason


def _overdue_alert(restock: Restock, reason: str) -> bool:
    """Raise the restock's one overdue alert, claimed on its order row, if the restock is still as the sweep
    saw it. A receipt (its callback, or the poll this sweep sent) writes that order row before it
    acknowledges the restock's overdue alerts: one that wrote it first has committed by the time the claim
    gets the row, and the restock is found settled; one that comes later waits for the claim's commit, and
    then finds the alert and closes it. Raised after a receipt, the alert would stay open for good, and be
    escalated to the ops phones. The restock's row is only read: a worker recording the factory's answer
    holds a shared lock on it (its attempt's foreign key) that it then upgrades."""
    with transaction.atomic():
        _order_row_locked(restock.pk)
        first = FactoryOrder.objects.filter(restock_id=restock.pk, overdue_alerted_at__isnull=True).update(
            overdue_alerted_at=timezone.now()
        )
        if first and not Restock.objects.filter(pk=restock.pk, status=restock.status).exists():
            # Received, placed or failed since the sweep looked: the next sweep judges it afresh.
            transaction.set_rollback(True)
            return False
        if first:
            alert_raise(
                kind=RESTOCK_OVERDUE,
                severity="warning",
                title=f"Restock of {restock.product.sku} is overdue ({restock.status})",
                text=f"Restock {restock.pk} ({restock.quantity} of {restock.product.sku}): {reason}. "
                "This alert is acknowledged when the restock is received or cancelled.",
                dedupe_key=overdue_dedupe_key(restock.pk),
                group_key=RESTOCK_OVERDUE,
                context={
                    "sku": restock.product.sku,
                    "restock_id": restock.pk,
                    "status": restock.status,
                    "reason": reason,
                },
                correlation_id=restock.correlation_id,
            )
    return bool(first)


RESTOCK_OVERDUE = "restock_overdue"  # the alert's kind, and the group of every restock's overdue warning


def overdue_dedupe_key(restock_id: int) -> str:
    return f"{RESTOCK_OVERDUE}:{restock_id}"


def restock_warnings_close(restock_id: int, *, received: bool = False) -> None:
    """The restock settled (received, cancelled or failed) or its run ended (placed again): the warnings
    about it that wait on it are over, so none is escalated to the phones about a restock settled already.
    Its overdue warning (_overdue_alert_close), and the warning about callbacks refused for contradicting it
    (receipts._callback_mismatch_told): settled when it was received or cancelled (the phones hear it is
    over if they were told), acknowledged only when it failed (its dead letter's page is the word on it) or
    was placed again (a new order, which the refused callbacks were not about). Call it with the restock's
    order row locked."""
    _overdue_alert_close(restock_id, received=received)
    if received:
        alerts_settle(callback_mismatch_dedupe_key(restock_id))
    else:
        alerts_acknowledge(callback_mismatch_dedupe_key(restock_id))


def callback_mismatch_dedupe_key(restock_id: int) -> str:
    return f"factory_callback_mismatch:{restock_id}"


def _overdue_alert_close(restock_id: int, *, received: bool = False) -> None:
    """The restock settled (received, cancelled or failed) or its run ended (placed again): its overdue
    warning is acknowledged, so it is not escalated to the ops phones about a restock settled already, and
    once no restock told as overdue is open any more, so is their group (a summary not sent yet goes out as a
    settled info line). `received` (or cancelled), it may be the last of the restocks a push woke the phones
    about (_overdue_stand_down).
    Only a restock told as overdue takes the group's lock, before the warning's row, as alert_raise does (it
    counts on the group's first warning under that lock). Call it with the restock's order row locked."""
    if not FactoryOrder.objects.filter(restock_id=restock_id, overdue_alerted_at__isnull=False).exists():
        return
    alert_key_lock(RESTOCK_OVERDUE)
    dedupe_key = overdue_dedupe_key(restock_id)
    if alerts_acknowledge(dedupe_key) and received:
        _overdue_stand_down(dedupe_key)
    if not Restock.objects.open().filter(factory_order__overdue_alerted_at__isnull=False).exists():
        alerts_settle(RESTOCK_OVERDUE)


def _overdue_stand_down(dedupe_key: str) -> None:
    """Its warning was escalated: once every restock that push named is received or cancelled, the phones
    hear it is over, one push for them all. Not when one failed for good (its dead letter paged, and that
    page's all-clear is the word about it) or was placed again, nor when someone took one in the admin
    (alerts_escalated_with). One that failed, was redriven and is received by now counts as received: its
    dead letter is resolved, and this push, true by then, is the phones' word on it (the redrive's all-clear
    was Slack's). Under RESTOCK_OVERDUE's lock, so the last of two receipts at once sees both."""
    warnings = alerts_escalated_with(dedupe_key)
    restock_ids = [w.context.get("restock_id") for w in warnings]
    settled = (Restock.Status.FULFILLED, Restock.Status.CANCELLED)
    if warnings and not Restock.objects.filter(pk__in=restock_ids).exclude(status__in=settled).exists():
        alerts_escalation_stand_down(warnings)


def reconcile() -> dict:
    """One sweep (beat runs it; also `manage.py reconcile`): everything that must happen even if a
    message or a callback was lost, and a word to ops about restocks that stay late."""
    resent = 0
    for restock_id in restocks_due():
        with _under_restock_id(restock_id):
            resent += restock_dispatch(restock_id)
    overdue = restocks_overdue()
    for restock_id in overdue:
        with _under_restock_id(restock_id):
            current_app.send_task(RESTOCK_POLL_TASK, args=[restock_id])
    return {"restocks_resent": resent, "overdue_polled": len(overdue), "overdue_alerted": restocks_overdue_alert()}


def _under_restock_id(restock_id: int):
    """The request id of the sale (or command) that opened the restock, for what the sweep sends for it: a
    parked restock's next call, a late one's poll. Under the sweep's own id, grepping the sale's id lost the
    restock at its first park: its next calls, the order placed and a poll's receipt were logged under an id
    no one had."""
    correlation_id = Restock.objects.filter(pk=restock_id).values_list("correlation_id", flat=True).first()
    return _under_correlation_id(correlation_id)


def _under_correlation_id(correlation_id: str | None):
    """The restock's request id, or the sweep's own when it has none (opened by a command, or before ids)."""
    return request_id_bound(correlation_id or request_id.get())


def _dead_letters_settled_by_factory(restock_id: int, order_id: str) -> None:
    """The factory has the restock's order after all: its dead letters are resolved, nothing is left to
    redrive. Locks them; call with the product's and the restock's rows locked."""
    for dead_letter in DeadLetter.objects.restock_unresolved_locked(restock_id):
        _dead_letter_settled(dead_letter, by=f"settled by the factory (order {order_id})", user=None, by_hand=False)


def _dead_letter_settled(dead_letter: DeadLetter, *, by: str, user, by_hand: bool = True) -> None:
    """Resolved with nothing sent again (its work was settled some other way): marked, and resolved where
    ops look (`by_hand`: in a redrive, not by the factory). The caller holds its row."""
    dead_letter.redriven_at = timezone.now()
    dead_letter.redriven_by = by[:150]
    dead_letter.save(update_fields=["redriven_at", "redriven_by"])
    _dead_letter_resolved(dead_letter, user, by_hand=by_hand)


def _dead_letter_resolved(dead_letter: DeadLetter, user, *, by_hand: bool = True) -> None:
    """After commit, its copy out of the dead-letter queue; and once no dead letter of its task waits any
    more, the alerts of that task's dead letters acknowledged. Alerts are grouped per task (one row
    counts the dead letters its window held back), so the alert stays open while any of them waits.
    Takes the alert key's lock before asking: two resolutions at once (redrives of the task's last dead
    letters from two places, a redrive and a late receipt) would each see the other's dead letter, not
    committed yet, as waiting, and neither would close the alert; the later one now sees the earlier.
    Settled by the factory (not `by_hand`), the all-clear reaches the phones the dead letters paged."""
    dedupe_key = dead_letter_dedupe_key(dead_letter.task_name)
    alert_key_lock(dedupe_key)
    if not DeadLetter.objects.unresolved().filter(task_name=dead_letter.task_name).exclude(pk=dead_letter.pk).exists():
        # And the dead letters its window held back: no summary of them.
        alerts_settle(dedupe_key, user=user, by_hand=by_hand, kind="dead_letter")
    transaction.on_commit(partial(dead_letter_copy_remove, dead_letter.pk))


def _order_run_afresh(restock_id: int, **fields) -> None:
    """A restock pending again gets a fresh attempt budget (its calls keep their numbers: the next is N+1)
    and nothing that held its last run: no claim, no dispatch noted (its first hand-over starts this run's
    overdue clock), no wait for a retry, and no overdue alert yet (the last run's was closed when it
    failed: this run is told of once, as the first was)."""
    FactoryOrder.objects.filter(restock_id=restock_id).update(
        attempts_before_redrive=F("attempt_count"),
        claimed_at=None,
        dispatched_at=None,
        first_dispatched_at=None,
        next_attempt_at=None,
        overdue_alerted_at=None,
        **fields,
    )

"""Alert deliveries: one row per alert and channel, sent after commit, resent by the sweep.

The network part runs with no transaction open (CONTRIBUTING.md, rule 5). A channel's own failures never raise
alerts (no loops); they show on the delivery rows in the admin.
"""

import logging
from datetime import timedelta
from functools import partial
from urllib.parse import urlencode

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from donutsite.celery import task_publish
from notifications.channels.base import Message
from notifications.channels.registry import channel_get, channel_sending, channels_for, channels_paused
from notifications.devices import device_deactivate
from notifications.errors import ChannelError, DeliveryRetry, TokenUnregistered
from notifications.limits import CLAIM_LEASE, RETRY_AFTER_MAX_SECONDS
from notifications.models import Alert, AlertDelivery, Device, Severity

logger = logging.getLogger(__name__)

DELIVER_TASK = "notifications.deliver"

FACT_LABELS = {
    "sku": "SKU",
    "restock_id": "Restock",
    "attempts": "Attempts",
    "grouped": "Grouped",
    "covers": "Covers",
    "new": "New",
    "settled": "Settled since",
    "error": "Error",
    "task": "Task",
    "dead_letter_id": "Dead letter",
    "correlation_id": "Request id",
}


def deliveries_create(alert: Alert, *, to_phones: bool = False) -> None:
    """One pending delivery per channel the alert's severity reaches (and FCM, with `to_phones`), each handed
    to the queue after commit. Call it in the alert's transaction: the rows are the record, the message only
    a hint."""
    resend_at = timezone.now() + timedelta(seconds=settings.NOTIFICATIONS_RESEND_AFTER_SECONDS)
    for channel in channels_for(alert.severity, to_phones=to_phones):
        delivery = AlertDelivery.objects.create(alert=alert, channel=channel, resend_at=resend_at)
        transaction.on_commit(partial(delivery_dispatch, delivery.pk))


def delivery_dispatch(delivery_id: int) -> bool:
    """Hand a delivery to the queue: one short try. If the broker is away the row stays pending and the
    sweep (deliveries_resend_stuck) sends it again."""
    return task_publish(DELIVER_TASK, [delivery_id])


def deliveries_resend_stuck(*, limit: int = 500) -> int:
    """Send again the pending deliveries past their resend_at: the message never reached the broker, or was
    lost with a worker. Each is pushed NOTIFICATIONS_RESEND_AFTER_SECONDS ahead first, so one that is
    still on its way is not sent again at every sweep."""
    now = timezone.now()
    ids = list(
        AlertDelivery.objects.filter(status=AlertDelivery.Status.PENDING, resend_at__lte=now)
        .order_by("resend_at")
        .values_list("pk", flat=True)[:limit]
    )
    later = now + timedelta(seconds=settings.NOTIFICATIONS_RESEND_AFTER_SECONDS)
    resent = 0
    for delivery_id in ids:
        if AlertDelivery.objects.filter(pk=delivery_id, status=AlertDelivery.Status.PENDING, resend_at__lte=now).update(
            resend_at=later
        ):
            resent += delivery_dispatch(delivery_id)
    return resent


def message_for(alert: Alert) -> Message:
    context = alert.context or {}
    if "restock" in context and "restock_id" not in context:
        # Rows raised before factory_cancelled, factory_over_quantity and stock_over_capacity named it
        # restock_id: open ones stay, and are sent again (the admin's resend, the sweep) as they are now.
        context = {**context, "restock_id": context["restock"]}
    facts = {label: str(context[key]) for key, label in FACT_LABELS.items() if context.get(key) not in (None, "")}
    links = {"Alert in the admin": f"{settings.PUBLIC_BASE_URL}/admin/notifications/alert/{alert.pk}/change/"}
    if context.get("restock_id"):
        links["Restock"] = f"{settings.PUBLIC_BASE_URL}/admin/inventory/restock/{context['restock_id']}/change/"
    # Where the fix is done: the dead letter's page has the Redrive button; a summary's, the open ones.
    # A tap on the push opens it (the app reads `url` from the data), else the alert.
    opens = links["Alert in the admin"]
    if context.get("dead_letter_id"):
        dead_letter = f"/admin/factory/deadletter/{context['dead_letter_id']}/change/"
        opens = links["Dead letter (redrive)"] = settings.PUBLIC_BASE_URL + dead_letter
    elif alert.kind == "dead_letter" and context.get("task"):
        query = urlencode({"resolved": "no", "task_name__exact": context["task"]})
        opens = links["Open dead letters (redrive)"] = f"{settings.PUBLIC_BASE_URL}/admin/factory/deadletter/?{query}"
    elif alert.kind == "unacknowledged":  # warnings escalated together: the ones still open
        query = urlencode({"severity__exact": "warning", "acknowledged_at__isempty": "1"})
        opens = links["Open warnings"] = f"{settings.PUBLIC_BASE_URL}/admin/notifications/alert/?{query}"
    if settings.FLOWER_URL:
        links["Flower"] = settings.FLOWER_URL
    title, text = alert.title, alert.text
    if alert.kind == "dead_letter" and alert.is_summary and alert.severity == Severity.CRITICAL:
        # Each dead letter's own page says what to do; the summary of the others (critical: not settled
        # yet) only counted them, and it pages the phones as loudly.
        text += "\nRedrive them from the admin or with `manage.py redrive --all` once the cause is fixed."
    if alert.escalated_at and not alert.acknowledged_at:
        # Pushed to the phones long after Slack heard of it: say so, and what stops it, in what a lock
        # screen shows; the same title alone reads as news.
        waited = waited_for((alert.escalated_at - alert.created_at).total_seconds())
        title = f"Unacknowledged: {title}"
        text = f"No one acknowledged this {alert.severity} in {waited}: acknowledge it in the admin. {text}"
    return Message(
        title=title,
        text=text,
        severity=alert.severity,
        kind=alert.kind,
        alert_id=alert.pk,
        facts=facts,
        links=links,
        data={"alert_id": str(alert.pk), "kind": alert.kind, "severity": alert.severity, "url": opens},
        # An info alert asks nothing of anyone: on the phones it is an all-clear (a stand-down, a settled
        # summary), good news that must not wake the on-call the page before it did.
        urgent=alert.severity != Severity.INFO,
    )


def waited_for(seconds: float) -> str:
    """How long a warning waited for someone, as its push says it: "45 s" below two minutes (whole minutes
    would say "0 min"), else "15 min". Rounded to the nearest: the sweep pushes a warning up to half a sweep
    before it is due (alerts_escalate), and rounded down about half the 15-minute waits read "14 min"."""
    rounded = round(seconds)
    return f"{rounded} s" if rounded < 120 else f"{round(seconds / 60)} min"


def delivery_send(delivery_id: int, *, final_attempt: bool = False) -> str:
    """Send one delivery; it is marked sent only once the channel accepted it. Idempotent: a delivery
    already sent, or being sent by another task, is left alone.

    Claims the row with a short conditional update (no transaction is open during the send). A transient
    failure raises DeliveryRetry (the task retries with backoff), unless it is the task's final attempt or
    the channel asked for a wait (Retry-After): then the row stays pending for the sweep to send again
    after that wait (at least NOTIFICATIONS_RESEND_AFTER_SECONDS), so an outage of Slack or FCM delays an
    alert rather than losing it. It is failed for good only once it is NOTIFICATIONS_GIVE_UP_AFTER_SECONDS
    old and has had its round of retries, or when the channel refuses the message itself.

    On FCM the delivery is the push to the ops topic. The ops phones registered one by one are pushed
    after it, each once: one that fails is logged (an unregistered one is deactivated), and does not make
    the topic push, which every ops phone already got, go out again.
    """
    now = timezone.now()
    not_claimed = _delivery_claim(delivery_id, now)  # what to answer when it is not this task's to send
    if not_claimed is not None:
        return not_claimed
    delivery = AlertDelivery.objects.select_related("alert").get(pk=delivery_id)
    channel = channel_get(delivery.channel)
    if channel is None:
        _delivery_failed(delivery, "channel is not configured")
        return "failed"
    message = message_for(delivery.alert)
    try:
        _message_send(channel, delivery, message)
    except ChannelError as exc:
        return _send_failed(delivery, exc, now=now, final_attempt=final_attempt)
    _delivery_sent(delivery)
    if delivery.channel == AlertDelivery.Channel.FCM:
        # After the row says sent: the task's time limit can end it in here (one slow push each), and the
        # sweep would otherwise push the ops topic again, to every ops phone, at each resend.
        _ops_phones_push(channel, message, delivery.alert_id)
    return "sent"


def _delivery_claim(delivery_id: int, now) -> str | None:
    """Claim a pending delivery for this send (a short conditional update: no transaction is open during the
    send): None once claimed, else what delivery_send answers instead: "later" when it is owed to the sweep
    (a summary behind an earlier alert, or its channel paused here), "not pending" when it is sent, failed, or
    being sent by another task."""
    claimable = AlertDelivery.objects.filter(pk=delivery_id, status=AlertDelivery.Status.PENDING).filter(
        Q(claimed_at__isnull=True) | Q(claimed_at__lt=now - CLAIM_LEASE)
    )
    if _behind_an_earlier_alert(delivery_id) and claimable.update(
        resend_at=now + timedelta(seconds=settings.NOTIFICATIONS_RESEND_AFTER_SECONDS)
    ):
        return "later"
    paused = channels_paused()
    claimed = claimable.exclude(channel__in=paused).update(
        attempts=F("attempts") + 1,
        claimed_at=now,
        # While this task and its retries own the row, the sweep leaves it alone.
        resend_at=now + CLAIM_LEASE + timedelta(seconds=settings.NOTIFICATIONS_RESEND_AFTER_SECONDS),
    )
    if claimed:
        return None
    # Its channel gave this process no answer lately: not tried, owed to the sweep.
    if paused and claimable.filter(channel__in=paused).update(
        claimed_at=None, resend_at=now + timedelta(seconds=settings.NOTIFICATIONS_RESEND_AFTER_SECONDS)
    ):
        return "later"
    return "not pending"


def _message_send(channel, delivery: AlertDelivery, message: Message) -> None:
    """On FCM the delivery is the push to the ops topic, not to one device; the other channels post it."""
    with channel_sending(delivery.channel):
        if delivery.channel == AlertDelivery.Channel.FCM:
            channel.send_to_topic(settings.FCM_OPS_TOPIC, message)
        else:
            channel.send(message)


def _send_failed(delivery: AlertDelivery, exc: ChannelError, *, now, final_attempt: bool) -> str:
    """A send the channel failed: failed for good ("failed"), left pending for the sweep after a wait
    ("later"), or let go for the task to retry (raises DeliveryRetry)."""
    too_old = delivery.alert.created_at < now - timedelta(seconds=settings.NOTIFICATIONS_GIVE_UP_AFTER_SECONDS)
    # Even an old alert gets its round of retries (ops may send one again from the admin).
    given_up = too_old and delivery.attempts > settings.NOTIFICATIONS_MAX_RETRIES
    if not exc.transient or given_up:
        _delivery_failed(delivery, str(exc))
        return "failed"
    if final_attempt or exc.retry_after:
        wait = min(max(exc.retry_after or 0, settings.NOTIFICATIONS_RESEND_AFTER_SECONDS), RETRY_AFTER_MAX_SECONDS)
        AlertDelivery.objects.filter(pk=delivery.pk).update(
            claimed_at=None, last_error=str(exc)[:2000], resend_at=timezone.now() + timedelta(seconds=wait)
        )
        logger.warning(
            "alert %s: %s delivery failed (%s); the sweep sends it again", delivery.alert_id, delivery.channel, exc
        )
        return "later"
    AlertDelivery.objects.filter(pk=delivery.pk).update(claimed_at=None, last_error=str(exc)[:2000])
    raise DeliveryRetry(str(exc)) from exc


def _delivery_sent(delivery: AlertDelivery) -> None:
    sent_at = timezone.now()
    AlertDelivery.objects.filter(pk=delivery.pk).update(
        status=AlertDelivery.Status.SENT,
        sent_at=sent_at,
        claimed_at=None,
        last_error="",
        latency_ms=int((sent_at - delivery.alert.created_at).total_seconds() * 1000),
    )


def _behind_an_earlier_alert(delivery_id: int) -> bool:
    """A summary waits, on its channel, for the earlier alerts of its key that the channel failed and that are
    still owed (a page Slack failed, retried later): posted first, "+1 more" reads as about a page nobody has
    seen. Owed to the sweep. One merely queued is not waited for: its message was queued before the summary's."""
    delivery = (
        AlertDelivery.objects.filter(pk=delivery_id, alert__is_summary=True)
        .values("channel", "alert_id", "alert__dedupe_key")
        .first()
    )
    return delivery is not None and (
        AlertDelivery.objects.filter(
            channel=delivery["channel"],
            status=AlertDelivery.Status.PENDING,
            alert__dedupe_key=delivery["alert__dedupe_key"],
            alert_id__lt=delivery["alert_id"],
            attempts__gt=0,
        ).exists()
    )


def _ops_phones_push(channel, message: Message, alert_id: int) -> None:
    # One push per phone: ops devices have no client, so the one-device-per-client-and-token rule does not
    # hold for them, and the admin lets ops add the same phone twice.
    pushed = set()
    for device_id, token in (
        Device.objects.filter(kind=Device.Kind.OPS, is_active=True).order_by("pk").values_list("pk", "token")
    ):
        if token in pushed:
            continue
        pushed.add(token)
        try:
            channel.send_to_token(token, message)
        except TokenUnregistered as exc:
            device_deactivate(device_id, reason=str(exc))
        except ChannelError as exc:
            logger.warning("alert %s: push to ops phone %s failed: %s", alert_id, device_id, exc)


def _delivery_failed(delivery: AlertDelivery, error: str) -> None:
    AlertDelivery.objects.filter(pk=delivery.pk).update(
        status=AlertDelivery.Status.FAILED, claimed_at=None, last_error=error[:2000]
    )
    logger.error("alert %s: %s delivery failed: %s", delivery.alert_id, delivery.channel, error)


def alert_resend(alert: Alert, *, settled_too: bool = False) -> int | None:
    """Send an alert again on every channel it went to (ops asked for it in the admin); returns how many
    deliveries it queued. Only while the alert is open (not acknowledged: a settled alert is acknowledged
    by whatever settled it), unless `settled_too`: returns None for one acknowledged or settled, read under
    its row's lock, so an alert settled as ops click is not paged again about a problem already solved."""
    with transaction.atomic():
        # The alert's row before its deliveries', as the escalation sweep and a settle take them, whichever
        # action asked.
        locked = Alert.objects.select_for_update().filter(pk=alert.pk).values_list("acknowledged_at", flat=True)
        if any(acknowledged_at is not None for acknowledged_at in locked) and not settled_too:
            return None
        deliveries = list(AlertDelivery.objects.select_for_update().filter(alert=alert))
        for delivery in deliveries:
            AlertDelivery.objects.filter(pk=delivery.pk).update(
                status=AlertDelivery.Status.PENDING,
                attempts=0,
                last_error="",
                claimed_at=None,
                resend_at=timezone.now() + timedelta(seconds=settings.NOTIFICATIONS_RESEND_AFTER_SECONDS),
            )
            transaction.on_commit(partial(delivery_dispatch, delivery.pk))
    return len(deliveries)

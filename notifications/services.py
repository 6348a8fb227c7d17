"""Alerts for ops and back-in-stock pushes for customers.

An alert is raised inside the transaction of the event behind it and delivered after commit, one
delivery row per channel. Alerts with the same dedupe key inside a window are grouped: the first goes
out at once, the rest only count, and one summary follows when the window closes. A channel's own
failures never raise alerts (no loops); they show on the delivery rows in the admin.
"""

import logging
import zlib
from datetime import timedelta
from functools import partial

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from donutsite.context import request_id
from donutsite.errors import NotFound
from notifications.models import Alert, AlertDelivery, AlertGroup, AlertLock, Device, Severity, Subscription

logger = logging.getLogger(__name__)

DELIVER_TASK = "notifications.deliver"
BACK_IN_STOCK_TASK = "notifications.back_in_stock"


def channels_for(severity: str) -> list[str]:
    """The channels an alert of this severity goes to: the log always, Slack and FCM when configured and
    the severity reaches their minimum."""
    channels = [AlertDelivery.Channel.LOG]
    if settings.SLACK_WEBHOOK_URL and Severity.rank(severity) >= Severity.rank(settings.SLACK_MIN_SEVERITY):
        channels.append(AlertDelivery.Channel.SLACK)
    if fcm_configured() and Severity.rank(severity) >= Severity.rank(settings.FCM_MIN_SEVERITY):
        channels.append(AlertDelivery.Channel.FCM)
    return channels


def fcm_configured() -> bool:
    return bool(settings.FCM_PROJECT_ID and (settings.FCM_CREDENTIALS_FILE or settings.FCM_ACCESS_TOKEN))


def alert_raise(
    *,
    kind: str,
    severity: str,
    title: str,
    text: str = "",
    dedupe_key: str = "",
    context: dict | None = None,
    correlation_id: str = "",
) -> Alert | None:
    """Record an alert and schedule its deliveries for after commit. Call it inside the event's transaction.

    Locks the AlertLock stripe of its dedupe key, which serializes grouping per key. Returns None when this kind
    of alert is switched off. Without a correlation_id it takes the current request's or task's id.
    """
    if kind in settings.ALERTS_DISABLED_KINDS:
        return None
    dedupe_key = (dedupe_key or f"{kind}:{title}")[:200]
    now = timezone.now()
    with transaction.atomic():
        group = _group_locked(dedupe_key)
        in_window = bool(group.leader_id and group.window_ends_at and group.window_ends_at > now)
        alert = Alert.objects.create(
            kind=kind,
            severity=severity,
            title=title[:200],
            text=text,
            dedupe_key=dedupe_key,
            context=context or {},
            correlation_id=(correlation_id or request_id.get())[:64],
            group_leader_id=group.leader_id if in_window else None,
        )
        if in_window:
            Alert.objects.filter(pk=group.leader_id).update(suppressed_count=F("suppressed_count") + 1)
            AlertGroup.objects.filter(pk=group.pk).update(suppressed_count=F("suppressed_count") + 1)
            return alert
        if group.suppressed_count:
            _summarize(group)  # the previous window closed but its summary has not gone out yet
        group.leader = alert
        group.window_ends_at = now + timedelta(seconds=settings.ALERT_GROUP_WINDOW_SECONDS)
        group.suppressed_count = 0
        group.save(update_fields=["leader", "window_ends_at", "suppressed_count"])
        _deliver_later(alert)
    return alert


def _group_locked(dedupe_key: str) -> AlertGroup:
    """The dedupe key's group, created if new, under the lock of its AlertLock stripe."""
    stripe = zlib.crc32(dedupe_key.encode()) % AlertLock.STRIPES
    if not AlertLock.objects.select_for_update().filter(pk=stripe).exists():
        # The migration creates the stripes; this only heals a table someone emptied.
        AlertLock.objects.bulk_create([AlertLock(id=stripe)], ignore_conflicts=True)
        AlertLock.objects.select_for_update().filter(pk=stripe).exists()
    group, _ = AlertGroup.objects.get_or_create(dedupe_key=dedupe_key)
    return group


def _summarize(group: AlertGroup) -> Alert:
    leader = group.leader
    summary = Alert.objects.create(
        kind=leader.kind if leader else "summary",
        severity=leader.severity if leader else Severity.INFO,
        title=f"+{group.suppressed_count} more: {leader.title if leader else group.dedupe_key}"[:200],
        text=f"{group.suppressed_count} more alert(s) like this one in the last "
        f"{settings.ALERT_GROUP_WINDOW_SECONDS // 60 or 1} minute(s).",
        dedupe_key=group.dedupe_key,
        context={**(leader.context if leader else {}), "grouped": group.suppressed_count},
        is_summary=True,
    )
    _deliver_later(summary)
    return summary


def _deliver_later(alert: Alert) -> None:
    for channel in channels_for(alert.severity):
        delivery = AlertDelivery.objects.create(alert=alert, channel=channel)
        transaction.on_commit(partial(delivery_dispatch, delivery.pk))


def delivery_dispatch(delivery_id: int) -> None:
    try:
        current_app.send_task(DELIVER_TASK, args=[delivery_id], queue="notifications")
    except Exception as exc:  # the broker is down: the row stays pending and the sweep resends it
        logger.warning("alert delivery %s: broker unavailable (%r)", delivery_id, exc)


def alert_groups_flush() -> int:
    """Send the summary of every group whose window has closed with alerts held back."""
    sent = 0
    for group_id in AlertGroup.objects.filter(window_ends_at__lte=timezone.now(), suppressed_count__gt=0).values_list(
        "pk", flat=True
    ):
        with transaction.atomic():
            group = AlertGroup.objects.select_for_update().select_related("leader").get(pk=group_id)
            if group.suppressed_count and group.window_ends_at <= timezone.now():
                _summarize(group)
                group.suppressed_count = 0
                group.leader = None
                group.window_ends_at = None
                group.save(update_fields=["suppressed_count", "leader", "window_ends_at"])
                sent += 1
    return sent


def alerts_escalate() -> int:
    """Warnings nobody acknowledged in time are pushed to FCM too."""
    if not fcm_configured():
        return 0
    cutoff = timezone.now() - timedelta(seconds=settings.ALERT_ESCALATE_AFTER_SECONDS)
    escalated = 0
    for alert_id in Alert.objects.filter(
        severity=Severity.WARNING,
        acknowledged_at__isnull=True,
        escalated_at__isnull=True,
        group_leader__isnull=True,
        created_at__lte=cutoff,
    ).values_list("pk", flat=True):
        with transaction.atomic():
            if not Alert.objects.filter(pk=alert_id, escalated_at__isnull=True).update(escalated_at=timezone.now()):
                continue
            delivery, created = AlertDelivery.objects.get_or_create(
                alert_id=alert_id, channel=AlertDelivery.Channel.FCM
            )
            if created:
                transaction.on_commit(partial(delivery_dispatch, delivery.pk))
                escalated += 1
    return escalated


def deliveries_resend_stuck(*, older_than_seconds: int = 30) -> int:
    """Pending deliveries whose message never reached the broker (or was lost) are sent again."""
    cutoff = timezone.now() - timedelta(seconds=older_than_seconds)
    ids = list(
        AlertDelivery.objects.filter(status=AlertDelivery.Status.PENDING, created_at__lte=cutoff).values_list(
            "pk", flat=True
        )[:500]
    )
    for delivery_id in ids:
        delivery_dispatch(delivery_id)
    return len(ids)


def alert_acknowledge(alert: Alert, *, user) -> None:
    Alert.objects.filter(pk=alert.pk, acknowledged_at__isnull=True).update(
        acknowledged_at=timezone.now(), acknowledged_by=user
    )


def alert_resend(alert: Alert) -> int:
    """Send an alert again on every channel it went to (ops asked for it in the admin)."""
    with transaction.atomic():
        deliveries = list(AlertDelivery.objects.select_for_update().filter(alert=alert))
        for delivery in deliveries:
            AlertDelivery.objects.filter(pk=delivery.pk).update(status=AlertDelivery.Status.PENDING, last_error="")
            transaction.on_commit(partial(delivery_dispatch, delivery.pk))
    return len(deliveries)


def device_register(
    *, client, token: str, platform: str, user_ref: str = "", kind: str = Device.Kind.CUSTOMER
) -> tuple[Device, bool]:
    """Register a device's FCM token, or update it if the token is known (re-activating it)."""
    with transaction.atomic():
        device, created = Device.objects.select_for_update().update_or_create(
            token=token,
            defaults={
                "client": client,
                "platform": platform,
                "user_ref": user_ref,
                "kind": kind,
                "is_active": True,
                "deactivated_reason": "",
            },
        )
    return device, created


class UnknownDevice(NotFound):
    code = "unknown_device"
    message = "No active device with that id is registered by this client."


def device_get(*, client, device_id: int) -> Device:
    device = Device.objects.filter(pk=device_id, client=client, is_active=True).first()
    if device is None:
        raise UnknownDevice()
    return device


def device_deactivate(device_id: int, *, reason: str) -> None:
    Device.objects.filter(pk=device_id).update(is_active=False, deactivated_reason=reason[:200])


def subscription_create(*, device: Device, sku: str) -> tuple[Subscription, bool]:
    """Subscribe a device to a SKU coming back; subscribing again re-arms a used subscription."""
    subscription, created = Subscription.objects.update_or_create(
        device=device, sku=sku, defaults={"notified_at": None}
    )
    return subscription, created


def back_in_stock_announce(sku: str) -> None:
    """After commit, fan the news out to the SKU's subscribers on the notifications queue."""

    def send():
        try:
            current_app.send_task(BACK_IN_STOCK_TASK, args=[sku], queue="notifications")
        except Exception as exc:
            logger.warning("back in stock %s: broker unavailable (%r); subscribers not told", sku, exc)

    transaction.on_commit(send)


# Delivery: the network part, with no transaction open (STYLE rule 5).

_channels: dict[str, object] = {}


def _channel(name: str):
    """Adapters keep their HTTP sessions, so a process builds each once."""
    if name not in _channels:
        from notifications.channels.fcm import FcmChannel
        from notifications.channels.log import LogChannel
        from notifications.channels.slack import SlackChannel

        _channels[name] = {
            AlertDelivery.Channel.LOG: LogChannel,
            AlertDelivery.Channel.SLACK: SlackChannel,
            AlertDelivery.Channel.FCM: FcmChannel,
        }[name].from_settings()
    return _channels[name]


def message_for(alert: Alert):
    from notifications.channels.base import Message

    context = alert.context or {}
    facts = {label: str(context[key]) for key, label in FACT_LABELS.items() if context.get(key) not in (None, "")}
    links = {"Alert in the admin": f"{settings.PUBLIC_BASE_URL}/admin/notifications/alert/{alert.pk}/change/"}
    if context.get("restock_id"):
        links["Restock"] = f"{settings.PUBLIC_BASE_URL}/admin/inventory/restock/{context['restock_id']}/change/"
    if settings.FLOWER_URL:
        links["Flower"] = settings.FLOWER_URL
    return Message(
        title=alert.title,
        text=alert.text,
        severity=alert.severity,
        kind=alert.kind,
        alert_id=alert.pk,
        facts=facts,
        links=links,
        data={"alert_id": str(alert.pk), "kind": alert.kind, "severity": alert.severity},
    )


FACT_LABELS = {
    "sku": "SKU",
    "restock_id": "Restock",
    "attempts": "Attempts",
    "grouped": "Grouped",
    "error": "Error",
    "task": "Task",
    "dead_letter_id": "Dead letter",
    "correlation_id": "Request id",
}


class DeliveryRetry(Exception):  # noqa: N818 - a signal to the task
    def __init__(self, message, retry_after=None):
        super().__init__(message)
        self.retry_after = retry_after


def delivery_send(delivery_id: int, *, final_attempt: bool = False) -> str:
    """Send one delivery. Idempotent: a delivery already sent is not sent again.

    Raises DeliveryRetry for a transient failure (unless final_attempt, when the delivery is failed).
    """
    from notifications.channels.base import ChannelError, TokenUnregistered

    claimed = AlertDelivery.objects.filter(pk=delivery_id, status=AlertDelivery.Status.PENDING).update(
        attempts=F("attempts") + 1
    )
    if not claimed:
        return "not pending"
    delivery = AlertDelivery.objects.select_related("alert").get(pk=delivery_id)
    channel = _channel(delivery.channel)
    if channel is None:
        _delivery_failed(delivery, "channel is not configured")
        return "failed"
    message = message_for(delivery.alert)
    try:
        if delivery.channel == AlertDelivery.Channel.FCM:
            channel.send_to_topic(settings.FCM_OPS_TOPIC, message)
            for device_id, token in Device.objects.filter(kind=Device.Kind.OPS, is_active=True).values_list(
                "pk", "token"
            ):
                try:
                    channel.send_to_token(token, message)
                except TokenUnregistered as exc:
                    device_deactivate(device_id, reason=str(exc))
        else:
            channel.send(message)
    except ChannelError as exc:
        if exc.transient and not final_attempt:
            AlertDelivery.objects.filter(pk=delivery_id).update(last_error=str(exc)[:2000])
            raise DeliveryRetry(str(exc), retry_after=exc.retry_after) from exc
        _delivery_failed(delivery, str(exc))
        return "failed"
    sent_at = timezone.now()
    AlertDelivery.objects.filter(pk=delivery_id).update(
        status=AlertDelivery.Status.SENT,
        sent_at=sent_at,
        last_error="",
        latency_ms=int((sent_at - delivery.alert.created_at).total_seconds() * 1000),
    )
    return "sent"


def _delivery_failed(delivery: AlertDelivery, error: str) -> None:
    AlertDelivery.objects.filter(pk=delivery.pk).update(status=AlertDelivery.Status.FAILED, last_error=error[:2000])
    logger.error("alert %s: %s delivery failed: %s", delivery.alert_id, delivery.channel, error)


def back_in_stock_send(sku: str, *, batch_size: int = 200) -> int:
    """Push "back in stock" once to every subscriber of `sku`, using each subscription up."""
    from notifications.channels.base import ChannelError, Message, TokenUnregistered

    channel = _channel(AlertDelivery.Channel.FCM)
    if channel is None:
        logger.info("back in stock %s: FCM is not configured; subscribers not told", sku)
        return 0
    message = Message(
        title="Back in stock",
        text=f"{sku} is back. Grab one before the next video goes viral!",
        severity=Severity.INFO,
        kind="back_in_stock",
        data={"kind": "back_in_stock", "sku": sku},
    )
    sent = 0
    while True:
        batch = list(
            Subscription.objects.filter(sku=sku, notified_at__isnull=True, device__is_active=True)
            .select_related("device")
            .order_by("pk")[:batch_size]
        )
        if not batch:
            return sent
        for subscription in batch:
            # Use the subscription up first: one push per subscription, even if this task runs twice.
            if not Subscription.objects.filter(pk=subscription.pk, notified_at__isnull=True).update(
                notified_at=timezone.now()
            ):
                continue
            try:
                channel.send_to_token(subscription.device.token, message)
                sent += 1
            except TokenUnregistered as exc:
                device_deactivate(subscription.device_id, reason=str(exc))
            except ChannelError as exc:
                logger.warning("back in stock %s: push to device %s failed: %s", sku, subscription.device_id, exc)

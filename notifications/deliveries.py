"""Alert deliveries: one row per alert and channel, sent after commit, resent by the sweep.

The network part runs with no transaction open (STYLE rule 5). A channel's own failures never raise
alerts (no loops); they show on the delivery rows in the admin.
"""

import logging
from datetime import timedelta
from functools import partial

from celery import current_app
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from notifications.channels.base import Message
from notifications.channels.registry import channel_get, channels_for
from notifications.devices import device_deactivate
from notifications.errors import ChannelError, DeliveryRetry, TokenUnregistered
from notifications.models import Alert, AlertDelivery, Device

logger = logging.getLogger(__name__)

DELIVER_TASK = "notifications.deliver"

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


def deliveries_create(alert: Alert) -> None:
    """One pending delivery per channel the alert's severity reaches, each handed to the queue after commit."""
    for channel in channels_for(alert.severity):
        delivery = AlertDelivery.objects.create(alert=alert, channel=channel)
        transaction.on_commit(partial(delivery_dispatch, delivery.pk))


def delivery_dispatch(delivery_id: int) -> None:
    try:
        current_app.send_task(DELIVER_TASK, args=[delivery_id])
    except Exception as exc:  # the broker is down: the row stays pending and the sweep resends it
        logger.warning("alert delivery %s: broker unavailable (%r)", delivery_id, exc)


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


def message_for(alert: Alert) -> Message:
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


def delivery_send(delivery_id: int, *, final_attempt: bool = False) -> str:
    """Send one delivery. Idempotent: a delivery already sent is not sent again.

    Raises DeliveryRetry for a transient failure (unless final_attempt, when the delivery is failed).
    """
    claimed = AlertDelivery.objects.filter(pk=delivery_id, status=AlertDelivery.Status.PENDING).update(
        attempts=F("attempts") + 1
    )
    if not claimed:
        return "not pending"
    delivery = AlertDelivery.objects.select_related("alert").get(pk=delivery_id)
    channel = channel_get(delivery.channel)
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
            raise DeliveryRetry(str(exc)) from exc
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


def alert_resend(alert: Alert) -> int:
    """Send an alert again on every channel it went to (ops asked for it in the admin)."""
    with transaction.atomic():
        deliveries = list(AlertDelivery.objects.select_for_update().filter(alert=alert))
        for delivery in deliveries:
            AlertDelivery.objects.filter(pk=delivery.pk).update(status=AlertDelivery.Status.PENDING, last_error="")
            transaction.on_commit(partial(delivery_dispatch, delivery.pk))
    return len(deliveries)

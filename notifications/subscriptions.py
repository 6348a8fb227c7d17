"""Back-in-stock subscriptions: a customer's device wants one push when a SKU comes back."""

import logging

from celery import current_app
from django.db import transaction
from django.utils import timezone

from notifications.channels.base import Message
from notifications.channels.registry import channel_get
from notifications.devices import device_deactivate, device_get
from notifications.errors import ChannelError, TokenUnregistered
from notifications.models import AlertDelivery, Severity, Subscription

logger = logging.getLogger(__name__)

BACK_IN_STOCK_TASK = "notifications.back_in_stock"


def subscription_create(*, client, device_id: int, sku: str) -> tuple[Subscription, bool]:
    """Subscribe one of the client's active devices to `sku` coming back (the caller vouches for the SKU).
    Subscribing again re-arms a used subscription. Raises UnknownDevice for a device not the client's."""
    device = device_get(client=client, device_id=device_id)
    subscription, created = Subscription.objects.update_or_create(
        device=device, sku=sku, defaults={"notified_at": None}
    )
    return subscription, created


def back_in_stock_announce(sku: str) -> None:
    """After commit, fan the news out to the SKU's subscribers on the notifications queue."""

    def send():
        try:
            current_app.send_task(BACK_IN_STOCK_TASK, args=[sku])
        except Exception as exc:
            logger.warning("back in stock %s: broker unavailable (%r); subscribers not told", sku, exc)

    transaction.on_commit(send)


def back_in_stock_send(sku: str, *, batch_size: int = 200) -> int:
    """Push "back in stock" once to every subscriber of `sku`, using each subscription up."""
    channel = channel_get(AlertDelivery.Channel.FCM)
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

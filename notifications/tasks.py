"""Short alert tasks on the `notifications` queue, apart from slow factory calls."""

import random

from celery import shared_task
from django.conf import settings

from notifications.alerts import alert_groups_flush, alerts_escalate
from notifications.deliveries import deliveries_resend_stuck, delivery_send
from notifications.errors import DeliveryRetry
from notifications.subscriptions import back_in_stock_send

MAX_ATTEMPTS = 5


@shared_task(
    bind=True,
    max_retries=None,
    name="notifications.deliver",
    queue="notifications",
    acks_late=True,
    soft_time_limit=10,
    time_limit=12,
)
def deliver_task(self, delivery_id: int) -> str:
    final = self.request.retries + 1 >= MAX_ATTEMPTS
    try:
        return delivery_send(delivery_id, final_attempt=final)
    except DeliveryRetry as exc:
        wait = max(random.uniform(0, min(10.0, 0.5 * 2**self.request.retries)), exc.retry_after or 0)  # noqa: S311
        raise self.retry(countdown=min(wait, settings.FACTORY_RETRY_BACKOFF_MAX_SECONDS)) from exc


@shared_task(
    name="notifications.back_in_stock", queue="notifications", acks_late=True, soft_time_limit=10, time_limit=12
)
def back_in_stock_task(sku: str) -> int:
    return back_in_stock_send(sku)


@shared_task(name="notifications.sweep", queue="notifications", soft_time_limit=10, time_limit=12)
def sweep_task() -> dict:
    """Summaries of closed groups, escalation of unacknowledged warnings, deliveries that never left."""
    return {
        "summaries": alert_groups_flush(),
        "escalated": alerts_escalate(),
        "resent": deliveries_resend_stuck(),
    }

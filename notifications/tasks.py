"""Short notification tasks on the `notifications` queue (CELERY_TASK_ROUTES), apart from slow factory calls."""

from celery import shared_task
from django.conf import settings

from donutsite.sweeps import single_flight, sweep_finished
from notifications.alerts import alert_groups_flush, alerts_escalate, factory_sweep_stopped_alert
from notifications.deliveries import deliveries_resend_stuck, delivery_send
from notifications.errors import DeliveryRetry
from notifications.limits import TASK_SOFT_TIME_LIMIT, TASK_TIME_LIMIT
from notifications.subscriptions import back_in_stock_resend, back_in_stock_send


@shared_task(
    bind=True,
    name="notifications.deliver",
    # Celery's own retry: a transient channel failure is retried with capped exponential backoff and full
    # jitter; the last attempt marks the delivery failed instead of raising (see delivery_send).
    autoretry_for=(DeliveryRetry,),
    max_retries=settings.NOTIFICATIONS_MAX_RETRIES,
    retry_backoff=settings.NOTIFICATIONS_RETRY_BACKOFF_SECONDS,
    retry_backoff_max=settings.NOTIFICATIONS_RETRY_BACKOFF_MAX_SECONDS,
    retry_jitter=True,
    soft_time_limit=TASK_SOFT_TIME_LIMIT,
    time_limit=TASK_TIME_LIMIT,
)
def deliver_task(self, delivery_id: int) -> str:
    return delivery_send(delivery_id, final_attempt=self.request.retries >= self.max_retries)


@shared_task(name="notifications.back_in_stock", soft_time_limit=TASK_SOFT_TIME_LIMIT, time_limit=TASK_TIME_LIMIT)
def back_in_stock_task(sku: str) -> int:
    return back_in_stock_send(sku)


@shared_task(name="notifications.sweep", soft_time_limit=TASK_SOFT_TIME_LIMIT, time_limit=TASK_TIME_LIMIT)
@single_flight("notifications.sweep")
def sweep_task() -> dict:
    """Summaries of closed groups, escalation of unacknowledged warnings, the resends (deliveries and
    back-in-stock pushes whose message never left or whose send failed), and a page when the factory's
    sweep stopped (it runs on another worker, which may be dead). One run at a time (single_flight)."""
    result = {
        "sweep_stopped": factory_sweep_stopped_alert(),
        "summaries": alert_groups_flush(),
        "escalated": alerts_escalate(),
        "resent": deliveries_resend_stuck(),
        "back_in_stock_resent": back_in_stock_resend(),
    }
    sweep_finished("notifications.sweep")
    return result

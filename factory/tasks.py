"""Factory tasks: thin. They take ids, re-read state and call a service; factory/retries.py decides what
a failure means. Queues come from CELERY_TASK_ROUTES (`factory.*`, the shortage route and `maintenance.*`)."""

import logging

from celery import shared_task

from donutsite.celery import routed_queue
from donutsite.errors import DomainError
from donutsite.sweeps import single_flight, sweep_finished
from factory import receipts, services
from factory.client import FactoryError, FactoryRateLimited, FactoryUnavailable
from factory.retries import RetryingTask, dead_letter_copies_sync

logger = logging.getLogger(__name__)


class RestockPlaceTask(RetryingTask):
    """Placing an order: the budget is the restock's factory order attempt count."""

    retry_on = (FactoryUnavailable,)
    rate_limited_on = (FactoryRateLimited,)

    def attempts_used(self, args, kwargs) -> int:
        return services.restock_attempts_used(args[0])

    def attempts_spared(self, args, kwargs) -> int:
        return services.restock_attempts_rate_limited(args[0])

    def failing_since(self, args, kwargs):
        return services.restock_failing_since(args[0])

    def retry(self, *args, **kwargs):
        # Celery sends a retry back to the queue the message came from; a shortage's first attempt came
        # from the urgent queue, and its retries belong behind it with the routine work.
        kwargs.setdefault("queue", routed_queue(self.name))
        return super().retry(*args, **kwargs)

    def retry_scheduled(self, args, kwargs, at) -> None:
        services.restock_retry_scheduled(args[0], at=at)

    def park(self, args, kwargs, until) -> bool:
        services.restock_park(args[0], until=until)
        return True

    def dead_letter_context(self, args, kwargs) -> dict:
        return services.restock_dead_letter_context(args[0])

    def dead_letter_claim(self, args, kwargs, reason: str) -> bool:
        return services.restock_fail(args[0], reason=reason)


@shared_task(bind=True, base=RestockPlaceTask, name="factory.restock_place")
def restock_place_task(self, restock_id: int) -> str:
    return services.restock_place(restock_id)


@shared_task(name="factory.restock_poll")
def restock_poll_task(restock_id: int) -> str:
    """No retries and no dead letter of its own: a poll changes nothing by itself, so one the factory could
    not answer, or answered with what we cannot apply (a refusal, an order contradicting its restock), is
    asked again by the next reconcile sweep once FACTORY_OVERDUE_GRACE_SECONDS have passed; an order that
    stays overdue has its overdue alert, and a failed restock its dead letter already."""
    try:
        return receipts.restock_poll(restock_id)
    except FactoryUnavailable as exc:
        return f"factory unavailable ({exc}); asked again by the next sweep"
    except (FactoryError, DomainError) as exc:
        logger.warning(
            "restock %s: the poll's answer cannot be used (%s); asked again by the next sweep", restock_id, exc
        )
        return f"{exc}; asked again by the next sweep"


@shared_task(name="factory.reconcile")
@single_flight("factory.reconcile")
def reconcile_task() -> dict:
    """The factory's sweep (beat, every RECONCILE_INTERVAL_SECONDS), routed to the `maintenance` queue so
    that it never waits behind slow factory calls. One run at a time (single_flight)."""
    result = services.reconcile()
    sweep_finished("factory.reconcile")
    return result


@shared_task(name="factory.dead_letter_copies_sync")
@single_flight("factory.dead_letter_copies_sync")
def dead_letter_copies_sync_task() -> dict:
    """The dead-letter queue's copies matched to the rows (beat, every minute; `maintenance` queue)."""
    return dead_letter_copies_sync()

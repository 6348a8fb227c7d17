"""Factory tasks: thin. They take ids, re-read state, call a service, and classify errors."""

from celery import shared_task
from django.conf import settings
from django.utils import timezone

from factory import services
from factory.client import FactoryRejected, FactoryUnavailable
from factory.models import DeadLetter
from factory.reliable import ReliableTask
from inventory.models import Restock


class OutOfAttempts(Exception):  # noqa: N818 - reads better in a dead letter than OutOfAttemptsError
    """The restock used up FACTORY_MAX_ATTEMPTS calls (counted across resends, not per message)."""


class RestockPlaceTask(ReliableTask):
    retry_on = (FactoryUnavailable,)

    def retry(self, *args, countdown=None, **kwargs):
        if countdown is not None:
            services.restock_retry_scheduled(
                self.request.args[0], at=timezone.now() + timezone.timedelta(seconds=countdown)
            )
        return super().retry(*args, countdown=countdown, **kwargs)

    def park(self, args, kwargs, until):
        services.restock_park(args[0], until=until)

    def dead_letter_context(self, args, kwargs) -> dict:
        restock = Restock.objects.select_related("product").filter(pk=args[0]).first()
        return {"restock_id": args[0], "sku": restock.product.sku if restock else ""}

    def on_dead_letter(self, dead_letter: DeadLetter):
        services.restock_fail(
            dead_letter.args[0], reason=f"{dead_letter.exception_type}: {dead_letter.exception_message}"
        )


@shared_task(bind=True, base=RestockPlaceTask, name="factory.restock_place", queue="factory")
def restock_place_task(self, restock_id: int) -> str:
    try:
        return services.restock_place(restock_id)
    except FactoryUnavailable as exc:
        attempts = Restock.objects.filter(pk=restock_id).values_list("attempt_count", flat=True).first() or 0
        if attempts >= settings.FACTORY_MAX_ATTEMPTS:
            raise OutOfAttempts(f"{attempts} attempts; last: {exc}") from exc
        raise
    except FactoryRejected:
        raise  # permanent: dead-lettered at once


@shared_task(bind=True, base=ReliableTask, name="factory.restock_poll", queue="factory", retry_on=(FactoryUnavailable,))
def restock_poll_task(self, restock_id: int) -> str:
    return services.restock_poll(restock_id)


@shared_task(name="maintenance.reconcile", queue="maintenance")
def reconcile_task() -> dict:
    return services.reconcile()

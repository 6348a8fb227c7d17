"""Inventory's periodic housekeeping (beat sends it; routed to the `maintenance` queue)."""

from celery import shared_task

from donutsite.sweeps import single_flight
from inventory import services


@shared_task(name="inventory.idempotency_keys_purge")
@single_flight("inventory.idempotency_keys_purge")
def idempotency_keys_purge_task() -> int | dict:
    return services.idempotency_keys_purge()

"""Inventory's periodic housekeeping (beat sends it; routed to the `maintenance` queue)."""

from celery import shared_task

from inventory import services


@shared_task(name="inventory.idempotency_keys_purge")
def idempotency_keys_purge_task() -> int:
    return services.idempotency_keys_purge()

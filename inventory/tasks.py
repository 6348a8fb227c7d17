from celery import shared_task

from inventory import services


@shared_task(name="inventory.reconcile", queue="maintenance", ignore_result=True)
def reconcile_task() -> dict:
    """The periodic sweep (also `manage.py reconcile`): resend undispatched restocks, drop expired keys."""
    return services.reconcile()

"""Small `make_*` helpers for test data (factory_boy's import name collides with our `factory` app)."""

import itertools
import traceback
from datetime import timedelta
from decimal import Decimal

from django.db import transaction
from django.utils import timezone

from clients.models import ApiClient
from factory.client import FactoryRejected
from factory.models import DeadLetter, FactoryOrder
from factory.retries import dead_letter_record
from factory.services import restock_dead_letter_context, restock_fail
from inventory.models import Product, Restock, StockMovement
from notifications.alerts import alert_raise

RESTOCK_PLACE = "factory.restock_place"

_counter = itertools.count(1)


def make_product(sku=None, *, on_hand=100, price="2.00", reorder_point=0, reorder_quantity=50, **fields) -> Product:
    """A product whose on-hand is backed by a ledger adjustment, so the ledger balances from the start."""
    product = Product.objects.create(
        sku=sku or f"SKU{next(_counter)}",
        name=fields.pop("name", "Test donut"),
        price=Decimal(price),
        reorder_point=reorder_point,
        reorder_quantity=reorder_quantity,
        **fields,
    )
    if on_hand:
        Product.objects.filter(pk=product.pk).update(on_hand=on_hand)
        StockMovement.objects.create(product=product, kind="adjustment", quantity=on_hand, reason="test stock")
        product.on_hand = on_hand
    return product


def make_api_client(name=None) -> tuple[ApiClient, str]:
    client = ApiClient(name=name or f"client-{next(_counter)}")
    key = client.set_new_key()
    client.save()
    return client, key


def _place_order(restock):
    raise FactoryRejected(f"409 Conflict: <reference> {restock.reference} refused", status_code=409, latency_ms=42)


def make_dead_letter(
    *, restock_status="failed", failed_days_ago=0, redriven_days_ago=None, task="factory.restock_place"
):
    """A restock that failed for good and its dead letter, as RestockPlaceTask.on_failure leaves them
    (a real exception and traceback, a copy parked in the dead-letter queue, the restock linked)."""
    restock = Restock.objects.create(
        product=make_product(on_hand=0),
        quantity=50,
        reason=Restock.Reason.SHORTAGE,
        status=restock_status,
        closed_at=timezone.now(),
    )
    FactoryOrder.objects.create(
        restock=restock, attempt_count=1, last_error="factory.client.FactoryRejected: 409 Conflict"
    )
    try:
        _place_order(restock)
    except FactoryRejected as exc:
        dead_letter = dead_letter_record(
            task_name=task,
            task_id=f"task-{restock.pk}",
            args=[restock.pk],
            kwargs={},
            queue="factory",
            exc=exc,
            traceback="".join(traceback.format_exception(exc)),
            attempts=1,
            correlation_id=f"req-{restock.pk}",
        )
    failed_at = timezone.now() - timedelta(days=failed_days_ago)
    changes = {"first_failed_at": failed_at, "last_failed_at": failed_at}
    if task == RESTOCK_PLACE:
        changes["restock"] = restock
    if redriven_days_ago is not None:
        changes.update(
            redriven_at=timezone.now() - timedelta(days=redriven_days_ago), redriven_by="ops", redrive_count=1
        )
    DeadLetter.objects.filter(pk=dead_letter.pk).update(**changes)
    dead_letter.refresh_from_db()
    return dead_letter


def make_failed_restock(product=None) -> tuple[Restock, DeadLetter]:
    """A restock the factory refused for good, and the dead letter its task left (a real exception)."""
    product = product or make_product(on_hand=0)
    restock = Restock.objects.create(
        product=product,
        quantity=50,
        reason=Restock.Reason.SHORTAGE,
        status=Restock.Status.FAILED,
        closed_at=timezone.now(),
    )
    FactoryOrder.objects.create(
        restock=restock, attempt_count=1, last_error="factory.client.FactoryRejected: 409 Conflict"
    )
    try:
        raise FactoryRejected(f"409 Conflict: {restock.reference} refused", status_code=409, latency_ms=42)
    except FactoryRejected as exc:
        dead_letter = dead_letter_record(
            task_name="factory.restock_place",
            task_id=f"task-{restock.pk}",
            args=[restock.pk],
            kwargs={},
            queue="factory",
            exc=exc,
            traceback="".join(traceback.format_exception(exc)),
            attempts=1,
            correlation_id=f"req-{restock.pk}",
            context={"restock_id": restock.pk, "sku": product.sku},
        )
    return restock, dead_letter


def restock_give_up(restock, exc, *, attempts, queue="factory") -> DeadLetter | None:
    """The restock's task gives it up, as RestockPlaceTask.on_failure does: restock_fail claims it (failed,
    its overdue warning closed) and its dead letter and critical alert are written in that transaction,
    or brought up to date if it still has one open. `exc` is what the task raised, `attempts` the calls
    its run made, `queue` the one its message came from. None when the claim found nothing to give up."""
    return dead_letter_record(
        claim=lambda: restock_fail(restock.pk, reason=f"{type(exc).__qualname__}: {exc}"),
        task_name=RESTOCK_PLACE,
        task_id=f"task-{restock.pk}",
        args=[restock.pk],
        kwargs={},
        queue=queue,
        exc=exc,
        traceback="",
        attempts=attempts,
        context=restock_dead_letter_context(restock.pk),
    )


def raise_alert(key="dead_letter:factory.restock_place", severity="critical", title="Dead letter", **fields):
    """A dead_letter alert under `key` (its group), raised in a transaction of its own as an event's is."""
    with transaction.atomic():
        return alert_raise(kind="dead_letter", severity=severity, title=title, dedupe_key=key, **fields)


def critical_alert(**context):
    with transaction.atomic():
        return alert_raise(
            kind="dead_letter",
            severity="critical",
            title="Dead letter: VIRAL (factory.restock_place gave up)",
            text="OutOfAttempts: 6 failed attempts; last: 503",
            context={"sku": "VIRAL", "restock_id": 42, "attempts": 6, **context},
        )

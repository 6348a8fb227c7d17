"""The sold-out path: a refusal that opens nothing is answered from a plain read, without the row lock,
and answers exactly as the locked path would."""

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from unittest import mock

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.db import connection, connections, models, transaction
from django.test.utils import isolate_apps
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from donutsite.errors import DomainError
from inventory import selectors, services
from inventory.errors import OutOfStock
from inventory.models import IdempotencyKey, Product, Restock, Sale, SaleLine, StockMovement
from inventory.services import SaleItem, sale_create
from notifications.models import Alert
from testsupport.data import make_api_client, make_product

SKUS = ("GLAZED", "BOSTON")
PRESET_RESTOCK_IDS = {900: "GLAZED", 901: "BOSTON"}
PRESET_SALE_ID = 500
presets_made: set = set()  # the preset restocks this example made: a new row may get a preset's id
EXPECTED_AT = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


def _sold_out_and_refused_once():
    """VIRAL at 0 with an open restock, and one refusal: the first buyer to find it short (this process
    now knows, so the next order for it tries the lock-free read)."""
    product = make_product("VIRAL", on_hand=0)
    Restock.objects.create(product=product, quantity=50, reason=Restock.Reason.SHORTAGE)
    client, _ = make_api_client()
    with pytest.raises(OutOfStock):
        sale_create(client=client, items=[SaleItem("VIRAL", 1)])
    return product, client


@pytest.mark.django_db(transaction=True)
def test_a_sold_out_refusal_does_not_wait_for_a_sale_holding_the_row_lock():
    product, client = _sold_out_and_refused_once()
    restock = Restock.objects.get(product=product)

    locked, answered, released_by_timeout = threading.Event(), threading.Event(), []

    def hold_the_lock():  # as a sale of VIRAL in another process would, until the buyer below has its answer
        try:
            with transaction.atomic():
                list(Product.objects.select_for_update().filter(pk=product.pk))
                locked.set()
                released_by_timeout.append(not answered.wait(timeout=60))
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    locked.wait(timeout=60)
    try:
        with pytest.raises(OutOfStock) as refused:
            sale_create(client=client, items=[SaleItem("VIRAL", 1)], idempotency_key="rush-1")
    finally:
        answered.set()
        holder.join()

    assert released_by_timeout == [False], "the buyer was answered while the lock was still held"
    assert refused.value.details["shortages"][0]["restock"]["id"] == restock.pk
    assert IdempotencyKey.objects.get(key="rush-1").refusal["shortages"][0]["available"] == 0


@pytest.mark.django_db(transaction=True)
def test_a_sold_out_refusal_sees_stock_received_just_before():
    product, client = _sold_out_and_refused_once()

    services.stock_adjust(product=product, quantity=3, reason="found a tray")
    outcome = sale_create(client=client, items=[SaleItem("VIRAL", 2)])

    assert [(line.product.sku, line.quantity) for line in outcome.lines] == [("VIRAL", 2)]
    assert Product.objects.get(pk=product.pk).on_hand == 1


@pytest.mark.django_db(transaction=True)
def test_a_sold_out_refusal_on_a_connection_the_database_dropped_is_still_answered():
    product, client = _sold_out_and_refused_once()
    with connection.cursor() as cursor:
        cursor.execute("SELECT CONNECTION_ID()")
        (connection_id,) = cursor.fetchone()
    other = connections.create_connection("default")
    try:
        with other.cursor() as cursor:  # the server drops this process's connection (a restart, wait_timeout)
            cursor.execute("KILL CONNECTION %s", [connection_id])
    finally:
        other.close()
    connection.close_if_unusable_or_obsolete()  # what Django does as the next request starts

    with pytest.raises(OutOfStock) as refused:  # no ping before the read: the failed read is that check
        sale_create(client=client, items=[SaleItem("VIRAL", 1)])

    assert refused.value.details["shortages"][0]["available"] == 0
    with connection.cursor() as cursor:
        cursor.execute("SELECT CONNECTION_ID()")
        assert cursor.fetchone() != (connection_id,)


@isolate_apps("inventory")
def test_a_not_null_column_the_sale_does_not_write_fails_at_import():
    class Extra(models.Model):  # noqa: DJ008 - never shown
        written = models.IntegerField()
        required = models.IntegerField()
        optional = models.IntegerField(null=True)
        defaulted = models.IntegerField(db_default=0)

        class Meta:
            app_label = "inventory"

    with pytest.raises(ImproperlyConfigured, match="NOT NULL required"):
        services._insert_sql(Extra, ("written",))
    assert services._insert_sql(Extra, ("written", "required")) == (
        "INSERT INTO inventory_extra (`written`, `required`) VALUES (%s, %s)"  # quoted: a column may be named `key`
    )


# The property: whatever the stock, the open restocks and the key's history, the answer and what it
# leaves in the database are the same with the lock-free read as with the locked path alone.

state = st.fixed_dictionaries(
    {
        "stock": st.tuples(st.integers(0, 3), st.integers(0, 3)),
        "restock": st.tuples(*[st.sampled_from([None, "pending", "placed", "fulfilled"])] * 2),
        "active": st.tuples(*[st.sampled_from([True, True, True, False])] * 2),
        "order": st.dictionaries(st.sampled_from(SKUS), st.integers(1, 4), min_size=1, max_size=2),
        "key": st.sampled_from(["none", "fresh", "refused", "sold", "other_body", "expired"]),
    }
)


def _shop_open(client, s) -> list[SaleItem]:
    for model in (Alert, StockMovement, SaleLine, IdempotencyKey, Sale, Restock, Product):
        model.objects.all().delete()
    presets_made.clear()
    selectors.forget_product_ids()
    services._short_products.clear()
    products = [make_product(sku, on_hand=on_hand) for sku, on_hand in zip(SKUS, s["stock"], strict=True)]
    selectors.product_ids_for_skus(list(SKUS))  # known to this process, then retired below: still refused
    for (restock_id, _), product, status, active in zip(
        PRESET_RESTOCK_IDS.items(), products, s["restock"], s["active"], strict=True
    ):
        if status:
            presets_made.add(restock_id)
            expected_at = EXPECTED_AT if status == "placed" else None
            Restock.objects.create(
                pk=restock_id, product=product, quantity=5, reason="shortage", status=status, expected_at=expected_at
            )
        if not active:
            Product.objects.filter(pk=product.pk).update(is_active=False)
    items = [SaleItem(sku, quantity) for sku, quantity in s["order"].items()]
    request_hash = services._request_hash(items)
    stored_refusal = {"shortages": [{"sku": "GLAZED", "requested": 9, "available": 0, "restock": None}]}
    if s["key"] == "sold":
        presets_made.add(("sale", PRESET_SALE_ID))
        sale = Sale.objects.create(pk=PRESET_SALE_ID, client=client, idempotency_key="k", total=Decimal("2.00"))
        SaleLine.objects.create(sale=sale, product=products[0], quantity=1, unit_price=2, line_total=2)
        IdempotencyKey.objects.create(client=client, key="k", request_hash=request_hash, sale=sale)
    elif s["key"] in ("refused", "other_body", "expired"):
        digest = "0" * 64 if s["key"] == "other_body" else request_hash
        IdempotencyKey.objects.create(client=client, key="k", request_hash=digest, refusal=stored_refusal)
        if s["key"] == "expired":
            IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(days=3))
    return items


def _restock_ref(restock_id):
    return restock_id if restock_id in presets_made else "new"


def _answer_and_effects(client, s):
    items = _shop_open(client, s)
    key = "" if s["key"] == "none" else "k"
    try:
        outcome = sale_create(client=client, items=items, idempotency_key=key)
        answer = (
            "sold",
            outcome.replayed,
            ("sale", outcome.sale.pk) in presets_made,
            [(line.product.sku, line.quantity, line.line_total) for line in outcome.lines],
        )
    except DomainError as exc:
        details = {**exc.details}
        for shortage in details.get("shortages", []):
            if shortage["restock"]:
                shortage["restock"] = {**shortage["restock"], "id": _restock_ref(shortage["restock"]["id"])}
        answer = (exc.code, details, exc.headers)
    effects = {
        "stock": dict(Product.objects.values_list("sku", "on_hand")),
        "restocks": sorted((r.product.sku, r.status, _restock_ref(r.pk)) for r in Restock.objects.all()),
        "sales": Sale.objects.count(),
        "keys": [
            (k.key, ("sale", k.sale_id) in presets_made if k.sale_id else None, k.refusal)
            for k in IdempotencyKey.objects.order_by("pk")
        ],
    }
    for _, _, refusal in effects["keys"]:
        for shortage in (refusal or {}).get("shortages", []):
            if shortage["restock"]:
                shortage["restock"]["id"] = _restock_ref(shortage["restock"]["id"])
    return answer, effects


# transaction=True: the service runs in autocommit as under a server (a key's INSERT that finds the key
# in use fails on its own, as it must for the replay that follows, instead of breaking a test's transaction).
@pytest.mark.django_db(transaction=True)
def test_the_sold_out_path_answers_exactly_as_the_locked_path_would():
    client, _ = make_api_client()
    read_answered = []
    refusal_read = services._refusal_read

    def counting_read(items, product_ids):
        shortages = refusal_read(items, product_ids)
        read_answered.append(bool(shortages))
        return shortages

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(s=state)
    def same_answer(s):
        with (
            mock.patch.object(services, "_refusal_read", counting_read),
            mock.patch.object(services, "_short_products", AlwaysShort()),
        ):
            lock_free = _answer_and_effects(client, s)
        with mock.patch.object(services, "_refusal_read", lambda items, product_ids: []):
            locked = _answer_and_effects(client, s)
        assert lock_free == locked

    same_answer()

    assert any(read_answered), "some examples were answered by the lock-free read"
    assert not all(read_answered), "and some went on to the locks"


class AlwaysShort(set):
    """Every product counts as last seen short, so the lock-free read is tried for every order."""

    def intersection(self, *others):
        return {0}

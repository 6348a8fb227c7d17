"""The move of a restock's delivery state from inventory's Restock to factory's FactoryOrder, run on
MariaDB: what the old columns held arrives in the new rows, and going back puts it back."""

from datetime import UTC, datetime

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [("inventory", "0004_apiclient_moved_to_clients"), ("factory", "0001_initial")]
AFTER = [("inventory", "0005_restock_delivery_state_moves_to_factory"), ("factory", "0002_factoryorder")]
SENT_AT = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)


def migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


@pytest.fixture
def old_schema():
    apps = migrate(BEFORE)
    yield apps
    migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())


def test_existing_restocks_keep_their_delivery_state_in_factory_orders(old_schema):
    Product = old_schema.get_model("inventory", "Product")
    Restock = old_schema.get_model("inventory", "Restock")
    glazed = Product.objects.create(sku="GLAZED", name="Glazed", price="1.50")
    maple = Product.objects.create(sku="MAPLE", name="Maple", price="1.50")
    placed = Restock.objects.create(
        product=glazed,
        quantity=120,
        reason="shortage",
        status="placed",
        dispatched_at=SENT_AT,
        dispatch_count=2,
        next_attempt_at=SENT_AT,
        attempt_count=3,
        last_error="503 busy",
        factory_order_id="F-000123",
        last_polled_at=SENT_AT,
    )
    never_sent = Restock.objects.create(product=maple, quantity=50, reason="reorder_point")

    apps = migrate(AFTER)

    FactoryOrder = apps.get_model("factory", "FactoryOrder")
    moved = FactoryOrder.objects.get(restock_id=placed.pk)
    assert (moved.order_id, moved.attempt_count, moved.dispatch_count, moved.last_error) == (
        "F-000123",
        3,
        2,
        "503 busy",
    )
    assert moved.dispatched_at == moved.next_attempt_at == moved.last_polled_at == SENT_AT
    assert moved.claimed_at is None and moved.attempts_before_redrive == 0
    blank = FactoryOrder.objects.get(restock_id=never_sent.pk)
    assert (blank.dispatched_at, blank.attempt_count, blank.order_id) == (None, 0, "")
    restock_columns = {f.name for f in apps.get_model("inventory", "Restock")._meta.get_fields()}
    assert not restock_columns & {"dispatched_at", "attempt_count", "factory_order_id", "claimed_at"}

    apps = migrate(BEFORE)  # and back

    back = apps.get_model("inventory", "Restock").objects.get(pk=placed.pk)
    assert (back.factory_order_id, back.attempt_count, back.dispatched_at) == ("F-000123", 3, SENT_AT)


@pytest.fixture
def before_the_first_hand_over_was_kept():
    latest = MigrationExecutor(connection).loader.graph.leaf_nodes()
    apps = migrate([(app, "0003_metrics_indexes" if app == "factory" else name) for app, name in latest])
    yield apps
    migrate(latest)


def test_restocks_pending_at_the_upgrade_count_their_overdue_grace_from_their_last_hand_over(
    before_the_first_hand_over_was_kept,
):
    # The only hand-over noted before: counted from nothing but their opening, those opened during a broker
    # outage that just ended would be told about as overdue at once.
    apps = before_the_first_hand_over_was_kept
    Product = apps.get_model("inventory", "Product")
    Restock = apps.get_model("inventory", "Restock")
    FactoryOrder = apps.get_model("factory", "FactoryOrder")

    def restock(sku, status, **order):
        product = Product.objects.create(sku=sku, name=sku.title(), price="1.50")
        opened = Restock.objects.create(product=product, quantity=50, reason="shortage", status=status)
        FactoryOrder.objects.create(restock=opened, **order)
        return opened.pk

    sent = restock("GLAZED", "pending", dispatched_at=SENT_AT, dispatch_count=3)
    unsent = restock("MAPLE", "pending", next_attempt_at=SENT_AT)
    placed = restock("LEMON", "placed", dispatched_at=SENT_AT, dispatch_count=1)

    apps = migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())

    first = dict(apps.get_model("factory", "FactoryOrder").objects.values_list("restock_id", "first_dispatched_at"))
    assert first == {sent: SENT_AT, unsent: None, placed: None}

"""The management commands as an operator runs them: what they print, what they change, when they refuse."""

from datetime import timedelta
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.utils import timezone

from factory import services
from factory.models import FactoryOrder
from inventory.management.commands.seed_demo import CATALOGUE
from inventory.models import IdempotencyKey, Product, Restock, Sale, StockMovement
from inventory.selectors import ledger_differences
from inventory.services import SaleItem, sale_create
from notifications.models import Alert
from testsupport.data import make_api_client, make_product
from testsupport.threads import sweep_guard_held, sweep_guard_waited_for, thread_keeping, until_waiting

pytestmark = pytest.mark.django_db


def run(*args):
    """Run a command; return (stdout, stderr)."""
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def stock():
    return dict(Product.objects.values_list("sku", "on_hand"))


def movements(sku):
    return list(StockMovement.objects.filter(product__sku=sku).order_by("pk").values_list("kind", "quantity", "reason"))


# seed_demo


def test_seed_demo_loads_the_catalogue_once():
    first, _ = run("seed_demo")
    after_first = (stock(), StockMovement.objects.count(), Restock.objects.count())
    second, _ = run("seed_demo")

    assert first.strip() == f"demo catalogue: {len(CATALOGUE)} products created, 0 already there"
    assert second.strip() == f"demo catalogue: 0 products created, {len(CATALOGUE)} already there"
    assert stock() == {sku: qty for sku, _, _, qty in CATALOGUE}
    assert (stock(), StockMovement.objects.count(), Restock.objects.count()) == after_first
    assert ledger_differences() == []


def test_seed_demo_leaves_existing_stock_alone():
    make_product("GLAZED", on_hand=3, price="9.00")

    run("seed_demo")

    glazed = Product.objects.get(sku="GLAZED")
    assert (glazed.on_hand, str(glazed.price)) == (3, "9.00")
    assert Product.objects.count() == len(CATALOGUE)
    assert ledger_differences() == []


# set_stock


def test_set_stock_creates_a_missing_product_through_the_ledger():
    out, _ = run(
        "set_stock", "PISTACHIO", "40", "--create", "--name", "Pistachio Cream", "--price", "2.80",
        "--reorder-point", "5", "--reorder-quantity", "60",
    )  # fmt: skip

    assert out.strip() == "PISTACHIO: on hand 40, price 2.80, reorder at 5 for 60"
    product = Product.objects.get(sku="PISTACHIO")
    assert (product.name, product.on_hand, str(product.price), product.reorder_point, product.reorder_quantity) == (
        "Pistachio Cream",
        40,
        "2.80",
        5,
        60,
    )
    assert movements("PISTACHIO") == [("adjustment", 40, "set_stock to 40")]
    assert ledger_differences() == []


def test_set_stock_writes_the_difference_each_way():
    make_product("GLAZED", on_hand=100, price="1.50")

    run("set_stock", "GLAZED", "70")
    run("set_stock", "GLAZED", "90")
    run("set_stock", "GLAZED", "90")

    assert stock() == {"GLAZED": 90}
    assert movements("GLAZED")[1:] == [
        ("adjustment", -30, "set_stock to 70"),
        ("adjustment", 20, "set_stock to 90"),
    ], "setting the level it already has writes nothing"
    assert str(Product.objects.get(sku="GLAZED").price) == "1.50", "no --price leaves the price alone"
    assert ledger_differences() == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--reorder-quantity", "0"], "--reorder-quantity must be 1 to 10000"),
        (["--reorder-quantity", "10001"], "--reorder-quantity must be 1 to 10000"),
        (["--reorder-point", "-1"], "--reorder-point must be 0 to 4294967295"),
        (["--reorder-point", "5000000000"], "--reorder-point must be 0 to 4294967295"),
        (["--price", "-1"], "--price: must be a price from 0"),
        (["--price", "abc"], "--price: must be a number"),
        (["--price", "99999999.999"], "--price: must be a price from 0"),
    ],
    ids=[
        "reorder-qty-0",
        "reorder-qty-huge",
        "reorder-point-negative",
        "reorder-point-huge",
        "price-negative",
        "price-not-a-number",
        "price-rounding-past-the-column",
    ],
)
def test_set_stock_refuses_bad_options_and_changes_nothing(args, message):
    make_product("GLAZED", on_hand=10, reorder_quantity=50)

    with pytest.raises(CommandError, match=message):
        run("set_stock", "GLAZED", "40", *args)
    with pytest.raises(CommandError, match=message):
        run("set_stock", "NEWONE", "40", *args)

    assert stock() == {"GLAZED": 10}
    assert Product.objects.get(sku="GLAZED").reorder_quantity == 50


def test_set_stock_on_an_unknown_sku_names_the_close_ones_and_creates_nothing():
    make_product("GLAZED", on_hand=10)
    make_product("MAPLE", on_hand=10)
    make_product("VIRAL", on_hand=10)

    with pytest.raises(
        CommandError, match=r"No product has the SKU 'GLAZD'\. Did you mean GLAZED\? To add one, pass --create"
    ):
        run("set_stock", "GLAZD", "3")
    with pytest.raises(CommandError) as nothing_close:
        run("set_stock", "NOPE", "3")

    assert "Did you mean" not in str(nothing_close.value) and "--create" in str(nothing_close.value)
    assert sorted(stock()) == ["GLAZED", "MAPLE", "VIRAL"]
    assert not Restock.objects.exists(), "no factory order for a typo"


@pytest.mark.parametrize(
    "sku",
    ["NEW ONE ", " NEWONE", "", "A" * 65, "BOX/6", "NEW ONE", "CAFÉ", ".", ".."],
    ids=["trailing-space", "leading-space", "empty", "too-long", "slash", "inner-space", "not-ascii", "dot", "dot-dot"],
)
def test_set_stock_create_refuses_a_sku_the_admin_would_refuse(sku):
    # A SKU ending in a space would be sold and shown, but `?sku=` on the restock list never finds it (the
    # column ignores trailing spaces, so the list refuses to match them); the admin's form strips them. One
    # past the column was a DataError traceback.
    with pytest.raises(CommandError, match="SKU"):
        run("set_stock", sku, "5", "--create", "--name", "New one", "--price", "1.00")

    assert not Product.objects.exists()
    assert not Restock.objects.exists()


def test_set_stock_create_refuses_a_sku_differing_from_an_existing_one_only_in_case():
    make_product("GLAZED", on_hand=10)

    with pytest.raises(CommandError, match=r"GLAZED already exists, and glazed differs from it only in case"):
        run("set_stock", "glazed", "5", "--create", "--name", "Glazed, lower", "--price", "1.00")

    assert stock() == {"GLAZED": 10}
    assert not Restock.objects.exists()


def test_set_stock_create_needs_a_name_and_a_price():
    with pytest.raises(CommandError, match="needs a name and a price"):
        run("set_stock", "PISTACHIO", "40", "--create", "--price", "2.80")
    with pytest.raises(CommandError, match="needs a name and a price"):
        run("set_stock", "PISTACHIO", "40", "--create", "--name", "Pistachio")

    assert not Product.objects.exists()


def test_set_stock_create_on_an_existing_sku_just_sets_its_stock():
    make_product("GLAZED", on_hand=10, price="1.50")

    run("set_stock", "GLAZED", "12", "--create")

    assert stock() == {"GLAZED": 12}
    assert str(Product.objects.get(sku="GLAZED").price) == "1.50"


def test_set_stock_refuses_negative_stock():
    make_product("GLAZED", on_hand=10)

    with pytest.raises(CommandError, match="Stock cannot be negative"):
        run("set_stock", "GLAZED", "-5")

    assert stock() == {"GLAZED": 10}


def test_set_stock_on_a_retired_product_orders_nothing_from_the_factory(queues, django_capture_on_commit_callbacks):
    make_product("BOSTON", on_hand=20, reorder_point=10, is_active=False)

    with django_capture_on_commit_callbacks(execute=True):
        out, _ = run("set_stock", "BOSTON", "5")

    assert out.startswith("BOSTON: on hand 5,")
    assert not Restock.objects.exists(), "a product not for sale is never reordered"
    assert queues("factory") == [] and queues("factory_urgent") == []


def test_set_stock_raising_the_reorder_point_past_the_stock_reorders(queues, django_capture_on_commit_callbacks):
    # As the admin does (product_update): the stock count is unchanged, but the product is now at or below
    # its reorder point, and the factory is asked now, not after the product's next sale.
    make_product("GLAZED", on_hand=8, reorder_point=5, reorder_quantity=60)

    with django_capture_on_commit_callbacks(execute=True):
        run("set_stock", "GLAZED", "8", "--reorder-point", "10")

    restock = Restock.objects.get(product__sku="GLAZED")
    assert (restock.status, restock.reason, restock.quantity) == ("pending", "reorder_point", 60)
    assert queues("factory") == [("factory.restock_place", [restock.pk])]
    run("set_stock", "GLAZED", "8", "--reorder-point", "10")
    assert Restock.objects.count() == 1, "still the one restock"


def test_set_stock_refuses_more_stock_than_the_column_holds_and_changes_nothing():
    make_product("CINNAMON", on_hand=10)

    with pytest.raises(CommandError, match=r"^Stock cannot be more than 2147483647\.$"):
        run("set_stock", "CINNAMON", "3000000000")
    with pytest.raises(CommandError, match=r"^Stock cannot be more than 2147483647\.$"):
        run("set_stock", "PISTACHIO", "3000000000", "--create", "--name", "Pistachio", "--price", "2.80")
    run("set_stock", "CINNAMON", "2147483647")

    assert stock() == {"CINNAMON": 2147483647}, "the most the column holds is still allowed"
    assert ledger_differences() == []


# check_ledger


def test_check_ledger_passes_when_balanced():
    make_product("GLAZED", on_hand=10)
    make_product("EMPTY", on_hand=0)
    run("set_stock", "GLAZED", "4")

    out, err = run("check_ledger")

    assert out.strip() == "ledger balanced for 2 products"
    assert err == ""


def test_check_ledger_names_a_product_changed_behind_the_ledgers_back():
    make_product("GLAZED", on_hand=10)
    maple = make_product("MAPLE", on_hand=10)
    Product.objects.filter(pk=maple.pk).update(on_hand=13)

    err = StringIO()
    with pytest.raises(CommandError, match="ledger mismatch: MAPLE$"):
        call_command("check_ledger", stdout=StringIO(), stderr=err)

    assert err.getvalue().strip() == "MAPLE: on hand 13, ledger says 10 (difference +3)"
    alert = Alert.objects.get(kind="ledger_mismatch")
    assert (alert.severity, alert.title) == ("critical", "Stock differs from the ledger: MAPLE")


def test_check_ledger_correct_writes_the_missing_row_and_keeps_what_is_on_hand():
    make_product("GLAZED", on_hand=10)
    maple = make_product("MAPLE", on_hand=10)
    Product.objects.filter(pk=maple.pk).update(on_hand=13)  # someone's UPDATE behind the services

    out, _ = run("check_ledger", "--correct")

    assert out.splitlines() == [
        "MAPLE: wrote the missing ledger row +3 (on hand kept)",
        "ledger balanced for 2 products",
    ]
    assert ledger_differences() == [] and Product.objects.get(sku="MAPLE").on_hand == 13
    correction = StockMovement.objects.filter(product=maple).latest("pk")
    assert (correction.kind, correction.quantity) == ("adjustment", 3)
    assert correction.reason == "ledger correction: on hand 13 was changed outside the ledger, which said 10"
    assert not Alert.objects.filter(kind="ledger_mismatch").exists(), "corrected, not alerted"
    run("set_stock", "MAPLE", "11")  # then the shelf count, as any adjustment
    assert run("check_ledger")[0].strip() == "ledger balanced for 2 products"


# reconcile


class Broker:
    """Stands in for task_publish so this test leaves no stray message in the shared test broker; what
    the operator sees (the printed count and the restock rows) is real."""

    def __init__(self, *, down=False):
        self.down = down
        self.sent = []

    def task_publish(self, name, args, **options):
        if self.down:
            return False
        self.sent.append((name, args))
        return True


def old_restock(sku, **order):
    restock = Restock.objects.create(product=make_product(sku, on_hand=0), quantity=50, reason="shortage")
    if order:
        FactoryOrder.objects.create(restock=restock, **order)
    Restock.objects.filter(pk=restock.pk).update(
        created_at=timezone.now() - timedelta(seconds=settings.OUTBOX_RESEND_AFTER_SECONDS + 60)
    )
    return restock


def test_reconcile_resends_restocks_that_never_left_and_prints_counts(monkeypatch):
    broker = Broker()
    monkeypatch.setattr(services, "task_publish", broker.task_publish)
    lost = old_restock("LOST")
    old_restock("SENT", dispatched_at=timezone.now(), first_dispatched_at=timezone.now(), dispatch_count=1)
    fresh = Restock.objects.create(product=make_product("FRESH", on_hand=0), quantity=50, reason="shortage")

    out, _ = run("reconcile")

    assert out.strip() == "restocks resent: 1, overdue polled: 0, overdue alerted: 0, idempotency keys purged: 0"
    assert broker.sent == [("factory.restock_place", [lost.pk])]
    order = FactoryOrder.objects.get(restock=lost)
    assert order.dispatch_count == 1 and order.dispatched_at is not None
    assert not FactoryOrder.objects.filter(restock=fresh, dispatched_at__isnull=False).exists(), "too young to resend"


def test_reconcile_with_the_broker_down_keeps_the_restock_for_next_time(monkeypatch):
    monkeypatch.setattr(services, "task_publish", Broker(down=True).task_publish)
    lost = old_restock("LOST")

    out, _ = run("reconcile")

    assert out.strip() == "restocks resent: 0, overdue polled: 0, overdue alerted: 1, idempotency keys purged: 0"
    lost.refresh_from_db()
    assert (
        lost.status == "pending" and not FactoryOrder.objects.filter(restock=lost, dispatched_at__isnull=False).exists()
    )
    assert Alert.objects.get(kind="restock_overdue").context["sku"] == "LOST", "ops hear that it never left"


def test_reconcile_purges_expired_idempotency_keys():
    make_product("GLAZED", on_hand=10)
    client, _ = make_api_client()
    old_sale = sale_create(client=client, items=[SaleItem("GLAZED", 1)], idempotency_key="old").sale
    sale_create(client=client, items=[SaleItem("GLAZED", 1)], idempotency_key="recent")
    IdempotencyKey.objects.filter(key="old").update(
        created_at=timezone.now() - timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS + 1)
    )

    out, _ = run("reconcile")

    assert out.strip() == "restocks resent: 0, overdue polled: 0, overdue alerted: 0, idempotency keys purged: 1"
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["recent"]
    assert Sale.objects.filter(pk=old_sale.pk).exists(), "the sale itself is kept"


def test_reconcile_waits_for_a_beat_run_under_way_then_sweeps_after_it(monkeypatch):
    # Run by hand beside beat's run of the same sweep, side by side both handed the same restocks over.
    broker = Broker()
    monkeypatch.setattr(services, "task_publish", broker.task_publish)
    lost = old_restock("LOST")
    outcomes = {}
    holder, let_go = sweep_guard_held("factory.reconcile", outcomes)

    def let_go_once_the_command_waits():
        waited = until_waiting(sweep_guard_waited_for, timeout=10)
        let_go.set()
        return waited

    watcher = thread_keeping(outcomes, "watcher", let_go_once_the_command_waits)
    watcher.start()
    out, _ = run("reconcile")
    watcher.join(15)
    holder.join(15)

    assert outcomes["watcher"] is True, "the command waited for the run under way"
    assert out.strip() == "restocks resent: 1, overdue polled: 0, overdue alerted: 0, idempotency keys purged: 0"
    assert broker.sent == [("factory.restock_place", [lost.pk])]


@pytest.mark.parametrize("sweep", ["factory.reconcile", "inventory.idempotency_keys_purge"])
def test_reconcile_does_nothing_and_exits_75_while_a_run_of_either_sweep_holds_it_past_the_wait(monkeypatch, sweep):
    broker = Broker()
    monkeypatch.setattr(services, "task_publish", broker.task_publish)
    old_restock("LOST")
    outcomes = {}
    holder, let_go = sweep_guard_held(sweep, outcomes)
    try:
        with pytest.raises(CommandError) as refused:
            run("reconcile", "--wait", "0.5")
    finally:
        let_go.set()
        holder.join(15)

    assert refused.value.returncode == 75, "EX_TEMPFAIL: nothing done, try again"
    assert str(refused.value) == (
        f"another {sweep} run is under way and did not end within 0.5 s; nothing done: run this again later"
    )
    assert broker.sent == [], "the restock is left to the run under way"


def test_reconcile_by_hand_leaves_the_probe_watching_beat_and_its_worker():
    # sweeps_alive, donut_sweep_age_seconds and the "factory sweep stopped" page tell whether beat and the worker
    # that runs its sweep are alive; a run by hand says nothing of either, and must not hide a dead one.
    run("reconcile")

    with pytest.raises(CommandError, match="factory.reconcile never ran"):
        run("sweeps_alive")


def test_reconcile_refuses_a_wait_that_is_not_a_positive_number():
    with pytest.raises(CommandError, match="--wait"):
        run("reconcile", "--wait", "-1")


@pytest.mark.parametrize("price", ["abc", "nan", "inf", "-1"])
def test_set_stock_refuses_a_bad_price_cleanly(price):
    with pytest.raises(CommandError, match="--price"):
        call_command("set_stock", "GLAZED", "5", "--price", price, stdout=StringIO())

    assert not Product.objects.filter(sku="GLAZED").exists()

"""Many buyers at once, with real threads, real connections and real row locks on MariaDB."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection, connections, transaction

from donutsite.errors import DomainError
from inventory import services
from inventory.errors import OutOfStock
from inventory.models import IdempotencyKey, Product, Restock, Sale
from inventory.selectors import ledger_differences
from inventory.services import SaleItem, sale_create
from testsupport.data import make_api_client, make_product
from testsupport.threads import connection_id, thread_keeping, until_waiting, waiting_for_a_lock

pytestmark = pytest.mark.django_db(transaction=True)

BUYERS = 32


def run_together(n, fn):
    """Run fn(i) on n threads released at the same instant; return each result or the exception raised
    (a DomainError is an answer; any other, such as an IntegrityError, would be a 500)."""
    barrier = threading.Barrier(n)

    def one(i):
        try:
            barrier.wait()
            return fn(i)
        except Exception as exc:
            return exc
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n)))


def sell_to_crowd(sku, stock, rounds=3):
    """BUYERS buyers of one donut each race for `stock` donuts, `rounds` times; return per round
    (sold, stock left, the answers that were neither a sale nor out_of_stock)."""
    client, _ = make_api_client()
    outcomes = []
    for _ in range(rounds):
        services.product_set_stock(sku=sku, quantity=stock)
        before = Sale.objects.count()
        results = run_together(BUYERS, lambda i: sale_create(client=client, items=[SaleItem(sku, 1)]))
        errors = [repr(r) for r in results if isinstance(r, Exception) and not isinstance(r, OutOfStock)]
        outcomes.append((Sale.objects.count() - before, Product.objects.get(sku=sku).on_hand, errors))
    return outcomes


def test_a_crowd_buys_exactly_the_stock_there_is():
    make_product("VIRAL", on_hand=10)

    outcomes = sell_to_crowd("VIRAL", stock=10)

    assert outcomes == [(10, 0, [])] * 3, "each round: 10 sold, 22 told out_of_stock, none left, none oversold"
    assert ledger_differences() == []


def test_without_the_row_lock_the_same_crowd_gets_errors(monkeypatch):
    """Proof that the test above has teeth: with the lock taken out, buyers who checked a stale on-hand
    take stock that is gone. The relative decrement cannot oversell (the CHECK constraint refuses it),
    so the race shows as IntegrityErrors: 500s where the buyer should have heard out_of_stock."""
    make_product("VIRAL", on_hand=10)
    monkeypatch.setattr(
        services, "products_lock", lambda ids: {p.pk: p for p in Product.objects.filter(pk__in=ids).order_by("pk")}
    )

    outcomes = sell_to_crowd("VIRAL", stock=10)

    assert any(sold > 10 or errors for sold, _, errors in outcomes), outcomes


def test_mixed_orders_in_opposite_orders_never_deadlock():
    skus = ["A", "B", "C", "D"]
    for sku in skus:
        make_product(sku, on_hand=10_000)
    client, _ = make_api_client()

    def buy(i):
        order = skus if i % 2 else list(reversed(skus))
        return sale_create(client=client, items=[SaleItem(sku, 1) for sku in order[: 2 + i % 3]])

    for _ in range(5):
        results = run_together(BUYERS, buy)
        assert all(r.sale is not None for r in results), [r for r in results if isinstance(r, Exception)]

    sold = sum(2 + i % 3 for i in range(BUYERS)) * 5
    assert 40_000 - sum(Product.objects.values_list("on_hand", flat=True)) == sold
    assert ledger_differences() == []


def test_concurrent_shortages_open_one_restock():
    make_product("VIRAL", on_hand=0)
    client, _ = make_api_client()

    results = run_together(BUYERS, lambda i: sale_create(client=client, items=[SaleItem("VIRAL", 1)]))

    assert all(r.code == "out_of_stock" for r in results)
    restock_ids = {r.details["shortages"][0]["restock"]["id"] for r in results}
    assert restock_ids == set(Restock.objects.values_list("pk", flat=True))
    assert len(restock_ids) == 1


def test_one_idempotency_key_sent_by_many_at_once_sells_once():
    make_product("GLAZED", on_hand=100)
    client, _ = make_api_client()

    results = run_together(
        BUYERS, lambda i: sale_create(client=client, items=[SaleItem("GLAZED", 2)], idempotency_key="order-7")
    )

    assert {r.sale.pk for r in results} == set(Sale.objects.values_list("pk", flat=True))
    assert Sale.objects.count() == 1
    assert sum(not r.replayed for r in results) == 1
    assert Product.objects.get(sku="GLAZED").on_hand == 98


def test_one_key_sent_by_many_at_once_for_the_last_of_the_stock_tells_them_all_the_sale():
    # Those that waited on the row lock behind the first find the stock gone to that very sale: a client
    # retrying after a dropped connection must hear "sold", not out_of_stock (found by test_chaos).
    make_product("GLAZED", on_hand=2)
    client, _ = make_api_client()

    results = run_together(
        BUYERS, lambda i: sale_create(client=client, items=[SaleItem("GLAZED", 2)], idempotency_key="order-8")
    )

    assert [r for r in results if isinstance(r, DomainError)] == []
    assert Sale.objects.count() == 1
    assert {r.sale.pk for r in results} == set(Sale.objects.values_list("pk", flat=True))


def test_one_key_sent_by_many_at_once_without_the_stock_is_refused_once_and_replayed():
    make_product("GLAZED", on_hand=1)
    client, _ = make_api_client()

    results = run_together(
        BUYERS, lambda i: sale_create(client=client, items=[SaleItem("GLAZED", 2)], idempotency_key="order-9")
    )

    assert all(isinstance(r, OutOfStock) for r in results), results
    assert sum("Idempotent-Replayed" not in r.headers for r in results) == 1
    assert len({str(r.details) for r in results}) == 1, "every one hears the first answer"
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["order-9"]
    assert Restock.objects.count() == 1 and Sale.objects.count() == 0


def test_the_database_refuses_negative_stock_even_without_the_code():
    from django.db import IntegrityError

    product = make_product("GLAZED", on_hand=1)
    with pytest.raises(IntegrityError), connection.cursor() as cursor:
        cursor.execute("UPDATE inventory_product SET on_hand = on_hand - 2 WHERE id = %s", [product.pk])


def test_the_database_refuses_a_second_open_restock():
    from django.db import IntegrityError

    product = make_product("GLAZED", on_hand=1)
    Restock.objects.create(product=product, quantity=5, reason="manual")
    with pytest.raises(IntegrityError):
        Restock.objects.create(product=product, quantity=5, reason="manual")


def test_two_skus_differing_only_in_case_created_at_once_are_not_both_made():
    # GLAZED's creation has inserted its row and not committed when glazed's looks for a twin: a check
    # before the INSERT finds none, so only the database can refuse the second.
    outcomes, second_connection = {}, []
    inserted, go_on = threading.Event(), threading.Event()

    def create(sku):
        return services.product_set_stock(sku=sku, quantity=5, name=f"Glazed {sku}", price="1.50", create=True)

    def first():
        with transaction.atomic():
            product = create("GLAZED")
            inserted.set()
            go_on.wait(timeout=30)
        return product

    def second():
        second_connection.append(connection_id())
        return create("glazed")

    threads = [thread_keeping(outcomes, "first", first), thread_keeping(outcomes, "second", second)]
    threads[0].start()
    assert inserted.wait(timeout=30)
    threads[1].start()
    # Until glazed's INSERT waits for GLAZED's row in the index (or, with nothing to wait for, it is done).
    until_waiting(
        lambda: "second" in outcomes or second_connection and waiting_for_a_lock(second_connection[0]), timeout=10
    )
    go_on.set()
    for thread in threads:
        thread.join(timeout=30)

    assert isinstance(outcomes["first"], Product), outcomes["first"]
    refused = outcomes["second"]
    assert isinstance(refused, DomainError), f"glazed was made next to GLAZED: {refused!r}"
    assert refused.message.startswith("GLAZED already exists, and glazed differs from it only in case")
    assert list(Product.objects.values_list("sku", flat=True)) == ["GLAZED"]
    assert ledger_differences() == []


def test_check_ledger_during_a_rush_sees_a_balanced_ledger():
    # Each check must read stock and ledger at one moment: a sale committing between two reads looked like
    # a mismatch, and paged ops critically about a ledger that was fine.
    make_product("VIRAL", on_hand=2_000)
    client, _ = make_api_client()
    selling = threading.Event()
    selling.set()

    def sell(_):
        while selling.is_set():
            sale_create(client=client, items=[SaleItem("VIRAL", 1)])

    def check(_):
        try:
            return [ledger_differences() for _ in range(150)]
        finally:
            selling.clear()

    results = run_together(5, lambda i: check(i) if i == 0 else sell(i))

    assert not [r for r in results if isinstance(r, Exception)], results
    assert [d for checks in results[0] for d in checks] == [], "every check saw a balanced ledger"
    assert Product.objects.get(sku="VIRAL").on_hand < 2_000, "sales really ran during the checks"

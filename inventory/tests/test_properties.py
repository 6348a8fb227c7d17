"""Stock and restocks as a state machine (Hypothesis): random sales, factory receipts (full, partial,
none, cancelled, repeated), manual adjustments, and restocks that fail and are redriven, in any order,
through the real services and real MariaDB transactions.

After every step: no stock below zero, every product's on-hand equals the sum of its ledger, at most one
open restock per product, stock equals a plain model of what happened (initial + received - sold +
adjusted), and every sale's lines add up to its total.
"""

from collections import defaultdict
from decimal import Decimal

import pytest
import redis
from celery import current_app
from django.db.models import Count, DecimalField, ExpressionWrapper, F
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from donutsite.errors import DomainError
from factory.client import PlaceResult, RemoteOrder
from factory.models import DeadLetter, FactoryAttempt, FactoryOrder
from factory.receipts import restock_receive
from factory.redrive import dead_letter_redrive
from factory.services import restock_place
from inventory import selectors
from inventory.errors import InvalidAdjustment, OutOfStock
from inventory.models import IdempotencyKey, Product, Restock, Sale, SaleLine, StockMovement
from inventory.services import SaleItem, sale_create, stock_adjust
from testsupport.data import make_api_client, make_product, restock_give_up

SKUS = ("GLAZED", "BOSTON", "VIRAL")
QUEUES = ("default", "factory_urgent", "factory", "notifications", "maintenance", "dead_letter")


def _delete_stock_rows():
    for model in (DeadLetter, FactoryAttempt, StockMovement, SaleLine, IdempotencyKey, Sale, Restock, Product):
        model.objects.all().delete()
    selectors.forget_product_ids()  # the SKUs come back with new ids


class AcceptingFactory:
    """Stands in for the factory's HTTP client (its contract is tested against a real server in
    factory/tests/test_client.py): every order is accepted."""

    def place_order(self, *, reference, sku, quantity, callback_url, request_id=""):
        order_id = f"F-{reference.rsplit('-', 1)[-1]}"
        order = RemoteOrder(order_id, reference, sku, quantity, "accepted", None, None, None)
        return PlaceResult(order=order, replayed=False, status_code=202, latency_ms=1)


class Shop(RuleBasedStateMachine):
    client = None  # the ApiClient that buys; set by the test

    def __init__(self):
        super().__init__()
        _delete_stock_rows()  # each example starts from an empty shop
        self.expected = {}  # sku -> on-hand the model predicts
        self.refused = {}  # idempotency key -> the SKUs its first (refused) answer named
        self.receipts = []  # receipts the factory sent, to send again

    @initialize(
        stock=st.lists(st.integers(0, 40), min_size=len(SKUS), max_size=len(SKUS)),
        reorder_point=st.lists(st.integers(0, 10), min_size=len(SKUS), max_size=len(SKUS)),
        reorder_quantity=st.lists(st.integers(1, 60), min_size=len(SKUS), max_size=len(SKUS)),
    )
    def open_the_shop(self, stock, reorder_point, reorder_quantity):
        for sku, on_hand, point, quantity in zip(SKUS, stock, reorder_point, reorder_quantity, strict=True):
            make_product(sku, on_hand=on_hand, reorder_point=point, reorder_quantity=quantity)
            self.expected[sku] = on_hand

    # Rules

    @rule(
        order=st.dictionaries(st.sampled_from(SKUS), st.integers(1, 12), min_size=1, max_size=len(SKUS)),
        idempotency_key=st.sampled_from(["", "", "key-1", "key-2"]),
    )
    def sell(self, order, idempotency_key):
        short = {sku for sku, quantity in order.items() if quantity > self.expected[sku]}
        items = [SaleItem(sku, quantity) for sku, quantity in order.items()]
        try:
            outcome = sale_create(client=self.client, items=items, idempotency_key=idempotency_key)
        except OutOfStock as exc:
            answered = {s["sku"] for s in exc.details["shortages"]}
            if exc.headers.get("Idempotent-Replayed"):
                # A refusal is replayed as it was first given, even if stock moved since.
                assert answered == self.refused[idempotency_key]
                return
            assert answered == short
            assert all(self._open_restock(sku) for sku in short), "a shortage opens a restock"
            if idempotency_key:
                self.refused[idempotency_key] = answered
            return
        except DomainError as exc:  # the same key with another order: refused, nothing sold
            assert exc.code == "idempotency_key_reused" and idempotency_key
            return
        if outcome.replayed:
            return  # the first sale under this key answered again; nothing sold twice
        assert not short, f"sold past the stock: {order} with {self.expected}"
        for sku, quantity in order.items():
            self.expected[sku] -= quantity
            product = Product.objects.get(sku=sku)
            if product.needs_reorder:
                assert self._open_restock(sku), f"{sku} fell to its reorder point with no restock"

    @rule(data=st.data())
    def factory_accepts_an_order(self, data):
        pending = list(Restock.objects.filter(status=Restock.Status.PENDING).order_by("pk"))
        if not pending:
            return
        restock = data.draw(st.sampled_from(pending))

        assert restock_place(restock.pk, client=AcceptingFactory()) == "placed"

        assert FactoryOrder.objects.get(restock_id=restock.pk).order_id == f"F-{restock.pk}"

    @rule(data=st.data(), cancelled=st.booleans())
    def factory_delivers(self, data, cancelled):
        """The factory finishes (or cancels) an order: in full, in part, or with nothing produced. A failed
        restock may be delivered too: the factory may have made it after we gave up."""
        restocks = list(
            Restock.objects.filter(status__in=[*Restock.OPEN_STATUSES, Restock.Status.FAILED])
            .select_related("product")
            .order_by("pk")
        )
        if not restocks:
            return
        restock = data.draw(st.sampled_from(restocks))
        produced = data.draw(st.integers(0, restock.quantity))
        receipt = {
            "order_id": FactoryOrder.objects.filter(restock_id=restock.pk).values_list("order_id", flat=True).first()
            or f"F-{restock.pk}",
            "reference": restock.reference,
            "event": "order.cancelled" if cancelled else "order.completed",
            "quantity_produced": produced,
        }

        settled, applied = restock_receive(**receipt, sku=restock.product.sku)

        assert applied
        assert settled.status == (Restock.Status.CANCELLED if cancelled else Restock.Status.FULFILLED)
        if not cancelled:
            self.expected[restock.product.sku] += produced
        self.receipts.append(receipt)

    @rule(data=st.data())
    def factory_repeats_a_receipt(self, data):
        """Callbacks are at least once, and a repeat may even carry other numbers: it changes nothing."""
        if not self.receipts:
            return
        receipt = dict(data.draw(st.sampled_from(self.receipts)))
        receipt["quantity_produced"] = data.draw(st.integers(0, 60))

        _, applied = restock_receive(**receipt)

        assert not applied

    @rule(sku=st.sampled_from(SKUS), quantity=st.integers(-30, 30).filter(bool))
    def adjust(self, sku, quantity):
        product = Product.objects.get(sku=sku)
        try:
            stock_adjust(product=product, quantity=quantity, reason="counted the shelf")
        except InvalidAdjustment:
            assert self.expected[sku] + quantity < 0
            return
        assert self.expected[sku] + quantity >= 0
        self.expected[sku] += quantity

    @rule(data=st.data(), redrive_at_once=st.booleans())
    def factory_refuses_a_restock(self, data, redrive_at_once):
        """Out of attempts: the restock fails and its work becomes a dead letter, which ops may redrive
        at once (the factory is fixed) or later, after other things happened."""
        pending = list(Restock.objects.filter(status=Restock.Status.PENDING).order_by("pk"))
        if not pending:
            return
        restock = data.draw(st.sampled_from(pending))

        dead_letter = restock_give_up(restock, RuntimeError("factory said no"), attempts=6)

        assert Restock.objects.get(pk=restock.pk).status == Restock.Status.FAILED
        if redrive_at_once:
            self._redrive(dead_letter)

    @rule(data=st.data())
    def ops_redrive(self, data):
        """Later, or again: by then the restock may have been delivered, or its product restocked anew."""
        dead_letters = list(DeadLetter.objects.order_by("pk"))
        if dead_letters:
            self._redrive(data.draw(st.sampled_from(dead_letters)))

    def _redrive(self, dead_letter):
        restock = Restock.objects.get(pk=dead_letter.restock_id)
        reopenable = (
            restock.status == Restock.Status.FAILED
            and not Restock.objects.open().filter(product_id=restock.product_id).exists()
            and not Restock.objects.filter(product_id=restock.product_id, pk__gt=restock.pk).exists()
        )

        sent = dead_letter_redrive(dead_letter, by="hypothesis")

        assert bool(sent) == reopenable
        status = Restock.objects.get(pk=restock.pk).status
        assert status == (Restock.Status.PENDING if reopenable else restock.status)

    # Invariants

    @invariant()
    def stock_is_never_negative_and_equals_the_model(self):
        on_hand = dict(Product.objects.values_list("sku", "on_hand"))
        assert all(quantity >= 0 for quantity in on_hand.values()), on_hand
        assert on_hand == self.expected

    @invariant()
    def stock_equals_its_ledger(self):
        assert selectors.ledger_differences() == []

    @invariant()
    def at_most_one_open_restock_per_product(self):
        crowded = Restock.objects.open().values("product").annotate(n=Count("pk")).filter(n__gt=1)
        assert not crowded.exists()

    @invariant()
    def every_sale_adds_up(self):
        money = DecimalField(max_digits=12, decimal_places=2)
        line_totals = SaleLine.objects.annotate(
            expected=ExpressionWrapper(F("unit_price") * F("quantity"), output_field=money)
        ).values_list("sale_id", "line_total", "expected")
        sums = defaultdict(Decimal)
        for sale_id, line_total, expected in line_totals:
            assert line_total == expected, f"sale {sale_id}: a line of {line_total} should be {expected}"
            sums[sale_id] += line_total
        assert dict(Sale.objects.values_list("pk", "total")) == sums

    def _open_restock(self, sku) -> bool:
        return Restock.objects.open().filter(product__sku=sku).exists()


@pytest.fixture
def empty_queues():
    """After-commit sends (restocks, alerts, dead-letter copies) reach the test broker; nobody reads them."""
    broker = redis.Redis.from_url(current_app.conf.broker_url)
    broker.delete(*QUEUES)
    yield
    broker.delete(*QUEUES)


@pytest.mark.django_db(transaction=True)
def test_stock_and_restocks_keep_their_invariants_whatever_happens(empty_queues):
    Shop.client, _ = make_api_client("hypothesis")

    run_state_machine_as_test(
        Shop,
        settings=settings(
            max_examples=40,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )

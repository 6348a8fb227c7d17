"""Small `make_*` helpers for test data (factory_boy's import name collides with our `factory` app)."""

import itertools
from decimal import Decimal

from clients.models import ApiClient
from inventory.models import Product, StockMovement

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

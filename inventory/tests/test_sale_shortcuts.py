"""The sale endpoint's shortcuts (docs/benchmarks.md, "Sales"). The view validates plain bodies and
renders sales without building serializers, and agrees with the ones it stands in for: SaleIn decides
what a valid body is and SaleOut what a sale looks like (both are the published schema). And a sale
needs no query to find its SKUs' rows once the process knows the catalogue."""

from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.exceptions import ValidationError

from inventory import serializers
from inventory.serializers import (
    SaleIn,
    SaleItemIn,
    SaleOut,
    _sale_items_plain,
    sale_items_validate,
    sale_representation,
)
from inventory.services import SaleItem, sale_create
from testsupport.data import make_api_client, make_product

# Bodies near the edges of what is valid: SKU-like and odd strings, quantities around 1..100, bools and
# floats where integers go, missing, extra and duplicate keys, too few and too many lines.
skus = st.one_of(
    st.sampled_from(["GLAZED", "BOSTON", "X" * 64, "X" * 65, "", " GLAZED", "GLA ZED", "glazed", "\x00", "é"]),
    st.text(max_size=70),
)
quantities = st.one_of(st.integers(-2, 102), st.sampled_from([True, False, 1.0, "1", None, 10**30]))
items = st.one_of(
    st.fixed_dictionaries({"sku": skus, "quantity": quantities}),
    st.fixed_dictionaries({"sku": skus}),
    st.fixed_dictionaries({"sku": skus, "quantity": quantities, "note": st.just("x")}),
    st.just("GLAZED"),
)
bodies = st.one_of(
    st.fixed_dictionaries({"items": st.lists(items, max_size=22)}),
    st.fixed_dictionaries({"items": st.lists(items, max_size=3), "coupon": st.just("FREE")}),
    st.just([]),
    st.just({}),
)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies)
def test_whatever_the_shortcut_accepts_sale_in_accepts_the_same(body):
    serializer = SaleIn(data=body)
    valid = serializer.is_valid()
    plain = _sale_items_plain(body)

    if plain is not None:
        assert valid, serializer.errors
        assert [dict(item) for item in serializer.validated_data["items"]] == plain
    if valid:
        assert sale_items_validate(body) == [dict(item) for item in serializer.validated_data["items"]]
    else:
        with pytest.raises(ValidationError) as refused:
            sale_items_validate(body)
        assert refused.value.detail == serializer.errors


def test_the_shortcut_takes_the_usual_body():
    body = {"items": [{"sku": "GLAZED", "quantity": 2}, {"sku": "BOSTON", "quantity": 100}]}

    assert _sale_items_plain(body) == body["items"]


def test_the_shortcut_takes_lines_of_sale_item_in_s_fields_no_more_no_fewer(monkeypatch):
    # A field added to SaleItemIn alone would send every sale whose lines carry it down the slower path, and a
    # required one would not be asked for by the shortcut.
    assert serializers._PLAIN_LINE_KEYS == set(SaleItemIn().fields)

    # And those are the keys the shortcut asks a line for.
    monkeypatch.setattr(serializers, "_PLAIN_LINE_KEYS", frozenset({"sku", "quantity", "note"}))
    assert _sale_items_plain({"items": [{"sku": "GLAZED", "quantity": 2}]}) is None


@pytest.mark.django_db
def test_a_sale_renders_as_sale_out_renders_it():
    make_product("GLAZED", on_hand=50, price=Decimal("1.25"))
    make_product("BOSTON", on_hand=50, price=Decimal("2.10"))
    client, _ = make_api_client()
    outcome = sale_create(client=client, items=[SaleItem("BOSTON", 3), SaleItem("GLAZED", 1)])

    rendered = sale_representation(outcome.sale, outcome.lines)

    assert rendered == SaleOut({**vars(outcome.sale), "lines": outcome.lines}).data
    assert rendered["total"] == "7.55" and [ln["sku"] for ln in rendered["lines"]] == ["BOSTON", "GLAZED"]
    assert rendered["created_at"].endswith("Z")


@pytest.mark.django_db
def test_after_the_first_sale_no_sale_looks_up_its_skus():
    """The first sale a process serves loads every SKU's id in one query; the next sale of another
    SKU goes straight to its row lock (SKU ids never change)."""
    for sku in ("GLAZED", "BOSTON", "CRULLER"):
        make_product(sku, on_hand=50)
    client, _ = make_api_client()
    with CaptureQueriesContext(connection) as first:
        sale_create(client=client, items=[SaleItem("GLAZED", 1)])
    with CaptureQueriesContext(connection) as later:
        sale_create(client=client, items=[SaleItem("CRULLER", 1), SaleItem("BOSTON", 1)])

    reads = [q["sql"] for q in later.captured_queries if q["sql"].startswith("SELECT")]
    assert len(reads) == 1 and reads[0].endswith("FOR UPDATE"), reads
    assert sum(q["sql"].startswith("SELECT") for q in first.captured_queries) == 2  # the catalogue, the lock

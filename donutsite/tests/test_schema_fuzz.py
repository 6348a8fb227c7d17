"""Fuzz every API operation from its own OpenAPI schema (schemathesis), in process, against MariaDB.

For every generated request, valid and invalid: no 5xx, a documented status code and content type, a
body that matches the schema of that status, invalid input refused and valid input accepted.
"""

import json
import time

import pytest
import schemathesis
from django.conf import settings as django_settings
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from django.db.models import F
from django.test import override_settings
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import positive_data_acceptance
from schemathesis.core.parameters import ParameterLocation

from factory.errors import CallbackMismatch, UnknownOrder
from factory.models import FactoryOrder
from factory.receipts import _restock_for
from factory.signatures import sign
from inventory.models import Product, Restock, Sale, SaleLine, StockMovement
from notifications.models import Device
from testsupport.data import make_api_client, make_product

# schemathesis reports each API operation as a result of its own within the one test; under pytest-xdist only
# the test's own result comes back, and it passed with an operation answering 500. make test runs these in
# its single-process phase, with the chaos scenarios (scripts/test.sh).
pytestmark = pytest.mark.serial

CONFIG = schemathesis.Config.from_dict(
    {
        # DRF refuses NUL characters in every string, a rule that OpenAPI cannot state.
        "generation": {"allow-x00": False},
        # A valid request may still meet the shop's state: an unknown SKU or device (404), too little stock
        # (409), an Idempotency-Key used before with another body (422). All are documented.
        "checks": {
            "positive_data_acceptance": {"expected-statuses": ["2xx", "401", "404", "409", "422", "429"]},
        },
        # The schema's own examples are sent by test_the_schema_examples_answer_as_documented below:
        # schemathesis cannot mix them with the extra arguments of @schema.given.
        "phases": {"examples": {"enabled": False}},
    }
)
EXAMPLES_ONLY = schemathesis.Config.from_dict(
    {
        "generation": {"allow-x00": False},
        "checks": {
            "positive_data_acceptance": {"expected-statuses": ["2xx", "401", "404", "409", "422", "429"]},
        },
        "phases": {"coverage": {"enabled": False}, "fuzzing": {"enabled": False}, "stateful": {"enabled": False}},
    }
)
# Loaded from the app itself, in process. (schemathesis.pytest.from_fixture would defer this to the test
# run, but its subtests do not work with pytest 9.2 yet.)
schema = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application(), config=CONFIG)
callbacks = schema.include(operation_id="factory_callback")
examples = schemathesis.openapi.from_wsgi("/api/schema/", get_wsgi_application(), config=EXAMPLES_ONLY)

# Modest, so that the whole run stays well under a minute.
SKUS = ("GLAZED", "BOSTON", "VIRAL", "CRULLER")  # the SKUs the schema's examples name, of the demo catalogue
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture
def _keep_test_connection():
    """The app is called as plain WSGI, so Django's request signals run and would close the connection
    that holds the test's transaction (Django's test client disconnects them the same way)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def shop(db, _keep_test_connection):
    """A few donuts of the demo catalogue, one open and one settled restock, a device, a sale, and the fuzzer's
    API key. No rate limit: a 429 is documented, but it would hide every other answer.

    The restocks, the device and the sale are numbered from 1, as a new shop's would be: the schema's
    examples name them so (restock 1, device 1, sale 1), as README's curl session does."""
    products = [make_product(sku, on_hand=30, reorder_point=5) for sku in SKUS]
    restocks = [
        Restock.objects.create(pk=1, product=products[0], quantity=40, reason="shortage", status="placed"),
        Restock.objects.create(pk=2, product=products[1], quantity=40, reason="shortage", status="fulfilled"),
    ]
    for restock in restocks:
        FactoryOrder.objects.create(restock=restock, order_id=f"F-{restock.pk:06d}")
    client, key = make_api_client("fuzzer")
    device = Device.objects.create(pk=1, client=client, token="fuzz-device-token", platform="android")
    sale = _sale_numbered(1, client, {products[0]: 2, products[2]: 1})
    with override_settings(API_THROTTLE_RATE="1000000/second", CALLBACK_REFUSALS_PER_ADDRESS=1_000_000):
        yield {"headers": {"Authorization": f"Api-Key {key}"}, "restocks": restocks, "device": device, "sale": sale}


def _sale_numbered(pk, client, quantities) -> Sale:
    """A sale with this id, its lines and its stock movements written as sale_create writes them: sale_create
    takes the next AUTO_INCREMENT id, which a test cannot choose (a rolled-back test does not give it back)."""
    total = sum(product.price * quantity for product, quantity in quantities.items())
    sale = Sale.objects.create(pk=pk, client=client, total=total)
    for product, quantity in quantities.items():
        SaleLine.objects.create(
            sale=sale, product=product, quantity=quantity, unit_price=product.price, line_total=product.price * quantity
        )
        StockMovement.objects.create(product=product, kind="sale", quantity=-quantity, sale=sale)
        Product.objects.filter(pk=product.pk).update(on_hand=F("on_hand") - quantity)
    return sale


def _name_real_things(case, shop) -> None:
    """Generated SKUs and ids are almost never ours (404); name real ones in half the valid cases, so that
    sales, shortages, restocks and subscriptions get fuzzed too. (Only valid ones: schemathesis would not
    notice that an edit made an invalid case valid.)"""
    if case.meta is None or case.meta.generation.mode != GenerationMode.POSITIVE:
        return
    operation = case.operation.definition.raw.get("operationId")
    items = case.body.get("items") if isinstance(case.body, dict) else None
    if operation == "sale_create" and isinstance(items, list):
        del items[len(SKUS) :]  # one line per SKU at most
        for item, sku in zip(items, SKUS, strict=False):
            item["sku"] = sku
    if operation in ("product_get", "product_subscribe", "product_unsubscribe") and case.path_parameters:
        case.path_parameters["sku"] = SKUS[0]
    if operation in ("product_unsubscribe", "device_unregister") and case.path_parameters:
        case.path_parameters["device_id"] = shop["device"].pk
    if operation == "sale_get" and case.path_parameters:
        case.path_parameters["sale_id"] = shop["sale"].pk
    if operation == "restock_get" and case.path_parameters:
        case.path_parameters["restock_id"] = shop["restocks"][0].pk
    if operation == "product_subscribe" and isinstance(case.body, dict) and "device_id" in case.body:
        case.body["device_id"] = shop["device"].pk


def _schema_cannot_say(case) -> bool:
    """Rules across fields that a JSON schema cannot state: breaking one is a documented 400 even for a
    body the schema allows, so that body need not be accepted."""
    body = case.body if isinstance(case.body, dict) else {}
    if case.operation.definition.raw.get("operationId") == "sale_create":
        items = body.get("items")
        skus = [item.get("sku") for item in items if isinstance(item, dict)] if isinstance(items, list) else []
        return len(set(map(str, skus))) != len(skus)  # each SKU once
    if case.operation.definition.raw.get("operationId") == "factory_callback":
        produced, ordered = body.get("quantity_produced"), body.get("quantity")
        over = isinstance(produced, int) and isinstance(ordered, int) and produced > ordered
        return over or _contradicts_its_restock(body)
    return False


def _contradicts_its_restock(body: dict) -> bool:
    """A callback naming one of the shop's restocks, by its reference or its order id, as the receipt finds
    it (the schema's example names restock 1 and its order), but another SKU or order id: `400
    callback_mismatch`, a rule across the body and our records."""
    order_id, reference = body.get("order_id"), body.get("reference")
    if not (isinstance(order_id, str) and isinstance(reference, str)):
        return False
    try:
        restock = _restock_for(order_id=order_id, reference=reference)
    except UnknownOrder:
        return False
    except CallbackMismatch:  # another order id than the restock was placed as
        return True
    return body.get("sku") != restock.product.sku


def _auth_headers(case, shop) -> dict:
    """The fuzzer's API key, except for a case whose headers were made invalid on purpose (a missing
    Authorization, say): adding the key back would make it valid and its 200 a false alarm."""
    headers = case.meta.components.get(ParameterLocation.HEADER) if case.meta else None
    if headers is not None and headers.mode == GenerationMode.NEGATIVE:
        return {}
    return shop["headers"]


def _signed(case) -> tuple[bytes, dict]:
    """A callback's body as sent and the headers that sign it, as the factory signs one."""
    raw = case.body if isinstance(case.body, bytes) else json.dumps(case.body).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "X-Factory-Timestamp": timestamp,
        "X-Factory-Signature": sign(django_settings.FACTORY_CALLBACK_SECRET, timestamp, raw),
    }
    return raw, headers


def _call_and_validate(case, **kwargs):
    excluded = [positive_data_acceptance] if _schema_cannot_say(case) else []
    return case.call_and_validate(excluded_checks=excluded, **kwargs)


@schema.parametrize()
@schema.given(real=st.booleans())
@FUZZ
def test_every_operation_answers_as_documented(case, real, shop):
    """Callbacks arrive unsigned here, so every one must be refused with the documented 401."""
    if real:
        _name_real_things(case, shop)

    response = _call_and_validate(case, headers=_auth_headers(case, shop))

    if case.operation.definition.raw.get("operationId") == "factory_callback" and case.method == "POST":
        assert response.status_code == 401


@examples.parametrize()
@FUZZ
def test_the_schema_examples_answer_as_documented(case, shop):
    """The request examples in the schema (the sale body of demo SKUs, say) get documented answers, and
    succeed: an example is how a client learns to call the operation, so one answered 404 or 409 teaches a
    call that fails. A callback's example is signed as the factory signs it, the key of the factory's call."""
    if case.operation.definition.raw.get("operationId") == "factory_callback":
        raw, headers = _signed(case)
        response = _call_and_validate(case, headers=headers, data=raw)
    else:
        response = _call_and_validate(case, headers=_auth_headers(case, shop))

    assert 200 <= response.status_code < 300, response.text


@callbacks.parametrize()
@callbacks.given(target=st.sampled_from([None, 0, 1]))
@FUZZ
def test_signed_factory_callbacks_answer_as_documented(case, target, shop):
    """The same for callbacks that pass the signature check, some naming a real restock (open or
    already settled), so that validation and the receipt itself are fuzzed too."""
    if target is not None and isinstance(case.body, dict):
        restock = shop["restocks"][target]
        case.body.update(reference=restock.reference, order_id=restock.factory_order.order_id, sku=restock.product.sku)
    raw, headers = _signed(case)

    response = _call_and_validate(case, headers=headers, data=raw)

    assert response.status_code != 401


def test_every_operation_has_a_request_example():
    """The examples test sends only the examples there are: an operation added without one passed it
    unsent, and /api/docs/ showed its clients no call to start from."""
    from rest_framework.test import APIClient

    document = APIClient().get("/api/schema/", HTTP_ACCEPT="application/json").json()
    without = [
        operation["operationId"]
        for path in document["paths"].values()
        for operation in path.values()
        if isinstance(operation, dict)
        and not any("examples" in parameter for parameter in operation.get("parameters", []))
        and not any("examples" in body for body in operation.get("requestBody", {}).get("content", {}).values())
    ]

    assert without == []

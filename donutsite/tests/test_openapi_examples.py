"""The schema's examples are real: the sale body example buys demo donuts, and every error code's
example body is what the API answers when that error happens."""

import json
import re
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.test import override_settings
from django.urls import get_resolver
from rest_framework.test import APIClient

from donutsite.errors import Conflict, DomainError
from donutsite.openapi import ERROR_EXAMPLES
from donutsite.tests.test_unavailable import database_down
from factory.models import FactoryOrder
from factory.signatures import sign
from inventory.management.commands.seed_demo import CATALOGUE
from inventory.models import Restock
from testsupport.data import make_product

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
SALES = "/api/v1/sales/"
# Bodies whose message carries run-time detail (a parser's position, a wait): same code and fields.
SAME_SHAPE_ONLY = {"malformed_json", "throttled"}


@pytest.fixture
def schema(client):
    return client.get("/api/schema/", HTTP_ACCEPT="application/json").json()


def test_the_sale_example_buys_demo_donuts(schema, client_app):
    demo = {sku: stock for sku, _, _, stock in CATALOGUE}
    examples = schema["paths"][SALES]["post"]["requestBody"]["content"]["application/json"]["examples"]
    body = next(iter(examples.values()))["value"]
    for sku in demo:
        make_product(sku, on_hand=demo[sku])

    assert {item["sku"] for item in body["items"]} <= set(demo)
    assert client_app.post(SALES, body, format="json").status_code == 201


def test_the_sale_example_sends_an_idempotency_key_a_retry_can_replay(schema, client_app):
    # A client built from the examples sent no key, and a phone retrying after a timeout bought twice.
    (parameter,) = [p for p in schema["paths"][SALES]["post"]["parameters"] if p["name"] == "Idempotency-Key"]
    (key,) = [example["value"] for example in parameter["examples"].values()]
    body = next(iter(schema["paths"][SALES]["post"]["requestBody"]["content"]["application/json"]["examples"].values()))
    for sku, _, _, stock in CATALOGUE:
        make_product(sku, on_hand=stock)

    first = client_app.post(SALES, body["value"], format="json", HTTP_IDEMPOTENCY_KEY=key)
    retry = client_app.post(SALES, body["value"], format="json", HTTP_IDEMPOTENCY_KEY=key)

    assert (first.status_code, retry.status_code) == (201, 201)
    assert retry["Idempotent-Replayed"] == "true" and retry.json() == first.json()


def test_every_documented_error_response_has_an_example_per_code(schema):
    documented = set()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status[0] in "45" and "application/json" in response.get("content", {}):
                    examples = response["content"]["application/json"].get("examples")
                    assert examples, f"{method.upper()} {path} {status} has no example"
                    for example in examples.values():
                        assert example["value"]["code"] and example["value"]["message"]
                        documented.add(example["value"]["code"])
    undocumented = sorted(set(ERROR_EXAMPLES) - documented)
    assert not undocumented, (
        f"no operation documents {undocumented}: name each code in backticks in the description of the error "
        "response of each view that answers it, as SaleCreateView's 409 names `out_of_stock`"
    )


# DomainErrors that never reach the API: the admin and the commands show them as messages (products are
# made and stocked there only).
NOT_API_ERRORS = {"invalid_adjustment", "sku_case_twin"}


def _domain_error_codes() -> set[str]:
    """The code of every DomainError the apps define (the URLconf imports every view, and so every error)."""
    get_resolver().url_patterns
    codes, todo = set(), [DomainError]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls not in (DomainError, Conflict):  # bases, never raised as they are
            codes.add(cls.code)
    return codes


def test_every_error_the_api_can_answer_has_its_example():
    """A new DomainError needs its example in donutsite/openapi.py; without it a response that names its
    code in the view's description silently shows the status's usual codes instead."""
    missing = _domain_error_codes() - NOT_API_ERRORS - set(ERROR_EXAMPLES)
    assert not missing, f"add these codes to ERROR_EXAMPLES (donutsite/openapi.py): {sorted(missing)}"


def test_the_readmes_error_table_has_every_code_with_its_status():
    """README's table of error codes is what client developers read: a new code belongs there too."""
    readme = (ROOT / "README.md").read_text()
    listed = set()
    for statuses, cell in re.findall(r"^\| ([0-9][0-9 /]*) \| (`.+?) \|", readme, re.M):
        statuses, codes = [int(s) for s in statuses.split(" / ")], re.findall(r"`([a-z_]+)`", cell)
        listed |= {(code, statuses[0]) for code in codes} if len(statuses) == 1 else set(zip(codes, statuses))
    missing = {(code, status) for code, (status, _) in ERROR_EXAMPLES.items()} - listed
    assert not missing, f"README's error table lacks (code, status): {sorted(missing)}"


def _errors(client_app) -> dict:
    """Make the API answer each error code once; return code -> (status, body)."""
    glazed = make_product("GLAZED", on_hand=5)
    anonymous = APIClient()
    seen = {}

    def keep(response):
        seen[response.json()["code"]] = (response.status_code, response.json())

    keep(client_app.post(SALES, {"items": [{"sku": "GLAZED", "quantity": 101}]}, format="json"))
    keep(client_app.post(SALES, "{", content_type="application/json"))
    keep(client_app.post(SALES, "{}", content_type="application/json", headers={"Content-Encoding": "gzip"}))
    keep(anonymous.get(SALES))
    keep(anonymous.get(SALES, HTTP_AUTHORIZATION="Api-Key not-a-key"))
    keep(client_app.get("/api/v1/restocks/", {"page": 99}))
    keep(client_app.post(SALES, {"items": [{"sku": "NOPE", "quantity": 1}]}, format="json"))
    keep(client_app.post(f"/api/v1/products/{glazed.sku}/subscriptions/", {"device_id": 999999}, format="json"))
    client_app.credentials(HTTP_AUTHORIZATION=client_app._credentials["HTTP_AUTHORIZATION"], HTTP_IDEMPOTENCY_KEY="k1")
    client_app.post(SALES, {"items": [{"sku": "GLAZED", "quantity": 1}]}, format="json")
    keep(client_app.post(SALES, {"items": [{"sku": "GLAZED", "quantity": 2}]}, format="json"))
    client_app.credentials(HTTP_AUTHORIZATION=client_app._credentials["HTTP_AUTHORIZATION"])
    keep(client_app.post(SALES, {"items": [{"sku": "GLAZED", "quantity": 50}]}, format="json"))

    callback = {
        "event": "order.completed",
        "order_id": "F-404",
        "reference": "restock-999999",
        "sku": "GLAZED",
        "quantity": 10,
        "quantity_produced": 10,
    }
    raw = json.dumps(callback).encode()
    keep(anonymous.post("/api/v1/factory/callbacks/", raw, content_type="application/json"))
    keep(signed_callback(anonymous, raw))
    viral = Restock.objects.create(product=make_product("VIRAL", on_hand=0), quantity=10, reason="shortage")
    FactoryOrder.objects.create(restock=viral, order_id="F-000001")
    keep(signed_callback(anonymous, json.dumps(callback | {"order_id": "F-000001"}).encode()))
    with override_settings(API_THROTTLE_RATE="1/minute"):
        for _ in range(3):
            response = client_app.get("/api/v1/restocks/")
        keep(response)
    return seen


def signed_callback(anonymous, raw):
    timestamp = str(int(time.time()))
    return anonymous.post(
        "/api/v1/factory/callbacks/",
        raw,
        content_type="application/json",
        HTTP_X_FACTORY_TIMESTAMP=timestamp,
        HTTP_X_FACTORY_SIGNATURE=sign(settings.FACTORY_CALLBACK_SECRET, timestamp, raw),
    )


# Answered only while the database is away, which a test in a transaction cannot arrange: see
# test_every_operation_documents_the_503_a_database_outage_answers.
OUTAGE_CODES = {"service_unavailable"}


def test_each_error_example_is_what_the_api_answers(client_app):
    answered = _errors(client_app)

    for code, (status, example) in ERROR_EXAMPLES.items():
        if code in OUTAGE_CODES:
            continue
        assert code in answered, f"{code} was never answered: make the API answer it once in _errors() above"
        got_status, body = answered[code]
        assert got_status == status, code
        if code == "out_of_stock":
            assert body.keys() == example.keys() and body["shortages"][0].keys() == example["shortages"][0].keys()
        elif code in SAME_SHAPE_ONLY:
            assert body.keys() == example.keys(), code
        else:
            assert body == example, code


def test_each_operations_validation_example_is_what_it_answers(schema, client_app):
    """Each endpoint's 400 example shows one of its own mistakes, as it answers it."""
    glazed = make_product("GLAZED", on_hand=5)
    anonymous = APIClient()
    raw = json.dumps(
        {"event": "order.shipped", "order_id": "F-1", "reference": "restock-1", "sku": "GLAZED"}
        | {"quantity": 10, "quantity_produced": 10}
    ).encode()
    answers = {
        "sale_create": client_app.post(SALES, {"items": [{"sku": "GLAZED", "quantity": 101}]}, format="json"),
        "sale_list": client_app.get(SALES, {"created_after": "yesterday"}),
        "restock_list": client_app.get("/api/v1/restocks/", {"status": "lost"}),
        "product_list": anonymous.get("/api/v1/products/", {"page": 0}),
        "device_register": client_app.post(
            "/api/v1/devices/", {"token": "fcm-token-abcdef", "platform": "nokia"}, format="json"
        ),
        "product_subscribe": client_app.post(
            f"/api/v1/products/{glazed.sku}/subscriptions/", {"device_id": "1"}, format="json"
        ),
        "factory_callback": signed_callback(anonymous, raw),
    }
    examples = {
        operation["operationId"]: operation["responses"]["400"]["content"]["application/json"]["examples"]
        for operations in schema["paths"].values()
        for operation in operations.values()
        if "400" in operation["responses"]
    }

    assert set(answers) == set(examples), "every operation with a 400 is tried here"
    for operation_id, response in answers.items():
        assert response.status_code == 400, operation_id
        assert examples[operation_id]["validation_error"]["value"] == response.json(), operation_id


def test_every_documented_429_states_the_retry_after_header_it_is_sent_with(schema, client_app):
    # A generated client reads a response's headers from the schema: with Retry-After on the sale's 429
    # only, a client backing off had it on POST /api/v1/sales/ and nowhere else; and one not marked required
    # came out optional (`retryAfter?`), a wait every caller had to invent a default for, though each 429 has it.
    without = [
        f"{method.upper()} {path}"
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if "429" in operation["responses"]
        and not operation["responses"]["429"].get("headers", {}).get("Retry-After", {}).get("required")
    ]
    with override_settings(API_THROTTLE_RATE="1/minute"):
        answers = [client_app.get("/api/v1/restocks/") for _ in range(3)]

    assert without == []
    assert answers[-1].status_code == 429 and answers[-1]["Retry-After"].isdigit()


@pytest.mark.django_db(transaction=True)  # the test's connection is pointed away from the database
def test_every_operation_documents_the_503_a_database_outage_answers(client, api_client_and_key):
    # A generated client, or its developer, reading the schema learnt of no 503 anywhere, though any request
    # meeting a database outage gets one, with a Retry-After to wait.
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    http = APIClient()
    http.credentials(HTTP_AUTHORIZATION=f"Api-Key {api_client_and_key[1]}")
    with database_down():
        answers = [
            http.get("/api/v1/restocks/"),
            http.post(SALES, {"items": [{"sku": "GLAZED", "quantity": 1}]}, format="json"),
            APIClient().get("/api/v1/products/"),
        ]
    documented = {
        f"{method.upper()} {path}": operation["responses"].get("503", {})
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
    }

    retry_after = {name: answer.get("headers", {}).get("Retry-After", {}) for name, answer in documented.items()}
    assert [name for name, header in retry_after.items() if not header.get("required")] == []
    assert [(a.status_code, a["Retry-After"].isdigit()) for a in answers] == [(503, True)] * 3
    body = answers[0].json()
    assert body["code"] == "service_unavailable" and [a.json() for a in answers] == [body] * 3
    example = {"service_unavailable": {"summary": "service_unavailable", "value": body}}
    assert [
        name for name, answer in documented.items() if answer["content"]["application/json"].get("examples") != example
    ] == []

"""Hostile requests, sent as raw bytes to gunicorn under production settings (DJANGO_DEBUG unset).

Every answer must be JSON with a documented code, and nothing may reach the server log as a 5xx or a
traceback. One gunicorn serves the whole module; each test makes its own rows (transaction=True).
"""

import json
import re
import socket
import time
from dataclasses import dataclass
from email.message import Message

import pytest
from django.conf import settings

from donutsite.testing import OUTPUT, System
from factory.signatures import sign
from inventory.models import Product, Restock, Sale
from inventory.tests.helpers import make_api_client, make_product
from notifications.models import Alert, Device

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# The codes README.md's error table documents.
DOCUMENTED_CODES = {
    "bad_request",
    "validation_error",
    "malformed_json",
    "not_authenticated",
    "authentication_failed",
    "invalid_signature",
    "permission_denied",
    "not_found",
    "unknown_sku",
    "unknown_order",
    "method_not_allowed",
    "not_acceptable",
    "out_of_stock",
    "callback_mismatch",
    "request_too_large",
    "unsupported_media_type",
    "idempotency_key_reused",
    "header_too_large",
    "uri_too_long",
    "throttled",
    "not_implemented",
    "service_unavailable",
}


@dataclass
class Answer:
    status: int
    headers: Message
    body: bytes

    def json(self):
        assert self.headers.get("Content-Type", "").startswith("application/json"), (self.status, self.body[:300])
        return json.loads(self.body)

    @property
    def code(self) -> str:
        return self.json()["code"]


@pytest.fixture(scope="module")
def web(django_db_setup, django_db_blocker):
    running = System(broker_url="redis://127.0.0.1:6379/15", log_dir=OUTPUT.parent / "hostile")
    try:
        running.start_web()
        yield running
    finally:
        running.stop()


def send(web, raw: bytes) -> Answer:
    """Send bytes exactly as given and read one response."""
    import http.client

    with socket.create_connection(("127.0.0.1", web.web_port), timeout=30) as sock:
        sock.sendall(raw)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return Answer(response.status, response.headers, response.read())


def request(
    web,
    method: str | bytes,
    path: str | bytes,
    body: bytes = b"",
    headers: dict | None = None,
    *,
    chunked: bool = False,
) -> Answer:
    """One HTTP/1.1 request; str parts are sent as UTF-8, bytes as they are."""

    def b(value):
        return value if isinstance(value, bytes) else str(value).encode()

    lines = [b(method) + b" " + b(path) + b" HTTP/1.1", b"Host: 127.0.0.1", b"Connection: close"]
    headers = dict(headers or {})
    if body and "Content-Type" not in headers:
        headers["Content-Type"] = "application/json"
    if chunked:
        headers["Transfer-Encoding"] = "chunked"
    elif body or method in ("POST", "PUT", "PATCH"):
        headers.setdefault("Content-Length", str(len(body)))
    lines += [b(name) + b": " + b(value) for name, value in headers.items()]
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    if chunked:
        pieces = [body[i : i + 1000] for i in range(0, len(body), 1000)]
        body = b"".join(f"{len(p):x}\r\n".encode() + p + b"\r\n" for p in pieces) + b"0\r\n\r\n"
    return send(web, head + body)


def auth(key: str) -> dict:
    return {"Authorization": f"Api-Key {key}"}


def signed(body: bytes, timestamp: int | None = None) -> dict:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {"X-Factory-Timestamp": ts, "X-Factory-Signature": sign(settings.FACTORY_CALLBACK_SECRET, ts, body)}


def server_log_is_clean(web):
    log = web.processes["web"].output()
    assert "Traceback" not in log, log[-3000:]
    assert not re.search(r'"status": 5\d\d|\b5\d\d\b.*Internal Server Error', log), log[-3000:]


@pytest.fixture
def key(web):
    make_product("GLAZED", on_hand=50)
    return make_api_client()[1]


# -- Item by item: each of these failed before the fix --------------------------------------------------


DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize("path", ["/api/v1/sales/", "/api/v1/devices/", "/api/v1/products/GLAZED/subscriptions/"])
def test_a_deeply_nested_body_is_malformed_json_not_a_500(web, key, path):
    answer = request(web, "POST", path, DEEP, auth(key))

    assert (answer.status, answer.code) == (400, "malformed_json")
    server_log_is_clean(web)


def test_a_deeply_nested_signed_callback_is_malformed_json_not_a_500(web, key):
    answer = request(web, "POST", "/api/v1/factory/callbacks/", DEEP, signed(DEEP))

    assert (answer.status, answer.code) == (400, "malformed_json")
    server_log_is_clean(web)


def test_a_body_over_the_size_limit_is_a_json_413(web, key):
    big = b'{"items": [' + b" " * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 10) + b"]}"

    for chunked in (False, True):
        answer = request(web, "POST", "/api/v1/sales/", big, auth(key), chunked=chunked)
        assert (answer.status, answer.code) == (413, "request_too_large"), chunked
    server_log_is_clean(web)


def test_a_chunked_sale_body_is_read_and_sold(web, key):
    body = json.dumps({"items": [{"sku": "GLAZED", "quantity": 2}]}).encode()

    answer = request(web, "POST", "/api/v1/sales/", body, auth(key), chunked=True)

    assert answer.status == 201, answer.body
    assert Product.objects.get(sku="GLAZED").on_hand == 48


def test_a_sale_posted_without_the_trailing_slash_is_sold_not_redirected(web, key):
    body = json.dumps({"items": [{"sku": "GLAZED", "quantity": 1}]}).encode()

    answer = request(web, "POST", "/api/v1/sales", body, auth(key))

    assert answer.status == 201, answer.body
    assert answer.json()["lines"][0]["sku"] == "GLAZED"
    assert Sale.objects.count() == 1


def test_a_non_ascii_signature_is_refused_with_the_forged_callback_alert(web, key):
    body = b'{"event": "order.completed"}'
    headers = {"X-Factory-Timestamp": str(int(time.time())), "X-Factory-Signature": b"sha256=\xe9\xe9"}

    answer = request(web, "POST", "/api/v1/factory/callbacks/", body, headers)

    assert (answer.status, answer.code) == (401, "invalid_signature")
    assert Alert.objects.filter(kind="forged_callback").count() == 1
    server_log_is_clean(web)


UNICODE_DIGITS = {
    "superscript": "⁰¹²³⁴⁵⁶⁷⁸⁹",  # isdigit() but int() refuses them: was a 500
    "arabic-indic": "٠١٢٣٤٥٦٧٨٩",  # int() reads them: restock-١ was restock 1
    "fullwidth": "０１２３４５６７８９",
}


@pytest.mark.parametrize("script", sorted(UNICODE_DIGITS))
def test_a_callback_reference_with_unicode_digits_names_no_restock(web, key, script):
    product = Product.objects.get(sku="GLAZED")
    restock = Restock.objects.create(product=product, quantity=10, reason="shortage", status="placed")
    number = str(restock.pk).translate(str.maketrans("0123456789", UNICODE_DIGITS[script]))
    body = json.dumps(
        {
            "event": "order.completed",
            "order_id": "F-unknown",
            "reference": f"restock-{number}",
            "sku": "GLAZED",
            "quantity": 10,
            "quantity_produced": 10,
        }
    ).encode()

    answer = request(web, "POST", "/api/v1/factory/callbacks/", body, signed(body))

    assert (answer.status, answer.code) == (404, "unknown_order")
    restock.refresh_from_db()
    assert restock.status == "placed"
    assert Product.objects.get(sku="GLAZED").on_hand == 50
    server_log_is_clean(web)


def test_too_many_sale_lines_are_counted_as_items(web, key):
    for n in range(21):
        make_product(f"D{n}", on_hand=5)
    body = json.dumps({"items": [{"sku": f"D{n}", "quantity": 1} for n in range(21)]}).encode()

    answer = request(web, "POST", "/api/v1/sales/", body, auth(key))

    assert (answer.status, answer.code) == (400, "validation_error")
    message = json.dumps(answer.json()["errors"])
    assert "at most 20 items" in message and "characters" not in message, message


def test_device_rows_are_untouched_by_refused_bodies(web, key):
    request(web, "POST", "/api/v1/devices/", DEEP, auth(key))
    assert Device.objects.count() == 0

"""An API URL that matches no route answers like every other API error (found by test_schema_fuzz)."""

import logging
from unittest import mock

import pytest
from django.urls import get_resolver
from rest_framework.test import APIClient

from inventory import services
from inventory.models import Restock
from testsupport.data import make_api_client, make_product

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "path", ["/api/v1/sales/abc/", "/api/v1/products/A/B/", "/api/v1/nothing-here/", "/api", "/API", "/api/"]
)
def test_an_api_url_that_matches_no_route_answers_the_json_error_shape(client, path):
    response = client.get(path)

    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"code": "not_found", "message": "Not found."}


def test_a_json_error_keeps_the_headers_the_middleware_below_set(client, settings):
    settings.SECURE_CONTENT_TYPE_NOSNIFF = True
    settings.SECURE_REFERRER_POLICY = "same-origin"

    response = client.post("/api/schema/")  # the schema view's own answer is YAML: made JSON on the way out

    assert response.status_code == 405 and response["Content-Type"] == "application/json"
    assert response["Allow"] == "GET, HEAD, OPTIONS"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"


def test_a_500_under_the_api_is_logged_once_with_its_traceback(client_app, caplog):
    make_product("GLAZED", on_hand=5)
    client_app.raise_request_exception = False

    with mock.patch.object(services, "sale_create", side_effect=RuntimeError("a bug")):
        response = client_app.post("/api/v1/sales/", {"items": [{"sku": "GLAZED", "quantity": 1}]}, format="json")

    assert response.status_code == 500 and response.json()["code"] == "server_error"
    logged = [r for r in caplog.records if r.name == "django.request" and r.levelno >= logging.ERROR]
    assert len(logged) == 1, [r.getMessage() for r in logged]
    assert logged[0].exc_info and "a bug" in str(logged[0].exc_info[1])


@pytest.mark.parametrize("path", ["/no-such-page", "/apiary"])
def test_a_url_outside_the_api_keeps_the_html_404(client, path):
    response = client.get(path)

    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("debug", [False, True])
def test_unknown_api_paths_are_json_404s_also_under_debug(client, settings, debug):
    settings.DEBUG = debug

    response = client.get("/api/v1/nothing-here/")

    assert response.status_code == 404
    assert response.json() == {"code": "not_found", "message": "Not found."}


@pytest.mark.parametrize("debug", [False, True])
def test_a_post_without_the_trailing_slash_reaches_the_view_also_under_debug(client_app, settings, debug):
    # make run (DEBUG) raised APPEND_SLASH's RuntimeError, an HTML 500; production answered a 301.
    settings.DEBUG = debug

    response = client_app.post("/api/v1/sales", {"items": []}, format="json")

    assert response.status_code == 400
    assert response.json()["code"] == "validation_error"


@pytest.mark.parametrize(
    ("method", "path", "headers", "status", "code"),
    [
        ("post", "/api/schema/", {}, 405, "method_not_allowed"),
        ("get", "/api/schema/?format=xml", {}, 406, "not_acceptable"),
        ("get", "/api/schema/", {"HTTP_ACCEPT": "text/html"}, 406, "not_acceptable"),
        ("post", "/api/docs/", {}, 405, "method_not_allowed"),
        ("get", "/api/docs/", {"HTTP_ACCEPT": "application/xml"}, 406, "not_acceptable"),
        ("options", "/api/docs/", {}, 405, "method_not_allowed"),
    ],
)
def test_the_schema_and_docs_errors_are_json_too(client, method, path, headers, status, code):
    # They were the schema renderer's YAML and the Swagger page's HTML ("406 Not Acceptable").
    response = getattr(client, method)(path, **headers)

    assert response.status_code == status
    assert response["Content-Type"] == "application/json"
    assert response.json()["code"] == code
    assert set(response.json()) == {"code", "message"}, "the one error shape, nothing the HTML renderer added"


def test_the_schema_and_docs_themselves_are_unchanged(client):
    assert client.get("/api/schema/")["Content-Type"].startswith("application/vnd.oai.openapi")
    assert client.get("/api/docs/")["Content-Type"].startswith("text/html")


def test_a_get_without_the_trailing_slash_is_served_too(client):
    response = client.get("/api/v1/products")

    assert response.status_code == 200
    assert response.json()["results"] == []


def test_a_chunked_body_a_server_cannot_dechunk_is_a_411_not_an_empty_body():
    """runserver hands Django chunked bytes without a length; gunicorn de-chunks (test_hostile)."""
    import io
    import json

    from django.core.wsgi import get_wsgi_application

    from donutsite.requestbody import ChunkedBody

    answers = []
    app = ChunkedBody(get_wsgi_application())
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/api/v1/sales/",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b'2c\r\n{"items": [{"sku": "GLAZED", "quantity": 1}]}\r\n0\r\n\r\n'),
        "wsgi.errors": io.StringIO(),
        "HTTP_TRANSFER_ENCODING": "chunked",
        "CONTENT_TYPE": "application/json",
    }

    body = b"".join(app(environ, lambda status, headers: answers.append(status)))

    assert answers == ["411 Length Required"]
    assert json.loads(body)["code"] == "length_required"


@pytest.mark.parametrize(
    ("path", "accept", "offered"),
    [
        ("/api/v1/products/", "application/xml", "application/json"),
        ("/api/schema/", "text/html", "application/vnd.oai.openapi"),
    ],
)
def test_a_406_says_what_the_url_answers(client, path, accept, offered):
    response = client.get(path, HTTP_ACCEPT=accept)

    assert response.status_code == 406 and response.json()["code"] == "not_acceptable"
    assert f"This answers {offered}" in response.json()["message"]


@pytest.mark.parametrize(
    ("path", "format", "taken"),
    [
        ("/api/v1/products/", "xml", "json"),
        ("/api/v1/products/", "api", "json"),  # the browsable API: make run's DEBUG only
        ("/api/v1/products/GLAZED/", "yaml", "json"),
        ("/api/schema/", "xml", "yaml or json"),
    ],
)
def test_a_format_the_url_does_not_have_is_a_406_naming_those_it_has(client, path, format, taken):
    # It was a 404 not_found: the client read the URL as wrong, when only the format was.
    make_product("GLAZED", on_hand=5)

    response = client.get(path, {"format": format})

    assert response.status_code == 406 and response["Content-Type"] == "application/json"
    assert response.json()["code"] == "not_acceptable"
    assert f"?format={format} is not offered here; it takes {taken}." in response.json()["message"]


def test_a_sale_asked_in_a_format_the_api_does_not_have_sells_nothing(client_app):
    make_product("GLAZED", on_hand=5)

    response = client_app.post(
        "/api/v1/sales/?format=xml", {"items": [{"sku": "GLAZED", "quantity": 1}]}, format="json"
    )

    assert response.status_code == 406 and response.json()["code"] == "not_acceptable"
    assert client_app.get("/api/v1/products/GLAZED/").json()["available"] == 5


@pytest.mark.parametrize("content_type", ["*/*", "application/*", "*/json", "*/*; charset=utf-8"])
def test_a_wildcard_content_type_is_a_415_and_sells_nothing(client_app, content_type):
    # A Content-Type names the body's type; a range says nothing of it. DRF matched it as a pattern against
    # our parser's application/json and sold.
    make_product("GLAZED", on_hand=5)

    response = client_app.post(
        "/api/v1/sales/", b'{"items": [{"sku": "GLAZED", "quantity": 1}]}', content_type=content_type
    )

    assert response.status_code == 415 and response.json()["code"] == "unsupported_media_type"
    assert "Send the body as JSON, with `Content-Type: application/json`." in response.json()["message"]
    assert client_app.get("/api/v1/products/GLAZED/").json()["available"] == 5


@pytest.mark.parametrize(
    "accept",
    [
        "application/json;q=0",
        "application/json; q=0.0",
        "application/json;q=0.000",
        "application/json;q=0.",
        "application/json;q=0, */*",
        "*/*;q=0",
        "APPLICATION/JSON;Q=0",
        "application/json; charset=utf-8;q=0",  # JSON is UTF-8 (RFC 8259): refusing that is refusing JSON
    ],
)
def test_an_accept_refusing_json_is_a_406(client, accept):
    # q=0 is the client's "not this" (RFC 9110, 12.4.2), and the most specific range naming a type says
    # whether it is wanted: DRF ignored q and answered JSON, which the client said it cannot read.
    response = client.get("/api/v1/products/", HTTP_ACCEPT=accept)

    assert response.status_code == 406 and response["Content-Type"] == "application/json"
    assert response.json() == {
        "code": "not_acceptable",
        "message": "Could not satisfy the request Accept header. This answers application/json.",
    }


@pytest.mark.parametrize(
    "accept",
    ["application/json;q=.0", "application/json;q=+0", "application/json;q=-0", "application/json ;q = 0"],
)
def test_a_zero_quality_spelled_out_of_the_rfc_still_refuses(client, accept):
    # RFC 9110's qvalue is `0` to `0.000`; these are not qvalues, but their writer meant zero. They were
    # answered JSON, and read as zero only when another range of the header had a `q=0`.
    response = client.get("/api/v1/products/", HTTP_ACCEPT=accept)

    assert response.status_code == 406 and response.json()["code"] == "not_acceptable"


@pytest.mark.parametrize(
    "accept",
    [
        "*/*;q=0, application/json",
        "text/html;q=0, */*",
        "text/html;q=0",  # refuses HTML, names nothing else: answered as if absent (a 406 before)
        "application/json;q=0.5",
        "application/json;q=x",
        "application/json;q=0.0001",  # the least wanted, not refused: Django rounded it to 0
        "*/*;q=0.0001",
        "application/json;q=1, text/html; a*=zz''b",  # a range Django cannot parse (unknown charset) is skipped
    ],
)
def test_an_accept_that_takes_json_somewhere_is_answered(client, accept):
    response = client.get("/api/v1/products/", HTTP_ACCEPT=accept)

    assert response.status_code == 200 and response.json()["results"] == []


@pytest.mark.parametrize("accept", ["", "  ", "application/json; profile=" + "x" * 250])
def test_an_accept_naming_no_range_we_read_is_answered_as_if_absent(client, accept):
    # A blank Accept most likely comes from a client library setting the header to nothing, and a range
    # over 256 characters is one DRF does not read; either way the header named nothing, and the 406 said
    # "Could not satisfy the request Accept header" to a client that refused nothing. RFC 9110 (12.5.1)
    # lets a server disregard an Accept it cannot satisfy: JSON is what the API has.
    response = client.get("/api/v1/products/", HTTP_ACCEPT=accept)

    assert response.status_code == 200 and response["Content-Type"] == "application/json"
    assert response.json()["results"] == []


def test_json_asked_for_with_parameters_is_answered_beside_a_refused_rest(client):
    # `application/json; indent=4` names JSON (DRF renders it indented) and is more specific than `*/*;q=0`:
    # the client refuses everything else, not JSON.
    response = client.get("/api/v1/products/", HTTP_ACCEPT="application/json; indent=4, */*;q=0")

    assert response.status_code == 200 and response.json()["results"] == []
    assert b'\n    "results": []' in response.content, "indented as asked"


@pytest.mark.parametrize(
    "accept", ["application/json;indent=4;q=0, application/json", "application/json; indent=4; q=0, */*"]
)
def test_json_refused_only_with_parameters_is_answered_plain(client, accept):
    # The zero quality refuses JSON indented that way, not JSON: it was a 406, the range with parameters
    # being the most specific, and rendered as it asked once the other range took JSON.
    response = client.get("/api/v1/products/", HTTP_ACCEPT=accept)

    assert response.status_code == 200 and response.json()["results"] == []
    assert b"\n" not in response.content, "not indented: that is what the client refused"


def test_a_sale_sent_with_a_blank_accept_sells(client_app):
    make_product("GLAZED", on_hand=5)

    response = client_app.post(
        "/api/v1/sales/", {"items": [{"sku": "GLAZED", "quantity": 1}]}, format="json", HTTP_ACCEPT=""
    )

    assert response.status_code == 201 and response.json()["lines"][0]["sku"] == "GLAZED"
    assert client_app.get("/api/v1/products/GLAZED/").json()["available"] == 4


def test_a_sale_whose_answer_the_client_refuses_sells_nothing(client_app):
    make_product("GLAZED", on_hand=5)

    response = client_app.post(
        "/api/v1/sales/",
        {"items": [{"sku": "GLAZED", "quantity": 1}]},
        format="json",
        HTTP_ACCEPT="application/json;q=0",
    )

    assert response.status_code == 406 and response.json()["code"] == "not_acceptable"
    assert client_app.get("/api/v1/products/GLAZED/").json()["available"] == 5


def test_no_api_route_answers_403(client_app, admin_client):
    """README's error table: `permission_denied` is /metrics' (an address not allowed); under /api/ a key is
    all or nothing. Every route, every method, as anonymous, a bad key, a client, another client, and an
    admin's session without its CSRF token (the admin is not /api/)."""
    make_product("GLAZED", on_hand=5)
    sale = client_app.post("/api/v1/sales/", {"items": [{"sku": "GLAZED", "quantity": 1}]}, format="json").json()
    device = client_app.post("/api/v1/devices/", {"token": "t" * 40, "platform": "android"}, format="json").json()
    restock = Restock.objects.create(product=make_product("VIRAL", on_hand=0), quantity=10, reason="shortage")
    paths = [
        "/api/v1/sales/",
        f"/api/v1/sales/{sale['id']}/",
        "/api/v1/products/",
        "/api/v1/products/GLAZED/",
        "/api/v1/products/GLAZED/subscriptions/",
        f"/api/v1/products/GLAZED/subscriptions/{device['id']}/",
        "/api/v1/devices/",
        f"/api/v1/devices/{device['id']}/",
        "/api/v1/restocks/",
        f"/api/v1/restocks/{restock.pk}/",
        "/api/v1/factory/callbacks/",
        "/api/schema/",
        "/api/docs/",
    ]
    routes = [route for route in get_resolver().url_patterns if str(route.pattern).startswith("api/")]
    assert len(routes) == len(paths), "a new route under /api/: add it to paths"
    other, bad = APIClient(), APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Api-Key {make_api_client()[1]}")
    bad.credentials(HTTP_AUTHORIZATION="Api-Key not-a-key")
    admin_client.handler.enforce_csrf_checks = True
    forbidden = []
    for who, http in [("anonymous", APIClient()), ("bad key", bad), ("client", client_app), ("other", other)]:
        for path in paths:
            for method in ("get", "post", "put", "patch", "delete", "options"):
                response = getattr(http, method)(path, {"device_id": device["id"]}, format="json")
                if response.status_code == 403:
                    forbidden.append((who, method, path, response.json()))
    for path in paths:
        for method in ("get", "post", "put", "patch", "delete", "options"):
            response = getattr(admin_client, method)(path, {}, content_type="application/json")
            if response.status_code == 403:
                forbidden.append(("admin session", method, path, response.content[:200]))

    assert forbidden == []


# A name or value the client sent, as an error repeats it: its first 64 characters and an ellipsis.
LONG = "x" * 100_000
CUT = "x" * 64 + "…"


def _sale(body: str) -> dict:
    return {"path": "/api/v1/sales/", "data": body, "content_type": "application/json"}


@pytest.mark.parametrize(
    "method, request_kwargs, status, code",
    [
        ("post", _sale(f'{{"items": [{{"sku": "GLAZED", "quantity": 1}}], "{LONG}": 1}}'), 400, "validation_error"),
        ("post", _sale(f'{{"items": [{{"sku": "GLAZED", "quantity": 1, "{LONG}": 1}}]}}'), 400, "validation_error"),
        ("get", {"path": f"/api/v1/restocks/?{LONG}=1"}, 400, "validation_error"),
        ("get", {"path": f"/api/v1/restocks/?status={LONG}"}, 400, "validation_error"),
        ("post", _sale(f'{{"items": [], "{LONG}": 1, "{LONG}": 2}}'), 400, "malformed_json"),
        ("get", {"path": f"/api/v1/products/{LONG}/"}, 404, "unknown_sku"),
        ("post", {**_sale('{"items": []}'), "HTTP_CONTENT_ENCODING": LONG}, 415, "unsupported_media_type"),
        (
            "post",
            {"path": "/api/v1/sales/", "data": b"{}", "content_type": LONG},
            415,
            "unsupported_media_type",
        ),
        (
            "post",
            {"path": "/api/v1/devices/", "data": {"token": "token-123", "platform": LONG}, "format": "json"},
            400,
            "validation_error",
        ),
    ],
    ids=[
        "unknown-field",
        "unknown-item-field",
        "unknown-query",
        "bad-choice",
        "duplicate-key",
        "unknown-sku",
        "content-encoding",
        "content-type",
        "bad-platform",
    ],
)
def test_a_long_name_or_value_is_echoed_cut_in_an_error(client_app, method, request_kwargs, status, code):
    make_product("GLAZED", on_hand=5)

    response = getattr(client_app, method)(**request_kwargs)

    assert (response.status_code, response.json()["code"]) == (status, code)
    assert CUT in response.content.decode(), response.content[:300]
    assert len(response.content) < 1000, response.content[:300]


def test_a_cut_name_keeps_the_shape_of_its_error(client_app):
    fields = client_app.get(f"/api/v1/restocks/?{LONG}=1&quantiy=1")
    sku = client_app.get(f"/api/v1/products/{LONG}/")

    assert fields.json()["errors"] == {CUT: ["Unknown field."], "quantiy": ["Unknown field."]}
    assert sku.json() == {"code": "unknown_sku", "message": f"Unknown SKU: {CUT}.", "skus": [CUT]}

"""POST /api/v1/sales/ answers the usual request (a cached API key, JSON in and out, a valid body) without
DRF's request and response machinery (SaleCreateView._post_plain), and anything else through DRF's
dispatch. Whatever the request and the shop's state, a client cannot tell the two apart: the same
answers, headers (in their order), stock, sales, keys, restocks, rate limit and failed-key counts in
Redis, /metrics counts and log lines."""

import gzip
import json
import logging
import re
from collections import Counter
from unittest import mock

import pytest
import redis
from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.db import OperationalError
from django.http import Http404
from django.test import Client
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from rest_framework.authentication import SessionAuthentication
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer

from clients import auth, throttles
from donutsite import sale_counters
from donutsite.parsers import JSONParser
from inventory import selectors, services
from inventory.models import IdempotencyKey, Product, Restock, Sale, SaleLine, StockMovement
from inventory.views import SaleCreateView
from notifications.models import Alert
from testsupport.data import make_api_client, make_product

SALES = "/api/v1/sales/"

BODIES = {
    "one": {"items": [{"sku": "GLAZED", "quantity": 1}]},
    "two": {"items": [{"sku": "GLAZED", "quantity": 2}, {"sku": "BOSTON", "quantity": 1}]},
    "zero": {"items": [{"sku": "GLAZED", "quantity": 0}]},
    "unknown": {"items": [{"sku": "CRULLER", "quantity": 1}]},
    "retired": {"items": [{"sku": "RETIRED", "quantity": 1}]},
    "malformed": "{",
    "twice": '{"items": [{"sku": "GLAZED", "quantity": 1, "quantity": 2}]}',
    "empty": "",
    "gzipped": gzip.compress(b'{"items": [{"sku": "GLAZED", "quantity": 1}]}'),
}

request = st.fixed_dictionaries(
    {
        "auth": st.sampled_from(["key", "key", "key", "lowercase scheme", "spaces", "bad key", "none", "bearer"]),
        "content_type": st.sampled_from(
            ["application/json"] * 3 + ["application/json; charset=utf-8", "Application/JSON", "text/plain"]
        ),
        "accept": st.sampled_from([None, None, "*/*", "application/json", "text/html", "application/json; indent=2"]),
        "query": st.sampled_from(["", "", "", "format=json", "format=api", "page=2"]),
        "key": st.sampled_from([None, None, "k", "k", "", " ", "a,b", "é"]),
        "content_encoding": st.sampled_from([None, None, None, "gzip", "identity"]),
        "body": st.sampled_from(["one", "one", "two", "two", *BODIES]),
        # A Content-Length that is no number reaches Django under runserver and the test client;
        # gunicorn refuses it.
        "length": st.sampled_from([None, None, None, "abc"]),
    }
)
shop = st.fixed_dictionaries(
    {
        "stock": st.tuples(st.integers(0, 2), st.integers(0, 2)),
        "restock_open": st.tuples(st.booleans(), st.booleans()),
        "rate": st.sampled_from(["1000/day", "1000/day", "2/day"]),  # the GET below takes one
        # DEBUG adds the browsable API's renderer (settings.py), and with it `Vary: Accept`.
        "debug": st.sampled_from([False, False, True]),
    }
)


USUAL_SHOP = {"stock": (2, 2), "restock_open": (False, False), "rate": "1000/day", "debug": False}
USUAL_REQUEST = {"auth": "key", "content_type": "application/json", "accept": None, "query": "", "key": None}
USUAL_REQUEST |= {"body": "one", "length": None, "content_encoding": None}


def _shop_open(s) -> None:
    for model in (Alert, StockMovement, SaleLine, IdempotencyKey, Sale, Restock, Product):
        model.objects.all().delete()
    selectors.forget_product_ids()
    services._short_products.clear()
    auth._cache.clear()
    throttles._batches.clear()
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    for sku, on_hand, restock_open in zip(("GLAZED", "BOSTON"), s["stock"], s["restock_open"], strict=True):
        product = make_product(sku, on_hand=on_hand)
        if restock_open:
            Restock.objects.create(product=product, quantity=5, reason=Restock.Reason.SHORTAGE)
    make_product("RETIRED", on_hand=5, is_active=False)


def _send(http: Client, api_key: str, r):
    headers = {}
    if r["auth"] != "none":
        headers["Authorization"] = {
            "key": f"Api-Key {api_key}",
            "lowercase scheme": f"api-key {api_key}",
            "spaces": f"Api-Key   {api_key} ",
            "bad key": "Api-Key nope",
            "bearer": f"Bearer {api_key}",
        }[r["auth"]]
    if r["accept"] is not None:
        headers["Accept"] = r["accept"]
    if r["key"] is not None:
        headers["Idempotency-Key"] = r["key"]
    if r["content_encoding"] is not None:
        headers["Content-Encoding"] = r["content_encoding"]
    body = BODIES[r["body"]]
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    path = SALES + (f"?{r['query']}" if r["query"] else "")
    extra = {"CONTENT_LENGTH": r["length"]} if r["length"] is not None else {}
    return http.post(path, data=data, content_type=r["content_type"], headers=headers, **extra)


def _ids_out(text: str) -> str:
    # Ids and times differ between two runs (auto-increment goes on, the clock too): not the answer.
    return re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z", "T", re.sub(r'("id": ?|/sales/)\d+', r"\1N", text))


def _seen(response) -> tuple:
    # The seconds left in the rate limit's window move; that there are some is the answer.
    headers = [
        (name, int(value) > 0 if name == "Retry-After" else _ids_out(value))
        for name, value in response.items()
        if name not in ("X-Request-ID", "Content-Length")
    ]
    body = re.sub(r"available in \d+ seconds?", "available in N seconds", response.content.decode())
    if response["Content-Type"].startswith("text/html"):
        body = "the browsable API's page"  # DRF's either way, with a CSRF token of its own each time
    return response.status_code, _ids_out(body), headers


def _redis_seen() -> dict:
    """The rate limit's counters (throttle tokens, failed keys, anonymous requests), without their windows'
    start times, which move."""
    r = redis.Redis.from_url(settings.REDIS_URL)
    keys = [*r.scan_iter("throttle:*"), *r.scan_iter(f"{settings.CACHES['default']['KEY_PREFIX']}:limit:*")]
    return {re.sub(r"^(throttle:\d+):\d+$", r"\1", key.decode()): r.get(key) for key in keys}


class _LogLines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record):
        exc_type = record.exc_info[0].__name__ if record.exc_info else None
        self.lines.append((record.name, record.levelname, re.sub(r"\d+", "N", record.getMessage()), exc_type))


def _answers_and_effects(api_key, s, r) -> tuple:
    _shop_open(s)
    http = Client(raise_request_exception=False)  # a 500 is an answer to compare like any other
    counted = Counter()

    def count(outcome, *, stockouts=0):
        counted.update({outcome: 1, "stockouts": stockouts})

    log = _LogLines()
    renderers = [JSONRenderer, BrowsableAPIRenderer] if s["debug"] else [JSONRenderer]
    with (
        mock.patch.object(settings, "API_THROTTLE_RATE", s["rate"]),
        mock.patch.object(SaleCreateView, "renderer_classes", renderers),
        mock.patch.object(sale_counters, "count_sale_outcome", count),
    ):
        # The key in this process's cache, as after a client's first request (which DRF's dispatch answers).
        assert http.get(SALES, headers={"Authorization": f"Api-Key {api_key}"}).status_code == 200
        logging.getLogger().addHandler(log)
        try:
            answers = [_seen(_send(http, api_key, r)) for _ in range(2)]  # a request and its retry
        finally:
            logging.getLogger().removeHandler(log)
    effects = {
        "stock": dict(Product.objects.values_list("sku", "on_hand")),
        "sales": sorted(SaleLine.objects.values_list("product__sku", "quantity")),
        "keys": sorted(
            (k.key, k.sale_id is not None, _ids_out(json.dumps(k.refusal))) for k in IdempotencyKey.objects.all()
        ),
        "restocks": sorted(Restock.objects.values_list("product__sku", "status", "reason")),
        "counted": {outcome: n for outcome, n in counted.items() if n},
        "redis": _redis_seen(),
        "log": log.lines,
    }
    return answers, effects


def plain_post_recorded(plain_answered: list):
    """The plain POST, patched in to note in `plain_answered` whether it answered each POST (True) or left
    it to DRF's dispatch (False)."""
    post_plain = SaleCreateView._post_plain

    def recording(view, http_request):
        response = post_plain(view, http_request)
        plain_answered.append(response is not None)
        return response

    return mock.patch.object(SaleCreateView, "_post_plain", recording)


# transaction=True: requests commit as under a server, and the shop is set up again for each path.
@pytest.mark.django_db(transaction=True)
def test_the_plain_post_answers_as_drf_would(queues):
    _, api_key = make_api_client()
    plain_answered = []
    statuses = set()

    @hypothesis_settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(s=shop, r=request)
    def same_answers(s, r):
        with plain_post_recorded(plain_answered):
            plain = _answers_and_effects(api_key, s, r)
        with mock.patch.object(SaleCreateView, "_post_plain", lambda view, http_request: None):
            drf_only = _answers_and_effects(api_key, s, r)
        assert plain == drf_only
        statuses.update(status for status, _, _ in plain[0])

    same_answers()

    assert any(plain_answered), "some requests were answered by the plain POST"
    assert not all(plain_answered), "and some by DRF's dispatch"
    assert 429 in statuses, "and some refused by the rate limit"


@pytest.mark.django_db(transaction=True)
def test_a_sold_out_rush_is_answered_by_the_plain_post(client_app):
    """The path the rush takes (docs/benchmarks.md, "Sales"): after a client's first request, its
    refusals and sales are the plain POST's."""
    product = make_product("VIRAL", on_hand=1)
    Restock.objects.create(product=product, quantity=50, reason=Restock.Reason.SHORTAGE)
    plain_answered = []

    body = {"items": [{"sku": "VIRAL", "quantity": 1}]}
    with plain_post_recorded(plain_answered):
        statuses = [client_app.post(SALES, body, format="json").status_code for _ in range(4)]

    assert statuses == [201, 409, 409, 409]
    assert plain_answered == [False, True, True, True], "the first request put the key in the cache"


@pytest.mark.parametrize(
    "raised",
    [
        RuntimeError("a bug"),  # 500, logged with its traceback
        OperationalError(2013, "Lost connection to server during query"),  # 503 service_unavailable
        Http404("No such thing."),  # Django's own: DRF's not_found, counted as a rejected sale
        DjangoPermissionDenied(),
    ],
    ids=type,
)
@pytest.mark.django_db(transaction=True)
def test_what_the_sale_raises_is_answered_as_drf_would(queues, raised):
    """Exceptions no state of the property test's shop makes the sale raise (so it is patched to): the
    plain POST answers, counts and logs each as DRF's dispatch and exception handler do."""
    _, api_key = make_api_client()
    with mock.patch.object(services, "sale_create", side_effect=raised):
        plain = _answers_and_effects(api_key, USUAL_SHOP, USUAL_REQUEST)
        with mock.patch.object(SaleCreateView, "_post_plain", lambda view, http_request: None):
            drf_only = _answers_and_effects(api_key, USUAL_SHOP, USUAL_REQUEST)

    assert plain == drf_only


@pytest.mark.parametrize(
    "edge, status",
    [
        ({"key": ""}, 400),
        ({"key": " "}, 400),
        ({"content_encoding": "gzip"}, 415),
        ({"content_encoding": "gzip", "body": "gzipped"}, 415),
        # JSON all the same, but DRF matches no parser to a Content-Type over 256 characters.
        ({"content_type": "application/json; charset=utf-8; x=" + "a" * 240}, 415),
    ],
    ids=["empty key", "blank key", "gzip label", "gzip", "content type over 256 characters"],
)
@pytest.mark.django_db(transaction=True)
def test_a_request_one_header_off_the_usual_is_answered_as_drf_would(queues, edge, status):
    """Edges the property test's random requests reach only now and then: each changes a header (and for
    gzip the body) of a request the plain POST answers, and each is refused."""
    _, api_key = make_api_client()
    plain = _answers_and_effects(api_key, USUAL_SHOP, USUAL_REQUEST | edge)
    with mock.patch.object(SaleCreateView, "_post_plain", lambda view, http_request: None):
        drf_only = _answers_and_effects(api_key, USUAL_SHOP, USUAL_REQUEST | edge)

    assert plain == drf_only
    assert [answer[0] for answer in plain[0]] == [status, status]
    assert plain[1]["sales"] == []


@pytest.mark.django_db(transaction=True)
def test_a_client_over_its_rate_costs_no_parse_of_a_big_body(client_app, settings):
    """DRF refuses a client over its rate before it parses the body; the plain POST parses first, so it
    leaves a body bigger than any sale to DRF."""
    settings.API_THROTTLE_RATE = "1/day"
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    make_product("GLAZED", on_hand=10)
    assert client_app.post(SALES, {"items": [{"sku": "GLAZED", "quantity": 1}]}, format="json").status_code == 201
    big = json.dumps({"items": [{"sku": "GLAZED", "quantity": 1}] * 20}) + " " * 1_000_000
    parse = mock.Mock(wraps=JSONParser().parse)

    with mock.patch.object(JSONParser, "parse", lambda parser, *args, **kwargs: parse(*args, **kwargs)):
        refused = client_app.post(SALES, big, content_type="application/json")

    assert refused.status_code == 429
    assert parse.call_count == 0, "refused without reading a megabyte of JSON"


@pytest.mark.django_db(transaction=True)
def test_the_plain_post_leaves_every_post_to_drf_under_other_authentication_or_permissions(client_app):
    make_product("GLAZED", on_hand=10)
    plain_answered = []
    body = {"items": [{"sku": "GLAZED", "quantity": 1}]}

    with (
        plain_post_recorded(plain_answered),
        mock.patch.object(SaleCreateView, "authentication_classes", [SessionAuthentication, auth.ApiKeyAuthentication]),
    ):
        statuses = [client_app.post(SALES, body, format="json").status_code for _ in range(3)]

    assert statuses == [201, 201, 201]
    assert plain_answered == [False, False, False]

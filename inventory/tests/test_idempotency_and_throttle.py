"""Idempotency-Key replays and per-client throttling, through the HTTP API."""

import random
from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from clients import throttles
from inventory import selectors
from inventory.models import IdempotencyKey, Product, Sale
from inventory.serializers import SaleItemIn
from inventory.services import idempotency_keys_purge
from testsupport.chaos import RedisServer
from testsupport.data import make_api_client, make_product
from testsupport.processes import HungServer, closed_port_url

pytestmark = pytest.mark.django_db

SALES = "/api/v1/sales/"


def buy(http, quantity=1, key=None, sku="GLAZED"):
    headers = {"HTTP_IDEMPOTENCY_KEY": key} if key is not None else {}
    return http.post(SALES, {"items": [{"sku": sku, "quantity": quantity}]}, format="json", **headers)


def test_a_retry_with_the_same_key_replays_the_first_sale(client_app):
    make_product("GLAZED", on_hand=10)

    first = buy(client_app, 2, key="order-1")
    retry = buy(client_app, 2, key="order-1")

    assert first.status_code == retry.status_code == 201
    assert retry.json() == first.json()
    assert retry["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first
    assert Sale.objects.count() == 1
    assert Product.objects.get(sku="GLAZED").on_hand == 8
    assert Sale.objects.get().idempotency_key == "order-1"


def test_a_retry_replays_the_sale_even_after_its_product_was_retired(client_app):
    make_product("GLAZED", on_hand=10)
    first = buy(client_app, 2, key="order-1")
    Product.objects.filter(sku="GLAZED").update(is_active=False)
    selectors.forget_product_ids()  # as in a process that never served it

    retry = buy(client_app, 2, key="order-1")
    fresh = buy(client_app, 2, key="order-2")

    assert retry.status_code == 201 and retry.json() == first.json()
    assert retry["Idempotent-Replayed"] == "true"
    assert fresh.status_code == 404 and fresh.json()["code"] == "unknown_sku"
    assert Sale.objects.count() == 1


def test_the_same_key_with_another_body_is_422_and_sells_nothing(client_app):
    make_product("GLAZED", on_hand=10)
    buy(client_app, 2, key="order-1")

    response = buy(client_app, 3, key="order-1")

    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key_reused"
    assert Product.objects.get(sku="GLAZED").on_hand == 8


# Two values of each field of a sale line: the first sale's, and the retry's changed one.
LINE_VALUES = {"sku": ("GLAZED", "BOSTON"), "quantity": (2, 3)}


@pytest.mark.parametrize("name", sorted(SaleItemIn().fields))
def test_the_same_key_with_any_field_of_a_line_changed_is_422(client_app, name):
    """The key's body is matched by services._request_hash, which names a line's fields by hand: a field the API
    takes and the hash leaves out would have a retry that changed only it replay the first sale."""
    assert name in LINE_VALUES, f"a sale line has a new field: add two values of {name!r} to LINE_VALUES"
    make_product("GLAZED", on_hand=10)
    make_product("BOSTON", on_hand=10)
    line = {field: values[0] for field, values in LINE_VALUES.items()}
    client_app.post(SALES, {"items": [line]}, format="json", HTTP_IDEMPOTENCY_KEY="order-1")

    changed = {**line, name: LINE_VALUES[name][1]}
    response = client_app.post(SALES, {"items": [changed]}, format="json", HTTP_IDEMPOTENCY_KEY="order-1")

    assert response.status_code == 422 and response.json()["code"] == "idempotency_key_reused"
    assert Sale.objects.count() == 1


def test_keys_are_scoped_per_client(client_app):
    make_product("GLAZED", on_hand=10)
    buy(client_app, 1, key="order-1")
    _, other_key = make_api_client()
    client_app.credentials(HTTP_AUTHORIZATION=f"Api-Key {other_key}")

    response = buy(client_app, 5, key="order-1")

    assert response.status_code == 201 and "Idempotent-Replayed" not in response
    assert Product.objects.get(sku="GLAZED").on_hand == 4


def test_an_out_of_stock_answer_is_replayed_even_after_the_stock_is_back(client_app):
    # A delayed original request must not sell after its retry was told out_of_stock: the key keeps
    # its first answer, as it keeps a sale. Buying again takes a new key.
    glazed = make_product("GLAZED", on_hand=1)
    first = buy(client_app, 2, key="order-1")
    Product.objects.filter(pk=glazed.pk).update(on_hand=5)  # restocked behind the scenes

    retry = buy(client_app, 2, key="order-1")
    other_body = buy(client_app, 1, key="order-1")
    new_key = buy(client_app, 2, key="order-2")

    assert first.status_code == retry.status_code == 409
    assert retry.json() == first.json() and retry.json()["code"] == "out_of_stock"
    assert retry["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first
    assert other_body.status_code == 422 and other_body.json()["code"] == "idempotency_key_reused"
    assert new_key.status_code == 201
    assert Product.objects.get(sku="GLAZED").on_hand == 3
    assert list(Sale.objects.values_list("idempotency_key", flat=True)) == ["order-2"]


def test_an_expired_out_of_stock_key_may_sell(client_app):
    glazed = make_product("GLAZED", on_hand=1)
    buy(client_app, 2, key="order-1")
    Product.objects.filter(pk=glazed.pk).update(on_hand=5)
    IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS + 1))

    response = buy(client_app, 2, key="order-1")

    assert response.status_code == 201 and "Idempotent-Replayed" not in response


def test_a_key_older_than_the_ttl_may_be_used_afresh(client_app):
    make_product("GLAZED", on_hand=10)
    buy(client_app, 1, key="order-1")
    IdempotencyKey.objects.update(created_at=timezone.now() - timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS + 1))

    response = buy(client_app, 3, key="order-1")

    assert response.status_code == 201 and "Idempotent-Replayed" not in response
    assert Sale.objects.count() == 2


def test_expired_keys_are_purged_and_fresh_ones_kept(client_app):
    make_product("GLAZED", on_hand=10)
    buy(client_app, 1, key="old")
    buy(client_app, 1, key="new")
    IdempotencyKey.objects.filter(key="old").update(created_at=timezone.now() - timedelta(hours=25))

    assert idempotency_keys_purge() == 1
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["new"]


def test_expired_keys_are_purged_in_batches_each_its_own_short_delete():
    client, _ = make_api_client()
    old = timezone.now() - timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS + 1)
    IdempotencyKey.objects.bulk_create(
        IdempotencyKey(client=client, key=f"k{i}", request_hash="h", refusal={"shortages": []}) for i in range(6)
    )
    IdempotencyKey.objects.exclude(key="k5").update(created_at=old)

    with CaptureQueriesContext(connection) as captured:
        assert idempotency_keys_purge(batch_size=2) == 5

    deletes = [q["sql"] for q in captured.captured_queries if q["sql"].startswith("DELETE")]
    assert len(deletes) == 3, deletes
    assert all(sql.count(",") <= 1 and " IN (" in sql for sql in deletes), "each by the keys of one batch"
    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["k5"]


@pytest.mark.parametrize(
    "key",
    ["", "   ", "x" * 256, "has space", "tab\tkey", "ünï"],
    ids=["empty", "blank", "256", "space", "tab", "non-ascii"],
)
def test_a_malformed_key_is_a_400_and_so_is_its_retry(client_app, key):
    # An empty header is a client whose key variable was empty: read as no key, it and its retry each
    # sold (the retry is answered by the plain POST, the key cached by then).
    make_product("GLAZED", on_hand=10)

    answers = [
        client_app.post(
            SALES, {"items": [{"sku": "GLAZED", "quantity": 1}]}, format="json", headers={"Idempotency-Key": key}
        )
        for _ in range(2)
    ]

    assert [(a.status_code, a.json().get("code")) for a in answers] == [(400, "validation_error")] * 2
    assert all(a.json()["errors"]["Idempotency-Key"][0].startswith("1 to 255 printable") for a in answers)
    assert Product.objects.get(sku="GLAZED").on_hand == 10


def test_a_key_with_a_space_is_told_that_spaces_are_not_allowed(client_app):
    # A space is printable ASCII: "printable ASCII characters, no comma" would leave a client with
    # "order 42" as a key no wiser about why it was refused.
    make_product("GLAZED", on_hand=10)

    response = client_app.post(
        SALES, {"items": [{"sku": "GLAZED", "quantity": 1}]}, format="json", headers={"Idempotency-Key": "order 42"}
    )

    assert response.status_code == 400
    assert "no space" in response.json()["errors"]["Idempotency-Key"][0]


@pytest.fixture
def fresh_throttle_counts():
    redis.Redis.from_url(settings.REDIS_URL).flushdb()


@override_settings(API_THROTTLE_RATE="3/minute")
def test_a_client_over_its_rate_gets_429_with_retry_after(client_app, fresh_throttle_counts):
    make_product("GLAZED", on_hand=10)

    statuses = [buy(client_app).status_code for _ in range(3)]
    refused = buy(client_app)
    _, other_key = make_api_client()
    client_app.credentials(HTTP_AUTHORIZATION=f"Api-Key {other_key}")
    other = buy(client_app)

    assert statuses == [201, 201, 201]
    assert refused.status_code == 429
    assert refused.json()["code"] == "throttled"
    assert 1 <= int(refused["Retry-After"]) <= 60
    assert other.status_code == 201, "the limit is per client"
    assert Product.objects.get(sku="GLAZED").on_hand == 6


@override_settings(FAILED_AUTH_THROTTLE_RATE="3/minute")
def test_bad_keys_from_an_address_do_not_lock_out_a_good_key_there(client, fresh_throttle_counts, monkeypatch):
    # Phones behind one carrier NAT share an address: one with a revoked key, or a guesser on the same
    # network, must not lock the app's good key out, whether or not this server process has seen it (after
    # a deploy no process has). Only the bad keys wait for the address's window.
    from clients import auth

    monkeypatch.setattr(auth, "CACHE_SECONDS", 0.0)  # every cached key has expired: looked up again
    _, known = make_api_client()
    _, unseen = make_api_client()
    restocks = [client.get("/api/v1/restocks/", HTTP_AUTHORIZATION=f"Api-Key {known}").status_code]

    restocks += [client.get("/api/v1/restocks/", HTTP_AUTHORIZATION="Api-Key revoked").status_code for _ in range(4)]
    restocks.append(client.get("/api/v1/restocks/", HTTP_AUTHORIZATION=f"Api-Key {known}").status_code)
    restocks.append(client.get("/api/v1/restocks/", HTTP_AUTHORIZATION=f"Api-Key {unseen}").status_code)
    restocks.append(client.get("/api/v1/restocks/", HTTP_AUTHORIZATION="Api-Key revoked").status_code)

    assert restocks == [200, 401, 401, 401, 429, 200, 200, 429]


@pytest.fixture
def private_redis(settings, tmp_path):
    """A redis-server of the test's own, so that counting its commands counts only this test's."""
    server = RedisServer(tmp_path)
    server.start()
    settings.REDIS_URL = server.url()
    yield server
    server.stop()


def test_processes_share_one_budget_and_take_tokens_in_batches(private_redis):
    """Two processes' token batches (each process has one TokenBatches) against one Redis counter: the
    client never gets more than the limit, and loses at most one batch less one to the other process."""
    first, second = throttles.TokenBatches(), throttles.TokenBatches()
    limit, window, now = 1000, 60, 120.0  # a batch of 10
    rng = random.Random(7)
    stored = private_redis.client()

    granted = 0
    for _ in range(2 * limit):  # far more requests than the limit
        answers = [first.take(42, limit, window, now), second.take(42, limit, window, now)]
        granted += sum(answers)
        if not any(answers):
            break
        if rng.random() < 0.5:  # uneven traffic: one process serves more
            granted += first.take(42, limit, window, now)

    assert limit - 9 <= granted <= limit  # the other process may hold a batch of 10 with 9 unused
    # Each INCRBY adds a batch to the window's counter (the server's command count is shared with other
    # users of this Redis, so the counter itself says how many batches were taken).
    counted = int(stored.get("throttle:42:120"))
    assert counted % 10 == 0 and counted // 10 <= limit // 10 + 2, "one INCRBY per batch of 10, not one per request"
    assert not first.take(42, limit, window, now + 59) and first.take(42, limit, window, now + 60), "next window"


@pytest.mark.parametrize("redis_state", ["refused", "hung"])
def test_the_throttle_fails_open_when_redis_is_refused_or_hung(client_app, settings, redis_state, caplog):
    make_product("GLAZED", on_hand=10)
    settings.API_THROTTLE_RATE = "1/minute"
    with HungServer() as hung:
        settings.REDIS_URL = hung.url() if redis_state == "hung" else closed_port_url()
        statuses = [buy(client_app).status_code for _ in range(3)]

    assert statuses == [201, 201, 201], "over the rate, but Redis cannot count: let them through"
    assert Product.objects.get(sku="GLAZED").on_hand == 7
    warnings = [r.getMessage() for r in caplog.records if "circuit open" in r.getMessage()]
    assert len(warnings) == 1, "one warning when the breaker opens, not one per request"
    assert "the API throttle lets requests through" in warnings[0]


@pytest.mark.parametrize("redis_state", ["refused", "hung"])
def test_the_per_address_limits_try_a_hung_or_refused_redis_once_then_skip_it(client, settings, redis_state, caplog):
    from donutsite.dependencies import breakers

    make_product("GLAZED", on_hand=10)
    settings.ANON_THROTTLE_RATE = "1/minute"
    settings.FAILED_AUTH_THROTTLE_RATE = "1/minute"
    trips_before = breakers["redis"].trips
    with HungServer() as hung:
        settings.REDIS_URL = hung.url() if redis_state == "hung" else closed_port_url()
        anonymous = [client.get("/api/v1/products/GLAZED/").status_code for _ in range(3)]
        bad_keys = [
            client.get("/api/v1/restocks/", HTTP_AUTHORIZATION="Api-Key not-a-key").status_code for _ in range(3)
        ]

    assert anonymous == [200, 200, 200], "over the anonymous rate, but Redis cannot count: let them through"
    assert bad_keys == [401, 401, 401], "the key is still checked; only the counting of bad ones is skipped"
    assert breakers["redis"].trips == trips_before + 1, "after the first failure the breaker skipped Redis"
    warnings = [r.getMessage() for r in caplog.records if "circuit open" in r.getMessage()]
    assert len(warnings) == 1 and "per-address limits" in warnings[0]

"""The factory's completion callback as the factory sends it: signed, repeated, sometimes partial."""

import gzip
import json
import time
from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django.utils import timezone
from rest_framework.test import APIClient

from factory import refusals
from factory.models import FactoryOrder
from factory.signatures import sign
from inventory.models import Product, Restock, StockMovement
from inventory.selectors import ledger_differences
from notifications.models import Alert, AlertGroup
from testsupport.data import make_api_client, make_product

pytestmark = pytest.mark.django_db

URL = "/api/v1/factory/callbacks/"


def placed_restock(sku="GLAZED", on_hand=0, quantity=120, **product_fields):
    product = make_product(sku, on_hand=on_hand, **product_fields)
    restock = Restock.objects.create(product=product, quantity=quantity, reason="shortage", status="placed")
    FactoryOrder.objects.create(restock=restock, order_id="F-000123")
    return restock


def callback(
    client,
    restock,
    *,
    produced=None,
    quantity=None,
    event="order.completed",
    secret=None,
    timestamp=None,
    skew=0,
    body=None,
    signature=None,
    content_type="application/json",
):
    payload = (
        body
        if body is not None
        else json.dumps(
            {
                "event": event,
                "order_id": "F-000123",
                "reference": restock.reference,
                "sku": restock.product.sku,
                "quantity": restock.quantity if quantity is None else quantity,
                "quantity_produced": restock.quantity if produced is None else produced,
                "completed_at": "2026-11-22T03:05:12Z",
            }
        ).encode()
    )
    ts = str(int(time.time()) + skew if timestamp is None else timestamp)  # skew: a clock behind or ahead
    sig = signature or sign(secret or settings.FACTORY_CALLBACK_SECRET, ts, payload)
    return client.generic(
        "POST",
        URL,
        payload,
        content_type=content_type,
        HTTP_X_FACTORY_TIMESTAMP=ts,
        HTTP_X_FACTORY_SIGNATURE=sig,
    )


def stock(restock):
    return Product.objects.get(pk=restock.product_id).on_hand


def test_a_completed_order_fills_the_shelf_by_what_was_produced(client):
    restock = placed_restock(quantity=120)

    response = callback(client, restock, produced=118)

    assert response.status_code == 200
    assert response.json() == {"status": "applied", "restock": restock.pk}
    restock.refresh_from_db()
    assert (restock.status, restock.quantity_received) == ("fulfilled", 118)
    assert stock(restock) == 118
    receipt = StockMovement.objects.get(kind="receipt")
    assert (receipt.quantity, receipt.restock_id) == (118, restock.pk)
    assert ledger_differences() == []


@pytest.mark.parametrize("content_type", ["*/*", "text/plain", ""])
def test_a_callback_is_read_as_json_whatever_content_type_the_factory_sends(client, content_type):
    # The legacy factory's Content-Type is not to be relied on; the signature vouches for the bytes. The API's
    # own views refuse a wildcard Content-Type (415): the callbacks must not.
    restock = placed_restock(quantity=120)

    response = callback(client, restock, content_type=content_type)

    assert response.status_code == 200 and response.json()["status"] == "applied"
    assert stock(restock) == 120


def test_a_duplicate_callback_changes_nothing(client):
    restock = placed_restock()

    first = callback(client, restock)
    again = callback(client, restock)

    assert first.status_code == again.status_code == 200
    assert again.json()["status"] == "duplicate"
    assert stock(restock) == 120
    assert StockMovement.objects.filter(kind="receipt").count() == 1


@pytest.mark.parametrize(("event", "status"), [("order.cancelled", "cancelled"), ("order.completed", "fulfilled")])
def test_an_order_that_brought_nothing_closes_its_restock_tells_ops_and_orders_nothing_by_itself(client, event, status):
    # A factory that cancels every order must not be sent a new one the moment it cancels the last.
    restock = placed_restock()

    response = callback(client, restock, event=event, produced=0)

    assert response.status_code == 200
    restock.refresh_from_db()
    assert (restock.status, restock.quantity_received) == (status, 0)
    assert stock(restock) == 0
    assert list(Restock.objects.open()) == [], "no new order until a sale needs one"
    alert = Alert.objects.get(kind="factory_cancelled")
    titles = {
        "order.cancelled": "The factory cancelled a restock of GLAZED",
        "order.completed": "The factory completed a restock of GLAZED with nothing produced",
    }
    assert alert.title == titles[event]
    assert "F-000123" in alert.text

    client_app = APIClient()
    client_app.credentials(HTTP_AUTHORIZATION=f"Api-Key {make_api_client()[1]}")
    refused = client_app.post("/api/v1/sales/", {"items": [{"sku": "GLAZED", "quantity": 1}]}, format="json")
    assert refused.status_code == 409, "the next buyer's shortage orders again"
    assert refused.json()["shortages"][0]["restock"]["id"] == Restock.objects.open().get().pk


def test_a_delivery_after_a_cancellation_closes_its_warning_so_no_phone_is_paged_about_it(client, settings):
    # In the rush the factory cancelled one order of each of 18 SKUs within a minute, then delivered all
    # of them again for a quarter of an hour: 15 minutes after the burst, 18 pushes reached the ops phones
    # about cancellations long over. A delivery of the SKU ends its warning, as the factory accepting an
    # order again ends "The factory failed N calls in a row".
    from notifications.alerts import alerts_escalate

    settings.FCM_PROJECT_ID, settings.FCM_ACCESS_TOKEN = "donuts", "token"
    settings.ALERT_ESCALATE_AFTER_SECONDS = 0  # the escalation's wait, over
    cancelled = placed_restock("GLAZED")
    callback(client, cancelled, event="order.cancelled", produced=0)
    delivered = Restock.objects.create(product=cancelled.product, quantity=120, reason="shortage", status="placed")
    FactoryOrder.objects.create(restock=delivered, order_id="F-000124")

    body = {
        "event": "order.completed",
        "order_id": "F-000124",
        "reference": delivered.reference,
        "sku": "GLAZED",
        "quantity": 120,
        "quantity_produced": 120,
        "completed_at": "2026-11-22T03:10:12Z",
    }

    assert callback(client, delivered, body=json.dumps(body).encode()).status_code == 200

    assert stock(delivered) == 120
    warning = Alert.objects.get(kind="factory_cancelled")
    assert warning.acknowledged_at is not None
    assert alerts_escalate() == 0, "nothing pushed to the phones"


@pytest.mark.parametrize(
    ("kind", "on_hand", "event", "produced"),
    [
        ("factory_cancelled", 0, "order.cancelled", 0),
        ("factory_over_quantity", 0, "order.completed", 150),
        ("stock_over_capacity", "full", "order.completed", 120),
    ],
)
def test_a_receipt_s_warning_names_its_restock_and_sku_and_links_the_restock_in_slack(
    client, phones, kind, on_hand, event, produced
):
    # These three said "Restock 7" in their text only: Slack showed no Restock field and no link to it, and the
    # over-quantity one no SKU either, so ops had to search the admin for the restock they were told about.
    from factory.tests.test_deadletters import deliver_everything
    from inventory.services import ON_HAND_MAX

    slack, _ = phones
    restock = placed_restock(on_hand=ON_HAND_MAX - 5 if on_hand == "full" else on_hand, quantity=120)

    assert callback(client, restock, event=event, produced=produced).status_code == 200
    deliver_everything()

    alert = Alert.objects.get(kind=kind)
    (posted,) = [r["body"] for r in slack.received if f"alert #{alert.pk}" in str(r["body"]["blocks"])]
    fields = [field["text"] for block in posted["blocks"] for field in block.get("fields", [])]
    assert {f"*Restock*\n{restock.pk}", "*SKU*\nGLAZED"} <= set(fields)
    assert f"{settings.PUBLIC_BASE_URL}/admin/inventory/restock/{restock.pk}/change/|Restock>" in str(posted["blocks"])


def test_a_callback_naming_another_ordered_quantity_is_received_and_ops_are_told_once(client, phones):
    # The factory's record of our order says 100 where we ordered 120. Refused, the factory would send it
    # again until it gave up, the product waiting at 0 for donuts that exist; received, ops must hear of it.
    from factory.tests.test_deadletters import deliver_everything

    slack, _ = phones
    restock = placed_restock(quantity=120)

    first = callback(client, restock, quantity=100, produced=100)
    again = callback(client, restock, quantity=100, produced=100)  # the factory's retry of the same callback
    deliver_everything()

    assert (first.status_code, first.json()["status"]) == (200, "applied")
    assert (again.status_code, again.json()["status"]) == (200, "duplicate")
    assert stock(restock) == 100
    assert StockMovement.objects.filter(kind="receipt").count() == 1
    (alert,) = Alert.objects.all()
    assert (alert.kind, alert.severity) == ("factory_quantity_mismatch", "warning")
    assert alert.title == "The factory has our order of GLAZED as 100, not 120"
    assert "credited 100" in alert.text and "F-000123" in alert.text
    (posted,) = [r["body"] for r in slack.received]
    fields = [field["text"] for block in posted["blocks"] for field in block.get("fields", [])]
    assert {f"*Restock*\n{restock.pk}", "*SKU*\nGLAZED"} <= set(fields)
    assert ledger_differences() == []


def test_a_callback_producing_more_than_ordered_under_another_ordered_quantity_is_one_warning(client):
    restock = placed_restock(quantity=120)

    response = callback(client, restock, quantity=150, produced=150)

    assert response.status_code == 200
    assert stock(restock) == 120, "credited what we ordered"
    (alert,) = Alert.objects.all()
    assert alert.title == "The factory reported 150 GLAZED for an order of 120"
    assert "an order of 150" in alert.text, "the factory's own figure for the order"


@pytest.mark.parametrize("event", ["order.cancelled", "order.completed"])
def test_an_order_that_brought_nothing_under_another_ordered_quantity_is_one_warning(client, event):
    # Two messages about one restock that brought nothing, one of them asking ops to count a delivery that
    # never came: the warning that it brought nothing names the factory's figure for the order instead.
    restock = placed_restock(quantity=120)

    response = callback(client, restock, event=event, quantity=100, produced=0)

    assert response.status_code == 200
    (alert,) = Alert.objects.all()
    assert alert.kind == "factory_cancelled"
    assert "the factory's record of the order says 100" in alert.text


def test_partial_production_below_the_reorder_point_opens_a_new_restock(client):
    restock = placed_restock(quantity=100, reorder_point=10, reorder_quantity=100)

    callback(client, restock, produced=6)

    assert stock(restock) == 6
    new = Restock.objects.exclude(pk=restock.pk).get()
    assert (new.status, new.reason, new.product_id) == ("pending", "reorder_point", restock.product_id)


def test_a_callback_for_a_restock_we_had_given_up_on_still_fills_the_shelf(client):
    """Our call timed out every time, but the factory had created the order after all."""
    restock = placed_restock()
    Restock.objects.filter(pk=restock.pk).update(status="failed")
    FactoryOrder.objects.filter(restock=restock).update(order_id="")

    response = callback(client, restock)

    assert response.status_code == 200
    restock.refresh_from_db()
    assert (restock.status, restock.factory_order.order_id) == ("fulfilled", "F-000123")
    assert stock(restock) == 120


@pytest.mark.parametrize(
    "change",
    [
        {"secret": "not-the-secret"},
        {"signature": "sha256=" + "0" * 64},
        {"signature": "garbage"},
        {"skew": -400},  # from the clock at the call, not at collection: a parallel run starts it minutes later
        {"skew": 400},
        {"timestamp": "yesterday"},
    ],
    ids=["wrong-secret", "wrong-mac", "garbage", "stale", "future", "not-a-time"],
)
def test_a_forged_or_stale_callback_is_401_and_changes_nothing(client, change):
    restock = placed_restock()

    response = callback(client, restock, **change)

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_signature"
    restock.refresh_from_db()
    assert (restock.status, stock(restock)) == ("placed", 0)


def test_missing_signature_headers_is_401(client):
    restock = placed_restock()

    response = client.post(URL, {"event": "order.completed"}, content_type="application/json")

    assert response.status_code == 401
    assert stock(restock) == 0


def test_a_tampered_body_fails_the_signature(client):
    restock = placed_restock()
    body = json.dumps(
        {
            "event": "order.completed",
            "order_id": "F-000123",
            "reference": restock.reference,
            "sku": "GLAZED",
            "quantity": 120,
            "quantity_produced": 120,
        }
    ).encode()
    ts = str(int(time.time()))
    signature = sign(settings.FACTORY_CALLBACK_SECRET, ts, body)

    response = client.generic(
        "POST",
        URL,
        body.replace(b"120}", b"9999}"),
        content_type="application/json",
        HTTP_X_FACTORY_TIMESTAMP=ts,
        HTTP_X_FACTORY_SIGNATURE=signature,
    )

    assert response.status_code == 401
    assert stock(restock) == 0


def test_an_unknown_order_is_404_so_the_factory_retries(client):
    restock = placed_restock()
    body = json.dumps(
        {
            "event": "order.completed",
            "order_id": "F-999",
            "reference": "restock-999999",
            "sku": "GLAZED",
            "quantity": 5,
            "quantity_produced": 5,
        }
    ).encode()

    response = callback(client, restock, body=body)

    assert response.status_code == 404
    assert response.json()["code"] == "unknown_order"
    assert stock(restock) == 0


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1, 2]",
        json.dumps({"event": "order.exploded"}).encode(),
        json.dumps(
            {
                "event": "order.completed",
                "order_id": "F-000123",
                "reference": "restock-1",
                "sku": "GLAZED",
                "quantity": 5,
                "quantity_produced": -1,
            }
        ).encode(),
        json.dumps(
            {
                "event": "order.completed",
                "order_id": "F-000123",
                "reference": "restock-1",
                "sku": "GLAZED",
                "quantity": 5,
                "quantity_produced": "5",
            }
        ).encode(),
    ],
    ids=["not-json", "list", "bad-event", "negative", "string-number"],  # more than ordered: test_hostile
)
def test_a_bad_payload_with_a_good_signature_is_400(client, body):
    restock = placed_restock()

    response = callback(client, restock, body=body)

    assert response.status_code == 400
    assert response.json()["code"] in {"validation_error", "malformed_json"}
    assert stock(restock) == 0


def _genuine_body(restock, produced: int) -> str:
    return (
        f'{{"event": "order.completed", "order_id": "F-000123", "reference": "{restock.reference}", '
        f'"sku": "{restock.product.sku}", "quantity": {restock.quantity}, "quantity_produced": {produced}}}'
    )


@pytest.mark.parametrize(
    "encode",
    [
        lambda text: text.replace('"quantity_produced"', '"quantity_produced": 0, "quantity_produced"').encode(),
        lambda text: text.encode("utf-16"),
        lambda text: b"\xef\xbb\xbf" + text.encode(),
    ],
    ids=["key-twice", "utf-16", "utf-8-bom"],
)
def test_a_signed_body_the_api_would_not_parse_is_malformed_json_and_changes_nothing(client, encode):
    """The README's rule for every body: one key twice, or not UTF-8, is `malformed_json`."""
    restock = placed_restock(quantity=120)

    response = callback(client, restock, body=encode(_genuine_body(restock, produced=120)))

    assert response.status_code == 400 and response.json()["code"] == "malformed_json"
    assert stock(restock) == 0
    assert Restock.objects.get(pk=restock.pk).status == "placed"


def test_a_signed_compressed_callback_is_a_415_and_changes_nothing(client):
    """A callback the factory (or a proxy of its) compressed and signed as sent: the factory's log should
    say what to change, not that its JSON is malformed."""
    restock = placed_restock(quantity=120)
    body = gzip.compress(_genuine_body(restock, produced=120).encode())
    ts = str(int(time.time()))

    response = client.generic(
        "POST",
        URL,
        body,
        content_type="application/json",
        headers={"Content-Encoding": "gzip"},
        HTTP_X_FACTORY_TIMESTAMP=ts,
        HTTP_X_FACTORY_SIGNATURE=sign(settings.FACTORY_CALLBACK_SECRET, ts, body),
    )

    assert (response.status_code, response.json()["code"]) == (415, "unsupported_media_type")
    assert "Content-Encoding" in response.json()["message"]
    assert stock(restock) == 0
    assert Restock.objects.get(pk=restock.pk).status == "placed"


def mismatched(restock, **fields):
    """A signed completion naming the restock's reference but contradicting it (`fields`: another SKU, or another
    factory order id than the one the restock was placed as)."""
    body = {
        "event": "order.completed",
        "order_id": "F-000123",
        "reference": restock.reference,
        "sku": restock.product.sku,
        "quantity": 120,
        "quantity_produced": 120,
    }
    return json.dumps({**body, **fields}).encode()


@pytest.mark.parametrize(
    ("fields", "message", "reported"),
    [
        ({"sku": "MAPLE"}, "Order F-000123 is for GLAZED, not MAPLE.", "MAPLE"),
        ({"order_id": "F-000999"}, "Restock {pk} is factory order F-000123, not F-000999.", "order F-000999"),
    ],
)
def test_a_callback_contradicting_its_restock_is_refused_and_ops_are_told_at_once_and_once(
    client, phones, fields, message, reported
):
    # The factory names our order but not what we ordered. It was refused and nobody heard of it until the
    # restock turned overdue, hours later, while the factory kept sending it and the product waited at 0.
    from factory.tests.test_deadletters import deliver_everything

    slack, _ = phones
    restock = placed_restock()
    body = mismatched(restock, **fields)

    first = callback(client, restock, body=body)
    again = callback(client, restock, body=body)  # the factory's retry of the same callback
    deliver_everything()

    answer = {"code": "callback_mismatch", "message": message.format(pk=restock.pk)}
    assert (first.status_code, first.json()) == (again.status_code, again.json()) == (400, answer)
    assert stock(restock) == 0
    assert not StockMovement.objects.exists()
    assert Restock.objects.get(pk=restock.pk).status == "placed"
    (alert,) = Alert.objects.all()
    assert alert.suppressed_count == 0, "the resend counted in: a summary of it would follow"
    assert (alert.kind, alert.severity) == ("factory_callback_mismatch", "warning")
    assert "GLAZED" in alert.title and reported in alert.title
    assert "no stock was received" in alert.text and "F-000123" in alert.text
    assert alert.context == {
        "sku": "GLAZED",
        "restock_id": restock.pk,
        "order_id": "F-000123",
        "reported_sku": fields.get("sku", "GLAZED"),
        "reported_order_id": fields.get("order_id", "F-000123"),
    }
    (posted,) = [r["body"] for r in slack.received]
    fields_shown = [field["text"] for block in posted["blocks"] for field in block.get("fields", [])]
    assert {f"*Restock*\n{restock.pk}", "*SKU*\nGLAZED"} <= set(fields_shown)
    last_error = FactoryOrder.objects.get(restock=restock).last_error
    assert "callback" in last_error and reported in last_error


@pytest.mark.django_db(transaction=True)
def test_the_warning_about_a_refused_callback_outlives_the_refusal(client, phones):
    # Committed as it would be in production, not inside the test's transaction: the refusal's answer must
    # not take the warning (nor its delivery) with it.
    from factory.tests.test_deadletters import deliver_everything

    slack, _ = phones
    restock = placed_restock()

    response = callback(client, restock, body=mismatched(restock, sku="MAPLE"))
    deliver_everything()

    assert (response.status_code, response.json()["code"]) == (400, "callback_mismatch")
    assert Alert.objects.get().kind == "factory_callback_mismatch"
    (posted,) = [r["body"]["text"] for r in slack.received]
    assert Alert.objects.get().title in posted
    assert "MAPLE" in FactoryOrder.objects.get(restock=restock).last_error


def test_a_refused_callback_is_named_by_the_restock_s_overdue_warning(client):
    # The sweep's poll found nothing to say since (it claimed the restock, and the factory did not answer yet):
    # the warning said "the factory did not report one when asked" of an order it had reported as another.
    from factory.services import restocks_overdue_alert

    restock = placed_restock()
    callback(client, restock, body=mismatched(restock, sku="MAPLE"))
    long_ago = timezone.now() - timedelta(hours=2)
    Restock.objects.filter(pk=restock.pk).update(placed_at=long_ago, expected_at=long_ago)
    FactoryOrder.objects.filter(restock=restock).update(last_polled_at=timezone.now())

    assert restocks_overdue_alert() == 1

    text = Alert.objects.get(kind="restock_overdue").text
    assert "did not report" not in text
    assert "MAPLE" in text


@pytest.mark.parametrize("event", ["order.completed", "order.cancelled"])
def test_the_warning_about_a_refused_callback_is_settled_when_the_restock_closes(client, settings, event):
    # The factory's right callback came after all: a page about the wrong one would wake ops for nothing.

    settings.FCM_PROJECT_ID, settings.FCM_ACCESS_TOKEN = "donuts", "token"
    settings.ALERT_ESCALATE_AFTER_SECONDS = 0  # the escalation's wait, over
    restock = placed_restock()
    assert callback(client, restock, body=mismatched(restock, sku="MAPLE")).status_code == 400

    assert callback(client, restock, event=event).status_code == 200

    assert_mismatch_warning_closed_quietly()


def assert_mismatch_warning_closed_quietly():
    """Acknowledged, and not pushed to the phones once its escalation's wait is over."""
    from notifications.alerts import alerts_escalate

    alerts_escalate()
    warning = Alert.objects.get(kind="factory_callback_mismatch")
    assert warning.acknowledged_at is not None
    assert warning.escalated_at is None, "not pushed to the phones"


def test_a_callback_contradicting_a_restock_already_received_is_refused_and_raises_nothing(client):
    # Nothing waits on it: the restock closed, and a warning about it would be settled by nothing.
    restock = placed_restock()
    callback(client, restock)

    response = callback(client, restock, body=mismatched(restock, sku="MAPLE"))

    assert (response.status_code, response.json()["code"]) == (400, "callback_mismatch")
    assert stock(restock) == 120
    assert not Alert.objects.exists()


def test_the_five_minute_window_is_measured_against_our_clock():
    from factory.signatures import check

    body = b"{}"
    now = 1_800_000_000
    inside, outside = str(now - 299), str(now - 301)

    assert check("s", inside, sign("s", inside, body), body, now=now) == ""
    assert "5 minutes" in check("s", outside, sign("s", outside, body), body, now=now)


def test_a_genuine_callback_is_applied_from_an_address_throttled_for_forgeries(client):
    # The factory shares its address (a NAT, a proxy) with someone sending forgeries.
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    restock = placed_restock()
    forged = [
        callback(client, restock, secret="guessed").status_code for _ in range(settings.CALLBACK_REFUSALS_PER_ADDRESS)
    ]

    throttled = callback(client, restock, secret="guessed")
    genuine = callback(client, restock)

    assert forged == [401] * settings.CALLBACK_REFUSALS_PER_ADDRESS
    assert throttled.status_code == 429 and throttled.json()["code"] == "throttled"
    assert genuine.status_code == 200 and genuine.json()["status"] == "applied"
    assert stock(restock) == 120


BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"  # what a browser's Accept says


def test_a_forged_callback_from_a_browser_is_a_json_401_counted_once_under_make_runs_debug(client, monkeypatch):
    # make run's DEBUG gives every view DRF's browsable API. Drawing its page asks request.user again, and DRF
    # remembers only a failed authentication that raised one of its own exceptions: the signature was checked
    # (and the refusal counted) a second time, and its refusal escaped from rendering as a 500.
    from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
    from rest_framework.views import APIView

    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    monkeypatch.setattr(APIView, "renderer_classes", [JSONRenderer, BrowsableAPIRenderer])
    restock = placed_restock()

    response = client.post(URL, {"event": "order.completed"}, content_type="application/json", HTTP_ACCEPT=BROWSER)

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_signature"
    assert refusals.ratelimit.count("callback-refused:127.0.0.1")[0] == 1, "one refusal, counted once"
    assert stock(restock) == 0


@pytest.mark.parametrize("method", ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"])
def test_other_methods_are_405_and_no_forgery(client, method):
    redis.Redis.from_url(settings.REDIS_URL).flushdb()

    response = client.generic(method, URL)

    assert response.status_code == 405
    assert response["Allow"] == "POST", "only what is answered: an OPTIONS is refused too"
    assert not Alert.objects.filter(kind="forged_callback").exists()
    assert refusals.ratelimit.count("callback-refused:127.0.0.1")[0] == 0, "not counted as a refusal"


@pytest.mark.parametrize("retired", [False, True])
def test_a_retired_products_receipt_tells_no_subscriber_it_is_back(client, settings, retired):
    from notifications.models import Device, Subscription

    settings.FCM_PROJECT_ID, settings.FCM_ACCESS_TOKEN = "donuts", "fcm-test-token"  # FCM configured
    restock = placed_restock()
    device = Device.objects.create(token="customer-token-1", platform="android")
    Subscription.objects.create(device=device, sku="GLAZED")
    Product.objects.filter(pk=restock.product_id).update(is_active=not retired)

    assert callback(client, restock).status_code == 200

    assert stock(restock) == 120, "the stock is received all the same"
    owed = Subscription.objects.get().due_at is not None
    assert owed is not retired, "a push for a product on sale; none for one the API answers unknown_sku for"


def test_a_receipt_past_the_most_stock_can_hold_credits_what_fits_and_alerts(client):
    # Stock set absurdly high by hand: the callback must still be answered, or the factory sends it for ever.
    from inventory.services import ON_HAND_MAX

    restock = placed_restock(on_hand=ON_HAND_MAX - 5, quantity=120)

    response = callback(client, restock, produced=120)

    assert response.status_code == 200 and response.json()["status"] == "applied"
    assert stock(restock) == ON_HAND_MAX
    assert Restock.objects.get(pk=restock.pk).quantity_received == 5
    assert "cannot hold the 120" in Alert.objects.get(kind="stock_over_capacity").title
    assert ledger_differences() == []


def test_a_restock_that_fails_with_the_warning_open_acknowledges_it(client, settings):
    # Its dead letter pages ops about it now: the warning, escalated to the phones later, would page them twice
    # about a restock they are already redriving.
    from factory.services import restock_fail

    settings.FCM_PROJECT_ID, settings.FCM_ACCESS_TOKEN = "donuts", "token"
    settings.ALERT_ESCALATE_AFTER_SECONDS = 0  # the escalation's wait, over
    restock = placed_restock()
    Restock.objects.filter(pk=restock.pk).update(status="pending")  # its call timed out; the factory made it
    assert callback(client, restock, body=mismatched(restock, sku="MAPLE")).status_code == 400

    assert restock_fail(restock.pk, reason="OutOfAttempts: 6 failed attempts; last: timeout")

    assert_mismatch_warning_closed_quietly()


def test_a_callback_contradicting_a_failed_restock_is_refused_and_raises_nothing(client):
    # Its dead letter paged ops already, and is the word about it: a warning beside it would be settled by
    # nothing but a redrive, and escalated to the phones meanwhile.
    restock = placed_restock()
    Restock.objects.filter(pk=restock.pk).update(status="failed", closed_at=timezone.now())

    response = callback(client, restock, body=mismatched(restock, sku="MAPLE"))

    assert (response.status_code, response.json()["code"]) == (400, "callback_mismatch")
    assert not Alert.objects.exists()


def test_the_factory_is_answered_its_refusal_when_telling_ops_fails(client, monkeypatch, caplog):
    # The alerts' tables locked up or gone away (a deadlock, a lost connection): the factory's answer is still
    # the 400 that says what was wrong with its callback, not a 500 it would read as ours to retry.
    from django.db import OperationalError

    from factory import receipts

    def alert_raise_failing(**alert):
        raise OperationalError(1213, "Deadlock found when trying to get lock")

    monkeypatch.setattr(receipts, "alert_raise", alert_raise_failing)
    restock = placed_restock()

    response = callback(client, restock, body=mismatched(restock, sku="MAPLE"))

    assert (response.status_code, response.json()["code"]) == (400, "callback_mismatch")
    assert stock(restock) == 0
    assert "could not be told to ops" in caplog.text


def test_a_restock_placed_again_is_told_of_afresh_when_a_callback_contradicts_it_again(client):
    # Its first warning closed with the run it was about; a warning the new run earns is news, and ops heard
    # nothing of it until the restock turned overdue.
    from factory.receipts import restock_poll
    from factory.tests.test_overdue import FactoryThatLostTheOrder

    restock = placed_restock()
    assert callback(client, restock, body=mismatched(restock, sku="MAPLE")).status_code == 400
    assert restock_poll(restock.pk, client=FactoryThatLostTheOrder()) == "placed again"
    first = Alert.objects.get(kind="factory_callback_mismatch")
    assert first.acknowledged_at is not None, "its run is over"
    AlertGroup.objects.update(window_ends_at=timezone.now() - timedelta(seconds=1))  # its storm window, over

    response = callback(client, restock, body=mismatched(restock, sku="MAPLE"))

    assert (response.status_code, response.json()["code"]) == (400, "callback_mismatch")
    assert Alert.objects.filter(kind="factory_callback_mismatch", acknowledged_at__isnull=True).count() == 1

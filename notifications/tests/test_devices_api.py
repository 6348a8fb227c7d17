"""Customer devices and back-in-stock subscriptions through the API."""

import pytest
from django.db import transaction
from rest_framework.test import APIClient

from inventory.services import SaleItem, product_set_stock, product_subscribe, product_unsubscribe, sale_create
from inventory.tests.test_concurrency import run_together
from notifications.devices import device_deactivate, device_register, device_unregister
from notifications.errors import UnknownDevice
from notifications.models import Device, Subscription
from notifications.subscriptions import back_in_stock_announce, back_in_stock_withdraw, subscription_create
from testsupport.data import make_api_client, make_product

pytestmark = pytest.mark.django_db


def register(http, token="fcm-token-abcdef", **fields):
    return http.post("/api/v1/devices/", {"token": token, "platform": "android", **fields}, format="json")


def test_a_device_registers_and_re_registering_updates_it(client_app):
    first = register(client_app, user_ref="user-1")
    again = register(client_app, user_ref="user-2", platform="ios")

    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["id"] == again.json()["id"]
    device = Device.objects.get()
    assert (device.platform, device.user_ref, device.client, device.kind) == (
        "ios",
        "user-2",
        client_app.api_client,
        "customer",
    )


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"token": "short", "platform": "android"},
        {"token": "fcm-token-abcdef", "platform": "nokia"},
        {"token": "fcm-token-abcdef", "platform": "android", "extra": 1},
        {"token": " " * 8, "platform": "android"},
        {"token": "fcm-token-abcdef  ", "platform": "android"},
        {"token": "fcm-token-abcdef\n", "platform": "android"},
    ],
    ids=["empty", "short-token", "bad-platform", "unknown-field", "blank-token", "token-with-spaces", "newline"],
)
def test_bad_device_registrations_are_400(client_app, body):
    response = client_app.post("/api/v1/devices/", body, format="json")

    assert response.status_code == 400 and response.json()["code"] == "validation_error"
    assert not Device.objects.exists()


@pytest.mark.parametrize("platform", [["ios"], {"ios": 1}, True, 1], ids=["list", "object", "true", "number"])
def test_a_platform_that_is_not_a_string_is_told_so_not_shown_as_python(client_app, platform):
    # It was '"['ios']" is not a platform we push to': the value in Python's spelling, not the JSON sent.
    response = register(client_app, platform=platform)

    assert response.status_code == 400
    assert response.json()["errors"] == {"platform": ["Must be a string."]}
    assert not Device.objects.exists()


def test_tokens_that_differ_only_in_case_are_two_devices(client_app):
    # FCM tokens are case-sensitive; the table's collation is not.
    upper = register(client_app, token="fcm-token-ABCDEF")
    lower = register(client_app, token="fcm-token-abcdef")

    assert upper.status_code == lower.status_code == 201
    assert sorted(Device.objects.values_list("token", flat=True)) == ["fcm-token-ABCDEF", "fcm-token-abcdef"]


@pytest.mark.parametrize(
    "body",
    [
        lambda device: {"device_id": str(device)},
        lambda device: {"device_id": float(device)},
        lambda device: {"device_id": device, "extra": 1},
    ],
    ids=["string", "float", "unknown-field"],
)
def test_a_subscription_takes_a_whole_number_and_nothing_else(client_app, body):
    make_product("VIRAL", on_hand=0)
    device = register(client_app).json()["id"]

    response = client_app.post("/api/v1/products/VIRAL/subscriptions/", body(device), format="json")

    assert response.status_code == 400 and response.json()["code"] == "validation_error"
    assert not Subscription.objects.exists()


def test_registering_needs_an_api_key(client):
    response = client.post(
        "/api/v1/devices/", {"token": "fcm-token-abcdef", "platform": "android"}, content_type="application/json"
    )
    assert response.status_code == 401


def test_a_device_subscribes_to_a_sku_once_and_can_re_arm(client_app):
    make_product("VIRAL", on_hand=0)
    device_id = register(client_app).json()["id"]
    url = "/api/v1/products/VIRAL/subscriptions/"

    first = client_app.post(url, {"device_id": device_id}, format="json")
    Subscription.objects.update(notified_at="2026-01-01T00:00:00Z")
    again = client_app.post(url, {"device_id": device_id}, format="json")

    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["sku"] == "VIRAL"
    assert Subscription.objects.get().notified_at is None, "subscribing again re-arms a used subscription"


def test_subscribing_an_unknown_sku_or_someone_elses_device_is_404(client_app):
    make_product("VIRAL", on_hand=0)
    other_client, other_key = make_api_client()
    theirs = Device.objects.create(token="their-token-123", platform="ios", client=other_client)
    mine = register(client_app).json()["id"]

    unknown_sku = client_app.post("/api/v1/products/NOPE/subscriptions/", {"device_id": mine}, format="json")
    not_mine = client_app.post("/api/v1/products/VIRAL/subscriptions/", {"device_id": theirs.pk}, format="json")

    assert unknown_sku.status_code == 404 and unknown_sku.json()["code"] == "unknown_sku"
    assert not_mine.status_code == 404 and not_mine.json()["code"] == "unknown_device"
    assert not Subscription.objects.exists()


def test_skus_that_differ_only_in_accent_are_two_subscriptions(client_app):
    # SKUs compare exactly (MATCHA and MATCHÁ, from before SKUs were ASCII, are two products); the table's
    # collation does not. (Two products' SKUs never differ only in case: Product.sku_folded.)
    for sku in ("GLAZED", "MATCHA", "MATCHÁ"):
        make_product(sku, on_hand=0)
    device = register(client_app).json()["id"]

    answers = [
        client_app.post(f"/api/v1/products/{sku}/subscriptions/", {"device_id": device}, format="json")
        for sku in ("GLAZED", "MATCHA", "MATCHÁ")
    ]

    assert [a.status_code for a in answers] == [201] * 3
    assert [a.json()["sku"] for a in answers] == ["GLAZED", "MATCHA", "MATCHÁ"]
    assert sorted(Subscription.objects.values_list("sku", flat=True)) == ["GLAZED", "MATCHA", "MATCHÁ"]


def test_a_token_another_client_registered_is_neither_moved_nor_revealed(client_app):
    make_product("VIRAL", on_hand=0)
    mine = register(client_app, token="shared-token-123", user_ref="user-1").json()["id"]
    client_app.post("/api/v1/products/VIRAL/subscriptions/", {"device_id": mine}, format="json")
    other_client, other_key = make_api_client()
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Api-Key {other_key}")

    known = register(other, token="shared-token-123", user_ref="user-2", platform="ios")
    unknown = register(other, token="never-seen-token-456", user_ref="user-2", platform="ios")

    assert known.status_code == unknown.status_code == 201, "the answer does not say whether a token exists"
    assert set(known.json()) == set(unknown.json()) and known.json()["user_ref"] == "user-2"
    assert known.json()["id"] != mine
    device = Device.objects.get(pk=mine)
    assert (device.client, device.user_ref, device.platform) == (client_app.api_client, "user-1", "android")
    assert list(device.subscriptions.values_list("sku", flat=True)) == ["VIRAL"]
    assert Device.objects.get(pk=known.json()["id"]).client == other_client
    theirs = other.post("/api/v1/products/VIRAL/subscriptions/", {"device_id": mine}, format="json")
    assert theirs.status_code == 404 and theirs.json()["code"] == "unknown_device"


@pytest.mark.django_db(transaction=True)
def test_a_double_tap_on_notify_me_or_register_answers_every_tap(client_app):
    # Taps arrive together: one creates, the rest find it. Each tap is a 201 or a 200, never a deadlock's 503.
    client = client_app.api_client
    for round_ in range(10):
        registered = run_together(8, lambda _: device_register(client=client, token=f"fcm-{round_}", platform="ios"))
        assert [r[1] for r in registered if not isinstance(r, Exception)].count(True) == 1, registered
        assert not [r for r in registered if isinstance(r, Exception)], registered
        device = registered[0][0]
        make_product(f"SKU-{round_}", on_hand=0)
        subscribed = run_together(
            8, lambda _: product_subscribe(client=client, sku=f"SKU-{round_}", device_id=device.pk)
        )
        assert not [r for r in subscribed if isinstance(r, Exception)], subscribed
        assert [created for _, created in subscribed].count(True) == 1
    assert Device.objects.count() == 10 and Subscription.objects.count() == 10


@pytest.mark.django_db(transaction=True)
def test_notify_me_toggled_on_and_off_at_once_answers_every_tap(client_app):
    # A subscribe whose INSERT met the row, racing an unsubscribe that deleted that row before the subscribe
    # could update it, found nothing to update and raised the IntegrityError (a 500 under make run); INSERTs
    # queued behind that DELETE sometimes deadlocked instead (a 503). Every tap is answered.
    client = client_app.api_client
    device, _ = device_register(client=client, token="fcm-toggle", platform="ios")
    make_product("VIRAL", on_hand=0)

    def tap(i):
        if i % 2:
            return product_unsubscribe(client=client, sku="VIRAL", device_id=device.pk)
        return product_subscribe(client=client, sku="VIRAL", device_id=device.pk)

    for _ in range(20):
        product_subscribe(client=client, sku="VIRAL", device_id=device.pk)
        answers = run_together(8, tap)
        errors = [(("subscribe", "unsubscribe")[i % 2], a) for i, a in enumerate(answers) if isinstance(a, Exception)]
        assert not errors, errors
    assert Subscription.objects.filter(device=device).count() <= 1


@pytest.mark.django_db(transaction=True)
def test_notify_me_toggled_while_the_device_unregisters_answers_every_tap(client_app):
    # Subscribes, unsubscribes and unregisters of one device at once: an unsubscribe's DELETE reached its row
    # through the SKU's index, the unregister's through the (device, SKU) one, and MariaDB rolled the
    # unsubscribe back (1213, a 503), or a subscribe after its third try; a subscribe that read the device
    # active before the unregister committed left it subscribed. Every tap is answered, and an unregistered
    # device keeps no subscription, as registering it again promises.
    client = client_app.api_client
    device, _ = device_register(client=client, token="fcm-toggle", platform="ios")
    for sku in ("VIRAL", "GLAZED"):
        make_product(sku, on_hand=0)
    taps = (
        "subscribe",
        "unsubscribe",
        "subscribe",
        "unsubscribe",
        "unregister",
        "subscribe",
        "unsubscribe",
        "unregister",
    )

    def tap(i):
        sku = ("VIRAL", "GLAZED")[i % 2]
        if taps[i] == "subscribe":
            return product_subscribe(client=client, sku=sku, device_id=device.pk)
        if taps[i] == "unsubscribe":
            return product_unsubscribe(client=client, sku=sku, device_id=device.pk)
        return device_unregister(client=client, device_id=device.pk)

    for _ in range(300):
        device_register(client=client, token="fcm-toggle", platform="ios")
        for sku in ("VIRAL", "GLAZED"):
            product_subscribe(client=client, sku=sku, device_id=device.pk)
        answers = run_together(len(taps), tap)
        errors = [
            (taps[i], a) for i, a in enumerate(answers) if isinstance(a, Exception) and not isinstance(a, UnknownDevice)
        ]
        assert not errors, errors
        assert not Subscription.objects.filter(device=device).exists(), "unregistered, subscribed to nothing"


def other_skus_subscribed(client) -> list:
    """20 devices subscribed to 30 other SKUs each, as in a shop, so that MariaDB finds one SKU's subscriptions
    through the SKU's index (on a small table it scans by primary key, and the races below never meet)."""
    others = Device.objects.bulk_create(Device(client=client, token=f"o-{i}", platform="ios") for i in range(20))
    Subscription.objects.bulk_create(Subscription(device=d, sku=f"OTHER-{j}") for d in others for j in range(30))
    return others


@pytest.mark.django_db(transaction=True)
def test_a_comeback_or_a_sell_out_while_devices_unregister_answers_every_one(client_app, settings):
    # A receipt's announce, a sale's withdraw and a subscribe's UPDATE found subscriptions through the SKU's
    # index, an unregister's DELETE through the (device, SKU) one: MariaDB locked a row's entries in opposite
    # orders and rolled one back (1213), the app's 503, or the receipt's or the sale's. Every one is answered.
    settings.FCM_PROJECT_ID, settings.FCM_ACCESS_TOKEN = "donuts", "fcm-test-token"  # FCM configured: announced
    client = client_app.api_client
    skus = ["VIRAL", "GLAZED", "MAPLE", "CRULLER"]
    other_skus_subscribed(client)
    devices = [device_register(client=client, token=f"fcm-{i}", platform="ios")[0] for i in range(6)]

    def comebacks(sku):
        for _ in range(200):
            with transaction.atomic():  # the receipt that brings it back
                back_in_stock_announce(sku, sku.title())
            with transaction.atomic():  # the sale of the last one
                back_in_stock_withdraw(sku)

    def taps(device):
        for _ in range(100):
            device_register(client=client, token=device.token, platform="ios")
            for sku in skus:
                subscription_create(client=client, device_id=device.pk, sku=sku)
            device_unregister(client=client, device_id=device.pk)

    answers = run_together(
        len(skus) + len(devices), lambda i: comebacks(skus[i]) if i < len(skus) else taps(devices[i - len(skus)])
    )
    errors = [(("comebacks", "taps")[i >= len(skus)], a) for i, a in enumerate(answers) if a is not None]
    assert not errors, errors
    assert not Subscription.objects.filter(device__in=devices).exists(), "unregistered, subscribed to nothing"


@pytest.mark.django_db(transaction=True)
def test_a_sale_selling_out_two_skus_while_their_subscribers_unregister_answers_every_one(client_app, settings):
    # The sale withdrew the pushes owed for one SKU, then the next: a device subscribed to GLAZED (a lower
    # id) and then to VIRAL had its VIRAL row locked by the sale, which then wanted its GLAZED row, while its
    # unregister, deleting by primary key, held GLAZED and wanted VIRAL: MariaDB rolled one back (1213), a
    # 503 for the sale or the app. Every one is answered, and the sale withdraws every push it owes.
    settings.FCM_PROJECT_ID, settings.FCM_ACCESS_TOKEN = "donuts", "fcm-test-token"  # FCM configured: announced
    client = client_app.api_client
    skus = ["VIRAL", "GLAZED"]
    for sku in skus:
        make_product(sku, on_hand=0)
    others = other_skus_subscribed(client)
    Subscription.objects.bulk_create(Subscription(device=d, sku=sku) for d in others for sku in skus)
    devices = [device_register(client=client, token=f"fcm-{i}", platform="ios")[0] for i in range(6)]
    sale = [SaleItem(sku, 1) for sku in skus]

    def sale_or_unregister(i):
        if i == 0:
            return sale_create(client=client, items=sale).sale
        return device_unregister(client=client, device_id=devices[i - 1].pk)

    for _ in range(50):
        for device in devices:
            device_register(client=client, token=device.token, platform="ios")
            for sku in reversed(skus):  # the second SKU's row first: the lower id
                subscription_create(client=client, device_id=device.pk, sku=sku)
        for sku in skus:
            product_set_stock(sku=sku, quantity=1)  # back: every subscriber owed a push
        answers = run_together(1 + len(devices), sale_or_unregister)
        errors = [(("sale", "unregister")[i > 0], a) for i, a in enumerate(answers) if isinstance(a, Exception)]
        assert not errors, errors
        assert answers[0] is not None, "sold"
        assert not Subscription.objects.filter(sku__in=skus, due_at__isnull=False).exists(), "every push withdrawn"


def subscribe(http, device_id, sku="VIRAL"):
    return http.post(f"/api/v1/products/{sku}/subscriptions/", {"device_id": device_id}, format="json")


def test_a_client_unregisters_its_device_with_its_subscriptions_and_a_retry_is_204_too(client_app):
    make_product("VIRAL", on_hand=0)
    make_product("GLAZED", on_hand=0)
    device_id = register(client_app, user_ref="user-1").json()["id"]
    kept = register(client_app, token="fcm-token-kept").json()["id"]
    for sku in ("VIRAL", "GLAZED"):
        subscribe(client_app, device_id, sku)
    subscribe(client_app, kept)

    first = client_app.delete(f"/api/v1/devices/{device_id}/")
    retry = client_app.delete(f"/api/v1/devices/{device_id}/")

    assert (first.status_code, first.content, retry.status_code, retry.content) == (204, b"", 204, b"")
    assert not Device.objects.get(pk=device_id).is_active
    assert list(Subscription.objects.values_list("device_id", flat=True)) == [kept], "its subscriptions went with it"
    refused = subscribe(client_app, device_id)
    assert refused.status_code == 404 and refused.json()["code"] == "unknown_device"
    again = register(client_app)
    assert again.status_code == 200 and again.json()["id"] == device_id and again.json()["is_active"] is True
    assert not Subscription.objects.filter(device_id=device_id).exists(), "registered again, subscribed to nothing"


def test_unregistering_someone_elses_device_is_the_same_404_as_an_unknown_one(client_app):
    make_product("VIRAL", on_hand=0)
    other_client, _ = make_api_client()
    theirs = Device.objects.create(token="their-token-123", platform="ios", client=other_client)
    Subscription.objects.create(device=theirs, sku="VIRAL")

    not_mine = client_app.delete(f"/api/v1/devices/{theirs.pk}/")
    unknown = client_app.delete("/api/v1/devices/999999/")

    assert not_mine.status_code == unknown.status_code == 404
    assert not_mine.json() == unknown.json() and unknown.json()["code"] == "unknown_device"
    theirs.refresh_from_db()
    assert theirs.is_active and theirs.subscriptions.count() == 1


def test_unregistering_needs_an_api_key(client_app):
    device_id = register(client_app).json()["id"]

    response = APIClient().delete(f"/api/v1/devices/{device_id}/")

    assert response.status_code == 401 and Device.objects.get().is_active


def test_a_device_unsubscribes_from_one_sku_and_a_retry_is_204_too(client_app):
    make_product("VIRAL", on_hand=0)
    make_product("GLAZED", on_hand=0)
    device_id = register(client_app).json()["id"]
    subscribe(client_app, device_id, "VIRAL")
    subscribe(client_app, device_id, "GLAZED")
    url = f"/api/v1/products/VIRAL/subscriptions/{device_id}/"

    first = client_app.delete(url)
    retry = client_app.delete(url)

    assert (first.status_code, first.content, retry.status_code, retry.content) == (204, b"", 204, b"")
    assert list(Subscription.objects.values_list("sku", flat=True)) == ["GLAZED"]
    assert Device.objects.get().is_active
    assert subscribe(client_app, device_id, "VIRAL").status_code == 201, "and can subscribe again"


def test_unsubscribing_a_sku_taken_off_sale_works_and_one_never_sold_is_404(client_app):
    make_product("MAPLE", on_hand=0, is_active=False)  # retired after the device subscribed
    make_product("VIRAL", on_hand=0)
    device = Device.objects.create(client=client_app.api_client, token="fcm-token-abcdef", platform="ios")
    Subscription.objects.create(device=device, sku="MAPLE")
    Subscription.objects.create(device=device, sku="VIRAL")

    retired = client_app.delete(f"/api/v1/products/MAPLE/subscriptions/{device.pk}/")
    retry = client_app.delete(f"/api/v1/products/MAPLE/subscriptions/{device.pk}/")  # its answer was lost
    never_sold = client_app.delete(f"/api/v1/products/NOPE/subscriptions/{device.pk}/")
    padded = client_app.delete(f"/api/v1/products/VIRAL%20/subscriptions/{device.pk}/")
    other_case = client_app.delete(f"/api/v1/products/viral/subscriptions/{device.pk}/")

    assert retired.status_code == retry.status_code == 204
    assert never_sold.status_code == 404 and never_sold.json()["code"] == "unknown_sku"
    assert padded.status_code == 404 and padded.json()["code"] == "unknown_sku"
    assert other_case.status_code == 404 and other_case.json()["did_you_mean"] == {"viral": "VIRAL"}
    assert list(Subscription.objects.values_list("sku", flat=True)) == ["VIRAL"], "only MAPLE's went"


def test_unsubscribing_someone_elses_device_is_404_and_changes_nothing(client_app):
    make_product("VIRAL", on_hand=0)
    other_client, _ = make_api_client()
    theirs = Device.objects.create(token="their-token-123", platform="ios", client=other_client)
    Subscription.objects.create(device=theirs, sku="VIRAL")

    not_mine = client_app.delete(f"/api/v1/products/VIRAL/subscriptions/{theirs.pk}/")
    unknown = client_app.delete("/api/v1/products/VIRAL/subscriptions/999999/")

    assert not_mine.status_code == unknown.status_code == 404
    assert not_mine.json() == unknown.json() and unknown.json()["code"] == "unknown_device"
    assert Subscription.objects.filter(device=theirs).count() == 1


@pytest.mark.parametrize("how", ["unregistered by its app", "token dropped by FCM"])
def test_unsubscribing_ones_own_inactive_device_is_204_and_takes_effect(client_app, how):
    # Signing out unregisters the device and unsubscribes its SKUs, in either order, each retried when its
    # answer is lost; a device FCM dropped may come back when the app registers its token again. "Notify me"
    # turned off meanwhile was a 404 unknown_device, for a device that is this client's, and its
    # subscription stayed for the day the device is active again.
    make_product("VIRAL", on_hand=0)
    device_id = register(client_app).json()["id"]
    subscribe(client_app, device_id, "VIRAL")
    if how == "unregistered by its app":
        assert client_app.delete(f"/api/v1/devices/{device_id}/").status_code == 204
    else:
        device_deactivate(device_id, reason="UNREGISTERED")

    response = client_app.delete(f"/api/v1/products/VIRAL/subscriptions/{device_id}/")

    assert (response.status_code, response.content) == (204, b""), response.content
    assert register(client_app).json()["id"] == device_id, "the app registers its token again"
    assert not Subscription.objects.filter(device_id=device_id).exists(), "no push for VIRAL after all"

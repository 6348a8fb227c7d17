"""Delivering alerts and back-in-stock pushes to real local stand-ins for Slack and FCM."""

import re
import signal
from contextlib import contextmanager
from datetime import timedelta

import pytest
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from rest_framework.test import APIClient

from notifications import alerts, deliveries, errors, subscriptions
from notifications.channels import registry
from notifications.limits import RETRY_AFTER_MAX_SECONDS
from notifications.models import Alert, AlertDelivery, Device, Subscription
from testsupport.data import critical_alert, make_api_client, make_failed_restock, make_product
from testsupport.fake_slack_fcm import FcmStandIn, SlackStandIn
from testsupport.queues import broker, queued

pytestmark = pytest.mark.django_db


@contextmanager
def soft_time_limit_in(seconds: float):
    """SoftTimeLimitExceeded raised from a signal handler wherever this process is after `seconds`, as the
    prefork pool's soft time limit raises it in a task (billiard signals the child)."""

    def soft_limit(signum, frame):
        raise SoftTimeLimitExceeded()

    previous = signal.signal(signal.SIGALRM, soft_limit)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def send_all(alert):
    return {d.channel: deliveries.delivery_send(d.pk) for d in AlertDelivery.objects.filter(alert=alert)}


def test_a_critical_alert_reaches_slack_and_the_ops_phones(channels_at, slack, fcm):
    phone = Device.objects.create(kind="ops", token="ops-phone-token-1", platform="android")
    alert = critical_alert()

    assert send_all(alert) == {"log": "sent", "slack": "sent", "fcm": "sent"}

    posted = slack.received[0]["body"]
    assert "Dead letter: VIRAL (factory.restock_place gave up)" in posted["text"]
    block_text = str(posted["blocks"])
    assert "VIRAL" in block_text and "42" in block_text and "http://flower.example" in block_text
    assert f"/admin/notifications/alert/{alert.pk}/change/" in block_text
    pushes = [r["body"]["message"] for r in fcm.received]
    assert [m.get("topic") or m.get("token") for m in pushes] == ["ops-alerts", phone.token]
    assert all(m["data"]["alert_id"] == str(alert.pk) and m["notification"]["title"] for m in pushes)
    # What a tap opens: no dead letter is named, so the alert's page.
    assert {m["data"]["url"] for m in pushes} == {
        f"{settings.PUBLIC_BASE_URL}/admin/notifications/alert/{alert.pk}/change/"
    }
    assert fcm.received[0]["headers"]["authorization"] == "Bearer fcm-test-token"
    sent = AlertDelivery.objects.get(alert=alert, channel="slack")
    assert sent.status == "sent" and sent.latency_ms is not None


def test_a_delivery_is_not_sent_twice(channels_at, slack):
    alert = critical_alert()
    slack_delivery = AlertDelivery.objects.get(alert=alert, channel="slack")

    assert deliveries.delivery_send(slack_delivery.pk) == "sent"
    assert deliveries.delivery_send(slack_delivery.pk) == "not pending"
    assert len(slack.received) == 1


def test_a_transient_failure_is_retried_then_left_for_the_sweep_and_sent_when_slack_is_back(channels_at, slack):
    alert = critical_alert()
    delivery = AlertDelivery.objects.get(alert=alert, channel="slack")
    slack.fail_next(500, times=2)

    with pytest.raises(errors.DeliveryRetry):
        deliveries.delivery_send(delivery.pk)
    assert deliveries.delivery_send(delivery.pk, final_attempt=True) == "later"

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("pending", 2), "a Slack outage delays an alert, never loses it"
    assert "500" in delivery.last_error and delivery.resend_at > timezone.now()
    assert deliveries.deliveries_resend_stuck() == 0, "not before its resend time"
    AlertDelivery.objects.filter(pk=delivery.pk).update(resend_at=timezone.now())
    assert deliveries.delivery_send(delivery.pk) == "sent"
    assert len(slack.received) == 3
    assert Alert.objects.count() == 1, "a channel's own failure raises no alert about itself"


def test_a_send_the_time_limit_cut_short_is_retried_at_once_not_after_the_claim_lease(channels_at, slack):
    # Slack connecting slowly (a connection retry, a rate-limit wait) can outlast the task's soft limit.
    alert = critical_alert()
    delivery = AlertDelivery.objects.get(alert=alert, channel="slack")
    slack.hang_next()

    with soft_time_limit_in(0.3), pytest.raises(errors.DeliveryRetry):
        deliveries.delivery_send(delivery.pk)

    delivery.refresh_from_db()
    assert (delivery.status, delivery.claimed_at) == ("pending", None), "let go for the retry, not held 60 s"
    assert "soft time limit" in delivery.last_error
    assert deliveries.delivery_send(delivery.pk) == "later", "this process leaves Slack alone for a while"
    registry.channels_forget()  # another worker process, or this one once the pause is over
    assert deliveries.delivery_send(delivery.pk) == "sent"
    assert len(slack.received) == 2


def test_a_delivery_still_failing_when_its_alert_is_a_day_old_is_given_up(channels_at, slack, settings):
    alert = critical_alert()
    Alert.objects.filter(pk=alert.pk).update(
        created_at=timezone.now() - timedelta(seconds=settings.NOTIFICATIONS_GIVE_UP_AFTER_SECONDS + 1)
    )
    delivery = AlertDelivery.objects.get(alert=alert, channel="slack")
    AlertDelivery.objects.filter(pk=delivery.pk).update(attempts=settings.NOTIFICATIONS_MAX_RETRIES)
    slack.fail_next(503)

    assert deliveries.delivery_send(delivery.pk) == "failed"
    delivery.refresh_from_db()
    assert delivery.status == "failed" and "503" in delivery.last_error

    # Ops send it again from the admin: a fresh round of retries, not given up at its first failure.
    deliveries.alert_resend(alert)
    slack.fail_next(503)
    with pytest.raises(errors.DeliveryRetry):
        deliveries.delivery_send(delivery.pk)


def test_a_channels_retry_after_is_waited_out_by_the_sweep(channels_at, fcm):
    alert = critical_alert()
    delivery = AlertDelivery.objects.get(alert=alert, channel="fcm")
    fcm.fail_next(429, headers={"Retry-After": "120"})

    assert deliveries.delivery_send(delivery.pk) == "later", "not six tries within seconds of a quota error"

    delivery.refresh_from_db()
    assert delivery.status == "pending" and delivery.resend_at >= timezone.now() + timedelta(seconds=110)


def test_an_ops_phone_failing_does_not_push_the_ops_topic_again(channels_at, fcm):
    Device.objects.create(kind="ops", token="ops-phone-busy", platform="android")
    alert = critical_alert()
    delivery = AlertDelivery.objects.get(alert=alert, channel="fcm")
    fcm.fail_next(200, {"name": "projects/donut-test/messages/1"})  # the topic push is accepted ...
    fcm.fail_next(503)  # ... the phone's own push is not

    assert deliveries.delivery_send(delivery.pk) == "sent"
    assert deliveries.delivery_send(delivery.pk) == "not pending"
    topic_pushes = [r for r in fcm.received if r["body"]["message"].get("topic")]
    assert len(topic_pushes) == 1, "every ops phone got the topic push once"


def test_an_ops_phone_push_cut_short_by_the_time_limit_does_not_push_the_ops_topic_again(channels_at, fcm, monkeypatch):
    """The notifications worker runs prefork, where the task's soft time limit (10 s) raises
    SoftTimeLimitExceeded wherever the task is: with FCM slow, inside the ops phones' pushes after the
    topic push was accepted. The delivery is sent; the sweep must not page every ops phone again."""
    Device.objects.create(kind="ops", token="ops-phone-slow", platform="android")
    alert = critical_alert()
    delivery = AlertDelivery.objects.get(alert=alert, channel="fcm")
    channel = registry.channel_get("fcm")

    def time_limit_on_the_phones(token, message):
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(channel, "send_to_token", time_limit_on_the_phones)
    with pytest.raises(SoftTimeLimitExceeded):
        deliveries.delivery_send(delivery.pk)

    delivery.refresh_from_db()
    assert delivery.status == "sent", "the topic push went out; the phones' pushes are best effort"
    # Past its claim and its resend time, the sweep finds nothing to send again.
    AlertDelivery.objects.filter(pk=delivery.pk).update(
        claimed_at=timezone.now() - deliveries.CLAIM_LEASE - timedelta(seconds=1), resend_at=timezone.now()
    )
    assert deliveries.deliveries_resend_stuck() == 0
    assert deliveries.delivery_send(delivery.pk) == "not pending"
    topic_pushes = [r for r in fcm.received if r["body"]["message"].get("topic")]
    assert len(topic_pushes) == 1


def test_an_unregistered_ops_phone_is_deactivated(channels_at, fcm):
    gone = Device.objects.create(kind="ops", token="ops-phone-gone", platform="ios")
    fcm.mark_unregistered("ops-phone-gone")
    alert = critical_alert()

    assert deliveries.delivery_send(AlertDelivery.objects.get(alert=alert, channel="fcm").pk) == "sent"

    gone.refresh_from_db()
    assert not gone.is_active and "UNREGISTERED" in gone.deactivated_reason.upper()


def test_an_ops_phone_added_twice_in_the_admin_is_pushed_once(channels_at, fcm, admin_client):
    # Ops devices have no client, and the one-device-per-client-and-token rule does not hold for a missing
    # client: the admin lets ops add the same phone again (after a reinstall, or not seeing it in the list).
    for _ in range(2):
        response = admin_client.post(
            "/admin/notifications/device/add/",
            {
                "kind": "ops",
                "platform": "android",
                "token": "ops-phone-twice",
                "client": "",
                "user_ref": "",
                "is_active": "on",
            },
        )
        assert response.status_code == 302
    assert Device.objects.filter(token="ops-phone-twice", is_active=True).count() == 2
    alert = critical_alert()

    assert deliveries.delivery_send(AlertDelivery.objects.get(alert=alert, channel="fcm").pk) == "sent"

    tokens = [r["body"]["message"].get("token") for r in fcm.received]
    assert tokens.count("ops-phone-twice") == 1, "one phone, one push per alert"


def announce(sku):
    """What a receipt that brings `sku` back does in its transaction (the message after commit is left out)."""
    with transaction.atomic():
        return subscriptions.back_in_stock_announce(sku, "Viral Glazed")


def test_back_in_stock_pushes_each_subscriber_once(channels_at, fcm):
    devices = [Device.objects.create(token=f"customer-token-{i}", platform="android") for i in range(5)]
    for device in devices:
        Subscription.objects.create(device=device, sku="VIRAL")
    Subscription.objects.create(device=devices[0], sku="MAPLE")
    fcm.mark_unregistered("customer-token-4")

    assert subscriptions.back_in_stock_send("VIRAL") == 0, "nothing is owed before the SKU came back"
    assert announce("VIRAL") == 5
    assert subscriptions.back_in_stock_send("VIRAL", batch_size=2) == 4
    assert subscriptions.back_in_stock_send("VIRAL") == 0, "subscriptions are used up"

    tokens = sorted(r["body"]["message"]["token"] for r in fcm.received)
    assert tokens == [f"customer-token-{i}" for i in range(5)]
    assert all(r["body"]["message"]["data"]["sku"] == "VIRAL" for r in fcm.received)
    assert Subscription.objects.filter(sku="MAPLE", notified_at__isnull=True).count() == 1
    assert not Device.objects.get(token="customer-token-4").is_active


def test_back_in_stock_is_owed_only_to_subscribers_of_that_exact_sku(channels_at, fcm):
    plain = Device.objects.create(token="customer-token-x", platform="android")
    Subscription.objects.create(device=plain, sku="MATCHA")
    accent = Device.objects.create(token="customer-token-y", platform="ios")
    accented = Subscription.objects.create(device=accent, sku="MATCHÁ")

    assert announce("MATCHÁ") == 1
    assert subscriptions.back_in_stock_send("MATCHÁ") == 1

    assert [r["body"]["message"]["token"] for r in fcm.received] == ["customer-token-y"]
    assert Subscription.objects.get(sku="MATCHA").notified_at is None, "MATCHA has not come back"
    accented.refresh_from_db()
    assert accented.notified_at is not None


def test_fcm_refusing_for_now_ends_the_run_and_every_push_stays_owed(channels_at, fcm):
    for i in range(5):
        Subscription.objects.create(device=Device.objects.create(token=f"customer-{i}", platform="ios"), sku="VIRAL")
    announce("VIRAL")
    fcm.fail_next(429)  # the project's quota is used up: asking for the other four would only prolong it

    assert subscriptions.back_in_stock_send("VIRAL") == 0
    assert len(fcm.received) == 1, "one call, not one per subscriber"
    assert Subscription.objects.filter(notified_at__isnull=True, due_at__isnull=False).count() == 5, "all owed"

    # The next run starts with the other four: a device FCM keeps refusing (its own quota) holds up nobody.
    assert subscriptions.back_in_stock_send("VIRAL") == 4
    assert [r["body"]["message"]["token"] for r in fcm.received] == [f"customer-{i}" for i in (0, 1, 2, 3, 4)]
    Subscription.objects.filter(notified_at__isnull=True).update(due_at=timezone.now())  # its wait is over
    assert subscriptions.back_in_stock_send("VIRAL") == 1


def test_a_transient_fcm_failure_leaves_the_subscription_owed_until_a_push_is_accepted(channels_at, fcm):
    device = Device.objects.create(token="customer-token-1", platform="android")
    Subscription.objects.create(device=device, sku="VIRAL")
    announce("VIRAL")
    fcm.fail_next(503)

    assert subscriptions.back_in_stock_send("VIRAL") == 0

    owed = Subscription.objects.get()
    assert owed.notified_at is None and owed.due_at is not None, "not used up by a push FCM did not accept"
    assert subscriptions.back_in_stock_resend() == 0, "the sweep waits NOTIFICATIONS_RESEND_AFTER_SECONDS"
    Subscription.objects.update(due_at=timezone.now() - timedelta(seconds=settings.NOTIFICATIONS_RESEND_AFTER_SECONDS))
    assert subscriptions.back_in_stock_resend() == 1, "then it sends it again"
    assert subscriptions.back_in_stock_send("VIRAL") == 1
    assert Subscription.objects.get().notified_at is not None
    assert [r["body"]["message"]["token"] for r in fcm.received] == ["customer-token-1"] * 2, "refused, accepted"


def test_a_run_of_pushes_past_its_time_hands_the_rest_to_a_new_run_at_once(channels_at, fcm):
    # Thousands of subscribers take longer than a task may run: the soft limit would cut a push in half and
    # the rest would wait for the sweep.
    for i in range(8):
        Subscription.objects.create(device=Device.objects.create(token=f"customer-{i}", platform="ios"), sku="VIRAL")
    announce("VIRAL")
    broker().delete("notifications")
    fcm.latency_seconds = 0.05

    sent = subscriptions.back_in_stock_send("VIRAL", run_seconds=0.12)

    assert 1 <= sent < 8
    assert len(fcm.received) == sent, "no push started past the run's time"
    rest = Subscription.objects.filter(notified_at__isnull=True)
    assert rest.count() == 8 - sent and all(s.due_at <= timezone.now() for s in rest), "due now, not claimed"
    assert queued("notifications") == [("notifications.back_in_stock", ["VIRAL"])], "a new run is on its way"
    fcm.latency_seconds = 0
    assert subscriptions.back_in_stock_send("VIRAL") == 8 - sent


def test_a_push_the_time_limit_cut_short_is_owed_again_and_ends_the_run(channels_at, fcm):
    for i in range(2):
        Subscription.objects.create(device=Device.objects.create(token=f"customer-{i}", platform="ios"), sku="VIRAL")
    announce("VIRAL")
    fcm.hang_next()

    with soft_time_limit_in(0.3):
        assert subscriptions.back_in_stock_send("VIRAL") == 0

    cut = Subscription.objects.get(device__token="customer-0")
    assert cut.notified_at is None
    resend_at = timezone.now() + timedelta(seconds=settings.NOTIFICATIONS_RESEND_AFTER_SECONDS)
    assert abs((cut.due_at - resend_at).total_seconds()) < 5, "owed again after the usual wait, not the lease"
    assert Subscription.objects.get(device__token="customer-1").notified_at is None


@pytest.mark.django_db(transaction=True)  # a sale is a durable transaction of its own
@pytest.mark.parametrize("sold_out_by", ["sale", "adjustment"])
def test_pushes_still_owed_when_the_sku_sells_out_again_wait_for_its_next_return(channels_at, fcm, sold_out_by):
    # A rush: the comeback's stock goes before its pushes do. Telling the rest "back" about a product at 0
    # would use up their one push on nothing.
    from inventory.services import SaleItem, sale_create, stock_adjust

    viral = make_product("VIRAL", on_hand=0)
    for i in range(3):
        Subscription.objects.create(device=Device.objects.create(token=f"customer-{i}", platform="ios"), sku="VIRAL")
    stock_adjust(product=viral, quantity=2, reason="a tray came back")
    assert Subscription.objects.filter(due_at__isnull=False).count() == 3, "three pushes owed"
    if sold_out_by == "sale":
        sale_create(client=make_api_client()[0], items=[SaleItem("VIRAL", 2)])
    else:
        stock_adjust(product=viral, quantity=-2, reason="dropped the tray")

    assert subscriptions.back_in_stock_send("VIRAL") == 0
    assert fcm.received == [], "nobody is told VIRAL is back while it is at 0"
    assert Subscription.objects.filter(notified_at__isnull=True).count() == 3, "nobody's one push used up"

    stock_adjust(product=viral, quantity=5, reason="the factory's tray")
    assert subscriptions.back_in_stock_send("VIRAL") == 3
    assert sorted(r["body"]["message"]["token"] for r in fcm.received) == ["customer-0", "customer-1", "customer-2"]


def test_a_push_that_fails_while_its_sku_sells_out_again_waits_for_the_next_return(channels_at, fcm, monkeypatch):
    from notifications.channels import registry

    Subscription.objects.create(device=Device.objects.create(token="customer-1", platform="ios"), sku="VIRAL")
    announce("VIRAL")
    fcm_channel = registry.channel_get("fcm")
    send = fcm_channel.send_to_token

    def sold_out_while_sending(token, message):
        with transaction.atomic():  # the sale of the last one, while this push is on its way
            subscriptions.back_in_stock_withdraw("VIRAL")
        fcm.fail_next(503)
        return send(token, message)

    monkeypatch.setattr(fcm_channel, "send_to_token", sold_out_while_sending)

    assert subscriptions.back_in_stock_send("VIRAL") == 0
    owed = Subscription.objects.get()
    assert (owed.notified_at, owed.due_at) == (None, None), "not resent while VIRAL is at 0; still owed next time"


def removal_url(removal: str, device: Device) -> str:
    """A client app taking back a device's comeback push: the user signs out, or taps "notify me" off."""
    if removal == "unregister":
        return f"/api/v1/devices/{device.pk}/"
    return f"/api/v1/products/VIRAL/subscriptions/{device.pk}/"


def two_devices_owed_the_viral_push(api_client) -> tuple[Device, Device]:
    """Two of the client's devices subscribed to VIRAL, which is back: each is owed its push."""
    make_product("VIRAL", on_hand=0)
    devices = [Device.objects.create(client=api_client, token=f"customer-{i}", platform="ios") for i in range(2)]
    for device in devices:
        Subscription.objects.create(device=device, sku="VIRAL")
    announce("VIRAL")
    return devices[0], devices[1]


@pytest.mark.parametrize("removal", ["unregister", "unsubscribe"])
def test_a_push_taken_back_while_the_comeback_is_being_pushed_is_not_sent(
    channels_at, fcm, client_app, monkeypatch, removal
):
    first, second = two_devices_owed_the_viral_push(client_app.api_client)
    fcm_channel = registry.channel_get("fcm")
    send = fcm_channel.send_to_token
    taken_back = []

    def taken_back_while_sending(token, message):
        if not taken_back:  # the run has read both subscriptions and is pushing the first
            taken_back.append(client_app.delete(removal_url(removal, second)))
        return send(token, message)

    monkeypatch.setattr(fcm_channel, "send_to_token", taken_back_while_sending)

    assert subscriptions.back_in_stock_send("VIRAL") == 1
    assert taken_back[0].status_code == 204
    assert [r["body"]["message"]["token"] for r in fcm.received] == ["customer-0"]
    assert subscriptions.back_in_stock_send("VIRAL") == 0


@pytest.mark.parametrize("removal", ["unregister", "unsubscribe"])
def test_a_push_owed_and_taken_back_is_never_resent_by_the_sweep(channels_at, fcm, client_app, removal):
    first, second = two_devices_owed_the_viral_push(client_app.api_client)
    fcm.fail_next(503)  # FCM away: the run ends, both pushes still owed
    assert subscriptions.back_in_stock_send("VIRAL") == 0

    assert client_app.delete(removal_url(removal, second)).status_code == 204
    Subscription.objects.update(due_at=timezone.now() - timedelta(seconds=settings.NOTIFICATIONS_RESEND_AFTER_SECONDS))

    assert subscriptions.back_in_stock_resend() == 1, "the first device's push is still owed"
    assert subscriptions.back_in_stock_send("VIRAL") == 1
    assert [r["body"]["message"]["token"] for r in fcm.received] == ["customer-0"] * 2, "refused, accepted"
    assert subscriptions.back_in_stock_resend() == 0, "nothing left owed"


def subscribed_through(client_key: str, token: str) -> int:
    """A client app registers the phone's FCM token with its own API key and taps "notify me" for VIRAL."""
    http = APIClient()
    http.credentials(HTTP_AUTHORIZATION=f"Api-Key {client_key}")
    device_id = http.post("/api/v1/devices/", {"token": token, "platform": "android"}, format="json").json()["id"]
    subscribed = http.post("/api/v1/products/VIRAL/subscriptions/", {"device_id": device_id}, format="json")
    assert subscribed.status_code == 201
    return device_id


def two_clients() -> tuple[str, str]:
    """One app talking through two API keys, or a client whose key moved to a new client: two clients, one phone."""
    make_product("VIRAL", on_hand=0)
    return make_api_client()[1], make_api_client()[1]


def pushed_tokens(fcm) -> list[str]:
    return [r["body"]["message"]["token"] for r in fcm.received]


def test_a_phone_registered_by_two_clients_gets_one_back_in_stock_push(channels_at, fcm):
    first, second = two_clients()
    subscribed_through(first, "shared-phone-1")
    subscribed_through(first, "other-phone-2")
    subscribed_through(second, "shared-phone-1")
    subscribed_through(second, "other-phone-3")
    announce("VIRAL")

    assert subscriptions.back_in_stock_send("VIRAL") == 3

    assert sorted(pushed_tokens(fcm)) == ["other-phone-2", "other-phone-3", "shared-phone-1"], "one push a phone"
    assert not Subscription.objects.filter(notified_at__isnull=True).exists(), "both clients' subscriptions used up"
    assert subscriptions.back_in_stock_resend() == 0 and subscriptions.back_in_stock_send("VIRAL") == 0
    assert len(fcm.received) == 3


def test_a_phone_registered_by_two_clients_is_not_pushed_again_by_the_sweep(channels_at, fcm, monkeypatch):
    first, second = two_clients()
    subscribed_through(first, "shared-phone-1")
    subscribed_through(first, "other-phone-2")
    subscribed_through(second, "shared-phone-1")
    announce("VIRAL")
    fcm_channel = registry.channel_get("fcm")
    send = fcm_channel.send_to_token

    def fcm_away_after_the_first_push(token, message):
        if fcm.received:
            fcm.fail_next(503)
        return send(token, message)

    monkeypatch.setattr(fcm_channel, "send_to_token", fcm_away_after_the_first_push)
    assert subscriptions.back_in_stock_send("VIRAL") == 1, "the shared phone's push, then FCM went away"
    monkeypatch.undo()
    Subscription.objects.filter(notified_at__isnull=True).update(
        due_at=timezone.now() - timedelta(seconds=settings.NOTIFICATIONS_RESEND_AFTER_SECONDS)
    )

    assert subscriptions.back_in_stock_resend() == 1
    assert subscriptions.back_in_stock_send("VIRAL") == 1

    assert pushed_tokens(fcm) == ["shared-phone-1", "other-phone-2", "other-phone-2"], "refused, accepted"
    assert not Subscription.objects.filter(notified_at__isnull=True).exists()
    assert subscriptions.back_in_stock_resend() == 0


def test_a_phone_registered_by_two_clients_is_not_pushed_again_by_the_next_run(channels_at, fcm):
    first, second = two_clients()
    subscribed_through(first, "shared-phone-1")
    subscribed_through(second, "shared-phone-1")
    subscribed_through(second, "other-phone-2")
    announce("VIRAL")
    broker().delete("notifications")
    fcm.latency_seconds = 0.2  # longer than the run: it hands over after its first push

    handed_over = subscriptions.back_in_stock_send("VIRAL", run_seconds=0.1)
    assert queued("notifications") == [("notifications.back_in_stock", ["VIRAL"])], "a new run is on its way"
    fcm.latency_seconds = 0

    assert handed_over + subscriptions.back_in_stock_send("VIRAL") == 2
    assert sorted(pushed_tokens(fcm)) == ["other-phone-2", "shared-phone-1"]
    assert not Subscription.objects.filter(notified_at__isnull=True).exists()


def test_a_phone_registered_by_two_clients_is_pushed_once_when_its_first_push_fails_for_now(channels_at, fcm):
    first, second = two_clients()
    subscribed_through(first, "shared-phone-1")
    subscribed_through(second, "shared-phone-1")
    announce("VIRAL")
    fcm.fail_next(503)
    assert subscriptions.back_in_stock_send("VIRAL") == 0, "FCM away: the run ends, both owed"

    assert subscriptions.back_in_stock_send("VIRAL") == 1, "the next run starts with the other client's device"
    Subscription.objects.filter(notified_at__isnull=True).update(due_at=timezone.now())  # the first one's wait is over
    assert subscriptions.back_in_stock_send("VIRAL") == 0

    assert pushed_tokens(fcm) == ["shared-phone-1"] * 2, "refused, accepted"
    assert not Subscription.objects.filter(notified_at__isnull=True).exists()


def test_without_fcm_nothing_is_owed(settings):
    settings.FCM_PROJECT_ID = ""
    Subscription.objects.create(device=Device.objects.create(token="customer-token-1", platform="ios"), sku="VIRAL")

    assert announce("VIRAL") == 0
    assert Subscription.objects.get().due_at is None


def test_a_grouped_alerts_messages_name_every_sku_it_covers(channels_at, slack, fcm, settings):
    settings.ALERT_CRITICAL_FLUSH_SECONDS = 0
    for sku in ("VIRAL", "MAPLE"):
        with transaction.atomic():
            alerts.alert_raise(
                kind="dead_letter",
                severity="critical",
                title=f"Dead letter: {sku} (factory.restock_place gave up)",
                dedupe_key="dead_letter:factory.restock_place",
                context={"sku": sku},
            )
    assert alerts.alert_groups_flush() == 1

    summary = Alert.objects.get(is_summary=True)
    assert send_all(summary) == {"log": "sent", "slack": "sent", "fcm": "sent"}
    posted = slack.received[0]["body"]
    assert "MAPLE" in posted["text"] and "VIRAL, MAPLE" in str(posted["blocks"])
    push = fcm.received[0]["body"]["message"]["notification"]
    assert "MAPLE" in push["title"] and "VIRAL, MAPLE" in push["body"]


LOCK_SCREEN = 40  # characters of a push title a phone's lock screen shows, at the least


def test_a_dead_letter_storms_summary_says_on_the_lock_screen_what_failed_and_for_which_skus(
    channels_at, slack, fcm, settings
):
    # Thirty restocks fail for good within a minute. The first paged on its own; the summary that follows
    # must say, in what a phone shows of its title, that these are dead letters and which SKUs are new,
    # and must not name the first alert's SKU as if the summary were about it.
    settings.ALERT_CRITICAL_FLUSH_SECONDS = 0
    for i in range(30):
        make_failed_restock(make_product(f"RUSH{i:02d}", on_hand=0))
    assert alerts.alert_groups_flush() == 1  # the next sweep

    summary = Alert.objects.get(is_summary=True)
    assert send_all(summary) == {"log": "sent", "slack": "sent", "fcm": "sent"}
    title = fcm.received[0]["body"]["message"]["notification"]["title"]
    assert title[:LOCK_SCREEN] == "Dead letter: +29 more (new: RUSH01, RUSH"
    assert "RUSH00" not in title, "the first dead letter paged on its own; the summary is about the others"
    assert SlackStandIn.title_of(slack.received[0]).startswith(":rotating_light: Dead letter: +29 more (new: RUSH01")


def test_warnings_escalated_in_one_sweep_are_one_push_naming_them_all(channels_at, slack, fcm, settings):
    # A factory outage leaves every open restock overdue at once; ALERT_ESCALATE_AFTER_SECONDS later they all
    # escalate in one sweep. A push each made the phones ring as many times within 50 ms.
    warnings = []
    for sku in ("BOSTON", "MAPLE", "VIRAL"):
        with transaction.atomic():
            warnings.append(
                alerts.alert_raise(
                    kind="restock_overdue",
                    severity="warning",
                    title=f"Restock of {sku} is overdue (pending)",
                    context={"sku": sku},
                    dedupe_key=f"restock_overdue:{sku}",
                )
            )
    Alert.objects.update(created_at=timezone.now() - timedelta(seconds=settings.ALERT_ESCALATE_AFTER_SECONDS + 1))

    assert alerts.alerts_escalate() == 3
    assert alerts.alerts_escalate() == 0, "each warning is escalated once"
    for alert in Alert.objects.all():
        send_all(alert)

    (push,) = [r["body"]["message"]["notification"] for r in fcm.received]
    assert push["title"] == "Unacknowledged: 3 warnings (BOSTON, MAPLE, VIRAL)"
    assert push["body"].startswith("No one acknowledged these in 15 min: acknowledge them in the admin.")
    assert all(Alert.objects.get(pk=w.pk).acknowledged_at is None for w in warnings), "each still to be taken"
    assert len(slack.received) == 3, "Slack had each warning; the push adds nothing there"


def test_an_escalated_warnings_push_says_nobody_acknowledged_it(channels_at, slack, fcm, settings):
    # Slack heard of the overdue restock; ALERT_ESCALATE_AFTER_SECONDS later, unacknowledged, it is pushed to
    # the phones. The same title alone read as a new event, and the body's two lines never said what to do.
    with transaction.atomic():
        warning = alerts.alert_raise(
            kind="restock_overdue",
            severity="warning",
            title="Restock of BOSTON is overdue (pending)",
            text="Restock 81 (100 of BOSTON): not accepted by the factory yet.",
            context={"sku": "BOSTON", "restock_id": 81},
        )
    assert send_all(warning)["slack"] == "sent"
    Alert.objects.filter(pk=warning.pk).update(
        created_at=timezone.now() - timedelta(seconds=settings.ALERT_ESCALATE_AFTER_SECONDS + 1)
    )
    assert alerts.alerts_escalate() == 1  # the sweep

    assert send_all(warning)["fcm"] == "sent"
    push = fcm.received[0]["body"]["message"]["notification"]
    assert push["title"] == "Unacknowledged: Restock of BOSTON is overdue (pending)"
    assert push["body"].startswith("No one acknowledged this warning in 15 min: acknowledge it in the admin.")
    assert SlackStandIn.title_of(slack.received[0]) == ":warning: Restock of BOSTON is overdue (pending)"


def test_a_warning_escalated_by_the_sweep_just_before_it_was_due_says_the_minutes_it_was_set_to_wait(
    channels_at, fcm, settings
):
    # The sweep takes the warnings due within half a sweep (alerts_escalate), so about half of them are pushed
    # a second or two before ALERT_ESCALATE_AFTER_SECONDS: rounded down, "in 14 min" of a 15-minute wait.
    warning = factory_cancelled("BOSTON")
    early = settings.RECONCILE_INTERVAL_SECONDS / 4
    Alert.objects.update(created_at=timezone.now() - timedelta(seconds=settings.ALERT_ESCALATE_AFTER_SECONDS - early))
    assert alerts.alerts_escalate() == 1
    send_all(warning)

    push = fcm.received[0]["body"]["message"]["notification"]
    assert push["body"].startswith("No one acknowledged this warning in 15 min: acknowledge it in the admin.")


@pytest.mark.parametrize(
    ("skus", "says"),
    [
        (["BOSTON"], "No one acknowledged this warning in 21 s: acknowledge it in the admin."),
        (["BOSTON", "MAPLE"], "No one acknowledged these in 20 s: acknowledge them in the admin."),
    ],
)
def test_a_warning_escalated_within_a_minute_says_how_long_it_waited(channels_at, fcm, settings, skus, says):
    # With ALERT_ESCALATE_AFTER_SECONDS under 30 the push said "in 0 min", as if the warning had been pushed at
    # once, before anyone could have acknowledged it (and under 90, "in 1 min").
    settings.ALERT_ESCALATE_AFTER_SECONDS = 20
    for sku in skus:
        factory_cancelled(sku)
    Alert.objects.update(created_at=timezone.now() - timedelta(seconds=21))
    assert alerts.alerts_escalate() == len(skus)
    for alert in Alert.objects.all():
        send_all(alert)

    (push,) = [r["body"]["message"]["notification"] for r in fcm.received]
    assert push["body"].startswith(says)


def factory_cancelled(sku: str) -> Alert:
    with transaction.atomic():
        return alerts.alert_raise(
            kind="factory_cancelled",
            severity="warning",
            title=f"The factory cancelled a restock of {sku}",
            dedupe_key=f"factory_cancelled:{sku}",
            context={"sku": sku},
        )


def factory_degraded(sku: str) -> Alert:
    with transaction.atomic():
        return alerts.alert_raise(
            kind="factory_degraded",
            severity="warning",
            title="The factory failed 5 calls in a row",
            dedupe_key="factory_degraded",
            context={"sku": sku},
        )


def escalate_now(settings) -> int:
    """The sweep ALERT_ESCALATE_AFTER_SECONDS after the warnings were raised."""
    Alert.objects.update(created_at=timezone.now() - timedelta(seconds=settings.ALERT_ESCALATE_AFTER_SECONDS + 1))
    return alerts.alerts_escalate()


def test_a_warning_escalated_to_the_phones_and_then_settled_tells_them_it_is_over(channels_at, slack, fcm, settings):
    # The factory failed calls in a row; nobody acknowledged the warning and it was pushed to the phones.
    # Then the factory answered again and the warning was closed by itself, with no word to the phones (nor
    # to Slack): the on-call it reached had to open a laptop to learn there was nothing to do.
    warning = factory_degraded("BOSTON")
    assert escalate_now(settings) == 1
    assert send_all(warning) == {"log": "sent", "slack": "sent", "fcm": "sent"}

    with transaction.atomic():
        alerts.alerts_settle("factory_degraded")  # the factory answers again

    over = Alert.objects.get(acknowledged_at__isnull=False, is_summary=True)
    assert send_all(over) == {"log": "sent", "slack": "sent", "fcm": "sent"}
    topic_pushes = [r for r in fcm.received if r["body"]["message"].get("topic")]
    assert [FcmStandIn.title_of(r) for r in topic_pushes] == [
        "Unacknowledged: The factory failed 5 calls in a row",
        "Factory degraded (all settled): BOSTON",
    ]
    assert topic_pushes[-1]["body"]["message"]["data"]["severity"] == "info"


def priorities(record: dict) -> tuple[str, str]:
    """How urgently a push asks FCM to deliver it: (Android priority, APNs priority)."""
    message = record["body"]["message"]
    return message["android"]["priority"], message["apns"]["headers"]["apns-priority"]


def test_an_all_clear_on_the_phones_does_not_wake_them_as_the_page_did(channels_at, slack, fcm, settings):
    # The escalated warning woke the on-call at 3 am; the all-clear that followed it, good news with nothing to
    # do, went at the same high priority and woke them again. It goes at normal priority; the pages stay high.
    Device.objects.create(kind="ops", token="ops-phone-token-1", platform="ios")
    warning = factory_degraded("BOSTON")
    assert escalate_now(settings) == 1
    assert send_all(warning)["fcm"] == "sent"
    assert send_all(critical_alert())["fcm"] == "sent"
    paged = len(fcm.received)

    with transaction.atomic():
        alerts.alerts_settle("factory_degraded")  # the factory answers again
    over = Alert.objects.get(kind="factory_degraded", is_summary=True)
    assert send_all(over)["fcm"] == "sent"

    assert [priorities(r) for r in fcm.received[:paged]] == [("high", "10")] * 4, "topic and phone, each page"
    all_clear = fcm.received[paged:]
    assert [FcmStandIn.title_of(r) for r in all_clear] == ["Factory degraded (all settled): BOSTON"] * 2
    assert [priorities(r) for r in all_clear] == [("normal", "5")] * 2


def test_warnings_escalated_then_settled_with_others_held_back_are_one_all_clear_on_the_phones(
    channels_at, slack, fcm, settings
):
    # The warning reached the phones; the failed calls its window held back are summarized, settled, when the
    # factory answers again: that summary is the last word, on the phones too, and the only one.
    warning = factory_degraded("BOSTON")
    assert escalate_now(settings) == 1
    send_all(warning)
    factory_degraded("MAPLE")  # held back by the warning's window

    with transaction.atomic():
        alerts.alerts_settle("factory_degraded")

    (over,) = Alert.objects.filter(is_summary=True)
    assert send_all(over) == {"log": "sent", "slack": "sent", "fcm": "sent"}
    assert FcmStandIn.title_of(fcm.received[-1]).startswith("Factory degraded (all settled since): +1 more (MAPLE)")


def test_an_all_settled_summary_calls_nothing_new_on_slack_or_the_phones(channels_at, slack, fcm, settings):
    # Its title says everything it counts was settled: a "New" field, or "New since the last message" in its
    # text, would read as trouble still to handle.
    warning = factory_degraded("BOSTON")
    assert escalate_now(settings) == 1
    send_all(warning)
    factory_degraded("MAPLE")  # held back by the warning's window: news when the summary is written
    slack.clear()
    fcm.clear()

    with transaction.atomic():
        alerts.alerts_settle("factory_degraded")
    assert send_all(Alert.objects.get(is_summary=True)) == {"log": "sent", "slack": "sent", "fcm": "sent"}

    posted = slack.received[0]["body"]
    fields = [field["text"] for block in posted["blocks"] for field in block.get("fields", [])]
    assert fields == ["*SKU*\nBOSTON, MAPLE", "*Grouped*\n1"]
    pushes = [r["body"]["message"]["notification"] for r in fcm.received]
    assert pushes and pushes[0]["title"] == "Factory degraded (all settled since): +1 more (MAPLE)"
    assert not [text for text in [posted["text"], *(p["body"] for p in pushes)] if "new" in text.lower()]


def test_a_warning_escalated_with_others_in_one_push_and_then_settled_tells_the_phones_it_is_over(
    channels_at, fcm, settings
):
    # BOSTON's and MAPLE's cancellations reached the phones in one "Unacknowledged: 2 warnings" push (it is the
    # push's own alert that has the FCM delivery). Then the factory delivers BOSTON again.
    for sku in ("BOSTON", "MAPLE"):
        factory_cancelled(sku)
    assert escalate_now(settings) == 2
    (push,) = Alert.objects.filter(kind="unacknowledged")
    assert send_all(push)["fcm"] == "sent"

    with transaction.atomic():
        alerts.alerts_settle("factory_cancelled:BOSTON")

    over = Alert.objects.get(kind="factory_cancelled", is_summary=True)
    assert send_all(over)["fcm"] == "sent"
    assert FcmStandIn.title_of(fcm.received[-1]) == "Factory cancelled (all settled): BOSTON"


def test_a_settled_warning_that_never_reached_the_phones_sends_them_nothing(channels_at, slack, fcm):
    # Settled before ALERT_ESCALATE_AFTER_SECONDS: nobody was woken, so nobody's phone hears it is over.
    warning = factory_degraded("BOSTON")
    factory_degraded("MAPLE")  # held back: its summary goes out settled
    send_all(warning)

    with transaction.atomic():
        alerts.alerts_settle("factory_degraded")
    for alert in Alert.objects.exclude(pk=warning.pk):
        assert "fcm" not in send_all(alert)

    assert fcm.received == []
    assert SlackStandIn.title_of(slack.received[-1]).startswith(
        ":information_source: Factory degraded (all settled since)"
    )


def test_a_dead_letters_push_names_its_sku_on_the_lock_screen(channels_at, fcm):
    make_failed_restock(make_product("STRAWBERRY", on_hand=0))

    assert send_all(Alert.objects.get())["fcm"] == "sent"
    title = fcm.received[0]["body"]["message"]["notification"]["title"]
    assert "STRAWBERRY" in title[:LOCK_SCREEN], title


def test_a_storms_summary_shows_no_restock_or_dead_letter_of_its_first_alert_as_its_own(channels_at, slack, settings):
    # The summary of VIRAL's and MAPLE's dead letters showed "Restock 1", "Dead letter 1", VIRAL's request
    # id and a "Restock" link, all VIRAL's: one click took ops to one restock of the two.
    settings.ALERT_CRITICAL_FLUSH_SECONDS = 0
    first, _ = make_failed_restock(make_product("VIRAL", on_hand=0))
    make_failed_restock(make_product("MAPLE", on_hand=0))
    assert alerts.alert_groups_flush() == 1

    summary = Alert.objects.get(is_summary=True)
    assert send_all(summary)["slack"] == "sent"
    blocks = slack.received[0]["body"]["blocks"]
    fields = [field["text"] for block in blocks for field in block.get("fields", [])]
    assert fields == ["*SKU*\nVIRAL, MAPLE", "*Grouped*\n1", "*New*\nMAPLE", "*Task*\nfactory.restock_place"]
    assert f"/admin/inventory/restock/{first.pk}/" not in str(blocks)


def test_a_dead_letters_push_opens_its_redrive_page(channels_at, fcm, settings):
    # The push carried no link: the phone showed "redrive it from the admin" and nothing to tap to get there.
    _, dead_letter = make_failed_restock(make_product("VIRAL", on_hand=0))
    alert = Alert.objects.get(kind="dead_letter")

    assert send_all(alert)["fcm"] == "sent"

    [push] = [r["body"]["message"] for r in fcm.received]
    assert push["data"]["url"] == f"{settings.PUBLIC_BASE_URL}/admin/factory/deadletter/{dead_letter.pk}/change/"


def test_a_dead_letters_messages_link_to_where_it_is_redriven(channels_at, slack, settings, admin_client):
    # The alert says "redrive it from the admin": its message links the dead letter's page (the Redrive
    # button), and a storm's summary the open dead letters of its task, each page answering.
    settings.ALERT_CRITICAL_FLUSH_SECONDS = 0
    _, viral = make_failed_restock(make_product("VIRAL", on_hand=0))
    _, maple = make_failed_restock(make_product("MAPLE", on_hand=0))
    assert alerts.alert_groups_flush() == 1
    for alert in Alert.objects.order_by("pk"):
        assert send_all(alert)["slack"] == "sent"

    links = [
        re.findall(r"<(http[^|>]+)\|([^>]+)>", block["elements"][0]["text"])
        for block in (record["body"]["blocks"][-1] for record in slack.received)
    ]
    page = dict((label, url) for url, label in links[0])["Dead letter (redrive)"]
    assert page.endswith(f"/admin/factory/deadletter/{viral.pk}/change/")
    assert "Redrive" in admin_client.get(page.replace(settings.PUBLIC_BASE_URL, "")).content.decode()
    listing = dict((label, url) for url, label in links[1])["Open dead letters (redrive)"].replace("&amp;", "&")
    shown = admin_client.get(listing.replace(settings.PUBLIC_BASE_URL, "")).context["cl"].result_list
    assert sorted(d.pk for d in shown) == sorted([viral.pk, maple.pk])


def test_a_dead_letter_storms_summary_says_what_to_do_and_a_settled_one_does_not(channels_at, slack, fcm, settings):
    # Each dead letter's page says "Redrive it ... once the cause is fixed"; the summary of the others
    # paged the phones with only "1 more alert(s) like this one ...", which tells ops nothing to do.
    settings.ALERT_CRITICAL_FLUSH_SECONDS = 0
    make_failed_restock(make_product("VIRAL", on_hand=0))
    make_failed_restock(make_product("MAPLE", on_hand=0))
    assert alerts.alert_groups_flush() == 1
    summary = Alert.objects.get(is_summary=True)

    assert send_all(summary) == {"log": "sent", "slack": "sent", "fcm": "sent"}
    push = fcm.received[0]["body"]["message"]["notification"]["body"]
    assert "Redrive them" in push and "manage.py redrive --all" in push
    assert "Redrive them" in slack.received[0]["body"]["text"]

    make_failed_restock(make_product("LEMON", on_hand=0))
    with transaction.atomic():
        alerts.alerts_settle("dead_letter:factory.restock_place")  # every one redriven
    settled = Alert.objects.filter(is_summary=True).latest("pk")
    assert settled.severity == "info" and send_all(settled)["slack"] == "sent"
    assert "Redrive" not in slack.received[-1]["body"]["text"], "settled: nothing left to do"


def test_a_summary_is_not_posted_before_the_page_it_counts_when_slack_failed_that_page(channels_at, slack, settings):
    # Slack failed VIRAL's page; 30 s later the summary naming MAPLE is due and Slack answers again. Its task
    # ran before the page's retry: Slack showed "+1 more (new: MAPLE)" first, about a page nobody had seen.
    settings.ALERT_CRITICAL_FLUSH_SECONDS = 0
    make_failed_restock(make_product("VIRAL", on_hand=0))
    page = AlertDelivery.objects.get(alert=Alert.objects.get(), channel="slack")
    slack.fail_next(503)
    with pytest.raises(errors.DeliveryRetry):
        deliveries.delivery_send(page.pk)
    make_failed_restock(make_product("MAPLE", on_hand=0))
    assert alerts.alert_groups_flush() == 1
    summary = AlertDelivery.objects.get(alert__is_summary=True, channel="slack")

    deliveries.delivery_send(summary.pk)  # its task, before the page's retry
    assert deliveries.delivery_send(page.pk) == "sent"  # the page's retry
    AlertDelivery.objects.filter(pk=summary.pk).update(resend_at=timezone.now())  # the sweep, if it waited
    deliveries.delivery_send(summary.pk)

    posted = [SlackStandIn.title_of(r) for r in slack.received if r["status"] == 200]
    assert posted == [
        ":rotating_light: Dead letter: VIRAL (factory.restock_place gave up)",
        ":rotating_light: Dead letter: +1 more (new: MAPLE)",
    ]


def test_a_settled_storms_summary_says_so_before_its_sku_list(channels_at, slack, settings):
    # The factory failed calls for thirty SKUs' restocks, then answered again: the warnings its window held
    # back are summarized at once as settled. Slack's header must say so, however many SKUs the list has.
    for i in range(30):
        with transaction.atomic():
            alerts.alert_raise(
                kind="factory_degraded",
                severity="warning",
                title="The factory failed 5 calls in a row",
                dedupe_key="factory_degraded",
                context={"sku": f"RUSH{i:02d}"},
            )
    with transaction.atomic():
        alerts.alerts_settle("factory_degraded")

    summary = Alert.objects.get(is_summary=True)
    assert send_all(summary) == {"log": "sent", "slack": "sent"}
    header = SlackStandIn.title_of(slack.received[0])
    assert header.startswith(":information_source: Factory degraded (all settled since): +29 more (RUSH01")
    assert summary.acknowledged_at is not None


def test_a_channel_that_stopped_answering_is_not_waited_on_again_by_every_delivery(channels_at, slack, fcm, settings):
    """Slack hung holds a notifications process for its whole timeout per delivery: with a rush's sold-out
    alerts pending, each process spent every few seconds on Slack again, and a critical page to FCM waited
    behind them (measured: 37-49 s, the queue growing). After a channel gave no answer, the process leaves
    its other deliveries to the sweep instead of calling it again, and the other channels go out at once."""
    settings.SLACK_TIMEOUT_SECONDS = 0.5
    registry.channels_forget()
    first = critical_alert()
    with transaction.atomic():
        second = alerts.alert_raise(kind="dead_letter", severity="critical", title="Dead letter on MATCHA")
    slack.hang_next(times=2)

    with pytest.raises(errors.DeliveryRetry):
        deliveries.delivery_send(AlertDelivery.objects.get(alert=first, channel="slack").pk)
    second_slack = AlertDelivery.objects.get(alert=second, channel="slack")
    assert deliveries.delivery_send(second_slack.pk) == "later", "not another timeout on a Slack that is hung"
    assert deliveries.delivery_send(AlertDelivery.objects.get(alert=second, channel="fcm").pk) == "sent"

    assert len(slack.received) == 1
    second_slack.refresh_from_db()
    assert (second_slack.status, second_slack.attempts, second_slack.claimed_at) == ("pending", 0, None)
    assert second_slack.resend_at > timezone.now(), "owed: the sweep sends it once the pause is over"
    slack.clear()  # Slack answers again
    registry.channels_forget()  # and the pause is over (a new process, or its time passed)
    AlertDelivery.objects.filter(pk=second_slack.pk).update(resend_at=timezone.now())
    assert deliveries.delivery_send(second_slack.pk) == "sent"


def test_a_channel_down_for_many_pauses_is_one_warning_when_it_stops_answering_and_one_when_it_sends_again(
    channels_at, fcm, settings, caplog
):
    """FCM down for minutes: every NOTIFICATIONS_RESEND_AFTER_SECONDS the sweep sends its deliveries again,
    the first one finds it still down and pauses it again, and each of those renewals logged "fcm gave no
    answer" again, every 30 s for the whole outage. One warning when it stops answering, one when it sends."""
    settings.NOTIFICATIONS_RESEND_AFTER_SECONDS = 0  # each pause is over by the next send: many pauses below
    alert = critical_alert()
    delivery = AlertDelivery.objects.get(alert=alert, channel="fcm")
    fcm.stop()  # refused: nothing listens on its port
    for _ in range(5):
        with pytest.raises(errors.DeliveryRetry):
            deliveries.delivery_send(delivery.pk)
    fcm.start()  # the same port: FCM is back

    assert deliveries.delivery_send(delivery.pk) == "sent"
    with transaction.atomic():
        second = alerts.alert_raise(kind="dead_letter", severity="critical", title="Dead letter on MATCHA")
    assert deliveries.delivery_send(AlertDelivery.objects.get(alert=second, channel="fcm").pk) == "sent"

    lines = [r.getMessage() for r in caplog.records if r.name == registry.__name__]
    assert len(lines) == 2, lines
    assert lines[0].startswith("fcm gave no answer (fcm: request failed: ConnectionError"), lines
    assert lines[1].startswith("fcm sends again after"), lines
    assert all(r.levelname == "WARNING" for r in caplog.records if r.name == registry.__name__)


@pytest.mark.parametrize("retry_after", ["1e12", "inf", "Fri, 31 Dec 9999 23:59:59 GMT", "31536000"])
def test_a_channels_absurd_retry_after_does_not_park_an_alert_for_years(channels_at, slack, retry_after):
    """Slack or FCM (or a proxy in front of them) answering 429 with an absurd Retry-After: the delivery
    raised OverflowError (left claimed, retried blind) or was parked for a year or millennia, never sent
    and never given up. A wait is bounded, as the factory's Retry-After is."""
    alert = critical_alert()
    delivery = AlertDelivery.objects.get(alert=alert, channel="slack")
    slack.fail_next(429, "rate_limited", {"Retry-After": retry_after})

    assert deliveries.delivery_send(delivery.pk) == "later"

    delivery.refresh_from_db()
    assert delivery.status == "pending" and delivery.claimed_at is None
    assert delivery.resend_at <= timezone.now() + timedelta(seconds=RETRY_AFTER_MAX_SECONDS + 1)


def test_a_run_of_back_in_stock_pushes_leaves_alone_fcm_that_gave_this_process_no_answer(channels_at, fcm, settings):
    """FCM hung: a delivery's page timed out, so this process leaves FCM alone for a while
    (docs/reliability.md). A run of back-in-stock pushes in the same process must do the same: it spent
    FCM's whole timeout again on each SKU's run, holding the process the pause is there to free."""
    settings.FCM_TIMEOUT_SECONDS = 0.5
    registry.channels_forget()
    alert = critical_alert()
    Subscription.objects.create(device=Device.objects.create(token="customer-0", platform="ios"), sku="VIRAL")
    announce("VIRAL")
    fcm.hang_next()
    with pytest.raises(errors.DeliveryRetry):
        deliveries.delivery_send(AlertDelivery.objects.get(alert=alert, channel="fcm").pk)
    fcm.clear()

    assert subscriptions.back_in_stock_send("VIRAL") == 0
    assert fcm.received == [], "FCM gave this process no answer: not called again before the pause is over"
    owed = Subscription.objects.get()
    assert owed.notified_at is None and owed.due_at is not None, "still owed, for the sweep"


def test_a_back_in_stock_push_that_got_no_answer_leaves_fcm_alone_for_this_process(channels_at, fcm, settings):
    settings.FCM_TIMEOUT_SECONDS = 0.5
    registry.channels_forget()
    Subscription.objects.create(device=Device.objects.create(token="customer-0", platform="ios"), sku="VIRAL")
    announce("VIRAL")
    fcm.hang_next()
    assert subscriptions.back_in_stock_send("VIRAL") == 0
    fcm.clear()

    alert = critical_alert()
    assert deliveries.delivery_send(AlertDelivery.objects.get(alert=alert, channel="fcm").pk) == "later"
    assert fcm.received == []


def test_a_comeback_still_being_handed_from_run_to_run_is_not_started_again_by_the_sweep(channels_at, fcm):
    """Thousands of subscribers take minutes of runs handing over every 4 s. The sweep resends a SKU whose
    pushes have been owed NOTIFICATIONS_RESEND_AFTER_SECONDS: while a chain of runs is still working
    through them, that started a second chain, then a third every 30 s, each taking a notifications
    process (docs/architecture.md: the runs of one SKU follow each other, the other process stays free)."""
    for i in range(8):
        Subscription.objects.create(device=Device.objects.create(token=f"customer-{i}", platform="ios"), sku="VIRAL")
    announce("VIRAL")
    # Announced a while ago: the runs have been pushing since.
    announced = timezone.now() - timedelta(seconds=settings.NOTIFICATIONS_RESEND_AFTER_SECONDS + 5)
    Subscription.objects.update(due_at=announced)
    broker().delete("notifications")
    fcm.latency_seconds = 0.05

    sent = subscriptions.back_in_stock_send("VIRAL", run_seconds=0.12)
    assert 1 <= sent < 8
    assert queued("notifications") == [("notifications.back_in_stock", ["VIRAL"])], "the next run is on its way"

    assert subscriptions.back_in_stock_resend() == 0, "no second chain of runs beside the one on its way"
    assert queued("notifications") == [("notifications.back_in_stock", ["VIRAL"])]
    fcm.latency_seconds = 0
    assert subscriptions.back_in_stock_send("VIRAL") == 8 - sent

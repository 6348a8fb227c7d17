"""The notifications admin as ops staff use it: devices and subscriptions, edited and deleted, and alerts,
which are not deleted here."""

import threading

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from notifications import subscriptions
from notifications.devices import device_deactivate, device_register
from notifications.models import Alert, AlertDelivery, Device, Subscription
from notifications.subscriptions import subscription_create
from testsupport.admin import form_as_sent, shown_messages
from testsupport.data import make_api_client
from testsupport.threads import connection_id, thread_keeping, until_waiting, waiting_for_a_lock

pytestmark = pytest.mark.django_db


def test_editing_a_device_from_a_page_opened_before_fcm_dropped_its_token_keeps_it_inactive(admin_client):
    """An ops phone's page is open to fix its note while FCM reports the token unregistered (the phone was
    reset): saving the page writes the note alone. Compared with the database instead of the page, the save
    took "active" for its own change and every alert was pushed to a dead token again."""
    phone = Device.objects.create(kind=Device.Kind.OPS, token="ops-phone-token", platform="android")
    url = reverse("admin:notifications_device_change", args=[phone.pk])
    editing = admin_client.get(url)

    device_deactivate(phone.pk, reason="FCM: UNREGISTERED")
    response = admin_client.post(url, form_as_sent(editing, user_ref="on-call phone 2"))

    assert response.status_code == 302
    phone.refresh_from_db()
    assert (phone.user_ref, phone.is_active) == ("on-call phone 2", False), "the save turned the dead token back on"


def test_an_alert_cannot_be_deleted_here_only_by_purge_alerts(admin_client):
    """Deleting an open alert in the admin took its pending deliveries and its escalation with it, and a
    storm group's first alert the alerts grouped under it: the summary went out without them.
    `manage.py purge_alerts` deletes only what nothing still needs, so the admin offers no delete."""
    alert = Alert.objects.create(kind="dead_letter", severity="critical", title="open", dedupe_key="dead_letter:X")
    AlertDelivery.objects.create(alert=alert, channel=AlertDelivery.Channel.SLACK)
    alerts_page = reverse("admin:notifications_alert_changelist")

    assert admin_client.get(reverse("admin:notifications_alert_delete", args=[alert.pk])).status_code == 403
    assert 'value="delete_selected"' not in admin_client.get(alerts_page).content.decode()
    admin_client.post(alerts_page, {"action": "delete_selected", "_selected_action": [alert.pk], "post": "yes"})
    assert Alert.objects.filter(pk=alert.pk).exists()
    assert AlertDelivery.objects.filter(alert=alert).exists(), "the send still owed stays"


def delete_in_the_admin(admin_client, device, how):
    """Delete the device as ops do, on its delete page or with "Delete selected devices"; the page they see."""
    if how == "delete page":
        url = reverse("admin:notifications_device_delete", args=[device.pk])
        return admin_client.post(url, {"post": "yes"}, follow=True)
    form = {"action": "delete_selected", "_selected_action": [device.pk], "post": "yes"}
    return admin_client.post(reverse("admin:notifications_device_changelist"), form, follow=True)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("how", ["delete page", "delete selected"])
@pytest.mark.parametrize("sku", ["VIRAL", "GLAZED"], ids=["re-armed", "new"])
def test_a_device_deleted_while_its_app_taps_notify_me_is_deleted_and_the_tap_answered(
    admin_client, monkeypatch, how, sku
):
    # The tap has locked its device (as subscribing, unsubscribing and unregistering do first) and is about to
    # write its subscription as ops delete the device. Django's cascade deleted the device's subscriptions
    # through the (device, SKU) index, then waited for the device row: for a subscription the tap re-arms,
    # MariaDB rolled one back (1213, the app's 503 or ops' error page); for a new one, the device's DELETE
    # then met the tap's row and failed. The delete waits for the tap instead, and takes its subscription too.
    client, _ = make_api_client("shop-app")
    device, _ = device_register(client=client, token="fcm-phone", platform="ios")
    subscription_create(client=client, device_id=device.pk, sku="VIRAL")
    outcomes, deleting, tap_locked, delete_waited = {}, [], threading.Event(), []
    device_get = subscriptions.device_get

    def device_locked_then_wait(**kwargs):
        locked = device_get(**kwargs)
        tap_locked.set()
        delete_waited.append(until_waiting(lambda: deleting and waiting_for_a_lock(deleting[0]), timeout=10))
        return locked

    def delete():
        deleting.append(connection_id())
        return delete_in_the_admin(admin_client, device, how)

    monkeypatch.setattr(subscriptions, "device_get", device_locked_then_wait)
    tap = thread_keeping(outcomes, "tap", lambda: subscription_create(client=client, device_id=device.pk, sku=sku))
    tap.start()
    tap_locked.wait(10)
    admin = thread_keeping(outcomes, "admin", delete)
    admin.start()
    for thread in (tap, admin):
        thread.join(30)

    assert delete_waited == [True], "the delete came while the tap held its device"
    assert isinstance(outcomes["tap"], tuple), outcomes["tap"]
    assert not isinstance(outcomes["admin"], Exception), outcomes["admin"]
    assert outcomes["admin"].status_code == 200
    deleted = {
        "delete page": f"The device “{device}” was deleted successfully.",
        "delete selected": "Successfully deleted 1 device.",
    }
    assert shown_messages(outcomes["admin"]) == [deleted[how]]
    assert not Device.objects.filter(pk=device.pk).exists()
    assert not Subscription.objects.filter(device_id=device.pk).exists(), "the tap's subscription went with it"


def indexes_deleted_through(call, table: str) -> list[str]:
    """Run `call`; the index through which MariaDB finds the rows of each DELETE it sent to `table`."""
    with CaptureQueriesContext(connection) as captured:
        call()
    deletes = [q["sql"] for q in captured.captured_queries if q["sql"].startswith(f"DELETE FROM `{table}`")]
    indexes = []
    with connection.cursor() as cursor:
        for sql in deletes:
            cursor.execute(f"EXPLAIN {sql}")
            columns = [column[0] for column in cursor.description]
            indexes.append(dict(zip(columns, cursor.fetchone()))["key"])
    return indexes


@pytest.mark.parametrize("shown", ["", "?notified_at__isempty=1", "?due_at__isempty=1&notified_at__isempty=1"])
def test_subscriptions_deleted_in_the_admin_go_by_primary_key_and_only_those_selected(admin_client, shown):
    """Listed as "not notified yet", "Delete selected subscriptions" repeated the list's filter in its DELETE,
    and MariaDB found the rows through the notified_at index before their primary key: the order a push's or
    a subscribe's write of the same row, by primary key, deadlocks with (donutsite.rows)."""
    client, _ = make_api_client("shop-app")
    device, _ = device_register(client=client, token="fcm-phone", platform="ios")
    viral, _ = subscription_create(client=client, device_id=device.pk, sku="VIRAL")
    subscription_create(client=client, device_id=device.pk, sku="GLAZED")
    maple, _ = subscription_create(client=client, device_id=device.pk, sku="MAPLE")
    changelist = reverse("admin:notifications_subscription_changelist") + shown
    form = {"action": "delete_selected", "_selected_action": [viral.pk, maple.pk], "post": "yes"}
    pages = []

    indexes = indexes_deleted_through(
        lambda: pages.append(admin_client.post(changelist, form, follow=True)), Subscription._meta.db_table
    )

    assert shown_messages(pages[0]) == ["Successfully deleted 2 subscriptions."]
    assert list(Subscription.objects.values_list("sku", flat=True)) == ["GLAZED"]
    assert indexes == ["PRIMARY"]

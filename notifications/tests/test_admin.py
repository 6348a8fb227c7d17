"""The notifications admin as ops staff use it: devices, and alerts, which are not deleted here."""

import pytest
from django.urls import reverse

from notifications.devices import device_deactivate
from notifications.models import Alert, AlertDelivery, Device
from testsupport.admin import form_as_sent

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

"""Devices: phones with an FCM token, an ops phone (alerts) or a client's customer's (back-in-stock)."""

from django.db import transaction
from django.utils import timezone

from donutsite.rows import row_create_or_update, rows_by_primary_key
from notifications.errors import UnknownDevice
from notifications.models import Device, Subscription

UNREGISTERED_REASON = "Unregistered by its client."


def device_register(
    *, client, token: str, platform: str, user_ref: str = "", kind: str = Device.Kind.CUSTOMER
) -> tuple[Device, bool]:
    """Register a device's FCM token for this client, or update (and re-activate) the client's own device
    with that token. Returns (device, created).

    Devices are per client: a token another client registered is not looked at, so this neither moves
    that device (its user_ref, its subscriptions) nor tells the caller it exists. Safe to repeat at once
    (donutsite.rows.row_create_or_update).
    """
    return row_create_or_update(
        Device,
        {"client": client, "token": token},
        {"platform": platform, "user_ref": user_ref, "kind": kind, "is_active": True, "deactivated_reason": ""},
    )


def device_get(*, client, device_id: int, active: bool = True, lock: bool = False) -> Device:
    """The client's device, active unless `active` is False (taking something back from one that was
    unregistered, by its app or by FCM: it is still the client's). Raises UnknownDevice otherwise.

    `lock` locks its row until the transaction ends, read as it is once any holder committed: subscribing,
    unsubscribing and unregistering a device take that lock first, so they go one at a time for a device
    (device_unregister says why)."""
    devices = Device.objects.filter(pk=device_id, client=client)
    if lock:
        devices = devices.select_for_update()
    device = (devices.filter(is_active=True) if active else devices).first()
    if device is None:
        raise UnknownDevice()
    return device


def device_unregister(*, client, device_id: int) -> None:
    """The client's device is to be pushed no more: it is deactivated and its subscriptions are deleted,
    pushes still owed included. A push is claimed by its subscription row, so neither a run already under
    way nor the sweep pushes the device after this commits (a push claimed before it may still land).
    The row stays, as for a token FCM unregistered: registering the token again makes it active again,
    with no subscriptions. Unregistering it again changes nothing more. Raises UnknownDevice for a device
    that is not the client's.

    One short transaction: the device row (its UPDATE locks it), then its subscriptions. Subscribing and
    unsubscribing lock the device row first too (device_get), so the three go one at a time for a device,
    and none deadlocks with another. They did, each a 503 for a toggle of "notify me": this DELETE reached
    the rows through the (device, SKU) index and then their primary key, an unsubscribe's DELETE could
    reach its row through the SKU's index, and in opposite orders MariaDB rolled one back; a subscribe read
    the device active, this committed, and its INSERT left an unregistered device subscribed. The
    subscriptions are deleted by primary key (donutsite.rows.rows_by_primary_key), as every write of them
    reaches them: through the (device, SKU) index this DELETE deadlocked with a receipt's announce, a
    sale's withdraw, or another device's subscribe, which reached the same rows through the SKU's.
    """
    with transaction.atomic():
        found = Device.objects.filter(pk=device_id, client=client).update(
            is_active=False, deactivated_reason=UNREGISTERED_REASON, updated_at=timezone.now()
        )
        if not found:
            raise UnknownDevice()
        rows_by_primary_key(Subscription.objects.filter(device_id=device_id)).delete()


def devices_delete(device_ids) -> int:
    """Delete these devices with their subscriptions, pushes still owed included (the admin's delete). Returns
    how many devices there were to delete.

    One transaction: the devices' rows locked first, in primary-key order, as subscribing, unsubscribing and
    unregistering lock theirs (device_unregister), so a tap on one of them goes before or after, never
    between; then their subscriptions by primary key (donutsite.rows.rows_by_primary_key), as every write
    of them reaches them; then the devices. Django's cascade deleted the subscriptions through the (device,
    SKU) index and came to the device rows last: a tap that held its device and was re-arming its
    subscription deadlocked with it (1213, the app's 503), and one subscribing anew made the device's DELETE
    fail on its foreign key (an error page). The cascade still looks for subscriptions as the devices go,
    and finds none: none can be made while their rows are locked."""
    with transaction.atomic():
        locked = Device.objects.select_for_update().filter(pk__in=device_ids).order_by("pk")
        ids = list(locked.values_list("pk", flat=True))
        rows_by_primary_key(Subscription.objects.filter(device_id__in=ids)).delete()
        Device.objects.filter(pk__in=ids).delete()
    return len(ids)


def device_deactivate(device_id: int, *, reason: str) -> None:
    Device.objects.filter(pk=device_id).update(is_active=False, deactivated_reason=reason[:200])

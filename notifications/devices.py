"""Devices: phones with an FCM token, an ops phone (alerts) or a client's customer's (back-in-stock)."""

from donutsite.rows import row_create_or_update
from notifications.errors import UnknownDevice
from notifications.models import Device


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


def device_get(*, client, device_id: int) -> Device:
    device = Device.objects.filter(pk=device_id, client=client, is_active=True).first()
    if device is None:
        raise UnknownDevice()
    return device


def device_deactivate(device_id: int, *, reason: str) -> None:
    Device.objects.filter(pk=device_id).update(is_active=False, deactivated_reason=reason[:200])

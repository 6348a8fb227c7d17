"""Devices: phones with an FCM token, an ops phone (alerts) or a client's customer's (back-in-stock)."""

from django.db import transaction

from notifications.errors import UnknownDevice
from notifications.models import Device


def device_register(
    *, client, token: str, platform: str, user_ref: str = "", kind: str = Device.Kind.CUSTOMER
) -> tuple[Device, bool]:
    """Register a device's FCM token for this client, or update (and re-activate) the client's own device
    with that token. Returns (device, created).

    Devices are per client: a token another client registered is not looked at, so this neither moves
    that device (its user_ref, its subscriptions) nor tells the caller it exists. Locks the client's own
    device row, if any.
    """
    with transaction.atomic():
        device, created = Device.objects.select_for_update().update_or_create(
            client=client,
            token=token,
            defaults={
                "platform": platform,
                "user_ref": user_ref,
                "kind": kind,
                "is_active": True,
                "deactivated_reason": "",
            },
        )
    return device, created


def device_get(*, client, device_id: int) -> Device:
    device = Device.objects.filter(pk=device_id, client=client, is_active=True).first()
    if device is None:
        raise UnknownDevice()
    return device


def device_deactivate(device_id: int, *, reason: str) -> None:
    Device.objects.filter(pk=device_id).update(is_active=False, deactivated_reason=reason[:200])

"""A SKU with many subscribers comes back: a real notifications worker (prefork, whose soft time limit ends
a task at 10 s) pushes every one of them once, in one go, with no sweep running to pick up the rest."""

import time

import pytest
from celery import current_app
from django.db import transaction
from django.test import override_settings

from notifications.channels import registry
from notifications.models import Device, Subscription
from notifications.subscriptions import back_in_stock_announce
from testsupport.processes import System, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

SUBSCRIBERS = 600


def test_more_pushes_than_one_task_may_send_all_go_out_once_without_the_sweep(fcm):
    fcm.latency_seconds = 0.02  # ~12 s of pushes one after another: more than the task's 10 s soft limit
    channels = {"FCM_ENDPOINT": fcm.url, "FCM_PROJECT_ID": "donuts", "FCM_ACCESS_TOKEN": "fcm-test-token"}
    devices = Device.objects.bulk_create(
        Device(token=f"customer-{i:04d}", platform="android") for i in range(SUBSCRIBERS)
    )
    Subscription.objects.bulk_create(Subscription(device=device, sku="VIRAL") for device in devices)
    system = System(broker_url=current_app.conf.broker_url)
    system.env.update(channels)
    system.flush_broker()
    registry.channels_forget()
    try:
        system.start_worker("-Q", "notifications")  # no beat: nothing sweeps
        with override_settings(**channels), transaction.atomic():
            assert back_in_stock_announce("VIRAL", "Viral Glazed") == SUBSCRIBERS
        started = time.monotonic()
        wait_until(
            lambda: not Subscription.objects.filter(notified_at__isnull=True).exists(),
            timeout=60,
            what="every subscription used up",
        )
        took = time.monotonic() - started
    finally:
        system.stop()
        registry.channels_forget()

    tokens = [r["body"]["message"]["token"] for r in fcm.received]
    assert sorted(tokens) == [f"customer-{i:04d}" for i in range(SUBSCRIBERS)], "each subscriber once"
    assert took > 10, "the pushes outlasted one task's soft time limit, so the hand-over was tested"

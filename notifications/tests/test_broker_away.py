"""The broker refuses connections (or accepts and never answers) while an alert is raised and a SKU comes
back in stock: nothing is lost.
The rows wait; once the broker is back the notifications sweep sends them, through a real Celery worker, to
the Slack and FCM stand-ins."""

import socket
import time

import pytest
import redis
from celery import current_app
from django.conf import settings
from django.db import transaction
from django.test import override_settings
from django.utils import timezone

from donutsite.dependencies import breakers
from notifications.alerts import alert_raise
from notifications.channels import registry
from notifications.models import AlertDelivery, Device, Subscription
from notifications.subscriptions import back_in_stock_announce
from notifications.tasks import sweep_task
from testsupport.data import make_api_client
from testsupport.processes import OUTPUT, System, free_port, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def channels(slack, fcm):
    """The same channel settings for this process (which raises the alert) and the worker (which sends)."""
    values = {
        "SLACK_WEBHOOK_URL": slack.url + "/services/T/B/x",
        "FCM_ENDPOINT": fcm.url,
        "FCM_PROJECT_ID": "donuts",
        "FCM_ACCESS_TOKEN": "fcm-test-token",
    }
    registry.channels_forget()
    with override_settings(**values):
        yield values
    registry.channels_forget()


@pytest.fixture
def worker(channels):
    system = System(broker_url=current_app.conf.broker_url)
    system.env.update(channels)
    system.flush_broker()
    try:
        yield system
    finally:
        system.stop()


@pytest.fixture(params=["refused", "hung"])
def away_broker_url(request):
    """A broker URL where nothing listens, or where a socket accepts connections and never answers."""
    if request.param == "refused":
        yield f"redis://127.0.0.1:{free_port()}/0"
        return
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        yield f"redis://127.0.0.1:{silent.getsockname()[1]}/0"


def test_alerts_and_back_in_stock_pushes_raised_while_the_broker_is_away_are_delivered_later(
    slack, fcm, worker, away_broker_url, monkeypatch
):
    client, _ = make_api_client()
    device = Device.objects.create(client=client, token="customer-phone-1", platform="android")
    Subscription.objects.create(device=device, sku="VIRAL")
    monkeypatch.setitem(current_app.conf, "broker_write_url", away_broker_url)

    with transaction.atomic():  # as the receipt that brings VIRAL back from zero does
        alert = alert_raise(kind="dead_letter", severity="critical", title="Dead letter on MAPLE")
        back_in_stock_announce("VIRAL", "Viral Glazed")
    # Committed; each message after commit met a refused connection, or one that never answered.

    assert set(AlertDelivery.objects.filter(alert=alert).values_list("channel", "status")) == {
        ("log", "pending"),
        ("slack", "pending"),
        ("fcm", "pending"),
    }
    owed = Subscription.objects.get()
    assert owed.notified_at is None and owed.due_at is not None
    assert redis.Redis.from_url(worker.broker_url).llen("notifications") == 0, "nothing reached the broker"

    monkeypatch.undo()  # the broker is back
    breakers["broker"].close()  # and this process's breaker has waited out its pause
    worker.start_worker()
    nothing = {"sweep_stopped": 0, "summaries": 0, "escalated": 0, "resent": 0, "back_in_stock_resent": 0}
    assert sweep_task() == nothing, "the sweep leaves rows alone until NOTIFICATIONS_RESEND_AFTER_SECONDS have passed"
    past = timezone.now() - timezone.timedelta(seconds=1)
    AlertDelivery.objects.update(resend_at=past)
    Subscription.objects.update(due_at=past - timezone.timedelta(seconds=30))

    swept = sweep_task()

    assert (swept["resent"], swept["back_in_stock_resent"]) == (3, 1)
    wait_until(
        lambda: (
            not AlertDelivery.objects.exclude(status="sent").exists()
            and Subscription.objects.filter(notified_at__isnull=False).exists()
        ),
        timeout=30,
        what="the worker to send what the sweep resent",
    )
    assert len(slack.received) == 1 and "Dead letter on MAPLE" in slack.received[0]["body"]["text"]
    pushes = [r["body"]["message"] for r in fcm.received]
    assert sorted(m.get("topic") or m.get("token") for m in pushes) == ["customer-phone-1", "ops-alerts"]
    assert Subscription.objects.get().due_at is None


def test_an_alert_being_sent_when_the_broker_dies_is_finished_and_sent_once(slack, fcm, channels, monkeypatch):
    """Redis dies while the notifications worker (prefork) is inside a Slack send. The send finishes and the
    delivery is marked sent, so no sweep sends it again: ops get the alert once. (Cancelling the running
    task at the connection loss, as Celery can, killed the send after Slack had it: the row stayed claimed
    and the sweep posted it a second time once the claim ran out.)"""
    from testsupport.chaos import RedisServer

    broker = RedisServer(OUTPUT / "alert_send_broker_loss")
    broker.start()
    system = System(broker_url=broker.url(0), log_dir=OUTPUT / "alert_send_broker_loss")
    system.env.update(channels)
    system.env["REDIS_URL"] = broker.url(1)
    monkeypatch.setitem(current_app.conf, "broker_write_url", broker.url(0))
    breakers["broker"].close()
    # Slack holds its answer (well inside SLACK_TIMEOUT_SECONDS): the send is in flight when Redis dies.
    slack.latency_seconds = settings.SLACK_TIMEOUT_SECONDS / 2
    try:
        worker = system.start_worker("-Q", "notifications")
        with transaction.atomic():
            alert = alert_raise(kind="dead_letter", severity="critical", title="Dead letter on MAPLE")
        in_flight = AlertDelivery.objects.filter(alert=alert, channel="slack", claimed_at__isnull=False)
        wait_until(in_flight.exists, timeout=15, what="the worker sending to Slack")

        broker.kill()
        wait_until(lambda: "Connection to broker lost" in worker.output(), timeout=10, what="the worker noticing")
        broker.start()
        wait_until(lambda: slack.received, timeout=10, what="Slack answering")
        wait_until(
            AlertDelivery.objects.filter(alert=alert, channel="slack", status="sent").exists,
            timeout=15,
            what=f"the delivery marked sent (left unsent, the sweep posts it again); log:\n{worker.output()[-3000:]}",
        )
        # Whatever claims there were have run out; the sweep sends whatever is still owed.
        AlertDelivery.objects.update(resend_at=timezone.now() - timezone.timedelta(seconds=1), claimed_at=None)
        sweep_task()
        time.sleep(slack.latency_seconds + 1)  # long enough for a second post to arrive, if one were sent

        posts = [(r["time"], r["body"]["text"][:80]) for r in slack.received]
        assert len(posts) == 1, f"{posts}\n{worker.output()[-3000:]}"
        assert worker.popen.poll() is None, worker.output()[-3000:]
    finally:
        system.stop()
        broker.kill()

"""The notification tasks' bodies and the alert admin's actions, in process against the Slack/FCM
stand-ins and the real test broker: a flaky Slack is retried and finally given up on quietly, the sweep
resends what never left and escalates what nobody acknowledged, ops acknowledge and resend alerts."""

import ast
import json
import time
from datetime import timedelta

import pytest
import redis
from celery import current_app
from celery.exceptions import Retry
from django.conf import settings
from django.contrib.auth.models import Permission, User
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from donutsite import sweeps
from notifications import alerts, checks, limits, subscriptions
from notifications.deliveries import delivery_send
from notifications.models import Alert, AlertDelivery, Device, Subscription
from notifications.tasks import back_in_stock_task, deliver_task, sweep_task
from testsupport.admin import shown_messages
from testsupport.data import critical_alert, make_product
from testsupport.fake_slack_fcm import FcmStandIn

pytestmark = pytest.mark.django_db

ALERTS = reverse("admin:notifications_alert_changelist")


@pytest.fixture
def queued():
    """The test broker's `notifications` queue, empty before and after; yields a reader of its delivery ids."""
    broker = redis.Redis.from_url(current_app.conf.broker_url)
    broker.delete("notifications")

    def delivery_ids():
        messages = [json.loads(raw) for raw in broker.lrange("notifications", 0, -1)]
        assert all(m["headers"]["task"] == "notifications.deliver" for m in messages)
        return sorted(list(ast.literal_eval(m["headers"]["argsrepr"]))[0] for m in messages)

    yield delivery_ids
    broker.delete("notifications")


def run(task, *args, retries=0):
    """Run a task's body as a worker would for its `retries`-th retry (a worker's request, not eager mode)."""
    task.push_request(id="task-1", args=list(args), kwargs={}, retries=retries, delivery_info={})
    task.request.called_directly = False
    try:
        return task(*args)
    finally:
        task.pop_request()


def staff(client, *codenames):
    """A staff member logged in with only these permissions on alerts."""
    user = User.objects.create_user("ops", password="pw", is_staff=True)
    user.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="notifications", codename__in=codenames)
    )
    client.force_login(user)
    return client


def slack_delivery() -> AlertDelivery:
    return AlertDelivery.objects.get(alert=critical_alert(), channel="slack")


def test_a_slack_failure_is_retried_through_the_broker(channels_at, slack, queued):
    slack.fail_next(500)
    delivery = slack_delivery()

    with pytest.raises(Retry):
        run(deliver_task, delivery.pk)

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("pending", 1)
    assert queued() == [delivery.pk]


def test_the_last_attempt_failing_leaves_the_delivery_to_the_sweep_quietly(channels_at, slack, queued):
    slack.fail_next(500)
    delivery = slack_delivery()

    assert run(deliver_task, delivery.pk, retries=deliver_task.max_retries) == "later"

    delivery.refresh_from_db()
    assert delivery.status == "pending" and "500" in delivery.last_error
    assert queued() == [], "no Celery retry: the sweep sends it again after NOTIFICATIONS_RESEND_AFTER_SECONDS"
    assert Alert.objects.count() == 1, "a channel's own failure raises no alert about itself"


def test_a_delivery_sent_after_a_retry(channels_at, slack, queued):
    delivery = slack_delivery()

    assert run(deliver_task, delivery.pk, retries=2) == "sent"

    assert AlertDelivery.objects.get(pk=delivery.pk).status == "sent"
    assert len(slack.received) == 1


def test_the_sweep_resends_deliveries_whose_message_never_left(channels_at, queued):
    alert = critical_alert()
    assert sweep_task()["resent"] == 0, "not before NOTIFICATIONS_RESEND_AFTER_SECONDS"
    AlertDelivery.objects.filter(alert=alert).update(resend_at=timezone.now() - timedelta(seconds=1))
    stuck = sorted(AlertDelivery.objects.filter(alert=alert).values_list("pk", flat=True))

    assert sweep_task()["resent"] == len(stuck) == 3  # log, Slack, FCM
    assert sweep_task()["resent"] == 0, "a resent delivery waits as long again"

    assert queued() == stuck


def test_the_sweep_pushes_a_warning_nobody_acknowledged_to_the_ops_phones(
    channels_at, queued, settings, django_capture_on_commit_callbacks
):
    warning = alerts.alert_raise(kind="factory_degraded", severity="warning", title="The factory failed 5 calls")
    Alert.objects.filter(pk=warning.pk).update(
        created_at=timezone.now() - timedelta(seconds=settings.ALERT_ESCALATE_AFTER_SECONDS + 1)
    )
    acknowledged = alerts.alert_raise(kind="forged_callback", severity="warning", title="A callback was refused")
    Alert.objects.filter(pk=acknowledged.pk).update(
        created_at=timezone.now() - timedelta(hours=1), acknowledged_at=timezone.now()
    )
    queued_before = set(queued())

    with django_capture_on_commit_callbacks(execute=True):
        assert sweep_task()["escalated"] == 1
    assert sweep_task()["escalated"] == 0, "escalated once"

    pushed = AlertDelivery.objects.get(alert=warning, channel="fcm")
    assert Alert.objects.get(pk=warning.pk).escalated_at is not None
    assert set(queued()) - queued_before == {pushed.pk}
    assert not AlertDelivery.objects.filter(alert=acknowledged, channel="fcm").exists()


def _finished(sweep: str, seconds_ago: float) -> None:
    """As the sweep would note it, had it last finished that long ago."""
    redis.Redis.from_url(settings.REDIS_URL).hset(sweeps._key(), sweep, repr(time.time() - seconds_ago))


def _sent_everywhere(alert: Alert) -> dict:
    return {d.channel: delivery_send(d.pk) for d in AlertDelivery.objects.filter(alert=alert)}


def test_ops_are_paged_once_when_the_factory_sweep_stops_and_told_when_it_runs_again(channels_at, slack, fcm):
    # The factory worker (factory@, the maintenance queue) runs factory.reconcile, the sweep that resends
    # lost restocks and raises the overdue warnings: with the factory's workers dead in a rush, and beat and
    # the notifications worker up, Slack and the phones heard nothing at all.
    _finished("factory.reconcile", seconds_ago=10)
    assert sweep_task()["sweep_stopped"] == 0, "finished lately: nothing to say"

    _finished("factory.reconcile", seconds_ago=90)
    assert sweep_task()["sweep_stopped"] == 1
    assert sweep_task()["sweep_stopped"] == 0, "one page per stop, not one per sweep"

    page = Alert.objects.get(kind="sweep_stopped")
    assert page.severity == "critical"
    assert _sent_everywhere(page) == {"log": "sent", "slack": "sent", "fcm": "sent"}
    told = slack.received[0]["body"]["text"]
    assert "factory.reconcile" in told and "worker_alive" in told and "factory@" in told

    sweeps.sweep_finished("factory.reconcile")  # the worker is back and ran it
    assert sweep_task()["sweep_stopped"] == 0
    page.refresh_from_db()
    assert page.acknowledged_at is not None, "acknowledged by itself: nobody is paged about it later"
    stand_down = Alert.objects.get(kind="sweep_stopped", is_summary=True)
    assert stand_down.severity == "info" and "all settled" in stand_down.title
    # The page woke someone: the phones hear it is over too, not only Slack.
    assert _sent_everywhere(stand_down) == {"log": "sent", "slack": "sent", "fcm": "sent"}
    assert fcm.received[-1]["body"]["message"]["notification"]["title"] == (
        "Sweep stopped (all settled): The factory sweep stopped (factory.reconcile)"
    )


def test_no_page_when_everything_starts_again_after_a_long_stop(channels_at):
    # make run (or the host) stopped for ten minutes: the notifications worker's first sweep may run before
    # the factory worker's, with the factory sweep's last run ten minutes old. Beat was stopped too.
    _finished("factory.reconcile", seconds_ago=600)
    _finished("notifications.sweep", seconds_ago=598)

    assert sweep_task()["sweep_stopped"] == 0
    assert sweep_task()["sweep_stopped"] == 0, "the next sweep, the factory worker not up yet"
    assert not Alert.objects.filter(kind="sweep_stopped").exists()

    # The factory sweep still has not run 70 s after everything started again (this one ran every 5 s):
    # that is a stop.
    _sweeps_earlier_by(70)
    _finished("notifications.sweep", seconds_ago=5)
    assert sweep_task()["sweep_stopped"] == 1


def _sweeps_earlier_by(seconds: float) -> None:
    """As if `seconds` went by: every time the sweeps noted is that much earlier."""
    noted = redis.Redis.from_url(settings.REDIS_URL)
    for name, at in noted.hgetall(sweeps._key()).items():
        noted.hset(sweeps._key(), name, repr(float(at) - seconds))


def test_a_factory_sweep_that_never_ran_is_left_to_the_probe(channels_at):
    redis.Redis.from_url(settings.REDIS_URL).hdel(sweeps._key(), "factory.reconcile")

    assert sweep_task()["sweep_stopped"] == 0
    assert not Alert.objects.filter(kind="sweep_stopped").exists()


def test_nothing_is_escalated_without_fcm(settings):
    settings.FCM_PROJECT_ID = ""

    assert sweep_task()["escalated"] == 0


def test_back_in_stock_pushes_each_subscriber_once(channels_at, fcm, client_app):
    device = Device.objects.create(client=client_app.api_client, token="customer-phone-1", platform="ios")
    Subscription.objects.create(device=device, sku="VIRAL")
    subscriptions.back_in_stock_announce("VIRAL", "Viral Glazed")

    assert back_in_stock_task("VIRAL") == 1
    assert back_in_stock_task("VIRAL") == 0

    assert [r["body"]["message"]["token"] for r in fcm.received] == ["customer-phone-1"]


def test_a_back_in_stock_push_names_the_product_as_the_shop_does_not_its_sku(channels_at, fcm, client_app):
    from inventory.services import stock_adjust

    maple = make_product("MPL-0042", on_hand=0, name="Maple Bar")
    device = Device.objects.create(client=client_app.api_client, token="customer-phone-1", platform="ios")
    Subscription.objects.create(device=device, sku="MPL-0042")
    stock_adjust(product=maple, quantity=12, reason="a tray came in")

    assert back_in_stock_task("MPL-0042") == 1

    (push,) = [r["body"]["message"] for r in fcm.received]
    assert push["notification"]["body"] == "Maple Bar is back. Grab one before the next video goes viral!"
    assert push["data"]["sku"] == "MPL-0042"  # what the app opens


def test_ops_acknowledge_alerts_in_the_admin(admin_client, channels_at):
    alert = critical_alert()

    response = admin_client.post(ALERTS, {"action": "acknowledge", "_selected_action": [alert.pk]}, follow=True)

    assert "1 alert(s) acknowledged." in response.content.decode()
    alert.refresh_from_db()
    assert alert.acknowledged_at is not None and alert.acknowledged_by.username == "admin"


def test_an_acknowledgement_in_the_admin_tells_slack_who_took_it_and_pages_nobody(
    admin_client, channels_at, slack, fcm, queued, django_capture_on_commit_callbacks
):
    paged = critical_alert()
    for delivery_id in queued():
        run(deliver_task, delivery_id)
    slack.clear()
    fcm.clear()
    sold_out = alerts.alert_raise(kind="sold_out", severity="info", title="GLAZED sold out", dedupe_key="sold_out")

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(ALERTS, {"action": "acknowledge", "_selected_action": [paged.pk, sold_out.pk]})
    for delivery_id in queued():
        run(deliver_task, delivery_id)

    assert len(slack.received) == 1, "one line for the action; the info alert taken with it is not news"
    assert "Acknowledged by admin: Dead letter: VIRAL (factory.restock_place gave up)" in slack.received[0]["raw"]
    assert fcm.received == [], "nobody's phone is paged to say a page was taken"


def test_staff_who_may_only_look_at_alerts_cannot_acknowledge_or_resend_them(
    client, channels_at, queued, django_capture_on_commit_callbacks
):
    alert = critical_alert()
    AlertDelivery.objects.filter(alert=alert).update(status="failed", last_error="slack: HTTP 500")
    viewer = staff(client, "view_alert")

    page = viewer.get(ALERTS)
    assert page.status_code == 200 and alert.title in page.content.decode()
    for action in ("acknowledge", "resend", "resend_settled_too"):
        assert f'value="{action}"' not in page.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        for action in ("acknowledge", "resend", "resend_settled_too"):
            viewer.post(ALERTS, {"action": action, "_selected_action": [alert.pk]})

    alert.refresh_from_db()
    assert alert.acknowledged_at is None
    assert set(AlertDelivery.objects.filter(alert=alert).values_list("status", flat=True)) == {"failed"}
    assert queued() == []


def test_staff_who_may_change_alerts_acknowledge_and_resend_them(
    client, channels_at, queued, django_capture_on_commit_callbacks
):
    alert = critical_alert()
    AlertDelivery.objects.filter(alert=alert).update(status="failed", last_error="slack: HTTP 500")
    ops = staff(client, "view_alert", "change_alert")

    with django_capture_on_commit_callbacks(execute=True):
        resent = ops.post(ALERTS, {"action": "resend", "_selected_action": [alert.pk]}, follow=True)
    acknowledged = ops.post(ALERTS, {"action": "acknowledge", "_selected_action": [alert.pk]}, follow=True)

    assert "1 alert(s) sent again: 3 delivery(ies) queued." in resent.content.decode()
    assert "1 alert(s) acknowledged." in acknowledged.content.decode()
    alert.refresh_from_db()
    assert alert.acknowledged_by.username == "ops"
    assert len(queued()) == 3


def test_acknowledging_and_resending_are_written_to_the_alerts_history(
    client, channels_at, queued, django_capture_on_commit_callbacks
):
    alert = critical_alert()
    ops = staff(client, "view_alert", "change_alert")

    with django_capture_on_commit_callbacks(execute=True):
        ops.post(ALERTS, {"action": "resend", "_selected_action": [alert.pk]})
    ops.post(ALERTS, {"action": "acknowledge", "_selected_action": [alert.pk]})
    again = ops.post(ALERTS, {"action": "acknowledge", "_selected_action": [alert.pk]}, follow=True)

    history = ops.get(reverse("admin:notifications_alert_history", args=[alert.pk]))
    assert [(entry.user.username, entry.get_change_message()) for entry in history.context["action_list"]] == [
        ("ops", "Sent again: 3 delivery(ies) queued."),
        ("ops", "Acknowledged."),
    ], "who sent it again and who acknowledged it, once: acknowledging it again changed nothing"
    assert "0 alert(s) acknowledged." in again.content.decode()


def test_ops_send_an_alert_again_from_the_admin(admin_client, channels_at, queued, django_capture_on_commit_callbacks):
    alert = critical_alert()
    AlertDelivery.objects.filter(alert=alert).update(status="failed", last_error="slack: HTTP 500")
    deliveries = sorted(AlertDelivery.objects.filter(alert=alert).values_list("pk", flat=True))

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(ALERTS, {"action": "resend", "_selected_action": [alert.pk]}, follow=True)

    assert "1 alert(s) sent again: 3 delivery(ies) queued." in response.content.decode()
    assert set(AlertDelivery.objects.filter(alert=alert).values_list("status", "last_error")) == {("pending", "")}
    assert queued() == deliveries


def test_a_warning_raised_before_its_restock_was_named_restock_id_still_links_the_restock_when_sent_again(
    admin_client, channels_at, slack, queued, django_capture_on_commit_callbacks
):
    # factory_cancelled, factory_over_quantity and stock_over_capacity kept the restock under "restock" until
    # they were fixed; their rows stay, open ones for good, and are rendered again at every send.
    with transaction.atomic():
        alert = alerts.alert_raise(
            kind="factory_cancelled",
            severity="warning",
            title="The factory cancelled a restock of GLAZED",
            dedupe_key="factory_cancelled:GLAZED",
            context={"sku": "GLAZED", "restock": 7, "order_id": "F-000123", "on_hand": 0},
        )
    AlertDelivery.objects.filter(alert=alert).update(status="failed", last_error="slack: HTTP 500")

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(ALERTS, {"action": "resend", "_selected_action": [alert.pk]})
    for delivery_id in queued():
        delivery_send(delivery_id)

    (posted,) = [r["body"] for r in slack.received]
    fields = [field["text"] for block in posted["blocks"] for field in block.get("fields", [])]
    assert {"*Restock*\n7", "*SKU*\nGLAZED"} <= set(fields)
    assert f"{settings.PUBLIC_BASE_URL}/admin/inventory/restock/7/change/|Restock>" in str(posted["blocks"])


def test_sending_alerts_again_skips_the_acknowledged_and_settled_ones(
    admin_client, channels_at, fcm, queued, django_capture_on_commit_callbacks
):
    """Ops select every alert of the list and send them again: only the one still open goes out. Resending all
    of them paged the phones about a dead letter settled minutes before, and sent its all-clear and the
    "Acknowledged by" line again, so a page read as news about a solved problem."""
    still_open = critical_alert()
    with transaction.atomic():
        alerts.alert_raise(
            kind="dead_letter",
            severity="critical",
            title="Dead letter: LEMON (factory.restock_place gave up)",
            dedupe_key="dead_letter:LEMON",
            context={"sku": "LEMON"},
        )
        alerts.alerts_settle("dead_letter:LEMON")
        taken = alerts.alert_raise(kind="factory_degraded", severity="warning", title="The factory is slow")
        alerts.alerts_acknowledge_by_hand([taken], user=User.objects.get(username="admin"))
    AlertDelivery.objects.update(status="sent")  # every one went out when it was raised
    everything = list(Alert.objects.values_list("pk", flat=True))
    assert len(everything) == 5, "the open page, the settled one, its all-clear, the taken warning and its line"
    open_deliveries = sorted(AlertDelivery.objects.filter(alert=still_open).values_list("pk", flat=True))

    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(ALERTS, {"action": "resend", "_selected_action": everything}, follow=True)
    for delivery_id in queued():
        run(deliver_task, delivery_id)

    assert queued() == open_deliveries
    assert [FcmStandIn.title_of(push) for push in fcm.received] == [still_open.title], "no page about LEMON"
    assert set(AlertDelivery.objects.exclude(alert=still_open).values_list("status", flat=True)) == {"sent"}
    assert shown_messages(response) == [
        "1 alert(s) sent again: 3 delivery(ies) queued; 4 skipped: acknowledged or settled."
    ]


def test_an_all_clear_whose_push_failed_is_sent_again_only_by_the_action_that_says_so(
    admin_client, channels_at, fcm, queued, django_capture_on_commit_callbacks
):
    """A settled page's all-clear is born acknowledged; if FCM was down until its push failed for good, the
    phones paged about the trouble never heard it was over. The usual action skips it; the one named for
    acknowledged and settled alerts sends it, and the alert's history says it was sent though acknowledged."""
    with transaction.atomic():
        critical_alert()
        alerts.alerts_settle("dead_letter:Dead letter: VIRAL (factory.restock_place gave up)")
    all_clear = Alert.objects.get(is_summary=True)
    AlertDelivery.objects.update(status="sent")
    AlertDelivery.objects.filter(alert=all_clear, channel="fcm").update(status="failed", last_error="fcm: HTTP 503")
    everything = list(Alert.objects.values_list("pk", flat=True))

    with django_capture_on_commit_callbacks(execute=True):
        usual = admin_client.post(ALERTS, {"action": "resend", "_selected_action": everything}, follow=True)
    assert queued() == []
    assert shown_messages(usual) == [
        "0 alert(s) sent again: 0 delivery(ies) queued; 2 skipped: acknowledged or settled."
    ]

    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post(ALERTS, {"action": "resend_settled_too", "_selected_action": [all_clear.pk]}, follow=True)
    for delivery_id in queued():
        run(deliver_task, delivery_id)

    assert [FcmStandIn.title_of(push) for push in fcm.received] == ["Dead letter (all settled): VIRAL"]
    history = admin_client.get(reverse("admin:notifications_alert_history", args=[all_clear.pk]))
    assert [entry.get_change_message() for entry in history.context["action_list"]] == [
        "Sent again though acknowledged: 3 delivery(ies) queued."
    ]


def test_every_notification_task_is_bounded_inside_the_claim_lease():
    """A claim is taken over once it is older than CLAIM_LEASE: no notification task may still be running then."""
    tasks = [t for name, t in current_app.tasks.items() if name.startswith("notifications.")]
    assert {t.name for t in tasks} >= {"notifications.deliver", "notifications.back_in_stock", "notifications.sweep"}
    for task in tasks:
        assert task.soft_time_limit < task.time_limit < limits.CLAIM_LEASE.total_seconds(), task.name


def test_channel_timeouts_that_could_outlast_the_tasks_soft_limit_are_refused(settings):
    assert checks.timing_problems() == []
    settings.SLACK_TIMEOUT_SECONDS = 5  # two calls and a rate-limit wait: 13 s
    assert any("SLACK_TIMEOUT_SECONDS" in p for p in checks.timing_problems())
    settings.SLACK_TIMEOUT_SECONDS = 3
    settings.FCM_TIMEOUT_SECONDS = limits.TASK_SOFT_TIME_LIMIT - limits.RUN_SECONDS
    assert any("FCM_TIMEOUT_SECONDS" in p for p in checks.timing_problems())


@pytest.mark.parametrize("channel", [c for c in AlertDelivery.Channel.values if c != AlertDelivery.Channel.LOG])
def test_each_channel_that_calls_out_has_a_timeout_held_under_the_soft_limit(settings, channel):
    """A channel added to AlertDelivery.Channel fails here until it has its <CHANNEL>_TIMEOUT_SECONDS and
    notifications/checks.py refuses one that could outlast the tasks' soft time limit."""
    name = f"{channel.upper()}_TIMEOUT_SECONDS"
    assert hasattr(settings, name), f"the {channel} channel needs its {name} setting"
    setattr(settings, name, limits.TASK_SOFT_TIME_LIMIT)

    assert any(name in problem for problem in checks.timing_problems()), f"checks.timing_problems ignores {name}"

"""Raising alerts: which channels, storm grouping with its summary, escalation, and switches."""

import threading
from datetime import timedelta

import pytest
from django.db import connections, transaction
from django.test import override_settings
from django.utils import timezone

from notifications import alerts
from notifications.deliveries import message_for
from notifications.models import Alert, AlertDelivery, AlertGroup, AlertLock
from testsupport.data import raise_alert
from testsupport.plans import plans
from testsupport.threads import thread_keeping, until_waiting, waiting_for_a_lock

pytestmark = pytest.mark.django_db

BOTH_CHANNELS = {
    "SLACK_WEBHOOK_URL": "http://127.0.0.1:9/slack",
    "FCM_PROJECT_ID": "donuts",
    "FCM_ACCESS_TOKEN": "t",
    "SLACK_MIN_SEVERITY": "info",
    "FCM_MIN_SEVERITY": "critical",
}


def channels(alert):
    return sorted(AlertDelivery.objects.filter(alert=alert).values_list("channel", flat=True))


@override_settings(**BOTH_CHANNELS)
def test_each_severity_reaches_the_channels_configured_for_it():
    assert channels(raise_alert("a", "info")) == ["log", "slack"]
    assert channels(raise_alert("b", "warning")) == ["log", "slack"]
    assert channels(raise_alert("c", "critical")) == ["fcm", "log", "slack"]


def test_without_configuration_only_the_log_channel_is_used():
    assert channels(raise_alert("a", "critical")) == ["log"]


@override_settings(**BOTH_CHANNELS)
def test_a_storm_sends_one_alert_then_one_summary_with_the_right_count():
    raised = [raise_alert() for _ in range(500)]

    leader = raised[0]
    leader.refresh_from_db()
    assert AlertDelivery.objects.count() == 3, "only the first alert went out, on each of its channels"
    assert leader.suppressed_count == 499
    assert Alert.objects.count() == 1, "one row for the group, with its count, not a row per event"
    assert {a.pk for a in raised} == {leader.pk}, "a held-back alert answers with the alert that counts it"
    assert alerts.alert_groups_flush() == 0, "the window is still open"

    AlertGroup.objects.update(window_ends_at=timezone.now() - timedelta(seconds=1), flush_at=timezone.now())
    assert alerts.alert_groups_flush() == 1

    summary = Alert.objects.get(is_summary=True)
    assert summary.title == "Dead letter: +499 more"
    assert summary.context["grouped"] == 499
    assert channels(summary) == ["fcm", "log", "slack"]
    assert AlertDelivery.objects.count() == 6, "500 failures, 2 messages per channel"
    assert alerts.alert_groups_flush() == 0, "the summary goes out once"


def test_keys_that_differ_only_in_case_or_accent_are_two_groups():
    # Dedupe keys carry SKUs, which compare exactly: GLAZED and glazed selling out are two alerts.
    raised = [raise_alert(f"sold_out:{sku}", "info") for sku in ("GLAZED", "glazed", "MATCHA", "MATCHÁ")]

    assert len({alert.pk for alert in raised}) == 4, "none was held back in another SKU's group"
    assert sorted(AlertGroup.objects.values_list("dedupe_key", flat=True)) == [
        "sold_out:GLAZED",
        "sold_out:MATCHA",
        "sold_out:MATCHÁ",
        "sold_out:glazed",
    ]


def test_after_the_window_the_next_alert_leads_a_new_group():
    first = raise_alert()
    AlertGroup.objects.update(window_ends_at=timezone.now() - timedelta(seconds=1))

    second = raise_alert()

    second.refresh_from_db()
    assert channels(second) == ["log"]
    assert not Alert.objects.filter(is_summary=True).exists(), "nothing was held back, so no summary"
    assert first.pk != second.pk


def test_a_closed_window_with_held_alerts_is_summarized_before_a_new_leader():
    raise_alert()
    raise_alert()
    AlertGroup.objects.update(window_ends_at=timezone.now() - timedelta(seconds=1))

    raise_alert()

    assert Alert.objects.get(is_summary=True).title == "Dead letter: +1 more"


@pytest.mark.django_db(transaction=True)
def test_concurrent_alerts_with_one_key_elect_one_leader():
    # A transactional test run before this one may have flushed the stripes the migration made.
    AlertLock.objects.bulk_create([AlertLock(id=i) for i in range(AlertLock.STRIPES)], ignore_conflicts=True)
    barrier = threading.Barrier(12)

    def one():
        try:
            barrier.wait()
            raise_alert()
        finally:
            connections.close_all()

    threads = [threading.Thread(target=one) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert Alert.objects.count() == 1
    assert Alert.objects.get().suppressed_count == 11
    assert AlertGroup.objects.get().suppressed_count == 11


@override_settings(**BOTH_CHANNELS, ALERT_ESCALATE_AFTER_SECONDS=60)
def test_an_unacknowledged_warning_is_escalated_to_fcm_once():
    ignored = raise_alert("x", "warning")
    seen = raise_alert("y", "warning")
    fresh = raise_alert("z", "warning")
    Alert.objects.filter(pk__in=[ignored.pk, seen.pk]).update(created_at=timezone.now() - timedelta(seconds=61))
    alerts.alert_acknowledge(seen, user=None)

    assert alerts.alerts_escalate() == 1
    assert alerts.alerts_escalate() == 0

    assert channels(ignored) == ["fcm", "log", "slack"]
    assert channels(seen) == ["log", "slack"] and channels(fresh) == ["log", "slack"]


@override_settings(**BOTH_CHANNELS, ALERT_ESCALATE_AFTER_SECONDS=60)
def test_a_warning_acknowledged_while_the_sweep_escalates_is_not_pushed_to_the_phones(monkeypatch):
    # Ops acknowledge a warning (or its receipt does, for an overdue restock) after the sweep has listed the
    # warnings to escalate and before it reaches that one: nobody's phone is paged about it.
    first, second = raise_alert("x", "warning"), raise_alert("y", "warning")
    Alert.objects.update(created_at=timezone.now() - timedelta(seconds=61))
    listed = alerts._escalation_due

    def listed_then_one_acknowledged():
        due = listed()
        Alert.objects.filter(pk=second.pk).update(acknowledged_at=timezone.now())
        return due

    monkeypatch.setattr(alerts, "_escalation_due", listed_then_one_acknowledged)

    assert alerts.alerts_escalate() == 1
    assert [channels(first), channels(second)] == [["fcm", "log", "slack"], ["log", "slack"]]


@override_settings(**BOTH_CHANNELS, ALERT_ESCALATE_AFTER_SECONDS=60, RECONCILE_INTERVAL_SECONDS=5)
def test_warnings_raised_by_one_sweep_are_escalated_in_one_push_though_the_escalation_due_falls_between_them():
    # The factory sweep raises every overdue warning in the same few milliseconds after beat's tick, and the
    # notifications sweep, sent at the same tick, escalates those due by then: its cutoff fell among them, so
    # one restock woke the phones alone and the others 5 s later (seen under make run).
    first = raise_alert("overdue:1", "warning", title="GLAZED is late", context={"sku": "GLAZED"})
    second = raise_alert("overdue:2", "warning", title="MAPLE is late", context={"sku": "MAPLE"})
    Alert.objects.filter(pk=first.pk).update(created_at=timezone.now() - timedelta(seconds=61))
    Alert.objects.filter(pk=second.pk).update(created_at=timezone.now() - timedelta(seconds=59))

    assert alerts.alerts_escalate() == 2
    assert list(Alert.objects.filter(deliveries__channel="fcm").values_list("title", flat=True)) == [
        "Unacknowledged: 2 warnings (GLAZED, MAPLE)"
    ]


@override_settings(**BOTH_CHANNELS, ALERT_ESCALATE_AFTER_SECONDS=60)
def test_a_grouped_escalation_names_each_sku_once_though_a_summary_among_them_lists_several():
    # Seen under make run: a factory warning's summary ("Factory degraded: +16 more", its SKU field a list)
    # escalated with the next factory warning pushed "Unacknowledged: 2 warnings (CINNAMON, CHOCOLATE, MATCHA,
    # CHOCOLATE)".
    raise_alert("degraded:summary", "warning", title="Factory degraded: +16 more", context={"sku": "CHOCOLATE, MATCHA"})
    raise_alert("degraded", "warning", title="The factory failed 5 calls in a row", context={"sku": "MATCHA"})
    Alert.objects.update(created_at=timezone.now() - timedelta(seconds=61))

    assert alerts.alerts_escalate() == 2
    pushed = Alert.objects.filter(deliveries__channel="fcm").get()
    assert pushed.title == "Unacknowledged: 2 warnings (CHOCOLATE, MATCHA)"


@override_settings(**BOTH_CHANNELS, ALERT_ESCALATE_AFTER_SECONDS=60)
def test_alerts_grouped_under_a_group_key_keep_their_rows_and_are_acknowledged_one_by_one():
    # Each restock's overdue warning: one Slack line and a summary for a storm, but each warning is closed
    # by its own restock's receipt, and only the ones still open are pushed to the phones.
    raised = [
        raise_alert(f"overdue:{sku}", "warning", title=f"{sku} is late", group_key="overdue", context={"sku": sku})
        for sku in ("GLAZED", "MAPLE", "LEMON")
    ]

    assert len({alert.pk for alert in raised}) == 3, "a row each, with its own text"
    assert [len(channels(alert)) for alert in raised] == [2, 0, 0], "only the first is sent"
    AlertGroup.objects.filter(dedupe_key="overdue").update(window_ends_at=timezone.now(), flush_at=timezone.now())
    assert alerts.alert_groups_flush() == 1
    summary = Alert.objects.get(is_summary=True)
    assert (summary.title, summary.context["sku"]) == (
        "Dead letter: +2 more (new: MAPLE, LEMON)",
        "GLAZED, MAPLE, LEMON",
    )
    assert summary.acknowledged_at is not None, "their Slack line: each of them is acknowledged on its own"

    alerts.alerts_acknowledge("overdue:GLAZED")
    alerts.alerts_acknowledge("overdue:LEMON")
    Alert.objects.update(created_at=timezone.now() - timedelta(seconds=61))

    assert alerts.alerts_escalate() == 1
    assert Alert.objects.filter(deliveries__channel="fcm").get().title == "MAPLE is late"


@override_settings(**BOTH_CHANNELS)
def test_a_group_key_s_summary_names_a_sku_as_open_while_any_of_its_warnings_is():
    # JELLY's restock was received and its next one went overdue in the same window: JELLY is overdue again.
    # Both of MAPLE's were received.
    def overdue(key, sku):
        raise_alert(key, "warning", title=f"{sku} is late", group_key="overdue", context={"sku": sku})

    overdue("overdue:1", "GLAZED")
    overdue("overdue:2", "JELLY")
    overdue("overdue:3", "MAPLE")
    alerts.alerts_acknowledge("overdue:2")
    overdue("overdue:4", "JELLY")
    overdue("overdue:5", "MAPLE")
    alerts.alerts_acknowledge("overdue:3")
    alerts.alerts_acknowledge("overdue:5")
    AlertGroup.objects.filter(dedupe_key="overdue").update(window_ends_at=timezone.now(), flush_at=timezone.now())
    assert alerts.alert_groups_flush() == 1

    summary = Alert.objects.get(is_summary=True)
    assert summary.title == "Dead letter: +4 more (new: JELLY; settled since: MAPLE)"
    assert (summary.context["new"], summary.context["settled"]) == ("JELLY", "MAPLE")


@override_settings(ALERTS_DISABLED_KINDS=["dead_letter"])
def test_a_kind_can_be_switched_off():
    assert raise_alert() is None
    assert not Alert.objects.exists()


def raise_dead_letter(sku, severity="critical"):
    return raise_alert(
        severity=severity, title=f"Dead letter: {sku} (factory.restock_place gave up)", context={"sku": sku}
    )


@override_settings(**BOTH_CHANNELS)
def test_a_critical_alert_about_a_new_sku_is_summarized_soon_naming_every_sku(settings):
    leader = raise_dead_letter("VIRAL")
    raise_dead_letter("MAPLE")
    group = AlertGroup.objects.get()

    assert group.flush_at <= timezone.now() + timedelta(seconds=settings.ALERT_CRITICAL_FLUSH_SECONDS)
    assert group.flush_at < group.window_ends_at, "a new critical fact does not wait for the window's end"
    assert alerts.alert_groups_flush() == 0, "not before its flush time"
    AlertGroup.objects.update(flush_at=timezone.now())
    assert alerts.alert_groups_flush() == 1

    summary = Alert.objects.get(is_summary=True)
    assert summary.title == "Dead letter: +1 more (new: MAPLE)"
    assert "Covers: VIRAL, MAPLE." in summary.text
    assert (summary.context["sku"], summary.context["new"]) == ("VIRAL, MAPLE", "MAPLE")
    assert channels(summary) == ["fcm", "log", "slack"]

    raise_dead_letter("MAPLE")
    raise_dead_letter("VIRAL")
    assert AlertGroup.objects.get().flush_at == AlertGroup.objects.get().window_ends_at, "nothing new: the flood waits"
    assert Alert.objects.filter(pk=leader.pk, suppressed_count=3).exists()
    assert Alert.objects.count() == 2


@override_settings(**BOTH_CHANNELS)
def test_a_new_sku_in_a_warning_group_waits_for_the_window():
    raise_dead_letter("VIRAL", severity="warning")
    raise_dead_letter("MAPLE", severity="warning")

    group = AlertGroup.objects.get()
    assert group.flush_at == group.window_ends_at and group.new_facts == ["MAPLE"]
    AlertGroup.objects.update(window_ends_at=timezone.now(), flush_at=timezone.now())
    assert alerts.alert_groups_flush() == 1
    assert Alert.objects.get(is_summary=True).context["sku"] == "VIRAL, MAPLE"
    assert AlertGroup.objects.get().leader is None, "the window closed: the next alert leads a new group"


@override_settings(**BOTH_CHANNELS, ALERT_CRITICAL_FLUSH_SECONDS=0)
def test_a_second_outages_summary_says_when_it_began_not_the_settled_first_outages_alert(monkeypatch):
    # The first outage's dead letters paged (VIRAL) and were summarized (MAPLE); ops redrove them all. Two
    # minutes later, inside the same window, the factory fails again: its summary is the first message about
    # it, and must say when this trouble began, not point ops at VIRAL's page, settled two minutes before.
    first = raise_dead_letter("VIRAL")
    raise_dead_letter("MAPLE")
    assert alerts.alert_groups_flush() == 1
    with transaction.atomic():
        alerts.alerts_settle("dead_letter:factory.restock_place")  # every one redriven
    assert not Alert.objects.filter(acknowledged_at__isnull=True).exists()

    began = timezone.now().replace(microsecond=0) + timedelta(minutes=2)
    monkeypatch.setattr(timezone, "now", lambda: began)
    raise_dead_letter("LEMON")
    raise_dead_letter("VIRAL")
    assert AlertGroup.objects.get().window_ends_at > began, "inside the first outage's window"
    assert alerts.alert_groups_flush() == 1

    summary = Alert.objects.filter(is_summary=True, acknowledged_at__isnull=True).get()
    slack = message_for(summary)
    assert slack.title == "Dead letter: +2 more (new: LEMON, VIRAL)"
    assert slack.text.startswith(
        f"2 alert(s) like this one since {began:%H:%M:%S} UTC, none sent on its own: "
        "it began again after everything before it was settled. Covers: LEMON, VIRAL."
    )
    assert f"alert {first.pk}" not in slack.text and f"{first.created_at:%H:%M:%S}" not in slack.text
    assert (slack.facts["SKU"], slack.facts["New"], slack.facts["Grouped"]) == ("LEMON, VIRAL", "LEMON, VIRAL", "2")


@override_settings(**BOTH_CHANNELS, ALERT_CRITICAL_FLUSH_SECONDS=0)
@pytest.mark.parametrize("second_outage", [False, True], ids=["first outage", "second outage"])
def test_a_windows_second_summary_counts_since_the_first_summary_and_says_so(monkeypatch, second_outage):
    # A new SKU's critical alert brought a summary forward; the window's end summarizes what came after it.
    # Its count starts at that summary, so its text must too: "N since <the window's first alert>" read as
    # all of them, fewer than ops had already been told of.
    start = timezone.now().replace(microsecond=0)
    monkeypatch.setattr(timezone, "now", lambda: start)
    raise_dead_letter("VIRAL")
    if second_outage:  # the first outage settled: the next one's summaries say when it began, not its alert
        with transaction.atomic():
            alerts.alerts_settle("dead_letter:factory.restock_place")
        monkeypatch.setattr(timezone, "now", lambda: start + timedelta(seconds=30))
        raise_dead_letter("LEMON")
    monkeypatch.setattr(timezone, "now", lambda: start + timedelta(seconds=60))
    raise_dead_letter("MAPLE")
    assert alerts.alert_groups_flush() == 1
    first_summary = Alert.objects.filter(is_summary=True).latest("pk")

    monkeypatch.setattr(timezone, "now", lambda: start + timedelta(seconds=120))
    raise_dead_letter("MAPLE")
    raise_dead_letter("VIRAL")
    AlertGroup.objects.update(window_ends_at=timezone.now(), flush_at=timezone.now())
    assert alerts.alert_groups_flush() == 1

    slack = message_for(Alert.objects.filter(is_summary=True).latest("pk"))
    assert slack.title.startswith("Dead letter: +2 more")
    assert slack.text.startswith(
        f"2 more alert(s) like this one since {first_summary.created_at:%H:%M:%S} UTC "
        f"(alert {first_summary.pk}, the last message about them)"
    ), slack.text
    assert f"since {start:%H:%M:%S}" not in slack.text and f"since {start + timedelta(seconds=30):%H:%M:%S}" not in (
        slack.text
    ), "the count is not since the window's or the outage's first alert"


@override_settings(FCM_PROJECT_ID="donuts", FCM_ACCESS_TOKEN="t")
def test_the_escalation_sweep_reads_an_index_not_every_alert_ever_raised():
    # A year of alerts: acknowledged warnings, info ones nobody acknowledges, escalated ones; and one due.
    long_ago = timezone.now() - timedelta(days=30)
    Alert.objects.bulk_create(
        Alert(kind="sold_out", severity=severity, title="old", dedupe_key=f"k{i}", acknowledged_at=acknowledged)
        for i, (severity, acknowledged) in enumerate(
            [("info", None)] * 2000 + [("warning", long_ago)] * 1000 + [("critical", long_ago)] * 200
        )
    )
    Alert.objects.update(created_at=long_ago)
    due = raise_alert("late", "warning", title="Overdue")
    Alert.objects.filter(pk=due.pk).update(created_at=long_ago)

    search, *_updates = plans(alerts.alerts_escalate, "notifications_alert")

    assert Alert.objects.get(pk=due.pk).escalated_at is not None
    assert (search["key"], search["type"]) == ("alert_escalation_due", "range"), search


@pytest.mark.django_db(transaction=True)
def test_an_accepted_order_settling_the_factory_warning_while_a_failed_call_raises_it_deadlocks_neither():
    # A rush on a flapping factory: one worker records the factory accepting an order (its "failed N calls in
    # a row" warning settled), another a failed call (that warning raised again) at the same moment. Settling
    # took the warning's row before the key's lock and raising the other way round: one of them deadlocked,
    # and the accepted order's record was rolled back after the factory had it.
    AlertLock.objects.bulk_create([AlertLock(id=i) for i in range(AlertLock.STRIPES)], ignore_conflicts=True)
    warning = raise_alert("factory_degraded", "warning", "The factory failed 5 calls in a row", context={"sku": "A"})
    raising_holds_the_key, settling_connection = threading.Event(), []
    errors = []

    def failed_call():
        try:
            with transaction.atomic():
                alerts.alert_key_lock("factory_degraded")  # alert_raise's first step
                raising_holds_the_key.set()
                # until the settling transaction waits for a lock (deadlocked or queued)
                until_waiting(lambda: settling_connection and waiting_for_a_lock(settling_connection[0]), timeout=10)
                alerts.alert_raise(
                    kind="factory_degraded",
                    severity="warning",
                    title="The factory failed 5 calls in a row",
                    dedupe_key="factory_degraded",
                    context={"sku": "B"},
                )
        except Exception as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    def accepted_order():
        try:
            raising_holds_the_key.wait()
            with transaction.atomic():
                with connections["default"].cursor() as cursor:
                    cursor.execute("SELECT CONNECTION_ID()")
                    settling_connection.append(cursor.fetchone()[0])
                alerts.alerts_settle("factory_degraded")
        except Exception as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=failed_call), threading.Thread(target=accepted_order)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    warning.refresh_from_db()
    assert warning.acknowledged_at is not None


@pytest.mark.django_db(transaction=True)
@override_settings(**BOTH_CHANNELS, ALERT_ESCALATE_AFTER_SECONDS=60)
@pytest.mark.parametrize("older_first", [True, False], ids=["a settle: oldest first", "a receipt: newest first"])
def test_the_escalation_sweep_deadlocks_with_nothing_that_takes_warnings_as_it_runs(older_first):
    # Two warnings come due together while a worker takes both: a settle takes a key's open alerts oldest
    # first (the factory warning, then its open summary); a receipt takes its restock's overdue warning, then
    # the older "factory cancelled" one of its SKU. The sweep took them in one order or the other, so one of
    # the two orders deadlocked with it and MariaDB rolled one back (an accepted order's record with it). It
    # now passes over a warning another transaction holds: that one is being settled, or is escalated by the
    # next sweep.
    AlertLock.objects.bulk_create([AlertLock(id=i) for i in range(AlertLock.STRIPES)], ignore_conflicts=True)
    older = raise_alert("factory_degraded", "warning", "The factory failed 5 calls in a row")
    newer = raise_alert("restock_overdue:7", "warning", "Restock of GLAZED is overdue")
    Alert.objects.update(created_at=timezone.now() - timedelta(seconds=61))
    held, then = (older, newer) if older_first else (newer, older)
    worker_holds_one, sweep_done, sweep_connection, errors = threading.Event(), threading.Event(), [], []

    def worker():
        try:
            with transaction.atomic():
                Alert.objects.select_for_update().filter(pk=held.pk).exists()
                worker_holds_one.set()
                until_waiting(  # until the sweep is done or waits for a lock (on it, or deadlocked)
                    lambda: sweep_done.is_set() or sweep_connection and waiting_for_a_lock(sweep_connection[0]),
                    timeout=2,
                )
                Alert.objects.select_for_update().filter(pk=then.pk).exists()
        except Exception as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    def escalate():
        try:
            worker_holds_one.wait()
            with connections["default"].cursor() as cursor:
                cursor.execute("SELECT CONNECTION_ID()")
                sweep_connection.append(cursor.fetchone()[0])
            alerts.alerts_escalate()
        except Exception as exc:
            errors.append(exc)
        finally:
            sweep_done.set()
            connections.close_all()

    threads = [threading.Thread(target=worker), threading.Thread(target=escalate)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    assert Alert.objects.get(pk=then.pk).escalated_at is not None
    assert Alert.objects.get(pk=held.pk).escalated_at is None, "the next sweep's, if it is still open by then"
    assert alerts.alerts_escalate() == 1


@pytest.mark.django_db(transaction=True)
@override_settings(**BOTH_CHANNELS, ALERT_ESCALATE_AFTER_SECONDS=60)
def test_acknowledging_warnings_in_the_admin_while_the_sweep_escalates_them_deadlocks_neither(
    admin_client, monkeypatch
):
    # The admin lists alerts newest first and took the selected ones in that order; the escalation sweep takes
    # them oldest first. Ops acknowledging two warnings as they came due deadlocked with the sweep.
    from notifications.tests.test_tasks import ALERTS

    AlertLock.objects.bulk_create([AlertLock(id=i) for i in range(AlertLock.STRIPES)], ignore_conflicts=True)
    older = raise_alert("forged_callback:a", "warning", "A callback was refused")
    newer = raise_alert("factory_cancelled:b", "warning", "The factory cancelled a restock")
    Alert.objects.update(created_at=timezone.now() - timedelta(seconds=61))
    outcomes, sweep_connection = {}, []

    def escalate():
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT CONNECTION_ID()")
            sweep_connection.append(cursor.fetchone()[0])
        return alerts.alerts_escalate()

    sweep, sweep_started = thread_keeping(outcomes, "sweep", escalate), threading.Event()
    acknowledge = alerts.alert_acknowledge

    def acknowledge_while_the_sweep_comes(alert, *, user):
        taken = acknowledge(alert, user=user)
        if not sweep_started.is_set():  # holding the first alert it took
            sweep_started.set()
            sweep.start()
            # until the sweep waits for a lock
            until_waiting(lambda: sweep_connection and waiting_for_a_lock(sweep_connection[0]), timeout=2)
        return taken

    monkeypatch.setattr(alerts, "alert_acknowledge", acknowledge_while_the_sweep_comes)
    selected = {"action": "acknowledge", "_selected_action": [older.pk, newer.pk]}
    admin = thread_keeping(outcomes, "admin", lambda: admin_client.post(ALERTS, selected))
    admin.start()
    admin.join(20)
    sweep.join(20)

    assert outcomes["admin"].status_code == 302, outcomes["admin"]
    assert outcomes["sweep"] == 0, "both were acknowledged before the sweep could take them"
    assert Alert.objects.filter(pk__in=[older.pk, newer.pk], acknowledged_at__isnull=False).count() == 2
    assert not AlertDelivery.objects.filter(channel="fcm").exists(), "nobody's phone woken"

"""`manage.py purge_alerts`: old acknowledged alerts, and old info ones (nothing to acknowledge), go with their
deliveries, and storm groups over before then; no open warning or critical alert, nor anything owed or read by
an open group, does."""

import threading
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction
from django.utils import timezone

from notifications import alerts
from notifications.models import Alert, AlertDelivery, AlertGroup, AlertLock
from testsupport.data import raise_alert
from testsupport.threads import connection_id, thread_keeping, until_waiting, waiting_for_a_lock

pytestmark = pytest.mark.django_db

SENT, PENDING, FAILED = AlertDelivery.Status.SENT, AlertDelivery.Status.PENDING, AlertDelivery.Status.FAILED


def run(*args):
    out = StringIO()
    call_command("purge_alerts", *args, stdout=out)
    return out.getvalue().strip()


def make_alert(
    title, *, days_ago, acknowledged=True, deliveries=(SENT,), kind="dead_letter", severity="critical", **fields
):
    now = timezone.now()
    alert = Alert.objects.create(
        kind=kind,
        severity=severity,
        title=title,
        dedupe_key=f"{kind}:{title}",
        acknowledged_at=now if acknowledged else None,
        **fields,
    )
    Alert.objects.filter(pk=alert.pk).update(created_at=now - timedelta(days=days_ago))
    for channel, status in zip(AlertDelivery.Channel.values, deliveries, strict=False):
        AlertDelivery.objects.create(alert=alert, channel=channel, status=status)
    return alert


def make_group(key, *, window_ended_days_ago, leader=None, **fields):
    """A storm group whose window ended that many days ago (None: its summary went out, which forgets it)."""
    ended = None if window_ended_days_ago is None else timezone.now() - timedelta(days=window_ended_days_ago)
    return AlertGroup.objects.create(dedupe_key=key, leader=leader, window_ends_at=ended, **fields)


def remaining():
    return sorted(Alert.objects.values_list("title", flat=True))


def groups():
    return sorted(AlertGroup.objects.values_list("dedupe_key", flat=True))


@pytest.fixture
def aged():
    make_alert("old acknowledged", days_ago=40, deliveries=(SENT, FAILED))
    make_alert("old open", days_ago=40, acknowledged=False)
    make_alert("recent acknowledged", days_ago=5)
    make_alert("old acknowledged, a send owed", days_ago=40, deliveries=(SENT, PENDING))
    make_group("sold_out:OLD", window_ended_days_ago=40)
    make_group("sold_out:RECENT", window_ended_days_ago=5)


def test_purge_deletes_old_acknowledged_alerts_with_their_deliveries(aged):
    out = run()  # 30 days by default

    assert remaining() == ["old acknowledged, a send owed", "old open", "recent acknowledged"]
    assert groups() == ["sold_out:RECENT"]
    assert out == (
        "deleted 1 acknowledged or info alert older than 30 days, with its deliveries, "
        "and 1 storm group that ended before then"
    )
    assert AlertDelivery.objects.count() == 4, "only the purged alert's two deliveries went"
    assert not AlertDelivery.objects.exclude(alert__in=Alert.objects.all()).exists()


def test_purge_takes_the_age_in_days(aged):
    out = run("--older-than-days", "3")

    assert remaining() == ["old acknowledged, a send owed", "old open"], "never one still open or owed a send"
    assert groups() == []
    assert out == (
        "deleted 2 acknowledged or info alerts older than 3 days, with their deliveries, "
        "and 2 storm groups that ended before then"
    )


def test_purge_dry_run_only_counts(aged):
    out = run("--older-than-days", "3", "--dry-run")

    assert len(remaining()) == 4 and AlertDelivery.objects.count() == 6 and len(groups()) == 2
    assert out == (
        "dry run: would delete 2 acknowledged or info alerts older than 3 days, with their deliveries, "
        "and 2 storm groups that ended before then; nothing deleted"
    )


def test_purge_keeps_the_leader_a_summary_still_owed_reads():
    leader = make_alert("leader, summary owed", days_ago=40)
    make_group(leader.dedupe_key, leader=leader, window_ended_days_ago=40, suppressed_count=3)
    done = make_alert("leader, window long closed", days_ago=40)
    make_group(done.dedupe_key, leader=done, window_ended_days_ago=40)

    assert run("--dry-run").endswith("and 1 storm group that ended before then; nothing deleted"), "done's"
    run()

    assert remaining() == ["leader, summary owed"]
    assert groups() == [leader.dedupe_key], "done's group went with it"


def test_purge_never_takes_an_open_alert_down_with_the_old_one_it_was_grouped_under():
    # Older rows may point at their group's first alert (group_leader), which deletes them with it.
    leader = make_alert("old leader", days_ago=40)
    make_alert("grouped, open", days_ago=40, acknowledged=False, group_leader=leader)

    out = run()

    assert remaining() == ["grouped, open", "old leader"]
    assert out == (
        "deleted 0 acknowledged or info alerts older than 30 days, with their deliveries, "
        "and 0 storm groups that ended before then"
    )


def test_an_old_info_alert_nobody_acknowledged_goes_and_open_warnings_and_critical_ones_stay():
    # Nothing is asked of ops about a SKU selling out, so nobody acknowledges it: kept as open, a shop that
    # sells out daily kept every one for ever.
    make_alert("GLAZED sold out", days_ago=40, acknowledged=False, kind="sold_out", severity="info")
    make_alert("old open warning", days_ago=40, acknowledged=False, kind="restock_overdue", severity="warning")
    make_alert("old open critical", days_ago=40, acknowledged=False)
    make_alert("MAPLE sold out", days_ago=5, acknowledged=False, kind="sold_out", severity="info")

    out = run()

    assert remaining() == ["MAPLE sold out", "old open critical", "old open warning"]
    assert out == (
        "deleted 1 acknowledged or info alert older than 30 days, with its deliveries, "
        "and 0 storm groups that ended before then"
    )


def sold_out(sku):
    with transaction.atomic():
        return alerts.alert_raise(
            kind="sold_out", severity="info", title=f"{sku} sold out", dedupe_key="sold_out", context={"sku": sku}
        )


def age_unacknowledged(*, days):
    """Every alert created, and every window ended, that many days ago; nothing acknowledged."""
    then = timezone.now() - timedelta(days=days)
    Alert.objects.update(created_at=then)
    AlertGroup.objects.exclude(window_ends_at=None).update(window_ends_at=then)


def test_an_old_info_alert_still_owed_a_send_or_read_by_its_group_s_coming_summary_stays():
    sold_out("GLAZED")
    sold_out("MAPLE")  # held back: its group's summary is owed, and reads the first
    AlertDelivery.objects.update(status=SENT)
    age_unacknowledged(days=40)

    assert run() == (
        "deleted 0 acknowledged or info alerts older than 30 days, with their deliveries, "
        "and 0 storm groups that ended before then"
    )
    assert remaining() == ["GLAZED sold out"], "the first alert, which its group's summary reads"

    AlertGroup.objects.update(flush_at=timezone.now())
    assert alerts.alert_groups_flush() == 1
    age_unacknowledged(days=40)

    run()

    assert remaining() == ["Sold out: +1 more (new: MAPLE)"], "its sends are owed (pending: the sweep sends them)"

    AlertDelivery.objects.update(status=SENT)

    assert run().startswith("deleted 1 acknowledged or info alert older than 30 days")
    assert remaining() == [] and groups() == []


REFUSED_AGES = [("-1", "cannot be negative"), ("99999999999", "at most 36500"), ("3d", "whole number of days")]


@pytest.mark.parametrize(("days", "message"), REFUSED_AGES, ids=["negative", "huge", "not a number"])
def test_purge_refuses_an_age_it_cannot_use(aged, days, message):
    with pytest.raises(CommandError, match=message):
        run("--older-than-days", days)
    assert len(remaining()) == 4


@pytest.mark.parametrize(("days", "message"), REFUSED_AGES, ids=["negative", "huge", "not a number"])
def test_purge_dead_letters_refuses_the_same_ages(days, message):
    with pytest.raises(CommandError, match=message):
        call_command("purge_dead_letters", "--older-than-days", days)


def age_everything(*, days):
    """Every alert acknowledged and sent, and every window ended, that many days ago."""
    then = timezone.now() - timedelta(days=days)
    Alert.objects.update(created_at=then, acknowledged_at=then)
    AlertDelivery.objects.update(status=SENT)
    AlertGroup.objects.exclude(window_ends_at=None).update(window_ends_at=then)


def test_a_storm_long_over_goes_and_the_next_alert_of_its_key_is_a_first_one():
    storm = [raise_alert() for _ in range(3)]
    AlertGroup.objects.update(window_ends_at=timezone.now(), flush_at=timezone.now())
    assert alerts.alert_groups_flush() == 1, "its summary, which ends its window"
    raise_alert("dead_letter:factory.restock_poll")  # alone in its window: nothing held back
    age_everything(days=40)

    out = run()

    assert out == (
        "deleted 3 acknowledged or info alerts older than 30 days, with their deliveries, "
        "and 2 storm groups that ended before then"
    )
    assert remaining() == [] and groups() == []
    again = raise_alert()
    assert again.pk != storm[0].pk and again.deliveries.exists(), "sent on its own"
    assert raise_alert().pk == again.pk, "the next one is held back in its window"
    group = AlertGroup.objects.get()
    assert (group.leader_id, group.suppressed_count, group.facts) == (again.pk, 1, ["Dead letter"])


def test_purge_keeps_a_storm_group_with_a_summary_owed_or_not_over_long_enough():
    long_ago = timezone.now() - timedelta(days=40)
    make_group("over, leaderless", window_ended_days_ago=40)
    make_group("over, its leader gone", window_ended_days_ago=40, leader=make_alert("gone", days_ago=40))
    make_group("summarized long ago", window_ended_days_ago=None)
    make_group("summary owed", window_ended_days_ago=40, suppressed_count=2, flush_at=long_ago)
    make_group("settled summary owed", window_ended_days_ago=40, suppressed_count=1, settled=True, flush_at=long_ago)
    make_group("ended lately", window_ended_days_ago=5)
    make_group(make_alert("summarized lately", days_ago=5).dedupe_key, window_ended_days_ago=None)
    make_group("its leader open", window_ended_days_ago=40, leader=make_alert("open", days_ago=40, acknowledged=False))
    going_on = raise_alert("going on")
    Alert.objects.filter(pk=going_on.pk).update(acknowledged_at=timezone.now())

    out = run("--dry-run")
    run()

    assert out.endswith("and 3 storm groups that ended before then; nothing deleted")
    assert groups() == [
        "dead_letter:summarized lately",
        "ended lately",
        "going on",
        "its leader open",
        "settled summary owed",
        "summary owed",
    ]
    assert raise_alert("going on").pk == going_on.pk, "its window goes on"


def test_a_raise_between_the_purge_reading_the_groups_and_deleting_them_keeps_its_window_and_count(monkeypatch):
    raise_alert()
    age_everything(days=40)
    delete, raised = alerts._groups_delete, []

    def raised_first(*args):
        if not raised:  # the key's next alerts, committed after the purge read its group as over
            raised.extend([raise_alert(), raise_alert()])
        return delete(*args)

    monkeypatch.setattr(alerts, "_groups_delete", raised_first)

    out = run()

    group = AlertGroup.objects.get()
    assert (group.leader_id, group.suppressed_count) == (raised[0].pk, 1)
    assert out.endswith("and 0 storm groups that ended before then")
    AlertGroup.objects.update(window_ends_at=timezone.now(), flush_at=timezone.now())
    assert alerts.alert_groups_flush() == 1
    assert Alert.objects.get(is_summary=True).title == "Dead letter: +1 more"


def _until_waiting_or_done(connection: list, done: dict, name: str) -> None:
    """Until the other thread waits for a lock (queued or deadlocked), or is done."""
    until_waiting(lambda: name in done or connection and waiting_for_a_lock(connection[0]), timeout=5)


@pytest.mark.django_db(transaction=True)
def test_a_raise_holding_its_key_as_the_purge_comes_for_its_group_keeps_it(monkeypatch):
    # The raise has read the group (over: its window ended long ago) and opens a new window in it; the purge
    # waits for the key's lock, then finds the window open and keeps the group. Deleted under the raise, the
    # raise's save would find no row and roll back the event's transaction with it.
    AlertLock.objects.bulk_create([AlertLock(id=i) for i in range(AlertLock.STRIPES)], ignore_conflicts=True)
    raise_alert()
    age_everything(days=40)
    outcomes, purge_connection, raise_read_the_group = {}, [], threading.Event()
    group_locked = alerts._group_locked

    def group_locked_then_wait(dedupe_key):
        group = group_locked(dedupe_key)
        raise_read_the_group.set()
        _until_waiting_or_done(purge_connection, outcomes, "purge")
        return group

    def purge():
        raise_read_the_group.wait(10)
        purge_connection.append(connection_id())
        return run()

    monkeypatch.setattr(alerts, "_group_locked", group_locked_then_wait)
    threads = [thread_keeping(outcomes, "raise", raise_alert), thread_keeping(outcomes, "purge", purge)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)

    assert isinstance(outcomes["raise"], Alert), outcomes["raise"]
    assert outcomes["purge"] == (
        "deleted 1 acknowledged or info alert older than 30 days, with its deliveries, "
        "and 0 storm groups that ended before then"
    )
    group = AlertGroup.objects.get()
    assert group.leader_id == outcomes["raise"].pk and group.window_ends_at > timezone.now()
    assert raise_alert().pk == outcomes["raise"].pk, "the next one is held back in the raise's window"


@pytest.mark.django_db(transaction=True)
def test_a_raise_waiting_for_the_key_the_purge_holds_starts_a_fresh_group(monkeypatch):
    AlertLock.objects.bulk_create([AlertLock(id=i) for i in range(AlertLock.STRIPES)], ignore_conflicts=True)
    raise_alert()
    age_everything(days=40)
    outcomes, raise_connection = {}, []
    stripe_lock = alerts._stripe_lock

    def raise_():
        raise_connection.append(connection_id())
        return raise_alert()

    raiser = thread_keeping(outcomes, "raise", raise_)

    def stripe_lock_then_let_the_raise_come(stripe):
        stripe_lock(stripe)
        if threading.current_thread() is not raiser and not raiser.is_alive() and "raise" not in outcomes:
            raiser.start()  # the purge holds the key's lock
            _until_waiting_or_done(raise_connection, outcomes, "raise")

    monkeypatch.setattr(alerts, "_stripe_lock", stripe_lock_then_let_the_raise_come)
    out = run()
    raiser.join(30)

    assert out.endswith("and 1 storm group that ended before then")
    assert isinstance(outcomes["raise"], Alert), outcomes["raise"]
    group = AlertGroup.objects.get()
    assert (group.leader_id, group.suppressed_count) == (outcomes["raise"].pk, 0), "a fresh group, the raise's"
    assert outcomes["raise"].deliveries.exists(), "sent as the first of its key"

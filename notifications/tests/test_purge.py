"""`manage.py purge_alerts`: old acknowledged alerts go with their deliveries; nothing still open, owed or
read by an open group does."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from notifications.models import Alert, AlertDelivery, AlertGroup

pytestmark = pytest.mark.django_db

SENT, PENDING, FAILED = AlertDelivery.Status.SENT, AlertDelivery.Status.PENDING, AlertDelivery.Status.FAILED


def run(*args):
    out = StringIO()
    call_command("purge_alerts", *args, stdout=out)
    return out.getvalue().strip()


def make_alert(title, *, days_ago, acknowledged=True, deliveries=(SENT,), **fields):
    now = timezone.now()
    alert = Alert.objects.create(
        kind="dead_letter",
        severity="critical",
        title=title,
        dedupe_key=f"dead_letter:{title}",
        acknowledged_at=now if acknowledged else None,
        **fields,
    )
    Alert.objects.filter(pk=alert.pk).update(created_at=now - timedelta(days=days_ago))
    for channel, status in zip(AlertDelivery.Channel.values, deliveries, strict=False):
        AlertDelivery.objects.create(alert=alert, channel=channel, status=status)
    return alert


def remaining():
    return sorted(Alert.objects.values_list("title", flat=True))


@pytest.fixture
def aged():
    make_alert("old acknowledged", days_ago=40, deliveries=(SENT, FAILED))
    make_alert("old open", days_ago=40, acknowledged=False)
    make_alert("recent acknowledged", days_ago=5)
    make_alert("old acknowledged, a send owed", days_ago=40, deliveries=(SENT, PENDING))


def test_purge_deletes_old_acknowledged_alerts_with_their_deliveries(aged):
    out = run()  # 30 days by default

    assert remaining() == ["old acknowledged, a send owed", "old open", "recent acknowledged"]
    assert out == "deleted 1 acknowledged alert older than 30 days, with its deliveries"
    assert AlertDelivery.objects.count() == 4, "only the purged alert's two deliveries went"
    assert not AlertDelivery.objects.exclude(alert__in=Alert.objects.all()).exists()


def test_purge_takes_the_age_in_days(aged):
    out = run("--older-than-days", "3")

    assert remaining() == ["old acknowledged, a send owed", "old open"], "never one still open or owed a send"
    assert out == "deleted 2 acknowledged alerts older than 3 days, with their deliveries"


def test_purge_dry_run_only_counts(aged):
    out = run("--older-than-days", "3", "--dry-run")

    assert len(remaining()) == 4 and AlertDelivery.objects.count() == 6
    assert out == (
        "dry run: would delete 2 acknowledged alerts older than 3 days, with their deliveries; nothing deleted"
    )


def test_purge_keeps_the_leader_a_summary_still_owed_reads():
    leader = make_alert("leader, summary owed", days_ago=40)
    AlertGroup.objects.create(dedupe_key=leader.dedupe_key, leader=leader, suppressed_count=3)
    done = make_alert("leader, window long closed", days_ago=40)
    AlertGroup.objects.create(dedupe_key=done.dedupe_key, leader=done)

    run()

    assert remaining() == ["leader, summary owed"]
    assert AlertGroup.objects.get(dedupe_key=done.dedupe_key).leader is None, "its group stays, leaderless"


def test_purge_never_takes_an_open_alert_down_with_the_old_one_it_was_grouped_under():
    # Older rows may point at their group's first alert (group_leader), which deletes them with it.
    leader = make_alert("old leader", days_ago=40)
    make_alert("grouped, open", days_ago=40, acknowledged=False, group_leader=leader)

    out = run()

    assert remaining() == ["grouped, open", "old leader"]
    assert out == "deleted 0 acknowledged alerts older than 30 days, with their deliveries"


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

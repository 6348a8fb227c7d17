"""Dead letters as an operator handles them: `manage.py redrive` puts the work back on the real Redis
queue, and `manage.py purge_dead_letters` clears out old resolved ones."""

import json
import threading
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from factory.management.commands.redrive import _os_user
from factory.models import DeadLetter, FactoryOrder
from factory.retries import DEAD_LETTER_QUEUE, _park_copy, dead_letter_copies_sync, dead_letter_copy_id
from factory.tests.test_callback import callback
from inventory.models import Restock
from notifications.models import Alert, AlertDelivery
from testsupport.data import make_dead_letter, restock_give_up
from testsupport.queues import broker, queued
from testsupport.threads import thread_keeping

# Helpers shared with test_admin.py

RESTOCK_PLACE = "factory.restock_place"
NOTHING = "nothing to do (redriven or settled already).\n"  # the end of every redrive summary


# The tests


def run(*args):
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def redrive_while_a_callback_arrives(client, monkeypatch, dead_letter, restock) -> dict:
    """Redrive the dead letter and, while the redrive holds its locks (paused where it reopens the
    restock), send `restock`'s completion callback; both run to their end. Their outcomes, under
    "redrive" and "callback"."""
    from factory import redrive as factory_redrive

    locked, go = threading.Event(), threading.Event()
    reopen = factory_redrive._restock_reopen

    def reopen_after_the_callback_came(restock_id):
        locked.set()
        go.wait(5)
        return reopen(restock_id)

    monkeypatch.setattr(factory_redrive, "_restock_reopen", reopen_after_the_callback_came)
    outcomes = {}
    redrive = thread_keeping(outcomes, "redrive", lambda: run("redrive", str(dead_letter.pk)))
    redrive.start()
    assert locked.wait(5)
    completion = thread_keeping(outcomes, "callback", lambda: callback(client, restock))
    completion.start()
    completion.join(1)  # it reaches the redrive's locks and waits
    go.set()
    redrive.join(10)
    completion.join(10)
    return outcomes


def restock_of(dead_letter) -> Restock:
    return Restock.objects.get(pk=dead_letter.restock_id)


def fresh(dead_letter) -> DeadLetter:
    return DeadLetter.objects.get(pk=dead_letter.pk)


@pytest.mark.django_db(transaction=True)
def test_a_dead_letter_is_recorded_with_its_traceback_and_a_copy_in_the_dead_letter_queue(queues):
    dead_letter = make_dead_letter()

    assert dead_letter.exception_type == "factory.client.FactoryRejected"
    assert "in _place_order" in dead_letter.traceback and "409 Conflict" in dead_letter.traceback
    assert queued(DEAD_LETTER_QUEUE) == [("factory.restock_place", [dead_letter.restock_id])]
    assert queued("factory") == []


# redrive


@pytest.mark.django_db(transaction=True)
def test_redrive_reopens_the_restock_and_sends_it_to_the_factory_queue(queues, monkeypatch):
    monkeypatch.setattr("getpass.getuser", lambda: "alice")
    dead_letter = make_dead_letter()
    assert queued(DEAD_LETTER_QUEUE) == [("factory.restock_place", [dead_letter.restock_id])]

    out = run("redrive", str(dead_letter.pk))

    assert queued(DEAD_LETTER_QUEUE) == [], "resolved: Flower's dead_letter count drops"
    alert = Alert.objects.get(kind="dead_letter", is_summary=False)
    assert alert.acknowledged_at is not None, "the alert is closed where ops look"
    restock = restock_of(dead_letter)
    order = restock.factory_order
    assert (restock.status, restock.closed_at, order.last_error) == ("pending", None, "")
    assert (order.attempt_count, order.attempts_this_run) == (1, 0), "a fresh budget; the next call is number 2"
    assert order.dispatch_count == 1 and order.dispatched_at is not None, "the send was recorded on the outbox"
    assert queued("factory") == [("factory.restock_place", [restock.pk])]
    dead_letter = fresh(dead_letter)
    assert dead_letter.redriven_at is not None and dead_letter.is_resolved
    assert (dead_letter.redriven_by, dead_letter.redrive_count) == ("manage.py redrive (alice)", 1)
    assert out.splitlines() == [
        f"dead letter {dead_letter.pk}: {RESTOCK_PLACE}({restock.pk},), restock {restock.pk} (failed): sent again",
        "1 dead letter sent again; 0 had nothing to do (redriven or settled already).",
    ]


@pytest.mark.django_db(transaction=True)
def test_redriving_twice_sends_once(queues):
    dead_letter = make_dead_letter()
    run("redrive", str(dead_letter.pk))
    first = fresh(dead_letter)

    out = run("redrive", str(dead_letter.pk))

    restock = restock_of(dead_letter)
    assert queued("factory") == [("factory.restock_place", [restock.pk])], "no second message"
    assert (restock.status, restock.factory_order.dispatch_count) == ("pending", 1)
    second = fresh(dead_letter)
    assert second.redrive_count == 1, "nothing was sent the second time"
    assert (second.redriven_at, second.redriven_by) == (first.redriven_at, first.redriven_by)
    assert out.splitlines() == [
        f"dead letter {dead_letter.pk}: factory.restock_place({restock.pk},), restock {restock.pk} (pending): "
        "nothing to do (redriven or settled already)",
        "0 dead letters sent again; 1 had nothing to do (redriven or settled already).",
    ]


@pytest.mark.django_db(transaction=True)
def test_a_restock_that_failed_again_is_redriven_again(queues):
    dead_letter = make_dead_letter()
    run("redrive", str(dead_letter.pk))
    Restock.objects.filter(pk=dead_letter.restock_id).update(status="failed")  # failed once more
    FactoryOrder.objects.filter(restock_id=dead_letter.restock_id).update(attempt_count=5)

    run("redrive", str(dead_letter.pk))

    assert restock_of(dead_letter).status == "pending"
    assert queued("factory") == [("factory.restock_place", [dead_letter.restock_id])] * 2
    assert fresh(dead_letter).redrive_count == 2


@pytest.mark.django_db(transaction=True)
def test_redriving_an_older_dead_letter_of_a_restock_resolves_the_one_it_left_since(queues):
    # Redriven once, the restock failed again: a second dead letter, with its critical alert. Ops redrive
    # it by the first one's id (the id in an old message, or the whole list selected in the admin): the
    # restock is sent again, and the second dead letter, about the very same work, is resolved too, not
    # left open on the dashboard and in /metrics for a restock that is pending.
    from factory.client import FactoryRejected

    first = make_dead_letter()
    run("redrive", str(first.pk))
    restock = restock_of(first)
    second = restock_give_up(restock, FactoryRejected("409 Conflict", status_code=409), attempts=1)

    out = run("redrive", str(first.pk))

    assert restock_of(first).status == "pending" and out.endswith("1 dead letter sent again; 0 had " + NOTHING)
    assert fresh(second).is_resolved, "its work was sent again"
    assert DeadLetter.objects.unresolved().count() == 0
    assert not Alert.objects.filter(kind="dead_letter", acknowledged_at__isnull=True).exists()


@pytest.mark.django_db(transaction=True)
def test_redrive_leaves_a_restock_that_was_settled_meanwhile(queues):
    dead_letter = make_dead_letter(restock_status="cancelled")
    other = make_dead_letter()  # still waiting: its copy and alert stay

    out = run("redrive", str(dead_letter.pk))

    assert restock_of(dead_letter).status == "cancelled"
    assert queued("factory") == []
    assert queued(DEAD_LETTER_QUEUE) == [("factory.restock_place", [other.restock_id])]
    assert not Alert.objects.filter(kind="dead_letter", acknowledged_at__isnull=False).exists(), (
        "the task's alert, which counts the other dead letter too, stays open while that one waits"
    )
    run("redrive", str(other.pk))
    assert Alert.objects.filter(kind="dead_letter", acknowledged_at__isnull=True).count() == 0
    dead_letter = fresh(dead_letter)
    assert dead_letter.is_resolved and dead_letter.redrive_count == 0, "resolved, though nothing was sent"
    assert out.endswith(": nothing to do (redriven or settled already)\n0 dead letters sent again; 1 had " + NOTHING)


SUPERSEDED = "1 superseded by a newer restock of its product: settled, nothing sent."


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("newer_status", ["pending", "placed", "fulfilled", "cancelled", "failed"])
def test_redriving_a_restock_superseded_by_a_newer_one_settles_it_and_orders_nothing(queues, newer_status):
    # Stock ran short again after the failure, and a sale opened a fresh restock for the same product (as
    # sales did before a new need reopened the failed restock). Whatever became of the newer one, it took
    # the need over: reopening the old one would order the same donuts a second time (or, while the newer
    # one is open, break one open restock per product), and ops must read what happened to the dead letter.
    dead_letter = make_dead_letter()
    failed = restock_of(dead_letter)
    newer = Restock.objects.create(product_id=failed.product_id, quantity=50, reason="shortage", status=newer_status)

    out = run("redrive", str(dead_letter.pk))

    assert restock_of(dead_letter).status == "failed"
    assert Restock.objects.get(pk=newer.pk).status == newer_status
    assert queued("factory") == [], "nothing ordered"
    dead_letter = fresh(dead_letter)
    assert dead_letter.is_resolved and dead_letter.redrive_count == 0, "settled, though nothing was sent"
    assert dead_letter.redriven_by == f"superseded by restock {newer.pk} (manage.py redrive ({_os_user()}))"
    assert queued(DEAD_LETTER_QUEUE) == [] and not Alert.objects.filter(acknowledged_at__isnull=True).exists()
    assert out.splitlines() == [
        f"dead letter {dead_letter.pk}: {RESTOCK_PLACE}({failed.pk},), restock {failed.pk} (failed): "
        f"superseded by restock {newer.pk} ({newer_status}) of the same product: settled, nothing sent",
        f"0 dead letters sent again; 0 had {NOTHING.strip()} {SUPERSEDED}",
    ]


@pytest.mark.django_db(transaction=True)
def test_redrive_dry_run_changes_nothing_and_sends_nothing(queues):
    dead_letter = make_dead_letter()
    settled = make_dead_letter(restock_status="cancelled")
    before = list(DeadLetter.objects.order_by("pk").values())

    out = run("redrive", str(dead_letter.pk), str(settled.pk), "--dry-run")

    assert restock_of(dead_letter).status == "failed" and restock_of(settled).status == "cancelled"
    assert list(DeadLetter.objects.order_by("pk").values()) == before
    assert queued("factory") == []
    lines = out.splitlines()
    assert lines[0].startswith(f"dead letter {dead_letter.pk}: ") and lines[0].endswith(": would be sent again")
    assert lines[1].startswith(f"dead letter {settled.pk}: ") and "nothing to do" in lines[1]
    assert lines[2] == (
        "Dry run: 1 dead letter would be sent again; 1 had nothing to do (redriven or settled already). "
        "Nothing changed."
    )


@pytest.mark.django_db(transaction=True)
def test_redrive_dry_run_of_an_outage_says_what_the_redrive_then_does(queues):
    # A factory outage in a rush: each sale that found a product short after its restock failed opened
    # another, which failed too, so one product has several failed restocks, each with its dead letter.
    # One open restock per product: the redrive sends the first and has nothing to do for the rest, and
    # the dry run ops read first must promise the same, not one order per dead letter.
    from testsupport.data import make_failed_restock, make_product

    viral, glazed = make_product("VIRAL", on_hand=0), make_product("GLAZED", on_hand=0)
    for product in (viral, viral, viral, glazed, glazed):
        make_failed_restock(product)

    planned = run("redrive", "--all", "--dry-run")
    done = run("redrive", "--all")

    superseded = "3 superseded by a newer restock of its product"
    assert (
        done.splitlines()[-1]
        == f"2 dead letters sent again; 0 had {NOTHING.strip()} {superseded}: settled, nothing sent."
    )
    assert planned.splitlines()[-1] == (
        "Dry run: 2 dead letters would be sent again; 0 had nothing to do (redriven or settled already). "
        f"{superseded}: would be settled, nothing sent. Nothing changed."
    )
    assert [line.rsplit(": ", 1)[1] for line in planned.splitlines()[:-1]] == [
        {"sent again": "would be sent again", "settled, nothing sent": "would be settled, nothing sent"}[outcome]
        for outcome in (line.rsplit(": ", 1)[1] for line in done.splitlines()[:-1])
    ]
    assert sorted(Restock.objects.open().values_list("product__sku", flat=True)) == ["GLAZED", "VIRAL"]
    assert Restock.objects.open().filter(pk__in=[max(viral.restocks.values_list("pk", flat=True))]).exists(), (
        "the newest restock of each product is the one sent again"
    )


@pytest.mark.django_db(transaction=True)
def test_redrive_all_skips_resolved_dead_letters(queues):
    waiting = [make_dead_letter(), make_dead_letter()]
    resolved = make_dead_letter(redriven_days_ago=1)

    out = run("redrive", "--all")

    assert sorted(args[0] for _, args in queued("factory")) == sorted(d.restock_id for d in waiting)
    assert [restock_of(d).status for d in waiting] == ["pending", "pending"]
    assert restock_of(resolved).status == "failed", "already handled by someone: left alone"
    assert fresh(resolved).redrive_count == 1
    assert f"dead letter {resolved.pk}:" not in out
    assert out.endswith("2 dead letters sent again; 0 had " + NOTHING)

    assert run("redrive", "--all").strip() == "There were no dead letters to redrive.", "all resolved now"


@pytest.mark.django_db(transaction=True)
def test_redrive_refuses_unknown_ids_and_sends_nothing(queues):
    dead_letter = make_dead_letter()
    missing = dead_letter.pk + 1000

    with pytest.raises(CommandError, match=rf"No dead letter with id {missing}, {missing + 1}; nothing was sent"):
        run("redrive", str(dead_letter.pk), str(missing + 1), str(missing))

    assert restock_of(dead_letter).status == "failed"
    assert queued("factory") == [] and not fresh(dead_letter).is_resolved


@pytest.mark.parametrize("args", [[], ["--all", "1"], ["--dry-run"]], ids=["nothing", "both", "dry-run-alone"])
def test_redrive_needs_ids_or_all(args):
    with pytest.raises(CommandError, match="Give dead letter ids, or --all"):
        run("redrive", *args)


@pytest.mark.django_db(transaction=True)
def test_redrive_sends_a_dead_letter_without_a_restock_back_to_its_queue(queues):
    dead_letter = make_dead_letter(restock_status="placed", task="factory.restock_poll")
    restock_id = dead_letter.args[0]

    run("redrive", str(dead_letter.pk))

    assert queued("factory") == [("factory.restock_poll", [restock_id])]
    assert Restock.objects.get(pk=restock_id).status == "placed", "a poll changes nothing by itself"
    assert fresh(dead_letter).redrive_count == 1


@pytest.mark.django_db(transaction=True)
def test_a_dead_letter_without_a_restock_is_sent_again_once_however_often_it_is_redriven(queues):
    dead_letter = make_dead_letter(restock_status="placed", task="factory.restock_poll")

    run("redrive", str(dead_letter.pk))
    second = run("redrive", str(dead_letter.pk), "--dry-run"), run("redrive", str(dead_letter.pk))

    assert queued("factory") == [("factory.restock_poll", [dead_letter.args[0]])]
    assert fresh(dead_letter).redrive_count == 1 and fresh(dead_letter).is_resolved
    assert second[0].endswith(
        "Dry run: 0 dead letters would be sent again; 1 had " + NOTHING.rstrip("\n") + " Nothing changed.\n"
    )
    assert second[1].endswith("0 dead letters sent again; 1 had " + NOTHING)


@pytest.mark.django_db(transaction=True)
def test_a_dead_letter_without_a_restock_redriven_while_the_broker_is_down_waits_for_another_redrive(
    queues, broker_down
):
    # No sweep resends such a message: resolved with nothing sent, it would be lost.
    dead_letter = make_dead_letter(restock_status="placed", task="factory.restock_poll")
    out = StringIO()

    with pytest.raises(CommandError) as not_sent:
        call_command("redrive", str(dead_letter.pk), stdout=out)

    assert out.getvalue().endswith(
        "0 dead letters sent again; 0 had " + NOTHING.rstrip("\n") + " 1 not sent, the broker did not take it: "
        "still waiting, redrive it again.\n"
    ), out.getvalue()
    assert not_sent.value.returncode == 75, "EX_TEMPFAIL: a script must not take it for sent"
    assert str(not_sent.value) == "1 dead letter not sent, the broker did not take it: redrive it again"
    assert not fresh(dead_letter).is_resolved and fresh(dead_letter).redrive_count == 0
    assert queued("factory") == []
    assert Alert.objects.get(kind="dead_letter").acknowledged_at is None, "ops are still asked to redrive it"


# purge_dead_letters


@pytest.fixture
def aged(queues, db):
    return {
        "old resolved": make_dead_letter(failed_days_ago=40, redriven_days_ago=39),
        "recent resolved": make_dead_letter(failed_days_ago=5, redriven_days_ago=4),
        "old unresolved": make_dead_letter(failed_days_ago=90),
    }


def remaining(aged):
    left = set(DeadLetter.objects.values_list("pk", flat=True))
    return sorted(name for name, dead_letter in aged.items() if dead_letter.pk in left)


def test_purge_deletes_only_old_resolved_dead_letters(aged):
    out = run("purge_dead_letters")  # 30 days by default

    assert remaining(aged) == ["old unresolved", "recent resolved"]
    assert out.strip() == "deleted 1 resolved dead letter older than 30 days"


def test_purge_takes_the_age_in_days(aged):
    out = run("purge_dead_letters", "--older-than-days", "3")

    assert remaining(aged) == ["old unresolved"], "never one that is still waiting for ops"
    assert out.strip() == "deleted 2 resolved dead letters older than 3 days"
    assert Restock.objects.count() == 3, "the restocks stay"


def test_purge_dry_run_only_counts(aged):
    out = run("purge_dead_letters", "--older-than-days", "3", "--dry-run")

    assert remaining(aged) == ["old resolved", "old unresolved", "recent resolved"]
    assert out.strip() == "dry run: would delete 2 resolved dead letters older than 3 days; nothing deleted"


def test_purge_refuses_a_negative_age(aged):
    with pytest.raises(CommandError, match="cannot be negative"):
        run("purge_dead_letters", "--older-than-days", "-1")
    assert len(remaining(aged)) == 3


@pytest.mark.parametrize("days", ["36501", "99999999999"])
def test_purge_refuses_an_age_past_the_calendar_with_a_message_not_a_traceback(aged, days):
    with pytest.raises(CommandError, match="--older-than-days"):
        run("purge_dead_letters", "--older-than-days", days, "--dry-run")
    assert len(remaining(aged)) == 3


def test_removing_a_copy_waits_on_a_hung_broker_no_longer_than_a_request_would(caplog):
    # It runs after a redrive commits, in the admin's request: it gives up at the web's short timeout
    # (timed by hand: 5 s per dead letter through kombu before) and leaves the broker's breaker alone, so
    # the redrive's own message is still tried.
    from celery import current_app

    from donutsite.dependencies import breakers
    from factory.retries import dead_letter_copy_remove
    from testsupport.processes import HungServer

    with HungServer() as hung:
        saved = current_app.conf.broker_write_url
        current_app.conf.broker_write_url = hung.url()
        try:
            removed = dead_letter_copy_remove(1)
        finally:
            current_app.conf.broker_write_url = saved

    assert removed is False and not breakers["broker"].is_open, "the redrive's own publish is still tried"
    [warning] = [r.getMessage() for r in caplog.records if "could not remove its copy" in r.getMessage()]
    assert "Timeout" in warning


# The dead-letter queue's copies


@pytest.mark.django_db(transaction=True)
def test_the_minute_sweep_makes_the_dead_letter_queue_count_the_open_dead_letters_again(queues):
    unparked, redriven, twice, waiting = (make_dead_letter() for _ in range(4))
    # What the broker's absence leaves: a dead letter written while it was away has no copy; one redriven
    # while it was away keeps its copy; a copy parked again (a retried park) counts twice.
    [raw] = [m for m in broker().lrange(DEAD_LETTER_QUEUE, 0, -1) if dead_letter_copy_id(unparked.pk).encode() in m]
    broker().lrem(DEAD_LETTER_QUEUE, 1, raw)
    DeadLetter.objects.filter(pk=redriven.pk).update(redriven_at=timezone.now(), redriven_by="admin")
    _park_copy(twice)
    assert len(queued(DEAD_LETTER_QUEUE)) == 4, "Flower counts 4 while 3 dead letters are open"

    assert dead_letter_copies_sync() == {"parked": 0, "removed": 2}, "a fresh dead letter's copy may be on its way"
    assert dead_letter_copies_sync(settle_seconds=0) == {"parked": 1, "removed": 0}
    assert sorted(args[0] for _, args in queued(DEAD_LETTER_QUEUE)) == sorted(
        d.restock_id for d in (unparked, twice, waiting)
    )
    assert dead_letter_copies_sync(settle_seconds=0) == {"parked": 0, "removed": 0}, "nothing left to put right"


@pytest.mark.django_db(transaction=True)
def test_two_minute_sweeps_at_once_park_one_copy_per_dead_letter(queues, monkeypatch):
    # Two beats started together (a second beat is a deploy mistake) send the minute sweep at the same
    # moment: both read the queue before either parks, and each parked every missing copy.
    from factory import retries
    from factory.tasks import dead_letter_copies_sync_task

    missing = [make_dead_letter() for _ in range(3)]
    broker().delete(DEAD_LETTER_QUEUE)  # written while the broker was away: no copies
    DeadLetter.objects.update(last_failed_at=timezone.now() - timedelta(minutes=5))  # settled: the sweep parks
    read, go = threading.Event(), threading.Event()
    copies = retries._dead_letter_copies

    def read_then_wait(redis):  # the first sweep has read the queue and not parked yet
        found = copies(redis)
        if not read.is_set():
            read.set()
            go.wait(10)
        return found

    monkeypatch.setattr(retries, "_dead_letter_copies", read_then_wait)
    outcomes = {}
    first = thread_keeping(outcomes, "first", dead_letter_copies_sync_task)
    first.start()
    assert read.wait(10)
    outcomes["second"] = dead_letter_copies_sync_task()
    go.set()
    first.join(10)

    assert outcomes["first"] == {"parked": 3, "removed": 0}
    assert outcomes["second"] == {"skipped": "another factory.dead_letter_copies_sync run is under way"}
    assert sorted(args[0] for _, args in queued(DEAD_LETTER_QUEUE)) == sorted(d.restock_id for d in missing), (
        "Flower counts each open dead letter once"
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("message_id", ["dead-letter-\u00b2", 12, ["dead-letter-1"]], ids=repr)
def test_a_message_in_the_dead_letter_queue_that_is_not_our_copy_is_left_alone(queues, message_id):
    # Anything with the broker's address can push there; the minute sweep must not crash on it.
    foreign = json.dumps({"headers": {"id": message_id}, "body": ""})
    broker().rpush(DEAD_LETTER_QUEUE, foreign)

    assert dead_letter_copies_sync(settle_seconds=0) == {"parked": 0, "removed": 0}
    assert broker().lrange(DEAD_LETTER_QUEUE, 0, -1) == [foreign.encode()]


@pytest.mark.django_db(transaction=True)
def test_a_late_completion_of_a_dead_lettered_restock_resolves_its_dead_letter(client, queues):
    # The factory had the order after all (it answered 500 after creating it): its callback settles the
    # restock, and ops are no longer asked to redrive it.
    dead_letter = make_dead_letter()
    restock = restock_of(dead_letter)

    response = callback(client, restock)

    assert response.status_code == 200 and restock_of(dead_letter).status == "fulfilled"
    resolved = fresh(dead_letter)
    assert resolved.is_resolved and resolved.redriven_by == "settled by the factory (order F-000123)"
    assert resolved.redrive_count == 0, "nothing was sent again"
    assert not Alert.objects.filter(kind="dead_letter", acknowledged_at__isnull=True).exists()
    assert queued(DEAD_LETTER_QUEUE) == [], "Flower's dead_letter count drops"
    assert "There were no dead letters to redrive." in run("redrive", "--all")


@pytest.mark.django_db(transaction=True)
def test_a_late_completion_arriving_during_a_redrive_waits_for_it_instead_of_deadlocking(client, queues, monkeypatch):
    dead_letter = make_dead_letter()

    outcomes = redrive_while_a_callback_arrives(client, monkeypatch, dead_letter, restock_of(dead_letter))

    assert not isinstance(outcomes["redrive"], Exception), outcomes["redrive"]
    assert not isinstance(outcomes["callback"], Exception), outcomes["callback"]
    assert outcomes["callback"].status_code == 200, "the factory's completion is applied once the redrive committed"
    assert restock_of(dead_letter).status == "fulfilled" and fresh(dead_letter).is_resolved


@pytest.mark.django_db(transaction=True)
def test_another_products_completion_during_a_redrive_neither_deadlocks_with_it_nor_fails(client, queues, monkeypatch):
    # After a factory outage dozens of dead letters wait while the rush goes on and the factory completes
    # other products' orders. `redrive --all` then must not die of a deadlock with one of those
    # completions, which have no dead letter of their own and so no business with these.
    from factory.tests.test_callback import placed_restock

    # What an outage leaves once ops began redriving: most of its dead letters resolved, a few waiting.
    for _ in range(40):
        make_dead_letter(redriven_days_ago=0)
    dead_letter, *waiting = [make_dead_letter() for _ in range(5)]
    other = placed_restock("RUSH01", quantity=20)

    outcomes = redrive_while_a_callback_arrives(client, monkeypatch, dead_letter, other)

    assert not isinstance(outcomes["redrive"], Exception), outcomes["redrive"]
    assert outcomes["redrive"].endswith("1 dead letter sent again; 0 had " + NOTHING)
    assert restock_of(dead_letter).status == "pending" and fresh(dead_letter).is_resolved
    assert not isinstance(outcomes["callback"], Exception), outcomes["callback"]
    assert outcomes["callback"].status_code == 200
    assert Restock.objects.get(pk=other.pk).status == "fulfilled"
    assert DeadLetter.objects.unresolved().count() == len(waiting), "the completion settled none of the others"


@pytest.mark.django_db(transaction=True)
def test_a_restock_giving_up_after_its_overdue_warning_during_a_redrive_neither_deadlocks_with_it(queues, monkeypatch):
    # In a rush after an outage ops redrive the dead letters while restocks parked by the factory's 429s,
    # told as overdue, run out of attempts. restock_overdue and factory.restock_place's dead letters share
    # an AlertLock stripe: the restock giving up must not hold it while it waits for another restock's
    # dead letter that the redrive holds, and the redrive then waits for the stripe.
    from factory import redrive as factory_redrive
    from factory import services
    from factory.retries import OutOfAttempts
    from notifications.alerts import alert_raise
    from testsupport.data import make_product

    for _ in range(40):
        make_dead_letter(redriven_days_ago=0)
    dead_letter, *waiting = [make_dead_letter() for _ in range(5)]
    late = Restock.objects.create(product=make_product("RUSH01", on_hand=0), quantity=50, reason="shortage")
    FactoryOrder.objects.create(restock=late, attempt_count=6, overdue_alerted_at=timezone.now())
    alert_raise(
        kind="restock_overdue",
        severity="warning",
        title="Restock of RUSH01 is overdue (pending)",
        dedupe_key=services.overdue_dedupe_key(late.pk),
        group_key=services.RESTOCK_OVERDUE,
        context={"sku": "RUSH01"},
    )

    marked, go = threading.Event(), threading.Event()
    mark = factory_redrive._mark_redriven

    def mark_then_wait(locked, by):  # the redrive holds its dead letter's row
        mark(locked, by)
        marked.set()
        go.wait(5)

    def give_up():
        return restock_give_up(late, OutOfAttempts("6 failed attempts in 95 s"), attempts=6)

    monkeypatch.setattr(factory_redrive, "_mark_redriven", mark_then_wait)
    outcomes = {}
    redrive = thread_keeping(outcomes, "redrive", lambda: run("redrive", str(dead_letter.pk)))
    redrive.start()
    assert marked.wait(5)
    giving_up = thread_keeping(outcomes, "give up", give_up)
    giving_up.start()
    giving_up.join(1)  # it reaches the redrive's locks and waits
    go.set()
    redrive.join(10)
    giving_up.join(10)

    assert not isinstance(outcomes["redrive"], Exception), outcomes["redrive"]
    assert not isinstance(outcomes["give up"], Exception), outcomes["give up"]
    assert fresh(dead_letter).is_resolved and restock_of(dead_letter).status == "pending"
    assert Restock.objects.get(pk=late.pk).status == "failed"
    assert DeadLetter.objects.filter(restock=late).exists()


@pytest.mark.django_db(transaction=True)
def test_a_sale_that_needs_a_restock_during_the_redrive_of_its_failed_one_still_sells(queues, monkeypatch):
    # The redrive reopens the product's failed restock while a sale takes the product to its reorder
    # point: the sale must find the reopened restock (one open restock per product), not insert a second
    # one that the unique open_product index refuses once the redrive commits (an IntegrityError: a 500
    # for a buyer whose donut was there).
    from factory import redrive as factory_redrive
    from inventory.services import SaleItem, sale_create
    from testsupport.data import make_api_client, make_failed_restock, make_product

    product = make_product("VIRAL", on_hand=5, reorder_point=5)
    failed, dead_letter = make_failed_restock(product)
    client, _ = make_api_client()
    reopened, go = threading.Event(), threading.Event()
    mark = factory_redrive._mark_redriven

    def mark_then_wait(locked, by):  # the restock is pending again, not committed yet
        mark(locked, by)
        reopened.set()
        go.wait(5)

    monkeypatch.setattr(factory_redrive, "_mark_redriven", mark_then_wait)
    outcomes = {}

    redrive = thread_keeping(outcomes, "redrive", lambda: run("redrive", str(dead_letter.pk)))
    redrive.start()
    assert reopened.wait(5)
    sale = thread_keeping(outcomes, "sale", lambda: sale_create(client=client, items=[SaleItem("VIRAL", 1)]))
    sale.start()
    sale.join(1)  # it reaches the restock check while the redrive holds its transaction open
    go.set()
    redrive.join(10)
    sale.join(10)

    assert not isinstance(outcomes["redrive"], Exception), outcomes["redrive"]
    assert not isinstance(outcomes["sale"], Exception), outcomes["sale"]
    assert outcomes["sale"].sale is not None
    assert list(Restock.objects.open().filter(product=product).values_list("pk", flat=True)) == [failed.pk]


@pytest.mark.django_db(transaction=True)
def test_dead_letters_redriven_after_their_pages_are_told_over_in_slack(queues, settings):
    # VIRAL's dead letter paged, MAPLE's came in the summary 30 s later; ops redrive both. Slack's last word
    # about them was the two critical pages: whoever was paged must read there that it is over.
    from notifications.alerts import alert_groups_flush
    from testsupport.data import make_failed_restock, make_product

    settings.SLACK_WEBHOOK_URL = "http://127.0.0.1:9/slack"
    settings.FCM_PROJECT_ID, settings.FCM_ACCESS_TOKEN = "donuts", "token"
    settings.ALERT_CRITICAL_FLUSH_SECONDS = 0  # the summary at the next sweep
    make_failed_restock(make_product("VIRAL", on_hand=0))
    make_failed_restock(make_product("MAPLE", on_hand=0))
    assert alert_groups_flush() == 1
    assert Alert.objects.filter(severity="critical").count() == 2, "the page and its summary"

    run("redrive", "--all")

    over = Alert.objects.exclude(severity="critical").get()
    assert (over.severity, over.title) == ("info", "Dead letter (all settled): VIRAL, MAPLE")
    assert "nothing left to do" in over.text and over.acknowledged_at is not None
    assert sorted(AlertDelivery.objects.filter(alert=over).values_list("channel", flat=True)) == ["log", "slack"]
    assert alert_groups_flush() == 0


@pytest.mark.django_db(transaction=True)
def test_dead_letters_all_redriven_before_their_summary_are_named_without_a_page(queues, settings):
    from notifications.alerts import alert_groups_flush
    from notifications.models import AlertGroup

    # Slack and FCM configured (no message leaves: nothing consumes the notifications queue here).
    settings.SLACK_WEBHOOK_URL = "http://127.0.0.1:9/slack"
    settings.FCM_PROJECT_ID, settings.FCM_ACCESS_TOKEN = "donuts", "token"
    make_dead_letter()
    make_dead_letter()  # held back by the first one's window: counted for a "+1 more" page at its end

    run("redrive", "--all")

    summary = Alert.objects.get(is_summary=True)  # named at once, where ops read, and paging nobody
    assert summary.title.startswith("Dead letter (all settled since): +1 more")
    assert summary.severity == "info" and summary.acknowledged_at is not None
    assert sorted(AlertDelivery.objects.filter(alert=summary).values_list("channel", flat=True)) == ["log", "slack"]
    assert not Alert.objects.filter(acknowledged_at__isnull=True).exists()
    AlertGroup.objects.update(flush_at=timezone.now())  # the window's end
    assert alert_groups_flush() == 0, "no critical '+1 more' page about dead letters already redriven"
    make_dead_letter()  # one after that is counted afresh and paged at the window's end
    AlertGroup.objects.update(flush_at=timezone.now())
    assert alert_groups_flush() == 1
    assert Alert.objects.filter(is_summary=True, severity="critical").count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_last_two_dead_letters_redriven_at_once_close_their_alert_without_a_page(queues, settings, monkeypatch):
    # Two people (the dashboard's "Redrive all" and `manage.py redrive`, say) redrive a task's last two dead
    # letters at the same moment. Each redrive asks whether another dead letter of the task still waits
    # before it closes the alert; neither may take the other's, not committed yet, for one still waiting.
    from factory import redrive as factory_redrive
    from notifications.alerts import alert_groups_flush
    from notifications.models import AlertGroup

    settings.SLACK_WEBHOOK_URL = "http://127.0.0.1:9/slack"
    settings.FCM_PROJECT_ID, settings.FCM_ACCESS_TOKEN = "donuts", "token"
    first, second = make_dead_letter(), make_dead_letter()  # the second is held back by the first's window
    asked, go = {first.pk: threading.Event(), second.pk: threading.Event()}, threading.Event()
    resolved = factory_redrive._dead_letter_resolved

    def resolved_then_wait(dead_letter, user):  # asked, its redrive not committed yet
        resolved(dead_letter, user)
        asked[dead_letter.pk].set()
        go.wait(10)

    monkeypatch.setattr(factory_redrive, "_dead_letter_resolved", resolved_then_wait)
    outcomes = {}

    one = thread_keeping(outcomes, "one", lambda: run("redrive", str(first.pk)))
    one.start()
    assert asked[first.pk].wait(10)
    other = thread_keeping(outcomes, "other", lambda: run("redrive", str(second.pk)))
    other.start()
    asked[second.pk].wait(1)  # it asks too, or waits for the first redrive to commit
    go.set()
    one.join(10)
    other.join(10)

    assert not isinstance(outcomes["one"], Exception), outcomes["one"]
    assert not isinstance(outcomes["other"], Exception), outcomes["other"]
    assert fresh(first).is_resolved and fresh(second).is_resolved
    assert not Alert.objects.filter(kind="dead_letter", acknowledged_at__isnull=True).exists(), "nothing waits"
    AlertGroup.objects.update(flush_at=timezone.now())  # the window's end
    assert alert_groups_flush() == 0, "no critical '+1 more' page about dead letters already redriven"


@pytest.mark.django_db(transaction=True)
def test_a_dead_letter_after_ops_redrove_every_one_pages_as_news_not_at_the_windows_end(queues, settings):
    # The factory failed VIRAL's restock; ops were paged, fixed it and redrove it. A minute later the
    # factory fails VIRAL again: that is news, paged like a dead letter about a new SKU (within
    # ALERT_CRITICAL_FLUSH_SECONDS), not held silently until the end of the window of an alert ops
    # acknowledged (ALERT_GROUP_WINDOW_SECONDS, 5 minutes).
    from notifications.alerts import alert_groups_flush
    from testsupport.data import make_failed_restock, make_product

    settings.SLACK_WEBHOOK_URL = "http://127.0.0.1:9/slack"
    settings.FCM_PROJECT_ID, settings.FCM_ACCESS_TOKEN = "donuts", "token"
    settings.ALERT_CRITICAL_FLUSH_SECONDS = 0  # "soon" is now, so the test need not wait for it
    viral = make_product("VIRAL", on_hand=0)
    make_failed_restock(viral)
    run("redrive", "--all")
    assert not Alert.objects.filter(acknowledged_at__isnull=True).exists(), "handled"

    make_failed_restock(viral)  # it failed again
    alert_groups_flush()  # the sweep

    page = Alert.objects.get(severity="critical", acknowledged_at__isnull=True)
    assert "VIRAL" in page.title
    assert sorted(page.deliveries.values_list("channel", flat=True)) == ["fcm", "log", "slack"]


def deliver_everything() -> None:
    """What the notifications worker does with every delivery owed, oldest first."""
    from notifications.deliveries import delivery_send

    for delivery_id in AlertDelivery.objects.filter(status="pending").order_by("pk").values_list("pk", flat=True):
        delivery_send(delivery_id)


@pytest.mark.django_db(transaction=True)
def test_dead_letters_the_factory_settles_tell_the_phones_they_paged_that_it_is_over(client, queues, phones, settings):
    # The factory answered 503 through a rush: VIRAL's and MAPLE's restocks dead-lettered and paged the ops
    # phones (VIRAL's page, then the summary naming MAPLE). The factory had the orders after all and completed
    # them. The stand-down went to Slack only: whoever the pages woke had to open a laptop to learn it was over.
    from notifications.alerts import alert_groups_flush
    from testsupport.data import make_failed_restock, make_product
    from testsupport.fake_slack_fcm import FcmStandIn, SlackStandIn

    slack, fcm = phones
    settings.ALERT_CRITICAL_FLUSH_SECONDS = 0  # the summary at the next sweep
    viral, _ = make_failed_restock(make_product("VIRAL", on_hand=0))
    maple, _ = make_failed_restock(make_product("MAPLE", on_hand=0))
    assert alert_groups_flush() == 1
    deliver_everything()
    pages = [FcmStandIn.title_of(r) for r in fcm.received if r["body"]["message"].get("topic")]
    assert pages == ["Dead letter: VIRAL (factory.restock_place gave up)", "Dead letter: +1 more (new: MAPLE)"]

    assert callback(client, viral).status_code == 200
    assert callback(client, maple).status_code == 200  # the last one: nothing is left to redrive
    deliver_everything()

    pushed = [FcmStandIn.title_of(r) for r in fcm.received if r["body"]["message"].get("topic")]
    assert pushed[2:] == ["Dead letter (all settled): VIRAL, MAPLE"], "one all-clear for both pages"
    assert SlackStandIn.title_of(slack.received[-1]) == ":information_source: Dead letter (all settled): VIRAL, MAPLE"

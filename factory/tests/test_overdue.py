"""A restock that stays open long past its expected time tells ops once, naming the SKU and why; its
receipt closes that alert."""

import re
import threading
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db.models import DateTimeField, F
from django.utils import timezone

from factory.models import FactoryOrder
from factory.receipts import restock_poll, restock_receive
from factory.redrive import dead_letters_redrive
from factory.retries import OutOfAttempts
from factory.services import overdue_dedupe_key, reconcile, restock_dispatch, restock_fail
from factory.tests.test_deadletters import deliver_everything
from inventory.models import Restock
from notifications.alerts import alert_groups_flush, alerts_escalate
from notifications.models import Alert, AlertDelivery, AlertGroup
from notifications.tests.test_tasks import ALERTS
from testsupport.data import make_failed_restock, make_product, restock_give_up
from testsupport.fake_slack_fcm import FcmStandIn, SlackStandIn
from testsupport.threads import thread_keeping

pytestmark = pytest.mark.django_db


@pytest.fixture
def grace(settings):
    return timedelta(seconds=settings.FACTORY_OVERDUE_GRACE_SECONDS)


def placed_restock(*, late_by: timedelta, polled: bool) -> Restock:
    """A placed restock whose factory estimate passed `late_by` ago; `polled`: the sweep asked the factory since."""
    now = timezone.now()
    restock = Restock.objects.create(
        product=make_product("GLAZED", on_hand=0),
        quantity=120,
        reason="shortage",
        status="placed",
        placed_at=now - late_by - timedelta(minutes=5),
        expected_at=now - late_by,
    )
    FactoryOrder.objects.create(restock=restock, order_id="F-000123", last_polled_at=now if polled else None)
    return restock


def overdue_alerts():
    return list(Alert.objects.filter(kind="restock_overdue"))


def test_a_placed_restock_still_open_after_the_factory_was_asked_alerts_once_and_its_receipt_closes_it(grace):
    restock = placed_restock(late_by=grace + timedelta(minutes=1), polled=True)

    reconcile()
    reconcile()  # the next sweeps say nothing new

    [alert] = overdue_alerts()
    assert alert.severity == "warning" and "GLAZED" in alert.title
    assert "F-000123" in alert.text and "did not report" in alert.text
    # "Restock 12 of 120 GLAZED" read as the 12th of 120 restocks.
    assert alert.text.startswith(f"Restock {restock.pk} (120 of GLAZED): ")
    assert alert.context["sku"] == "GLAZED" and alert.context["restock_id"] == restock.pk
    assert AlertDelivery.objects.filter(alert=alert).exists(), "it goes out like any alert"
    assert alert.acknowledged_at is None

    restock_receive(order_id="F-000123", reference=restock.reference, event="order.completed", quantity_produced=120)

    alert.refresh_from_db()
    assert alert.acknowledged_at is not None, "received: the alert is closed"
    assert len(overdue_alerts()) == 1


def test_a_late_placed_restock_is_asked_about_before_anyone_is_alerted(grace):
    placed_restock(late_by=grace + timedelta(minutes=1), polled=False)

    assert reconcile()["overdue_polled"] == 1
    assert overdue_alerts() == [], "a lost callback is the usual cause, and the poll settles it quietly"


def pending_restock(sku, *, opened_ago: timedelta, **order) -> Restock:
    """A pending shortage restock opened `opened_ago`, whose factory order row has these fields."""
    restock = Restock.objects.create(product=make_product(sku, on_hand=0), quantity=50, reason="shortage")
    Restock.objects.filter(pk=restock.pk).update(created_at=timezone.now() - opened_ago)
    FactoryOrder.objects.create(restock=restock, **order)
    return restock


def test_a_restock_parked_past_its_next_attempt_alerts_with_the_reason(grace):
    now = timezone.now()
    pending_restock(
        "MAPLE",
        opened_ago=grace + timedelta(minutes=20),
        attempt_count=1,
        last_error="429: slow down",
        next_attempt_at=now - grace - timedelta(seconds=1),
        dispatched_at=None,
        claimed_at=now,  # being called right now: not resent by this sweep
    )

    reconcile()

    [alert] = overdue_alerts()
    assert "MAPLE" in alert.title and "parked until" in alert.text and "429: slow down" in alert.text


@pytest.mark.parametrize("parked", [False, True], ids=["retrying", "parked"])
def test_a_restock_still_being_retried_or_parked_alerts_once_past_its_grace(grace, parked):
    # Each retry or park pushes its next attempt on: that must not keep ops from hearing of it. A retry
    # keeps the hand-over time of its message; a park clears it (the sweep sends it when due), not the
    # time of its first hand-over.
    now = timezone.now()
    opened_ago = grace + timedelta(seconds=1)
    pending_restock(
        "LEMON",
        opened_ago=opened_ago,
        attempt_count=3,
        last_error="429: slow down",
        next_attempt_at=now + timedelta(seconds=900 if parked else 5),
        dispatched_at=None if parked else now - opened_ago,
        first_dispatched_at=now - opened_ago,
    )

    reconcile()
    reconcile()

    [alert] = overdue_alerts()
    assert "LEMON" in alert.title and "not accepted by the factory yet" in alert.text
    assert "429: slow down" in alert.text


def time_passes(restock: Restock, by: timedelta) -> None:
    """As if `by` went by: the restock's opening and every time noted on its order row move that far back."""
    Restock.objects.filter(pk=restock.pk).update(created_at=F("created_at") - by)
    noted = [field.name for field in FactoryOrder._meta.concrete_fields if isinstance(field, DateTimeField)]
    FactoryOrder.objects.filter(restock=restock).update(**{name: F(name) - by for name in noted})


def test_a_restock_the_sweep_keeps_resending_as_lost_alerts_once_past_the_grace_of_its_first_hand_over(
    settings, queues
):
    # The factory queue is backlogged or its workers are down (the sweep's own worker is up): no worker takes
    # the message, and the sweep resends it as lost every OUTBOX_RESEND_AFTER_SECONDS. Each resend is a
    # hand-over too, and a grace counted from the last one, longer than that wait, never ran out: the
    # product stayed at 0 and ops heard nothing.
    settings.OUTBOX_RESEND_AFTER_SECONDS, settings.FACTORY_OVERDUE_GRACE_SECONDS = 60, 120
    restock = Restock.objects.create(product=make_product("BOSTON", on_hand=0), quantity=50, reason="shortage")
    assert restock_dispatch(restock.pk, shortage=True)

    sweeps = []
    for _ in range(3):
        time_passes(restock, timedelta(seconds=61))
        sweeps.append(reconcile())

    assert [sweep["restocks_resent"] for sweep in sweeps] == [1, 1, 1], "no worker took it: lost, sent again"
    assert [sweep["overdue_alerted"] for sweep in sweeps] == [0, 1, 0], "told once, 122 s after it first left"
    [alert] = overdue_alerts()
    assert "BOSTON" in alert.title and "not accepted by the factory yet" in alert.text
    assert "no worker has taken it" in alert.text, "where the on-call should look: the queue and its workers"


def test_a_restock_the_broker_never_took_is_told_as_not_handed_to_the_queue(settings, queues, broker_down):
    # The broker has been down since the sale: the sweep cannot send it either, and past the grace ops hear
    # of the restock with where to look.
    settings.FACTORY_OVERDUE_GRACE_SECONDS = 120
    restock = Restock.objects.create(product=make_product("JELLY", on_hand=0), quantity=50, reason="shortage")
    assert not restock_dispatch(restock.pk, shortage=True)
    time_passes(restock, timedelta(seconds=121))

    assert reconcile()["overdue_alerted"] == 1

    [alert] = overdue_alerts()
    assert "JELLY" in alert.title and "not handed to the task queue yet (is the broker up?)" in alert.text


def sweeps_after_the_broker_is_back(restock: Restock, broker_down, every: timedelta, count: int) -> list[dict]:
    """The broker is back; the first sweep, then `count - 1` more, `every` apart."""
    from donutsite.dependencies import breakers

    broker_down.back()
    breakers["broker"].close()
    sweeps = [reconcile()]
    for _ in range(count - 1):
        time_passes(restock, every)
        sweeps.append(reconcile())
    return sweeps


def test_a_restock_opened_while_the_broker_was_down_has_its_grace_from_its_first_hand_over(
    settings, queues, broker_down
):
    # It never left until the broker came back, longer than the grace after its opening: ops are told if
    # it then stays pending, not at the sweep that has only just sent it.
    settings.OUTBOX_RESEND_AFTER_SECONDS, settings.FACTORY_OVERDUE_GRACE_SECONDS = 60, 120
    restock = Restock.objects.create(product=make_product("CRULLER", on_hand=0), quantity=50, reason="shortage")
    assert not restock_dispatch(restock.pk, shortage=True)
    time_passes(restock, timedelta(minutes=5))

    sweeps = sweeps_after_the_broker_is_back(restock, broker_down, every=timedelta(seconds=61), count=3)

    assert [sweep["restocks_resent"] for sweep in sweeps] == [1, 1, 1]
    assert [sweep["overdue_alerted"] for sweep in sweeps] == [0, 0, 1], "told 122 s after it first left"
    assert "CRULLER" in overdue_alerts()[0].title


def test_a_restock_redriven_while_the_broker_was_down_has_its_grace_from_its_first_hand_over_since(
    settings, queues, broker_down, django_capture_on_commit_callbacks
):
    # Its first run left the queue an hour ago; the redrive's run is told of by its own first hand-over.
    settings.OUTBOX_RESEND_AFTER_SECONDS, settings.FACTORY_OVERDUE_GRACE_SECONDS = 60, 120
    restock, dead_letter = make_failed_restock(make_product("MAPLE", on_hand=0))
    sent = timezone.now()
    FactoryOrder.objects.filter(restock=restock).update(dispatched_at=sent, first_dispatched_at=sent, dispatch_count=1)
    time_passes(restock, timedelta(hours=1))
    with django_capture_on_commit_callbacks(execute=True):
        assert dead_letters_redrive([dead_letter], by="ops").sent == [dead_letter]
    assert FactoryOrder.objects.get(restock=restock).dispatch_count == 1, "the broker is down: not sent"
    time_passes(restock, timedelta(minutes=5))

    sweeps = sweeps_after_the_broker_is_back(restock, broker_down, every=timedelta(seconds=61), count=3)

    assert [sweep["restocks_resent"] for sweep in sweeps] == [1, 1, 1]
    assert [sweep["overdue_alerted"] for sweep in sweeps] == [0, 0, 1], "told 122 s after the redrive's run left"
    assert "MAPLE" in overdue_alerts()[0].title


def test_a_restock_that_fails_for_good_after_its_overdue_warning_is_not_paged_again_by_the_warning(grace, settings):
    # Parked by the factory's Retry-After, then out of attempts: its dead letter pages ops at once. Its
    # overdue warning, left open, was pushed to the phones ALERT_ESCALATE_AFTER_SECONDS later, a second page
    # about the same restock saying it was "parked until" a time long past.
    settings.FCM_PROJECT_ID, settings.FCM_ACCESS_TOKEN = "donuts", "token"
    now = timezone.now()
    restock = pending_restock(
        "MAPLE",
        opened_ago=grace + timedelta(minutes=1),
        attempt_count=1,
        last_error="429: slow down",
        next_attempt_at=now + timedelta(seconds=900),
    )
    reconcile()
    [warning] = overdue_alerts()

    assert restock_fail(restock.pk, reason="OutOfAttempts: 6 failed attempts; last: 502")
    Alert.objects.update(created_at=now - timedelta(seconds=settings.ALERT_ESCALATE_AFTER_SECONDS + 1))

    assert alerts_escalate() == 0, "the escalation sweep pushes nothing about it"
    assert not AlertDelivery.objects.filter(alert=warning, channel="fcm").exists()


class FactoryThatLostTheOrder:
    """A factory that knows no order of ours, by its id nor by our reference."""

    def get_order(self, order_id):
        return None

    def find_order(self, reference):
        return None


def test_a_placed_restock_the_factory_lost_is_not_paged_about_by_its_warning_once_received(grace, settings):
    # Told as overdue while placed, then the factory knew no such order, so it was placed again: its
    # receipt left that warning open, and the phones were paged about a restock received long before.
    settings.FCM_PROJECT_ID, settings.FCM_ACCESS_TOKEN = "donuts", "token"
    restock = placed_restock(late_by=grace + timedelta(minutes=1), polled=True)
    reconcile()
    [warning] = overdue_alerts()
    FactoryOrder.objects.filter(restock=restock).update(last_polled_at=timezone.now() - grace - timedelta(seconds=1))
    assert restock_poll(restock.pk, client=FactoryThatLostTheOrder()) == "placed again"

    restock_receive(order_id="F-000456", reference=restock.reference, event="order.completed", quantity_produced=120)
    Alert.objects.update(created_at=timezone.now() - timedelta(seconds=settings.ALERT_ESCALATE_AFTER_SECONDS + 1))

    assert alerts_escalate() == 0, "received: nothing is pushed to the phones about it"
    warning.refresh_from_db()
    assert warning.acknowledged_at is not None


def test_a_restock_within_its_grace_says_nothing(grace):
    placed_restock(late_by=grace - timedelta(seconds=30), polled=True)

    reconcile()

    assert overdue_alerts() == []


def test_a_receipt_arriving_while_the_sweep_alerts_leaves_no_alert_open(grace, monkeypatch):
    # The callback (or the poll the sweep just sent) receives the restock between the sweep choosing it as
    # overdue and raising its alert: the receipt found no alert to close, so one raised after it would stay
    # open for ever, and be pushed to the ops phones when escalated, about donuts already on the shelf.
    from factory import services

    restock = placed_restock(late_by=grace + timedelta(minutes=1), polled=True)
    alert = services._overdue_alert

    def received_just_before(late, reason):
        restock_receive(order_id="F-000123", reference=late.reference, event="order.completed", quantity_produced=120)
        return alert(late, reason)

    monkeypatch.setattr(services, "_overdue_alert", received_just_before)

    reconcile()

    assert Restock.objects.get(pk=restock.pk).status == "fulfilled"
    assert not Alert.objects.filter(kind="restock_overdue", acknowledged_at__isnull=True).exists()


@pytest.mark.django_db(transaction=True)
def test_a_receipt_still_committing_while_the_sweep_alerts_leaves_no_alert_open(grace, monkeypatch):
    # The same, with the receipt's transaction still open when the sweep reaches the restock: the sweep
    # waits for it, then finds the restock received.
    import threading

    from django.db import connections

    from factory import services

    restock = placed_restock(late_by=grace + timedelta(minutes=1), polled=True)
    inside, go = threading.Event(), threading.Event()
    order_row = services._order_row
    receiving = threading.local()

    def order_row_then_wait(restock_id):  # the receipt holds the product's and the restock's rows
        if getattr(receiving, "now", False):
            inside.set()
            go.wait(10)
        return order_row(restock_id)

    def receive():
        receiving.now = True
        try:
            restock_receive(
                order_id="F-000123", reference=restock.reference, event="order.completed", quantity_produced=120
            )
        finally:
            connections.close_all()

    def sweep():
        try:
            reconcile()
        finally:
            connections.close_all()

    monkeypatch.setattr(services, "_order_row", order_row_then_wait)
    receipt, sweeping = threading.Thread(target=receive), threading.Thread(target=sweep)
    receipt.start()
    assert inside.wait(10)
    sweeping.start()
    sweeping.join(1)  # it reaches the restock the receipt holds, and waits
    go.set()
    receipt.join(10)
    sweeping.join(10)

    assert Restock.objects.get(pk=restock.pk).status == "fulfilled"
    assert not Alert.objects.filter(kind="restock_overdue", acknowledged_at__isnull=True).exists()


def test_a_failed_restock_sent_again_alerts_again_if_it_stays_open_past_its_grace(grace):
    # Told once per restock: a restock that was overdue, failed, and was sent again (a new need reopened it,
    # or a redrive) was never told about again, however long its new run stayed pending.
    from inventory.services import SaleItem, sale_create
    from testsupport.data import make_api_client

    now = timezone.now()
    restock = pending_restock(
        "MAPLE",
        opened_ago=grace + timedelta(minutes=20),
        attempt_count=1,
        last_error="429: slow down",
        next_attempt_at=now - grace - timedelta(seconds=1),
        dispatched_at=None,
        claimed_at=now,
    )
    reconcile()
    FactoryOrder.objects.filter(restock=restock).update(claimed_at=None)  # its last call failed, and is recorded
    assert restock_fail(restock.pk, reason="OutOfAttempts: 6 attempts")
    client, _ = make_api_client()
    with pytest.raises(Exception):  # noqa: B017 - OutOfStock; the need reopens the failed restock
        sale_create(client=client, items=[SaleItem("MAPLE", 1)])
    long_ago = timezone.now() - grace - timedelta(seconds=1)
    FactoryOrder.objects.filter(restock=restock).update(
        redriven_at=long_ago, dispatched_at=long_ago, first_dispatched_at=long_ago, claimed_at=now
    )
    AlertGroup.objects.update(window_ends_at=long_ago)  # the first alert's window is over

    reconcile()

    first, second = sorted(overdue_alerts(), key=lambda alert: alert.pk)
    assert first.acknowledged_at is not None, "closed when it failed"
    assert second.acknowledged_at is None and "MAPLE" in second.title


STORM = [f"RUSH{n:02}" for n in range(19)]


def parked_by_a_rate_limit(grace, skus) -> list[Restock]:
    """Restocks of `skus`, each parked by the factory's `429 Retry-After` past its grace: a rush's storm."""
    now = timezone.now()
    return [
        pending_restock(
            sku,
            opened_ago=grace + timedelta(minutes=1),
            attempt_count=1,
            last_error=f"429: slow down ({sku})",
            next_attempt_at=now + timedelta(seconds=150),
            first_dispatched_at=now - grace - timedelta(minutes=1),
        )
        for sku in skus
    ]


def slack_messages() -> list[Alert]:
    return list(Alert.objects.filter(deliveries__channel="slack").order_by("pk"))


def received(restocks) -> None:
    for restock in restocks:
        restock_receive(
            order_id=f"F-{restock.pk}", reference=restock.reference, event="order.completed", quantity_produced=50
        )


def window_ends() -> None:
    AlertGroup.objects.update(window_ends_at=timezone.now() - timedelta(seconds=1), flush_at=timezone.now())


def escalation_due(settings) -> None:
    Alert.objects.update(created_at=timezone.now() - timedelta(seconds=settings.ALERT_ESCALATE_AFTER_SECONDS + 1))


@pytest.fixture
def slack_and_phones(settings):
    # Configured, nothing leaves: no worker consumes the notifications queue here.
    settings.SLACK_WEBHOOK_URL = "http://127.0.0.1:9/slack"
    settings.FCM_PROJECT_ID, settings.FCM_ACCESS_TOKEN = "donuts", "token"


def test_a_storm_of_overdue_restocks_is_one_slack_message_and_a_summary_naming_every_sku(
    grace, settings, slack_and_phones
):
    # The factory answered 429 for a while in a rush: 19 parked restocks passed their grace together, and
    # Slack got 19 warnings within 10 s, where sold-out and dead letters send one and a summary.
    restocks = parked_by_a_rate_limit(grace, STORM)

    assert reconcile()["overdue_alerted"] == 19

    [first] = slack_messages()
    window_ends()
    assert alert_groups_flush() == 1
    first, summary = slack_messages()
    assert summary.severity == "warning" and summary.title.startswith("Restock overdue: +18 more")
    named = {first.context["sku"], *summary.context["sku"].split(", ")}
    assert named == set(STORM), "every overdue SKU is named where ops read"
    # Each restock's own warning, with its reason, stays in the admin.
    warnings = Alert.objects.filter(kind="restock_overdue", is_summary=False)
    assert sorted(w.context["sku"] for w in warnings) == STORM
    assert all(f"429: slow down ({w.context['sku']})" in w.text for w in warnings)

    received(restocks)
    escalation_due(settings)

    assert alerts_escalate() == 0, "all received: nothing is pushed to the phones"
    assert not AlertDelivery.objects.filter(channel="fcm").exists()
    assert not Alert.objects.filter(kind="restock_overdue", acknowledged_at__isnull=True).exists(), "all settled"


def test_a_storm_received_before_its_summary_is_summarized_as_settled(grace, settings, slack_and_phones):
    restocks = parked_by_a_rate_limit(grace, STORM)
    reconcile()

    received(restocks)
    window_ends()
    assert alert_groups_flush() == 1

    first, summary = slack_messages()
    assert summary.title.startswith("Restock overdue (all settled since): +18 more")
    assert summary.severity == "info" and summary.acknowledged_at is not None
    assert {first.context["sku"], *summary.context["sku"].split(", ")} == set(STORM)
    escalation_due(settings)
    assert alerts_escalate() == 0
    assert not Alert.objects.filter(kind="restock_overdue", acknowledged_at__isnull=True).exists()


def test_a_storm_s_summary_tells_the_restocks_received_since_from_the_ones_still_open(grace, phones):
    # Seen under make run: "Restock overdue: +5 more (new: JELLY, MAPLE, ...)" came 70 s after the all-clear
    # "Restock overdue (all settled): JELLY, MAPLE", and read as if they were overdue again.
    slack, _ = phones
    restocks = {}
    for sku in ("GLAZED", "JELLY", "LEMON", "MAPLE", "MATCHA"):  # a sweep each: the order the summary names them
        [restocks[sku]] = parked_by_a_rate_limit(grace, [sku])
        reconcile()
    received([restocks["JELLY"], restocks["MAPLE"]])

    window_ends()
    assert alert_groups_flush() == 1
    deliver_everything()

    summary = slack.received[-1]
    assert SlackStandIn.title_of(summary) == (
        ":warning: Restock overdue: +4 more (new: LEMON, MATCHA; settled since: JELLY, MAPLE)"
    )
    assert "New since the last message: LEMON, MATCHA. Settled since: JELLY, MAPLE." in summary["body"]["text"]
    fields = [field["text"] for block in summary["body"]["blocks"] for field in block.get("fields", [])]
    assert {"*New*\nLEMON, MATCHA", "*Settled since*\nJELLY, MAPLE"} <= set(fields)


def test_a_summary_of_restocks_all_received_since_is_an_info_line(grace, phones):
    # Its first warning still open, the two held back both received before the window ended: a warning
    # line (":warning: ... (settled since: LEMON, MAPLE)") asked for action about nothing.
    slack, _ = phones
    restocks = {}
    for sku in ("GLAZED", "LEMON", "MAPLE"):
        [restocks[sku]] = parked_by_a_rate_limit(grace, [sku])
        reconcile()
    received([restocks["LEMON"], restocks["MAPLE"]])

    window_ends()
    assert alert_groups_flush() == 1
    deliver_everything()

    assert SlackStandIn.title_of(slack.received[-1]) == (
        ":information_source: Restock overdue: +2 more (settled since: LEMON, MAPLE)"
    )


def test_of_a_storm_only_the_restocks_still_open_are_pushed_to_the_phones(grace, settings, slack_and_phones):
    # The summary counts the whole storm: escalated, it would page about restocks received since.
    restocks = parked_by_a_rate_limit(grace, STORM)
    reconcile()
    window_ends()
    alert_groups_flush()

    received(restocks[2:])
    escalation_due(settings)

    assert alerts_escalate() == 2
    [push] = Alert.objects.filter(deliveries__channel="fcm")
    assert push.title.startswith("Unacknowledged: 2 warnings (")
    assert sorted(re.findall(r"RUSH[0-9]+", push.title)) == ["RUSH00", "RUSH01"], "the two still open, only"


def escalated_together(grace, settings, skus) -> list[Restock]:
    """Overdue restocks of `skus`, told and left unacknowledged until one push took them to the phones."""
    restocks = parked_by_a_rate_limit(grace, skus)
    reconcile()
    escalation_due(settings)
    assert alerts_escalate() == len(skus)
    return restocks


SKUS = ["GLAZED", "MAPLE", "VIRAL"]


def phone_pushes(fcm) -> list[tuple[str, list[str]]]:
    """What reached the ops phones so far, oldest first (every delivery owed sent, as the worker would): each
    push's title up to its colon, and the SKUs it names, sorted (restocks go overdue in no set order)."""
    deliver_everything()
    titles = [FcmStandIn.title_of(r) for r in fcm.received if r["body"]["message"].get("topic")]
    return [(title.split(":")[0], sorted(re.findall("|".join(SKUS), title))) for title in titles]


def test_the_phones_hear_once_that_the_restocks_they_were_woken_about_were_all_received(grace, settings, phones):
    # Woken by "Unacknowledged: 3 warnings", the on-call heard nothing more on the phone once those restocks
    # were received: only the admin told them it was over.
    slack, fcm = phones
    glazed, maple, viral = escalated_together(grace, settings, SKUS)
    woken = ("Unacknowledged", SKUS)
    assert phone_pushes(fcm) == [woken]

    received([glazed, viral])
    assert phone_pushes(fcm) == [woken], "MAPLE is still overdue"

    received([maple])
    assert phone_pushes(fcm) == [woken, ("Restock overdue (all settled)", SKUS)]
    assert SlackStandIn.title_of(slack.received[-1]).startswith(":information_source: Restock overdue (all settled): ")


def test_a_single_escalated_overdue_warning_received_tells_the_phones_it_is_over(grace, settings, phones):
    _, fcm = phones
    [glazed] = escalated_together(grace, settings, ["GLAZED"])
    assert phone_pushes(fcm) == [("Unacknowledged", ["GLAZED"])]

    received([glazed])

    assert phone_pushes(fcm)[1:] == [("Restock overdue (all settled)", ["GLAZED"])]


def test_escalated_restocks_someone_took_in_the_admin_are_not_stood_down_on_the_phones(
    grace, settings, phones, admin_client
):
    # Whoever acknowledged GLAZED's warning is at a screen, and Slack told the others who took it.
    _, fcm = phones
    glazed, maple = escalated_together(grace, settings, ["GLAZED", "MAPLE"])
    taken = Alert.objects.get(kind="restock_overdue", context__sku="GLAZED")
    admin_client.post(ALERTS, {"action": "acknowledge", "_selected_action": [taken.pk]})

    received([glazed, maple])

    assert phone_pushes(fcm) == [("Unacknowledged", ["GLAZED", "MAPLE"])]


def test_escalated_restocks_one_of_which_failed_for_good_are_left_to_its_dead_letter(grace, settings, phones):
    # GLAZED's dead letter paged the phones; its own all-clear, if the factory settles it, is the last word.
    _, fcm = phones
    glazed, maple = escalated_together(grace, settings, ["GLAZED", "MAPLE"])
    assert restock_fail(glazed.pk, reason="OutOfAttempts: 6 failed attempts; last: 502")

    received([maple])

    assert phone_pushes(fcm) == [("Unacknowledged", ["GLAZED", "MAPLE"])]


def test_a_pushed_restock_redriven_by_hand_then_received_lets_the_push_s_all_clear_name_it(grace, settings, phones):
    # GLAZED failed for good after the push; ops redrove its dead letter (that all-clear is Slack's: whoever
    # redrove is at a screen), and the factory then delivered it. The push's all-clear, once MAPLE is in
    # too, names GLAZED: true by then (its restock received, its dead letter resolved), and the phones' one
    # word that what the dead letter paged them about is over.
    from factory.models import DeadLetter

    _, fcm = phones
    glazed, maple = escalated_together(grace, settings, ["GLAZED", "MAPLE"])
    restock_give_up(glazed, OutOfAttempts("6 failed attempts; last: 502"), attempts=6)
    dead_letters_redrive(DeadLetter.objects.filter(restock=glazed), by="ops")
    assert phone_pushes(fcm) == [("Unacknowledged", ["GLAZED", "MAPLE"]), ("Dead letter", ["GLAZED"])]

    received([glazed])
    assert len(phone_pushes(fcm)) == 2, "MAPLE is still overdue"

    received([maple])
    assert phone_pushes(fcm)[2:] == [("Restock overdue (all settled)", ["GLAZED", "MAPLE"])]
    assert not DeadLetter.objects.unresolved().exists()
    assert set(Restock.objects.filter(pk__in=[glazed.pk, maple.pk]).values_list("status", flat=True)) == {"fulfilled"}


def test_a_pushed_restock_redriven_and_still_open_keeps_the_push_s_all_clear_back(grace, settings, phones):
    # The other order: MAPLE comes in while GLAZED, redriven, is on its way again. "All settled" would be
    # false on the phones that GLAZED's dead letter paged.
    from factory.models import DeadLetter

    _, fcm = phones
    glazed, maple = escalated_together(grace, settings, ["GLAZED", "MAPLE"])
    restock_give_up(glazed, OutOfAttempts("6 failed attempts; last: 502"), attempts=6)
    dead_letters_redrive(DeadLetter.objects.filter(restock=glazed), by="ops")

    received([maple])

    assert phone_pushes(fcm) == [("Unacknowledged", ["GLAZED", "MAPLE"]), ("Dead letter", ["GLAZED"])]


def test_a_push_whose_failed_restock_s_warning_was_purged_gets_no_all_clear_for_the_rest(grace, settings, phones):
    # GLAZED failed for good, and its warning, acknowledged then, is older than the purge's cutoff; the push
    # went out a little later, and is not. Purged, it left MAPLE's receipt sure every restock pushed was in.
    _, fcm = phones
    glazed, maple = escalated_together(grace, settings, ["GLAZED", "MAPLE"])
    assert restock_fail(glazed.pk, reason="OutOfAttempts: 6 failed attempts; last: 502")
    Alert.objects.filter(dedupe_key=overdue_dedupe_key(glazed.pk)).update(
        created_at=timezone.now() - timedelta(days=31)
    )

    call_command("purge_alerts", stdout=StringIO())
    received([maple])

    assert phone_pushes(fcm) == [("Unacknowledged", ["GLAZED", "MAPLE"])]


@pytest.mark.django_db(transaction=True)
def test_the_last_two_restocks_of_a_push_received_at_once_tell_the_phones_once(
    grace, settings, phones, queues, monkeypatch
):
    # Two workers record the last two receipts in parallel: each must not take the other's warning, not
    # committed yet, as still open (no all-clear at all), nor both send one.
    from factory import services

    _, fcm = phones
    glazed, maple = escalated_together(grace, settings, ["GLAZED", "MAPLE"])
    checking, go = threading.Event(), threading.Event()
    escalated_with = services.alerts_escalated_with

    def held_while_the_other_receipt_comes(dedupe_key):
        warnings = escalated_with(dedupe_key)
        if not checking.is_set():  # the first receipt has found the other restock's warning open
            checking.set()
            go.wait(5)
        return warnings

    monkeypatch.setattr(services, "alerts_escalated_with", held_while_the_other_receipt_comes)
    outcomes = {}
    first = thread_keeping(outcomes, "GLAZED", lambda: received([glazed]))
    first.start()
    assert checking.wait(5)
    second = thread_keeping(outcomes, "MAPLE", lambda: received([maple]))
    second.start()
    second.join(1)  # it waits for the overdue warnings' lock
    go.set()
    first.join(10)
    second.join(10)

    assert outcomes == {"GLAZED": None, "MAPLE": None}
    assert phone_pushes(fcm) == [
        ("Unacknowledged", ["GLAZED", "MAPLE"]),
        ("Restock overdue (all settled)", ["GLAZED", "MAPLE"]),
    ]

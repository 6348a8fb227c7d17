"""End to end with real processes: gunicorn, Celery workers, the factory simulator, MariaDB and Redis.

The test talks to the system the way its users do: client apps over HTTP, ops through manage.py, and
it reads the simulator's own records to count factory orders.
"""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.test import override_settings

from factory import services
from factory.models import DeadLetter, FactoryAttempt, FactoryOrder
from inventory.models import Product, Restock, StockMovement
from inventory.selectors import ledger_differences
from notifications.models import Device, Subscription
from testsupport.api import buy_over_http
from testsupport.data import make_api_client, make_product
from testsupport.fake_slack_fcm import FcmStandIn, SlackStandIn
from testsupport.processes import System, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def standins():
    with SlackStandIn() as slack, FcmStandIn(token="e2e-fcm-token", project_id="donuts") as fcm:
        yield slack, fcm


@pytest.fixture(scope="module")
def system(django_db_setup, django_db_blocker, standins):
    from celery import current_app

    slack, fcm = standins
    running = System(broker_url=current_app.conf.broker_url)
    running.env.update(
        SLACK_WEBHOOK_URL=slack.url + "/services/e2e",
        FCM_ENDPOINT=fcm.url,
        FCM_PROJECT_ID="donuts",
        FCM_ACCESS_TOKEN="e2e-fcm-token",
    )
    running.flush_broker()
    try:
        running.start_factory("--production-seconds", "1", "--seed", "7")
        running.start_web()
        running.start_worker()
        yield running
    finally:
        running.stop()


@pytest.fixture
def fresh(system, standins):
    """A clean broker, a well-behaved factory and empty stand-ins for each test; an API key for buying."""
    system.flush_broker()
    system.factory_configure(**FAULTLESS)
    for standin in standins:
        standin.clear()
    _, key = make_api_client()
    return key


FAULTLESS = {
    "error_rate": 0.0,
    "error_after_create_rate": 0.0,
    "rate_limit_rate": 0.0,
    "hang_rate": 0.0,
    "latency_ms": [0, 0],
    "callback_loss_rate": 0.0,
    "duplicate_callback_rate": 0.0,
    "partial_rate": 0.0,
    "production_seconds": 1.0,
}


def restock_of(sku) -> Restock:
    return Restock.objects.filter(product__sku=sku).order_by("pk").last()


def wait_for_status(sku, status, timeout=30):
    return wait_until(
        lambda: (r := restock_of(sku)) is not None and r.status == status and r,
        timeout=timeout,
        what=f"the {sku} restock to be {status} (now {getattr(restock_of(sku), 'status', None)})",
    )


def factory_orders(system, restock):
    return [o for o in system.factory_get("/_sim/orders")["results"] if o["reference"] == restock.reference]


def callback_answers(system, restock) -> list:
    """The HTTP statuses our web server gave the simulator's callback attempts for this restock."""
    return [a["status"] for o in factory_orders(system, restock) for a in o["callback"]["attempts"]]


def test_sell_out_then_the_factory_fills_the_shelf_and_selling_resumes(system, fresh):
    make_product("VIRAL", on_hand=2, reorder_point=0, reorder_quantity=10)

    assert buy_over_http(system, fresh, "VIRAL", 2)[0] == 201
    status, body = buy_over_http(system, fresh, "VIRAL", 1)
    assert status == 409 and body["code"] == "out_of_stock"

    restock = wait_for_status("VIRAL", "fulfilled")
    assert body["shortages"][0]["restock"]["id"] == restock.pk
    assert Product.objects.get(sku="VIRAL").on_hand == 10
    assert buy_over_http(system, fresh, "VIRAL", 1)[0] == 201
    assert len(factory_orders(system, restock)) == 1
    assert ledger_differences() == []


def test_a_factory_failing_three_times_then_accepting_gets_exactly_one_order(system, fresh):
    make_product("MAPLE", on_hand=0, reorder_quantity=10)
    system.factory_configure(fail_next=3)

    buy_over_http(system, fresh, "MAPLE", 1)
    restock = wait_for_status("MAPLE", "fulfilled")

    outcomes = list(FactoryAttempt.objects.filter(restock=restock).values_list("outcome", flat=True))
    assert outcomes == ["transient", "transient", "transient", "accepted"]
    assert len(factory_orders(system, restock)) == 1
    assert Product.objects.get(sku="MAPLE").on_hand == 10


def test_a_factory_always_failing_dead_letters_alerts_ops_and_a_redrive_fills_the_shelf(system, fresh, standins):
    make_product("LEMON", on_hand=0, reorder_quantity=12)
    system.factory_configure(error_rate=1.0)

    buy_over_http(system, fresh, "LEMON", 1)
    restock = wait_for_status("LEMON", "failed")

    dead = DeadLetter.objects.get(restock=restock)
    assert dead.task_name == "factory.restock_place" and dead.queue == "factory"
    assert "OutOfAttempts" in dead.exception_type and dead.traceback
    # Given up after the budget's calls and no sooner than the retry window after the first of them.
    calls = list(FactoryAttempt.objects.filter(restock=restock).order_by("number"))
    assert len(calls) >= int(System.TIMING["FACTORY_MAX_ATTEMPTS"])
    window = timedelta(seconds=float(System.TIMING["FACTORY_RETRY_FOR_SECONDS"]))
    assert dead.first_failed_at - calls[0].created_at >= window
    assert factory_orders(system, restock) == []
    slack, fcm = standins
    to_slack = wait_until(
        lambda: [r["body"]["text"] for r in slack.received if "Dead letter" in r["body"]["text"]],
        timeout=10,
        what="the dead letter's alert on Slack",
    )
    assert "LEMON" in to_slack[0]
    wait_until(
        lambda: any("failed 5 calls in a row" in r["body"]["text"] for r in slack.received),
        timeout=10,
        what="the warning that the factory keeps failing",
    )
    pushed = wait_until(
        lambda: [r["body"]["message"] for r in fcm.received if r["body"]["message"]["data"]["kind"] == "dead_letter"],
        timeout=10,
        what="the dead letter's push",
    )
    assert pushed[0]["topic"] == "ops-alerts"

    system.factory_configure(error_rate=0.0)
    call_command("redrive", str(dead.pk))
    wait_for_status("LEMON", "fulfilled")
    assert Product.objects.get(sku="LEMON").on_hand == 12
    dead.refresh_from_db()
    assert dead.redriven_at is not None


def test_a_factory_rate_limiting_past_the_budget_then_accepting_orders_once_and_pages_nobody(system, fresh, standins):
    # A rush: the factory answers 429 for more calls than FACTORY_MAX_ATTEMPTS allows failures. The restock
    # waits as asked, is not given up, and is ordered once the factory takes orders again.
    make_product("COCOA", on_hand=0, reorder_quantity=10)
    system.factory_configure(rate_limit_rate=1.0, retry_after_seconds=1)
    budget = int(System.TIMING["FACTORY_MAX_ATTEMPTS"])

    buy_over_http(system, fresh, "COCOA", 1)
    wait_until(
        lambda: FactoryAttempt.objects.filter(restock__product__sku="COCOA", outcome="rate_limited").count() > budget,
        timeout=60,
        what=f"more than {budget} rate-limited calls",
    )
    system.factory_configure(rate_limit_rate=0.0)
    restock = wait_for_status("COCOA", "fulfilled")

    outcomes = list(FactoryAttempt.objects.filter(restock=restock).values_list("outcome", flat=True))
    assert outcomes[-1] == "accepted" and set(outcomes[:-1]) == {"rate_limited"} and len(outcomes) > budget + 1
    assert len(factory_orders(system, restock)) == 1 and Product.objects.get(sku="COCOA").on_hand == 10
    assert not DeadLetter.objects.filter(restock=restock).exists()
    slack, fcm = standins
    assert not [r for r in slack.received if "Dead letter" in r["body"]["text"]]
    assert not [r for r in fcm.received if r["body"]["message"]["data"]["kind"] == "dead_letter"]


def test_an_order_the_factory_made_before_every_call_failed_is_not_ordered_again_by_the_next_shortage(system, fresh):
    # The factory stores the order and then answers 5xx, every time: the restock runs out of attempts and
    # fails with its order at the factory. The next shortage, before anyone asked the factory about it,
    # must not order the same donuts again under a new reference.
    make_product("GLAZED", on_hand=0, reorder_quantity=10)
    system.factory_configure(error_rate=1.0, error_after_create_rate=1.0, production_seconds=600)

    assert buy_over_http(system, fresh, "GLAZED", 1)[0] == 409
    failed = wait_for_status("GLAZED", "failed")
    assert [o["status"] for o in factory_orders(system, failed)] == ["accepted"], "the factory has it"
    system.factory_configure(error_rate=0.0)

    status, body = buy_over_http(system, fresh, "GLAZED", 1)
    assert status == 409
    wait_until(
        lambda: Restock.objects.filter(product__sku="GLAZED", status="placed").exists(),
        timeout=30,
        what="the GLAZED restock to be placed",
    )
    orders = [o for o in system.factory_get("/_sim/orders")["results"] if o["sku"] == "GLAZED"]
    assert [o["reference"] for o in orders] == [failed.reference], "one order for one need"
    assert body["shortages"][0]["restock"]["id"] == failed.pk, "the shortage names the restock it reopened"
    assert not DeadLetter.objects.unresolved().exists(), "the factory took it: nothing left to redrive"
    system.factory_post(f"/_sim/orders/{orders[0]['order_id']}/complete", {"callback": "send"})
    wait_for_status("GLAZED", "fulfilled")
    assert Product.objects.get(sku="GLAZED").on_hand == 10
    assert list(Restock.objects.filter(product__sku="GLAZED").values_list("pk", flat=True)) == [failed.pk]
    assert FactoryAttempt.objects.filter(restock=failed).last().outcome == "replayed", "the factory's own answer"


def test_duplicate_callbacks_grow_stock_once(system, fresh):
    make_product("JELLY", on_hand=0, reorder_quantity=7)
    system.factory_configure(duplicate_callback_rate=1.0)

    buy_over_http(system, fresh, "JELLY", 1)
    restock = wait_for_status("JELLY", "fulfilled")
    wait_until(lambda: callback_answers(system, restock).count(200) >= 2, timeout=15, what="both callbacks answered")

    assert Product.objects.get(sku="JELLY").on_hand == 7
    assert StockMovement.objects.filter(kind="receipt", restock=restock).count() == 1


def test_a_lost_callback_is_found_by_reconcile(system, fresh):
    make_product("CRULLER", on_hand=0, reorder_quantity=9)
    system.factory_configure(callback_loss_rate=1.0)

    buy_over_http(system, fresh, "CRULLER", 1)
    restock = wait_for_status("CRULLER", "placed")
    wait_until(lambda: factory_orders(system, restock)[0]["status"] == "completed", timeout=15, what="production")
    assert Restock.objects.get(pk=restock.pk).status == "placed", "no callback came"

    with override_settings(FACTORY_OVERDUE_GRACE_SECONDS=0):
        assert services.reconcile()["overdue_polled"] == 1
    wait_for_status("CRULLER", "fulfilled")
    assert Product.objects.get(sku="CRULLER").on_hand == 9


def test_a_worker_killed_during_the_factory_call_still_orders_exactly_once(system, fresh):
    make_product("BOSTON", on_hand=0, reorder_quantity=5)
    system.factory_configure(latency_ms=[1500, 1500])

    buy_over_http(system, fresh, "BOSTON", 1)
    restock = wait_until(
        lambda: (
            (r := restock_of("BOSTON"))
            and FactoryOrder.objects.filter(restock=r, claimed_at__isnull=False).exists()
            and r
        ),
        timeout=15,
        what="the claim",
    )
    system.processes[f"worker{system.workers}"].kill()  # SIGKILL the whole worker mid-call
    system.factory_configure(latency_ms=[0, 0])
    system.start_worker()

    wait_for_status("BOSTON", "fulfilled", timeout=60)
    assert len(factory_orders(system, restock)) == 1
    assert Product.objects.get(sku="BOSTON").on_hand == 5


def test_a_message_from_another_release_that_the_task_cannot_take_gives_nothing_up(system, fresh):
    """During a deploy old and new workers run each other's messages. One whose arguments this release's
    task does not take (a newer release's extra argument) is not the restock's failure: no dead letter, no
    page; the restock stays pending and the sweep sends it again."""
    from celery import current_app

    restock = Restock.objects.create(
        product=make_product("CRULLER", on_hand=0), quantity=8, reason=Restock.Reason.MANUAL
    )
    message = current_app.send_task("factory.restock_place", args=[restock.pk, "shortage"])
    wait_until(
        lambda: (
            f"[{message.id}] succeeded" in system.processes[f"worker{system.workers}"].output()
            or restock_of("CRULLER").status != "pending"
        ),
        timeout=30,
        what="the worker to take the message",
    )

    assert restock_of("CRULLER").status == "pending"
    assert not DeadLetter.objects.exists() and factory_orders(system, restock) == []
    with override_settings(OUTBOX_RESEND_AFTER_SECONDS=0):
        call_command("reconcile")
    wait_for_status("CRULLER", "fulfilled")
    assert len(factory_orders(system, restock)) == 1
    assert Product.objects.get(sku="CRULLER").on_hand == 8


def test_a_callback_with_a_bad_signature_changes_nothing(system, fresh):
    make_product("MATCHA", on_hand=0, reorder_quantity=4)
    system.start_factory("--production-seconds", "0.5", "--callback-secret", "not-our-secret")
    try:
        buy_over_http(system, fresh, "MATCHA", 1)
        restock = wait_for_status("MATCHA", "placed")
        wait_until(lambda: 401 in callback_answers(system, restock), timeout=15, what="the forged callback refused")
        assert Restock.objects.get(pk=restock.pk).status == "placed"
        assert Product.objects.get(sku="MATCHA").on_hand == 0
    finally:
        system.start_factory("--production-seconds", "1", "--seed", "7")


def test_a_receipt_after_a_stock_out_pushes_the_subscribed_device(system, fresh, standins):
    _, fcm = standins
    make_product("STRAWBERRY", on_hand=1, reorder_point=0, reorder_quantity=6)
    client, key = make_api_client()
    device = Device.objects.create(token="customer-phone-1", platform="android", client=client)
    Subscription.objects.create(device=device, sku="STRAWBERRY")

    assert buy_over_http(system, key, "STRAWBERRY", 1)[0] == 201
    assert buy_over_http(system, key, "STRAWBERRY", 1)[0] == 409
    wait_for_status("STRAWBERRY", "fulfilled")

    push = wait_until(
        lambda: [r for r in fcm.received if r["body"]["message"].get("token") == "customer-phone-1"],
        timeout=10,
        what="the back-in-stock push",
    )
    data = push[0]["body"]["message"]["data"]
    assert (data["kind"], data["sku"]) == ("back_in_stock", "STRAWBERRY")
    # The subscription is used up only after FCM accepted the push, a moment after the stand-in saw it.
    wait_until(lambda: Subscription.objects.get().notified_at, timeout=10, what="the subscription used up")

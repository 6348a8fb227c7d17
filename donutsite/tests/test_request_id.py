"""Request ids: one id from a client's request to its log lines, the restock it opens, the Celery message
that takes the restock to a worker, the factory call, the dead letter and the alert."""

import ast
import json
import logging
import re
import sys
import threading
import uuid
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
from celery import current_app
from django.utils import timezone

from donutsite.celery import request_id_forget, request_id_from_message
from donutsite.context import request_id, request_id_bound
from donutsite.logging import JsonFormatter, RequestIdFilter
from factory.client import FactoryRejected
from factory.models import DeadLetter, FactoryOrder
from factory.services import reconcile
from factory.tasks import restock_place_task
from inventory.models import Restock
from notifications.alerts import alert_raise
from notifications.models import Alert
from testsupport.data import make_api_client, make_product
from testsupport.processes import System, wait_until
from testsupport.queues import broker as queue_broker

NEW_ID = re.compile(r"[0-9a-f]{32}")


# --- the middleware ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("given", ["checkout-7f3a:1.2_b", "a", "A" * 64, "0c398687-ee11-4838-9c46-441ffe21f262"])
def test_a_valid_client_request_id_is_kept_and_echoed(client, given):
    response = client.get("/healthz", HTTP_X_REQUEST_ID=given)

    assert response["X-Request-ID"] == given


def test_without_a_request_id_each_request_gets_a_new_one(client):
    first, second = client.get("/healthz")["X-Request-ID"], client.get("/healthz")["X-Request-ID"]

    assert NEW_ID.fullmatch(first) and NEW_ID.fullmatch(second) and first != second


@pytest.mark.parametrize("given", ["", "has space", "A" * 65, "semi;colon", 'quote"', "ünïcode", "new\nline"])
def test_an_invalid_request_id_is_replaced(client, given):
    response = client.get("/healthz", HTTP_X_REQUEST_ID=given)

    assert NEW_ID.fullmatch(response["X-Request-ID"])


def test_the_id_is_current_only_during_the_request(client):
    client.get("/healthz", HTTP_X_REQUEST_ID="over-and-done")

    assert request_id.get() == ""


# --- logs -------------------------------------------------------------------------------------------------


def filtered(caplog):
    """Have caplog see records as the console handler does, through its request id filter. pytest gives
    each test phase a handler of its own, so the test calls this itself."""
    caplog.handler.addFilter(RequestIdFilter())
    caplog.set_level(logging.INFO)
    return caplog


@pytest.mark.django_db
def test_log_lines_during_a_request_carry_its_id(client, caplog, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:9/0"  # the readiness probe logs why it failed
    filtered(caplog)

    assert client.get("/readyz", HTTP_X_REQUEST_ID="probe-42").json()["status"] == "degraded"
    # Django logs a 404 itself after the middleware returned; the request it carries has the id.
    assert client.get("/no-such-page", HTTP_X_REQUEST_ID="lost-43").status_code == 404

    probe = [r for r in caplog.records if r.name == "donutsite.health"]
    django_request = [r for r in caplog.records if r.name == "django.request"]
    assert probe and django_request
    assert {r.request_id for r in probe} == {"probe-42"}
    assert {r.request_id for r in django_request} == {"lost-43"}


def test_log_lines_outside_a_request_show_a_dash(caplog):
    filtered(caplog)

    logging.getLogger("donutsite.test").info("between requests")

    assert [r.request_id for r in caplog.records] == ["-"]


def test_json_lines_parse_and_carry_the_fields():
    formatter, keep = JsonFormatter(), RequestIdFilter()
    logger = logging.getLogger("donutsite.test")
    with request_id_bound("json-1"):
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            record = logger.makeRecord(logger.name, logging.ERROR, __file__, 1, "sold %s of %s", (3, "GLAZED"), None)
            record.exc_info = sys.exc_info()
        keep.filter(record)

    line = formatter.format(record)

    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "ERROR" and entry["logger"] == "donutsite.test"
    assert entry["message"] == "sold 3 of GLAZED" and entry["request_id"] == "json-1"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", entry["timestamp"])
    assert "ZeroDivisionError" in entry["exc_info"]
    plain = json.loads(formatter.format(logger.makeRecord(logger.name, logging.INFO, __file__, 1, "hi", (), None)))
    assert "exc_info" not in plain and plain["request_id"] == "-"


# --- records and messages ---------------------------------------------------------------------------------


@pytest.fixture
def factory_queue():
    """The raw messages in the test broker's `factory_urgent` queue (where a shortage's restock goes),
    emptied before and after."""
    broker = redis.Redis.from_url(current_app.conf.broker_url)
    broker.delete("factory_urgent")
    yield lambda: [json.loads(raw) for raw in broker.lrange("factory_urgent", 0, -1)]
    broker.delete("factory_urgent")


@pytest.mark.django_db(transaction=True)
def test_a_shortage_keeps_the_request_id_on_its_restock_and_in_the_message_to_the_worker(client_app, factory_queue):
    make_product("VIRAL", on_hand=0)

    response = client_app.post(
        "/api/v1/sales/", {"items": [{"sku": "VIRAL", "quantity": 1}]}, format="json", HTTP_X_REQUEST_ID="sale-1"
    )

    assert response.status_code == 409, response.content
    assert response["X-Request-ID"] == "sale-1"
    restock = Restock.objects.get()
    assert restock.correlation_id == "sale-1"
    [message] = factory_queue()
    assert message["headers"]["task"] == "factory.restock_place"
    assert ast.literal_eval(message["headers"]["argsrepr"]) == [restock.pk]
    assert message["headers"]["request_id"] == "sale-1"


@pytest.mark.django_db
def test_a_sale_that_sells_out_stamps_its_alert_and_restock_with_the_request_id(client_app):
    make_product("LAST", on_hand=1, reorder_point=0)

    response = client_app.post(
        "/api/v1/sales/", {"items": [{"sku": "LAST", "quantity": 1}]}, format="json", HTTP_X_REQUEST_ID="sale-2"
    )

    assert response.status_code == 201, response.content
    assert Alert.objects.get(kind="sold_out").correlation_id == "sale-2"
    assert Restock.objects.get().correlation_id == "sale-2"


@pytest.mark.django_db
def test_an_alert_takes_the_current_id_unless_given_one():
    with request_id_bound("task-run-9"):
        implicit = alert_raise(kind="test", severity="info", title="implicit")
        explicit = alert_raise(kind="test", severity="info", title="explicit", correlation_id="given")
    outside = alert_raise(kind="test", severity="info", title="outside")

    assert (implicit.correlation_id, explicit.correlation_id, outside.correlation_id) == ("task-run-9", "given", "")


@pytest.mark.django_db
def test_a_task_runs_under_the_id_its_message_brought_and_its_dead_letter_keeps_it():
    restock = Restock.objects.create(product=make_product("DL"), quantity=5, reason=Restock.Reason.MANUAL)
    # What the worker does around a task: push the message's request, send task_prerun ... task_postrun.
    restock_place_task.push_request(id="t-1", request_id="sale-3", args=[restock.pk], retries=0, delivery_info={})
    try:
        request_id_from_message(task=restock_place_task)
        assert request_id.get() == "sale-3"
        restock_place_task.on_failure(FactoryRejected("400: no"), "t-1", (restock.pk,), {}, None)
        request_id_forget(task=restock_place_task)
    finally:
        restock_place_task.pop_request()

    assert request_id.get() == ""
    assert DeadLetter.objects.get(task_id="t-1").correlation_id == "sale-3"
    assert Alert.objects.get(kind="dead_letter").correlation_id == "sale-3"


@pytest.mark.parametrize("header", [None, "bad id"])
def test_a_task_without_a_valid_id_gets_a_new_one(header):
    restock_place_task.push_request(id="t-2", request_id=header)
    try:
        request_id_from_message(task=restock_place_task)
        assert NEW_ID.fullmatch(request_id.get())
        request_id_forget(task=restock_place_task)
    finally:
        restock_place_task.pop_request()
    assert request_id.get() == ""


def _messages_headers(queue: str) -> list[dict]:
    """The headers of each message waiting in a queue of the test broker, oldest first."""
    return [json.loads(raw)["headers"] for raw in reversed(queue_broker().lrange(queue, 0, -1))]


@pytest.mark.django_db
def test_the_sweep_sends_a_parked_restock_and_an_overdue_poll_under_the_id_of_the_sale_behind_them(queues):
    # A 429 with a long Retry-After parks a restock, and the sweep sends it once the wait is over; a placed
    # one whose callback is late, the sweep asks the factory about. Sent under the sweep's own id, their
    # factory calls, the order placed and the receipt were logged under an id no one had: grepping the
    # sale's id lost the restock at its first park (docs/operations.md, "Reading a trace").
    now = timezone.now()
    parked = Restock.objects.create(
        product=make_product("PARKED", on_hand=0), quantity=5, reason="shortage", correlation_id="sale-4"
    )
    FactoryOrder.objects.create(restock=parked, next_attempt_at=now, last_error="429: slow down")
    late = Restock.objects.create(
        product=make_product("LATE", on_hand=0),
        quantity=5,
        reason="shortage",
        correlation_id="sale-5",
        status="placed",
        placed_at=now - timedelta(hours=1),
        expected_at=now - timedelta(hours=1),
    )
    FactoryOrder.objects.create(restock=late, order_id="F-000042")

    with request_id_bound("sweep-1"):
        done = reconcile()

    assert (done["restocks_resent"], done["overdue_polled"]) == (1, 1)
    sent = {(h["task"], ast.literal_eval(h["argsrepr"])[0]): h["request_id"] for h in _messages_headers("factory")}
    assert sent == {("factory.restock_place", parked.pk): "sale-4", ("factory.restock_poll", late.pk): "sale-5"}


@pytest.mark.django_db(transaction=True)
def test_the_overdue_warning_about_a_restock_goes_out_under_the_id_of_the_sale_behind_it(settings):
    # Raised by the sweep, its delivery (and so the notifications worker's "alert id=... kind=restock_overdue"
    # line) went under the sweep's own id: grepping the sale's id, as docs/operations.md says, never found
    # the warning about its restock.
    broker = queue_broker()
    broker.delete("notifications")
    long_ago = timezone.now() - timedelta(seconds=settings.FACTORY_OVERDUE_GRACE_SECONDS + 60)
    restock = Restock.objects.create(
        product=make_product("STUCK", on_hand=0), quantity=5, reason="shortage", correlation_id="sale-6"
    )
    Restock.objects.filter(pk=restock.pk).update(created_at=long_ago)
    FactoryOrder.objects.create(restock=restock, dispatched_at=long_ago, first_dispatched_at=long_ago)

    try:
        with request_id_bound("sweep-2"):
            assert reconcile()["overdue_alerted"] == 1
        assert Alert.objects.get(kind="restock_overdue").correlation_id == "sale-6"
        assert {h["request_id"] for h in _messages_headers("notifications")} == {"sale-6"}
    finally:
        broker.delete("notifications")


# --- end to end -------------------------------------------------------------------------------------------


class _RejectingFactory(BaseHTTPRequestHandler):
    """A factory that refuses every order with a 400 (so the restock dead-letters at once) and remembers the
    X-Request-ID of each call."""

    seen: list[str] = []

    def do_POST(self):  # noqa: N802 - the stdlib's name
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append(self.headers.get("X-Request-ID", ""))
        body = b'{"error": "sku unknown here"}'
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_one_id_follows_a_sale_to_the_factory_the_dead_letter_the_alert_and_the_logs():
    import urllib.error
    import urllib.request

    system = System(broker_url=current_app.conf.broker_url)
    system.flush_broker()
    factory = ThreadingHTTPServer(("127.0.0.1", system.factory_port), _RejectingFactory)
    threading.Thread(target=factory.serve_forever, daemon=True).start()
    _RejectingFactory.seen = []
    try:
        web = system.start_web()
        worker = system.start_worker()
        make_product("TRACE", on_hand=0)
        _, key = make_api_client()
        trace = f"e2e-{uuid.uuid4().hex[:12]}"

        request = urllib.request.Request(  # noqa: S310 - local
            system.web_url + "/api/v1/sales/",
            data=json.dumps({"items": [{"sku": "TRACE", "quantity": 1}]}).encode(),
            headers={"Authorization": f"Api-Key {key}", "Content-Type": "application/json", "X-Request-ID": trace},
        )
        with pytest.raises(urllib.error.HTTPError) as answer:
            urllib.request.urlopen(request, timeout=10)  # noqa: S310 - local
        assert answer.value.code == 409
        assert answer.value.headers["X-Request-ID"] == trace

        dead_letter = wait_until(lambda: DeadLetter.objects.first(), timeout=30, what="the dead letter")
        restock = Restock.objects.get()
        assert restock.correlation_id == trace
        assert _RejectingFactory.seen == [trace]
        assert dead_letter.correlation_id == trace
        assert Alert.objects.get(kind="dead_letter").correlation_id == trace
        # The worker's log lines (JSON in production) carry it: the factory task's and the alert delivery's.
        wait_until(lambda: _logged(worker.output(), trace, "donutsite.alerts"), timeout=20, what="the alert log line")
        assert _logged(worker.output(), trace, "factory.retries")
        # So do the web's: the line saying the shortage's restock went to the factory queue.
        assert _logged(web.output(), trace, "factory.services")
    finally:
        system.stop()
        factory.shutdown()
        factory.server_close()


def _logged(output: str, trace: str, logger: str) -> bool:
    for line in output.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("logger") == logger and entry.get("request_id") == trace:
            return True
    return False


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_the_access_log_line_of_a_sale_carries_its_request_id(tmp_path):
    """A sale that sells logs no line of the app's (the hot path stays quiet): with the access log on,
    gunicorn's line for it is the one `grep <request id>` finds, so it must carry the id."""
    import urllib.request

    from testsupport.processes import Process, free_port

    make_product("TRACE", on_hand=5)
    _, key = make_api_client()
    system = System(broker_url=current_app.conf.broker_url, log_dir=tmp_path)
    port = free_port()
    env = {**system.env, "GUNICORN_BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": "1", "GUNICORN_ACCESS_LOG": "-"}
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    web = Process("web", [gunicorn, "-c", "gunicorn.conf.py"], env, ready="Booting worker", log_dir=tmp_path)
    trace = f"e2e-{uuid.uuid4().hex[:12]}"
    try:
        request = urllib.request.Request(  # noqa: S310 - local
            f"http://127.0.0.1:{port}/api/v1/sales/",
            data=json.dumps({"items": [{"sku": "TRACE", "quantity": 1}]}).encode(),
            headers={"Authorization": f"Api-Key {key}", "Content-Type": "application/json", "X-Request-ID": trace},
        )
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310 - local
            assert answer.status == 201

        def sale_line():
            return next((line for line in web.output().splitlines() if "POST /api/v1/sales/" in line), None)

        line = wait_until(sale_line, timeout=10, what="the sale's access log line")
        assert '" 201 ' in line
        assert trace in line
    finally:
        web.stop()

"""/metrics: who may read it, and that its figures follow what really happened (MariaDB, Redis, broker)."""

import logging
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
import redis
from celery import current_app
from django.test import Client, override_settings
from django.utils import timezone
from kombu import Connection
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from donutsite import dependencies, sale_counters
from factory.models import DeadLetter, FactoryAttempt
from inventory.models import Restock, Sale
from notifications.models import Alert, AlertDelivery
from testsupport.api import buy
from testsupport.data import make_product
from testsupport.plans import plans
from testsupport.processes import HungServer, closed_port_url, wait_until

pytestmark = pytest.mark.django_db

TOKEN = "s3cret-metrics-token"
SALES = "/api/v1/sales/"
EXPECTED = {
    "donut_sales",
    "donut_stockouts",
    "donut_restocks",
    "donut_restock_lead_time_seconds",
    "donut_restock_oldest_pending_seconds",
    "donut_restock_most_late_seconds",
    "donut_factory_call_latency_seconds",
    "donut_factory_calls",
    "donut_factory_retries",
    "donut_dead_letters",
    "donut_alert_delivery_latency_seconds",
    "donut_alert_deliveries",
    "donut_queue_depth",
    "donut_stock_on_hand",
    "donut_metrics_redis_up",
    "donut_web_dependency_open",
    "donut_web_dependency_failures",
}


@pytest.fixture(autouse=True)
def metrics_on(settings):
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOWED_IPS = []
    # Start from no sale counters (only our key: other tests' Redis state is left alone) and no pause;
    # earlier tests' sales are sent first, so that the flusher thread cannot bring them in later.
    sale_counters.counters_flush()
    redis.Redis.from_url(settings.REDIS_URL).delete(sale_counters.counters_key())
    yield


def scrape(http=None, **extra):
    response = (http or APIClient()).get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}", **extra)
    assert response.status_code == 200, response.content
    return parse(response)


def parse(response) -> dict:
    """{(sample name, sorted labels): value} from the text format, via Prometheus's own parser."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.content.decode())
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


# --- access -----------------------------------------------------------------------------------------------


def test_off_when_neither_token_nor_addresses_are_set(client, settings):
    settings.METRICS_TOKEN = ""

    assert client.get("/metrics").status_code == 404
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 404


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        (None, "not_authenticated"),
        ("Bearer wrong-token", "authentication_failed"),
        (f"Bearer {TOKEN}x", "authentication_failed"),
        (f"Basic {TOKEN}", "not_authenticated"),
    ],
)
def test_a_missing_or_wrong_token_is_refused(client, authorization, code):
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}

    response = client.get("/metrics", **headers)

    assert response.status_code == 401
    assert response.json() == {"code": code, "message": response.json()["message"]}
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"donut_" not in response.content


def test_the_right_token_gets_every_metric_as_prometheus_text(client):
    response = client.get("/metrics", HTTP_AUTHORIZATION=f"bearer {TOKEN}")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    assert response["Cache-Control"] == "no-store"
    names = {family.name for family in text_string_to_metric_families(response.content.decode())}
    assert EXPECTED <= names


def test_an_allowed_address_needs_no_token_and_a_forwarded_for_header_is_no_address(client, settings):
    settings.METRICS_ALLOWED_IPS = ["10.1.2.0/24", "192.0.2.7"]

    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.7").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="::ffff:10.1.2.9").status_code == 200
    spoofed = client.get("/metrics", REMOTE_ADDR="203.0.113.5", HTTP_X_FORWARDED_FOR="10.1.2.3")
    assert spoofed.status_code == 401
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.8").status_code == 401


def test_with_addresses_only_any_other_address_is_forbidden(client, settings):
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_IPS = ["10.1.2.3"]

    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    response = client.get(
        "/metrics", REMOTE_ADDR="10.9.9.9", HTTP_X_FORWARDED_FOR="10.1.2.3", HTTP_AUTHORIZATION="Bearer anything"
    )
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"


def test_wrong_tokens_from_one_address_are_limited_like_bad_api_keys(client, settings):
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    settings.FAILED_AUTH_THROTTLE_RATE = "3/minute"
    guesser, prometheus = {"REMOTE_ADDR": "203.0.113.7"}, {"REMOTE_ADDR": "192.0.2.9"}

    guesses = [client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer guess-{n}", **guesser) for n in range(4)]
    right_one = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}", **guesser)

    assert [r.status_code for r in guesses] == [401, 401, 401, 429]
    assert guesses[-1].json()["code"] == "throttled"
    assert 0 < int(guesses[-1]["Retry-After"]) <= 60
    assert right_one.status_code == 429, "else a 200 among the 429s would tell the guesser the token"
    assert b"donut_" not in right_one.content
    assert client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}", **prometheus).status_code == 200
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer guess", **prometheus).status_code == 401


def test_only_get_is_served(client):
    response = client.post("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")

    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


@pytest.mark.parametrize("method", ["post", "put", "delete"])
def test_another_method_is_a_json_405_as_a_real_client_gets_it_not_a_csrf_page(method):
    # Django's test client skips the CSRF check that every real request goes through.
    client = Client(enforce_csrf_checks=True)

    response = getattr(client, method)("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")

    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"
    assert response["Allow"] == "GET, HEAD"


# --- sales counters (Redis) ---------------------------------------------------------------------------------


def test_sales_through_the_api_move_the_sold_out_of_stock_and_rejected_counters(client_app):
    make_product("GLAZED", on_hand=5)
    make_product("BOSTON", on_hand=1)
    before = scrape()
    assert value(before, "donut_sales_total", outcome="sold") == 0

    assert buy(client_app, ("GLAZED", 2)).status_code == 201
    assert buy(client_app, ("GLAZED", 1), ("BOSTON", 1), HTTP_IDEMPOTENCY_KEY="k1").status_code == 201
    replay = buy(client_app, ("GLAZED", 1), ("BOSTON", 1), HTTP_IDEMPOTENCY_KEY="k1")
    assert replay["Idempotent-Replayed"] == "true"  # sold nothing new: not counted
    assert buy(client_app, ("GLAZED", 3)).status_code == 409  # 2 left: one product short
    assert buy(client_app, ("GLAZED", 9), ("BOSTON", 1)).status_code == 409  # both short
    assert buy(client_app, ("NOPE", 1)).status_code == 404
    assert buy(client_app, ("GLAZED", 0)).status_code == 400
    assert buy(APIClient(), ("GLAZED", 1)).status_code == 401
    assert client_app.get(SALES).status_code == 200  # the list of sales: not a sale attempt, not counted
    assert client_app.delete(SALES).status_code == 405  # not a sale attempt: not counted
    assert client_app.get(f"{SALES}999999/").status_code == 404  # another endpoint: not counted

    after = scrape()
    assert value(after, "donut_sales_total", outcome="sold") == 2
    assert value(after, "donut_sales_total", outcome="out_of_stock") == 2
    assert value(after, "donut_sales_total", outcome="rejected") == 3
    assert value(after, "donut_stockouts_total") == 3
    assert value(after, "donut_metrics_redis_up", source="counters") == 1


def test_sales_over_the_clients_rate_are_counted_as_throttled_not_logged_one_warning_each(client_app, caplog):
    # One app's phones share its key: in a rush its rate limit refuses hundreds a second, each of which was
    # a "Too Many Requests" warning line (10,000 of them in a make run rush). /metrics counts them instead.
    make_product("GLAZED", on_hand=10)
    caplog.set_level(logging.INFO, logger="django.request")

    with override_settings(API_THROTTLE_RATE="2/minute"):
        statuses = [buy(client_app, ("GLAZED", 1)).status_code for _ in range(5)]
    assert buy(client_app, ("NOPE", 1)).status_code == 404

    after = scrape()
    assert statuses == [201, 201, 429, 429, 429]
    assert value(after, "donut_sales_total", outcome="throttled") == 3
    assert value(after, "donut_sales_total", outcome="rejected") == 1, "the unknown SKU"
    assert [(r.levelname, r.status_code) for r in caplog.records if r.name == "django.request"] == [("WARNING", 404)]


def test_a_key_guesser_over_the_bad_keys_limit_is_still_a_warning_line_and_a_rejected_sale(client, caplog, settings):
    # Not a rush: an address guessing API keys. Its 429s name the address in the log, and /metrics keeps
    # them out of `throttled`, which says a real client's traffic is over its rate.
    redis.Redis.from_url(settings.REDIS_URL).flushdb()
    settings.FAILED_AUTH_THROTTLE_RATE = "2/minute"
    make_product("GLAZED", on_hand=10)
    caplog.set_level(logging.INFO, logger="django.request")

    statuses = [
        buy(client, ("GLAZED", 1), HTTP_AUTHORIZATION=f"Api-Key guess-{n}", REMOTE_ADDR="203.0.113.7").status_code
        for n in range(4)
    ]

    after = scrape()
    assert statuses == [401, 401, 429, 429]
    assert value(after, "donut_sales_total", outcome="throttled") == 0
    assert value(after, "donut_sales_total", outcome="rejected") == 4
    assert [r.status_code for r in caplog.records if r.name == "django.request"] == [401, 401, 429, 429]


def test_a_sale_still_sells_when_the_counters_redis_is_down(client_app, settings):
    make_product("GLAZED", on_hand=5)
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there

    assert buy(client_app, ("GLAZED", 1)).status_code == 201
    assert buy(client_app, ("GLAZED", 99)).status_code == 409

    samples = scrape()
    assert value(samples, "donut_metrics_redis_up", source="counters") == 0
    assert ("donut_sales_total", (("outcome", "sold"),)) not in samples
    assert value(samples, "donut_stock_on_hand", sku="GLAZED") == 4  # the rest of the scrape still works


def test_the_counts_reach_redis_within_a_second_without_a_scrape(client_app, settings):
    make_product("GLAZED", on_hand=5)
    stored = redis.Redis.from_url(settings.REDIS_URL)

    assert buy(client_app, ("GLAZED", 1)).status_code == 201

    wait_until(
        lambda: stored.hget(sale_counters.counters_key(), "sold"), timeout=3, interval=0.05, what="the sold count"
    )
    assert stored.hget(sale_counters.counters_key(), "sold") == b"1"  # sent by this process's flusher thread


def test_counts_made_while_redis_is_down_arrive_when_it_is_back(client_app, settings):
    make_product("GLAZED", on_hand=5)
    working_url = settings.REDIS_URL
    settings.REDIS_URL = "redis://127.0.0.1:1/0"

    assert buy(client_app, ("GLAZED", 1)).status_code == 201
    assert sale_counters.counters_flush() is False

    settings.REDIS_URL = working_url
    dependencies.breakers["redis"].close()  # the pause after a failure is over
    assert value(scrape(), "donut_sales_total", outcome="sold") == 1


@contextmanager
def redis_answering_late(url: str, delay: float):
    """A TCP proxy in front of the Redis at `url` that passes each command on at once and, once the
    yielded event is set, holds each answer `delay` seconds: a Redis slowed down (a fork for a snapshot, a
    busy host). A client that gives up waiting sooner has had its command run all the same. Yields the
    proxy's URL and the event."""
    target = urlsplit(url)
    listener = socket.create_server(("127.0.0.1", 0))
    slow = threading.Event()

    def pump(source, sink, late):
        try:
            while chunk := source.recv(65536):
                if late and slow.is_set():
                    time.sleep(delay)
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                end.close()

    def serve():
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection((target.hostname, target.port or 6379))
            threading.Thread(target=pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=pump, args=(upstream, client, True), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}{target.path}", slow
    finally:
        listener.close()


def test_counts_redis_took_while_its_answer_was_late_are_not_counted_twice(client_app, settings):
    # The flush gives up after WEB_DEPENDENCY_TIMEOUT_SECONDS (0.05 s) and keeps the counts for the next
    # one; but Redis had run the increments. Sent again, they must not be added a second time.
    make_product("GLAZED", on_hand=5)
    working_url = settings.REDIS_URL
    with redis_answering_late(working_url, delay=0.3) as (late_url, slow):
        settings.REDIS_URL = late_url
        assert buy(client_app, ("GLAZED", 1)).status_code == 201
        assert sale_counters.counters_flush() is True  # connected, and the sale counted
        slow.set()
        assert buy(client_app, ("GLAZED", 1)).status_code == 201
        assert sale_counters.counters_flush() is False  # no answer in time (or the flusher thread's try)
        time.sleep(0.5)  # the late answer arrives: Redis counted the second sale
    settings.REDIS_URL = working_url
    dependencies.breakers["redis"].close()  # the pause after a failure is over

    assert value(scrape(), "donut_sales_total", outcome="sold") == 2


@pytest.mark.parametrize("state", ["refused", "hung"])
def test_a_redis_outage_is_one_warning_when_it_begins_and_one_when_it_ends(client_app, settings, caplog, state):
    # Seen under make run with Redis away: each web process wrote a sale-counter warning every 5 s, and its
    # breaker a "circuit open" warning every 5 s under traffic, for as long as the outage lasted.
    settings.WEB_DEPENDENCY_PAUSE_SECONDS = 0.2  # the pause after a failure, short: many of them below
    make_product("GLAZED", on_hand=500)
    working_url = settings.REDIS_URL
    with HungServer() as hung:
        settings.REDIS_URL = hung.url() if state == "hung" else closed_port_url()
        outage_ends = time.monotonic() + 1.5  # about seven pauses, three flush intervals
        while time.monotonic() < outage_ends:
            assert buy(client_app, ("GLAZED", 1)).status_code == 201  # the throttle tries Redis now and then
            sale_counters.counters_flush()
            time.sleep(0.02)
        sold_in_the_outage = Sale.objects.count()
    settings.REDIS_URL = working_url
    time.sleep(0.3)  # the last pause is over
    assert sale_counters.counters_flush() is True  # (or the flusher thread's, just before)
    assert buy(client_app, ("GLAZED", 1)).status_code == 201  # the throttle finds Redis answering

    lines = [(r.levelname, r.getMessage()) for r in caplog.records if r.name.startswith("donutsite")]
    begins, ends = [message for level, message in lines if level == "WARNING"]
    assert begins.startswith("redis unavailable") and "sale counts wait in this process" in begins, lines
    assert ends.startswith("redis answers again after") and ends.endswith("(circuit closed)"), lines
    counts = [message for _, message in lines if message.startswith("metrics:")]
    assert counts == [
        f"metrics: Redis answers again: sent the {{'sold': {sold_in_the_outage}}} sale outcomes that"
        " waited in this process"
    ], lines
    assert value(scrape(), "donut_sales_total", outcome="sold") == sold_in_the_outage + 1


@pytest.mark.parametrize("flusher_tried_between", [False, True], ids=["no try between", "a try between"])
def test_a_process_exiting_while_redis_is_down_says_which_sale_outcomes_were_not_counted(
    client_app, settings, caplog, flusher_tried_between
):
    # Oldest first, whenever the flusher last tried: its thread tries every COUNTERS_FLUSH_SECONDS, and one
    # try between the two sales (here, by hand) left the sale in its failed batch and the refusal pending,
    # and the line named the refusal first.
    make_product("GLAZED", on_hand=5)
    working_url = settings.REDIS_URL
    settings.REDIS_URL = closed_port_url()
    assert buy(client_app, ("GLAZED", 1)).status_code == 201
    if flusher_tried_between:
        assert not sale_counters.counters_flush()
    assert buy(client_app, ("NOPE", 1)).status_code == 404

    sale_counters.counters_flush_at_exit()

    lost = [r.getMessage() for r in caplog.records if "as this process exits" in r.getMessage()]
    assert lost == [
        "metrics: Redis unavailable as this process exits: {'sold': 1, 'rejected': 1} sale outcomes not counted"
    ]
    settings.REDIS_URL = working_url
    dependencies.breakers["redis"].close()


def test_a_scrape_while_redis_and_the_broker_are_away_warns_once_per_outage_and_once_when_they_answer(
    settings, caplog, monkeypatch
):
    # Prometheus scrapes every 15 s, each gunicorn process answering some: with Redis away every scrape
    # logged "cannot read the sale counters" and the sweeps' line (and the queue lengths' with the broker
    # away), for the whole outage, burying the lines that matter. /metrics itself still says so each time.
    working_url = settings.REDIS_URL
    settings.REDIS_URL = closed_port_url()
    monkeypatch.setenv("CELERY_BROKER_URL", closed_port_url())  # Celery's broker_url reads it first
    for _ in range(5):
        down = scrape()
        assert value(down, "donut_metrics_redis_up", source="counters") == 0
        assert value(down, "donut_metrics_redis_up", source="broker") == 0
        assert not [s for s in down if s[0] in ("donut_sales_total", "donut_sweep_age_seconds", "donut_queue_depth")]
    settings.REDIS_URL = working_url
    monkeypatch.undo()
    for _ in range(2):
        back = scrape()
        assert value(back, "donut_metrics_redis_up", source="counters") == 1
        assert value(back, "donut_metrics_redis_up", source="broker") == 1

    lines = [r.getMessage() for r in caplog.records if r.name == "ops.metrics" and r.levelname == "WARNING"]
    assert len(lines) == 6, lines
    assert [line.split(" (")[0] for line in lines[:3]] == [
        "metrics: cannot read the sale counters from Redis",
        "metrics: cannot read the queue lengths from the broker",
        "metrics: cannot read the sweeps' last runs from Redis",
    ], lines
    assert [line.split(" after ")[0] for line in lines[3:]] == [
        "metrics: reads the sale counters from Redis again",
        "metrics: reads the queue lengths from the broker again",
        "metrics: reads the sweeps' last runs from Redis again",
    ], lines


def test_while_redis_is_down_metrics_say_the_throttle_fails_open(client_app, settings):
    make_product("GLAZED", on_hand=5)
    working_url = settings.REDIS_URL
    settings.REDIS_URL = "redis://127.0.0.1:1/0"

    assert buy(client_app, ("GLAZED", 1)).status_code == 201  # the throttle fails open
    down = scrape()
    settings.REDIS_URL = working_url
    dependencies.breakers["redis"].close()  # the pause is over
    back = scrape()

    assert value(down, "donut_web_dependency_open", dependency="redis") == 1
    assert value(down, "donut_web_dependency_failures_total", dependency="redis") >= 1
    assert value(down, "donut_web_dependency_open", dependency="broker") == 0
    assert value(back, "donut_web_dependency_open", dependency="redis") == 0


# --- queue depth (broker) ------------------------------------------------------------------------------------


def test_queue_depth_counts_every_priority_list_of_a_queue_on_the_broker(settings):
    queue = f"metrics-test-{uuid.uuid4().hex[:8]}"
    settings.CELERY_TASK_QUEUES_NAMES = [*settings.CELERY_TASK_QUEUES_NAMES, queue]
    with Connection(current_app.conf.broker_url) as connection:
        waiting = connection.SimpleQueue(queue)
        try:
            for priority in (0, 0, 4, 9, 9):
                waiting.put({"n": priority}, priority=priority)
            broker = redis.Redis.from_url(current_app.conf.broker_url)
            assert broker.llen(queue) == 2 and broker.llen(f"{queue}\x06\x169") == 2  # kombu's layout

            samples = scrape()

            assert value(samples, "donut_queue_depth", queue=queue) == 5 == waiting.qsize()
            waiting.get(timeout=1).ack()
            assert value(scrape(), "donut_queue_depth", queue=queue) == 4
            assert value(samples, "donut_metrics_redis_up", source="broker") == 1
        finally:
            waiting.clear()
            waiting.queue.delete()
            waiting.close()


# --- database figures ----------------------------------------------------------------------------------------


def make_restock(**fields) -> Restock:
    return Restock.objects.create(product=make_product(), quantity=10, reason=Restock.Reason.SHORTAGE, **fields)


def test_factory_latency_histogram_counts_the_attempts_of_the_last_day():
    restock = make_restock()
    now = timezone.now()
    for number, (latency_ms, outcome) in enumerate(
        [(30, "transient"), (120, "transient"), (700, "rate_limited"), (3000, "accepted"), (20000, "transient")],
        start=1,
    ):
        FactoryAttempt.objects.create(restock=restock, number=number, outcome=outcome, latency_ms=latency_ms)
    old = FactoryAttempt.objects.create(restock=make_restock(), number=1, outcome="accepted", latency_ms=40)
    FactoryAttempt.objects.filter(pk=old.pk).update(created_at=now - timedelta(hours=25))

    samples = scrape()

    def bucket(le):
        return value(samples, "donut_factory_call_latency_seconds_bucket", le=le)

    cumulative = {"0.05": 1, "0.1": 1, "0.25": 2, "0.5": 2, "1.0": 3, "2.5": 3, "5.0": 4, "10.0": 4, "+Inf": 5}
    assert {le: bucket(le) for le in cumulative} == cumulative
    assert value(samples, "donut_factory_call_latency_seconds_count") == 5
    assert value(samples, "donut_factory_call_latency_seconds_sum") == pytest.approx(23.85)
    # The counters are over all rows, the old one too.
    assert value(samples, "donut_factory_calls_total", outcome="transient") == 3
    assert value(samples, "donut_factory_calls_total", outcome="accepted") == 2
    assert value(samples, "donut_factory_calls_total", outcome="permanent") == 0
    assert value(samples, "donut_factory_retries_total") == 4


def test_restock_status_and_lead_time_of_restocks_closed_in_the_last_day():
    now = timezone.now()
    make_restock()  # open: pending
    for lead_seconds, status, closed_ago in [
        (3, "fulfilled", timedelta(minutes=5)),
        (40, "fulfilled", timedelta(hours=2)),
        (1200, "fulfilled", timedelta(hours=1)),
        (100, "failed", timedelta(minutes=1)),
        (10, "fulfilled", timedelta(hours=30)),  # closed before the window
    ]:
        restock = make_restock(status=status)
        closed_at = now - closed_ago
        Restock.objects.filter(pk=restock.pk).update(
            closed_at=closed_at, created_at=closed_at - timedelta(seconds=lead_seconds)
        )

    samples = scrape()

    assert value(samples, "donut_restocks", status="pending") == 1
    assert value(samples, "donut_restocks", status="fulfilled") == 4
    assert value(samples, "donut_restocks", status="failed") == 1
    assert value(samples, "donut_restocks", status="placed") == 0

    def bucket(le, status="fulfilled"):
        return value(samples, "donut_restock_lead_time_seconds_bucket", le=le, status=status)

    cumulative = {"1.0": 0, "5.0": 1, "15.0": 1, "60.0": 2, "300.0": 2, "900.0": 2, "3600.0": 3, "+Inf": 3}
    assert {le: bucket(le) for le in cumulative} == cumulative
    assert value(samples, "donut_restock_lead_time_seconds_sum", status="fulfilled") == pytest.approx(1243)
    assert bucket("60.0", status="failed") == 0 and bucket("300.0", status="failed") == 1


def test_dead_letters_alert_deliveries_and_stock_on_hand():
    now = timezone.now()
    # Two waiting, one sent again by ops, two settled by the factory (its order found after all): resolved,
    # nothing sent again, so not "redriven".
    for redriven_at, redrive_count in ((None, 0), (None, 0), (now, 1), (now, 0), (now, 0)):
        DeadLetter.objects.create(
            task_name="factory.place_restock",
            task_id=uuid.uuid4().hex,
            queue="factory",
            exception_type="X",
            attempts=3,
            first_failed_at=now,
            last_failed_at=now,
            redriven_at=redriven_at,
            redrive_count=redrive_count,
        )
    alert = Alert.objects.create(kind="test", severity="info", title="t", dedupe_key="k")
    AlertDelivery.objects.create(alert=alert, channel="slack", status="sent", sent_at=now, latency_ms=800)
    AlertDelivery.objects.create(alert=alert, channel="fcm", status="sent", sent_at=now, latency_ms=20_000)
    AlertDelivery.objects.create(alert=alert, channel="log", status="pending")
    make_product("GLAZED", on_hand=7)
    make_product("RETIRED", on_hand=3, is_active=False)

    samples = scrape()

    assert value(samples, "donut_dead_letters", state="open") == 2
    assert value(samples, "donut_dead_letters", state="redriven") == 1
    assert value(samples, "donut_dead_letters", state="settled") == 2
    assert value(samples, "donut_alert_deliveries", channel="slack", status="sent") == 1
    assert value(samples, "donut_alert_deliveries", channel="log", status="pending") == 1
    assert value(samples, "donut_alert_deliveries", channel="slack", status="failed") == 0
    assert value(samples, "donut_alert_delivery_latency_seconds_bucket", channel="slack", le="1.0") == 1
    assert value(samples, "donut_alert_delivery_latency_seconds_bucket", channel="fcm", le="15.0") == 0
    assert value(samples, "donut_alert_delivery_latency_seconds_bucket", channel="fcm", le="60.0") == 1
    assert value(samples, "donut_alert_delivery_latency_seconds_sum", channel="fcm") == pytest.approx(20)
    assert value(samples, "donut_stock_on_hand", sku="GLAZED") == 7
    assert not any(name == "donut_stock_on_hand" and dict(labels)["sku"] == "RETIRED" for name, labels in samples)


def test_a_stopped_beat_shows_as_sweeps_growing_old_in_metrics_and_the_probe(settings):
    # Beat sends the sweeps that notice lost messages and overdue restocks; nothing else would notice it stop.
    from django.core.management import CommandError, call_command

    from donutsite.sweeps import _key
    from factory.tasks import reconcile_task
    from notifications.tasks import sweep_task

    finished = redis.Redis.from_url(settings.REDIS_URL)
    finished.delete(_key())
    assert not [s for s in scrape() if s[0] == "donut_sweep_age_seconds"], "absent until a sweep ran"
    with pytest.raises(CommandError, match="factory.reconcile never ran"):
        call_command("sweeps_alive")

    reconcile_task()
    sweep_task()
    samples = scrape()
    assert value(samples, "donut_sweep_age_seconds", sweep="factory.reconcile") < 5
    assert value(samples, "donut_sweep_age_seconds", sweep="notifications.sweep") < 5
    call_command("sweeps_alive")

    finished.hset(_key(), "notifications.sweep", repr(time.time() - 120))  # beat stopped two minutes ago
    assert value(scrape(), "donut_sweep_age_seconds", sweep="notifications.sweep") >= 120
    with pytest.raises(CommandError, match=r"notifications.sweep last finished 12\d s ago"):
        call_command("sweeps_alive")
    for nonsense in ("nan", "inf", "-5", "0"):  # nan passed every check, a negative age failed every one
        with pytest.raises(CommandError, match="positive number of seconds"):
            call_command("sweeps_alive", "--max-age", nonsense)


def test_the_oldest_unaccepted_restock_and_the_latest_completion_show_before_the_overdue_alert():
    assert value(scrape(), "donut_restock_oldest_pending_seconds") == 0
    assert value(scrape(), "donut_restock_most_late_seconds") == 0
    now = timezone.now()
    for opened_ago in (90, 10):
        Restock.objects.filter(pk=make_restock().pk).update(created_at=now - timedelta(seconds=opened_ago))
    # Placed: one whose completion is 200 s late (its callback lost), one 50 s late, one not due yet.
    for expected_in in (-200, -50, 600):
        make_restock(status="placed", placed_at=now, expected_at=now + timedelta(seconds=expected_in))
    make_restock(status="fulfilled", expected_at=now - timedelta(hours=1))  # closed: not late

    samples = scrape()

    assert 90 <= value(samples, "donut_restock_oldest_pending_seconds") < 120
    assert 200 <= value(samples, "donut_restock_most_late_seconds") < 230


def test_a_scrape_reads_indexes_not_every_restock_call_and_delivery_ever_made(monkeypatch):
    # A long-open shop: thousands of restocks, their calls and alert deliveries, all a month old (written
    # then, not updated since: an index still holds an updated row's old entry until InnoDB purges it).
    product = make_product("GLAZED")
    long_ago = timezone.now() - timedelta(days=30)
    with monkeypatch.context() as patched:
        patched.setattr(timezone, "now", lambda: long_ago)
        restocks = Restock.objects.bulk_create(
            Restock(product=product, quantity=10, status="fulfilled", reason="manual", closed_at=long_ago)
            for _ in range(3000)
        )
        FactoryAttempt.objects.bulk_create(
            FactoryAttempt(restock=restock, number=1 + (i % 4 == 0), outcome="accepted", latency_ms=50)
            for i, restock in enumerate(restocks)
        )
        alerts = Alert.objects.bulk_create(
            Alert(kind="sold_out", severity="info", title="old", dedupe_key=f"k{i}") for i in range(1500)
        )
        AlertDelivery.objects.bulk_create(
            AlertDelivery(alert=alert, channel=channel, status="sent", sent_at=long_ago, latency_ms=1000)
            for alert in alerts
            for channel in ("log", "slack")
        )

    for table in ("inventory_restock", "factory_factoryattempt", "notifications_alertdelivery"):
        for plan in plans(scrape, table):
            # A range of the last 24 h, or every row counted from an index alone; never each row read.
            assert plan["type"] == "range" or (plan["type"] == "index" and "Using index" in plan["Extra"]), str(plan)

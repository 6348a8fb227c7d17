"""Prometheus metrics at /metrics, computed when Prometheus scrapes.

gunicorn runs several processes, so every figure is read at scrape time from what they share: the
database (aggregate queries, bounded to the last 24 h where the rows pile up) and Redis. The sales
endpoint's answers are counted in a hash on REDIS_URL (donutsite/sale_counters.py); each process sends
its counts there in one script call every half second (a batch is added once, however often it is
sent), not one round trip per sale; the Celery queue depths are LLENs on the broker. Both are read
with the web's short Redis timeout (donutsite/dependencies.py), so a scrape does not hang on a hung Redis.
A read that fails leaves its figures out of that scrape, and is logged once per outage, not per scrape.

Access (never public): a request passes with `Authorization: Bearer <METRICS_TOKEN>` or from a
REMOTE_ADDR inside METRICS_ALLOWED_IPS (addresses or networks). X-Forwarded-For is ignored on
purpose: anyone can send it. Behind a reverse proxy REMOTE_ADDR is the proxy, so never list the
proxy's own address; use the token. With neither setting the endpoint does not exist (404).
Wrong tokens are counted per client address together with the API's bad keys (donutsite/ratelimit.py,
FAILED_AUTH_THROTTLE_RATE): over the rate, every bearer request from that address is 429 until the
window ends, the right token too.
"""

import hashlib
import hmac
import ipaddress
import logging
from datetime import timedelta

import redis
from celery import current_app
from django.conf import settings
from django.db.models import Count, DurationField, ExpressionWrapper, F, Min, Q, Sum
from django.http import Http404, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from kombu.transport.redis import PRIORITY_STEPS
from kombu.transport.redis import Channel as RedisChannel
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.utils import floatToGoString
from rest_framework.exceptions import Throttled

from donutsite import dependencies, ratelimit, sale_counters
from donutsite.sweeps import sweep_ages
from factory.models import DeadLetter, DeadLetterQuerySet, FactoryAttempt
from inventory.models import Product, Restock
from notifications.models import AlertDelivery

logger = logging.getLogger(__name__)

WINDOW = timedelta(hours=24)
RESTOCK_LEAD_BUCKETS = (1, 5, 15, 60, 300, 900, 3600)  # seconds
FACTORY_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)  # seconds; the HTTP timeout is 8 s
ALERT_LATENCY_BUCKETS = (1, 5, 15, 60, 300, 900, 3600)  # seconds, from the alert's creation to sent
STOCK_SKU_LIMIT = 1000  # the catalogue has dozens; a runaway one must not make the scrape huge

_unreadable = dependencies.Outages()  # what scrapes in this process cannot read, since when


def _read_failed(what: str, exc: BaseException) -> None:
    """A scrape could not read `what` ("the sale counters from Redis"). Prometheus scrapes every 15 s and
    each gunicorn process answers some: a warning per scrape buried the rest of the log for the whole
    outage. So one warning when the reads begin failing, as the circuit breakers do
    (donutsite/dependencies.py), and _read_answered's one line when they work again; each scrape's answer
    still shows the figure missing."""
    if not _unreadable.began(what):
        return  # the same outage, already told (two scrapes failing at once in a threaded worker too)
    logger.warning("metrics: cannot read %s (%r): left out of /metrics until it answers again", what, exc)


def _read_answered(what: str) -> None:
    """A scrape read `what`: after an outage, one line ends it, at the warning's level so that a log read for
    warnings shows both ends."""
    seconds = _unreadable.ended(what)
    if seconds is not None:
        logger.warning("metrics: reads %s again after %.1f s", what, seconds)


def _histogram(row, bounds, scale):
    """Cumulative buckets and the sum in seconds from an aggregate row built by _bucket_aggregates."""
    buckets = [(floatToGoString(b), row[f"le_{i}"]) for i, b in enumerate(bounds)]
    buckets.append(("+Inf", row["count"]))
    total = row["sum"]
    if isinstance(total, timedelta):
        total = total.total_seconds()
    return buckets, (total or 0) / scale


def _bucket_aggregates(field: str, bounds) -> dict:
    """COUNT(...) FILTER (field <= bound) per bucket, plus count and sum: one query, no rows fetched."""
    aggregates = {f"le_{i}": Count("pk", filter=Q(**{f"{field}__lte": b})) for i, b in enumerate(bounds)}
    return {**aggregates, "count": Count(field), "sum": Sum(field)}


class DonutCollector:
    """Everything /metrics shows, read fresh at every scrape."""

    def describe(self):
        return []  # do not run the queries when the collector is registered

    def collect(self):
        since = timezone.now() - WINDOW
        redis_up = GaugeMetricFamily(
            "donut_metrics_redis_up",
            "1 if the Redis behind this source answered this scrape (counters: REDIS_URL; broker: Celery's).",
            labels=["source"],
        )
        counters = self._sales()
        redis_up.add_metric(["counters"], 1 if counters else 0)
        yield from counters
        depths = self._queue_depths()
        redis_up.add_metric(["broker"], 1 if depths else 0)
        yield from depths
        yield redis_up
        breaker_open = GaugeMetricFamily(
            "donut_web_dependency_open",
            "1 while this web process's circuit breaker for the dependency is open: after a failure it skips "
            "it for WEB_DEPENDENCY_PAUSE_SECONDS, failing open (redis: the API throttle lets requests through; "
            "broker: restocks wait for the outbox sweep).",
            labels=["dependency"],
        )
        breaker_trips = CounterMetricFamily(
            "donut_web_dependency_failures",
            "Failures of the dependency that opened or extended this web process's circuit breaker.",
            labels=["dependency"],
        )
        for name, breaker in dependencies.breakers.items():
            breaker_open.add_metric([name], 1 if breaker.is_open else 0)
            breaker_trips.add_metric([name], breaker.trips)
        yield breaker_open
        yield breaker_trips
        yield from self._sweeps()
        yield from self._restocks(since)
        yield from self._factory(since)
        yield from self._dead_letters()
        yield from self._alerts(since)
        yield from self._stock()

    def _sales(self):
        sale_counters.counters_flush()  # this process's own counts; the others' arrive within COUNTERS_FLUSH_SECONDS
        try:
            raw = dependencies.redis_client(settings.REDIS_URL).hgetall(sale_counters.counters_key())
        except (redis.RedisError, OSError) as exc:
            _read_failed("the sale counters from Redis", exc)
            return []
        _read_answered("the sale counters from Redis")
        values = {k.decode(): int(v) for k, v in raw.items()}
        sales = CounterMetricFamily(
            "donut_sales",
            "Answers of POST /api/v1/sales/: sold (201, replays not counted), out_of_stock (409), "
            "throttled (429: the client over its rate), rejected (any other 4xx, incl. auth, validation, unknown "
            "SKU, an address over the bad keys' limit). Redis counters "
            "across all web processes, each sending its counts every 0.5 s.",
            labels=["outcome"],
        )
        for outcome in sale_counters.SALE_OUTCOMES:
            sales.add_metric([outcome], values.get(outcome, 0))
        stockouts = CounterMetricFamily(
            "donut_stockouts",
            "Products found short by sale requests: each 409 out_of_stock adds the number of SKUs it "
            "lists as short, and a client retrying counts again. Redis counter. (Not the count of "
            "shortage restocks: a shortage while a reorder-point restock is open opens none.)",
            value=values.get("stockouts", 0),
        )
        return [sales, stockouts]

    def _sweeps(self):
        try:
            ages = sweep_ages()
        except (redis.RedisError, OSError) as exc:
            _read_failed("the sweeps' last runs from Redis", exc)
            return []
        _read_answered("the sweeps' last runs from Redis")
        age = GaugeMetricFamily(
            "donut_sweep_age_seconds",
            "Seconds since the periodic sweep last finished (beat sends it every RECONCILE_INTERVAL_SECONDS); "
            "absent if it never ran. Growing: beat or the worker that runs it is stopped or wedged, and "
            "lost messages are not resent, overdue restocks not alerted.",
            labels=["sweep"],
        )
        for name, seconds in ages.items():
            if seconds is not None:
                age.add_metric([name], round(seconds, 1))
        return [age]

    def _queue_depths(self):
        """Messages waiting in each Celery queue, as kombu's Redis transport stores them.

        A queue is one list per priority step: `<queue>` for step 0 and `<queue><sep><step>` for the
        others (kombu.transport.redis.Channel._q_for_pri), all under the transport's global key
        prefix. Messages a worker holds unacked are not waiting and not counted.
        """
        broker_url = current_app.conf.broker_url or ""
        broker_url = broker_url.split(";")[0] if isinstance(broker_url, str) else broker_url[0]
        if not broker_url.startswith(("redis://", "rediss://", "unix://")):
            return []
        options = current_app.conf.broker_transport_options or {}
        steps = options.get("priority_steps", PRIORITY_STEPS)
        sep = options.get("sep", RedisChannel.sep)
        prefix = options.get("global_keyprefix", "")
        names = list(settings.CELERY_TASK_QUEUES_NAMES)
        try:
            pipe = dependencies.redis_client(broker_url).pipeline(transaction=False)
            for name in names:
                for step in steps:
                    pipe.llen(f"{prefix}{name}{sep}{step}" if step else f"{prefix}{name}")
            lengths = pipe.execute()
        except (redis.RedisError, OSError) as exc:
            _read_failed("the queue lengths from the broker", exc)
            return []
        _read_answered("the queue lengths from the broker")
        depth = GaugeMetricFamily(
            "donut_queue_depth",
            "Messages waiting in a Celery queue on the Redis broker (all priority lists; unacked not counted).",
            labels=["queue"],
        )
        for i, name in enumerate(names):
            depth.add_metric([name], sum(lengths[i * len(steps) : (i + 1) * len(steps)]))
        return [depth]

    def _restocks(self, since):
        by_status = dict(Restock.objects.order_by().values_list("status").annotate(n=Count("pk")))
        restocks = GaugeMetricFamily("donut_restocks", "Restocks by status (all rows).", labels=["status"])
        for status in Restock.Status.values:
            restocks.add_metric([status], by_status.get(status, 0))
        yield restocks
        yield from self._open_restock_ages()

        lead = HistogramMetricFamily(
            "donut_restock_lead_time_seconds",
            "closed_at - created_at of restocks closed in the last 24 h, by how they closed "
            "(fulfilled is the factory lead time). A sliding window recomputed at each scrape, not a "
            "running total: use histogram_quantile on the buckets as they are, not on rate().",
            labels=["status"],
        )
        rows = (
            Restock.objects.filter(closed_at__gte=since)
            .annotate(lead=ExpressionWrapper(F("closed_at") - F("created_at"), output_field=DurationField()))
            .order_by()
            .values("status")
            .annotate(**_bucket_aggregates("lead", [timedelta(seconds=b) for b in RESTOCK_LEAD_BUCKETS]))
        )
        for row in rows:
            buckets, total = _histogram(row, RESTOCK_LEAD_BUCKETS, scale=1)
            lead.add_metric([row["status"]], buckets, total)
        yield lead

    def _open_restock_ages(self):
        # A restock the factory never accepted, or a completion that never came, shows here at once; the
        # overdue alert waits FACTORY_OVERDUE_GRACE_SECONDS past the expected time.
        now = timezone.now()
        oldest = {
            row["status"]: row
            for row in Restock.objects.open()
            .order_by()
            .values("status")
            .annotate(opened=Min("created_at"), expected=Min("expected_at"))
        }
        pending = oldest.get(Restock.Status.PENDING)
        placed = oldest.get(Restock.Status.PLACED)
        yield GaugeMetricFamily(
            "donut_restock_oldest_pending_seconds",
            "Seconds since the oldest restock not yet accepted by the factory was opened; 0 when none is.",
            value=(now - pending["opened"]).total_seconds() if pending else 0,
        )
        late = (now - placed["expected"]).total_seconds() if placed and placed["expected"] else 0
        yield GaugeMetricFamily(
            "donut_restock_most_late_seconds",
            "Seconds the placed restock furthest past its expected completion is late (a lost or slow "
            "factory callback); 0 when none is late.",
            value=max(late, 0),
        )

    def _factory(self, since):
        rows = FactoryAttempt.objects.order_by().values("outcome").annotate(n=Count("pk"))
        by_outcome = {row["outcome"]: row["n"] for row in rows}
        calls = CounterMetricFamily(
            "donut_factory_calls",
            "Calls to the factory's order API by outcome (FactoryAttempt rows).",
            labels=["outcome"],
        )
        for outcome in FactoryAttempt.Outcome.values:
            calls.add_metric([outcome], by_outcome.get(outcome, 0))
        yield calls
        yield CounterMetricFamily(
            "donut_factory_retries",
            "Factory calls that were a retry (FactoryAttempt rows with number > 1).",
            value=FactoryAttempt.objects.filter(number__gt=1).count(),
        )

        ms_bounds = [round(b * 1000) for b in FACTORY_LATENCY_BUCKETS]
        row = FactoryAttempt.objects.filter(created_at__gte=since).aggregate(
            **_bucket_aggregates("latency_ms", ms_bounds)
        )
        latency = HistogramMetricFamily(
            "donut_factory_call_latency_seconds",
            "Latency of factory calls made in the last 24 h (FactoryAttempt.latency_ms). A sliding window "
            "recomputed at each scrape: use histogram_quantile on the buckets as they are, not on rate().",
        )
        buckets, total = _histogram(row, FACTORY_LATENCY_BUCKETS, scale=1000)
        latency.add_metric([], buckets, total)
        yield latency

    def _dead_letters(self):
        # Resolved either by its own redrive (sent again: redrive_count counts them) or settled without one (the
        # factory had the order after all, or the redrive of the same restock's other dead letter covered it).
        counts = DeadLetter.objects.aggregate(
            open=Count("pk", filter=DeadLetterQuerySet.UNRESOLVED),
            redriven=Count("pk", filter=~DeadLetterQuerySet.UNRESOLVED & Q(redrive_count__gt=0)),
            settled=Count("pk", filter=~DeadLetterQuerySet.UNRESOLVED & Q(redrive_count=0)),
        )
        gauge = GaugeMetricFamily(
            "donut_dead_letters",
            "Dead letters: open (waiting for ops), redriven (sent again), settled (resolved, not sent again).",
            labels=["state"],
        )
        for state in ("open", "redriven", "settled"):
            gauge.add_metric([state], counts[state])
        yield gauge

    def _alerts(self, since):
        rows = AlertDelivery.objects.order_by().values_list("channel", "status").annotate(n=Count("pk"))
        counts = {(channel, status): n for channel, status, n in rows}
        deliveries = GaugeMetricFamily(
            "donut_alert_deliveries", "Alert deliveries by channel and status (all rows).", labels=["channel", "status"]
        )
        for channel in AlertDelivery.Channel.values:
            for status in AlertDelivery.Status.values:
                deliveries.add_metric([channel, status], counts.get((channel, status), 0))
        yield deliveries

        ms_bounds = [b * 1000 for b in ALERT_LATENCY_BUCKETS]
        rows = (
            AlertDelivery.objects.filter(sent_at__gte=since, latency_ms__isnull=False)
            .order_by()
            .values("channel")
            .annotate(**_bucket_aggregates("latency_ms", ms_bounds))
        )
        latency = HistogramMetricFamily(
            "donut_alert_delivery_latency_seconds",
            "From an alert's creation to its delivery being sent, for deliveries sent in the last 24 h. "
            "A sliding window recomputed at each scrape: use histogram_quantile on the buckets, not rate().",
            labels=["channel"],
        )
        for row in rows:
            buckets, total = _histogram(row, ALERT_LATENCY_BUCKETS, scale=1000)
            latency.add_metric([row["channel"]], buckets, total)
        yield latency

    def _stock(self):
        stock = GaugeMetricFamily(
            "donut_stock_on_hand",
            f"On-hand stock of active products (the first {STOCK_SKU_LIMIT} SKUs).",
            labels=["sku"],
        )
        products = Product.objects.filter(is_active=True).order_by("sku").values_list("sku", "on_hand")
        for sku, on_hand in products[:STOCK_SKU_LIMIT]:
            stock.add_metric([sku], on_hand)
        yield stock


registry = CollectorRegistry(auto_describe=False)
registry.register(DonutCollector())


def _client_ip_allowed(request) -> bool:
    # REMOTE_ADDR only: X-Forwarded-For is whatever the client wrote.
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    if getattr(address, "ipv4_mapped", None):
        address = address.ipv4_mapped
    return any(address in ipaddress.ip_network(net, strict=False) for net in settings.METRICS_ALLOWED_IPS)


def _bearer_token(request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _token_matches(given: str, expected: str) -> bool:
    # Digests first, so the comparison takes the same time whatever the lengths.
    return hmac.compare_digest(hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest())


def _refuse(code: str, message: str, status: int, headers: dict | None = None) -> JsonResponse:
    return JsonResponse({"code": code, "message": message}, status=status, headers=headers)


CHALLENGE = {"WWW-Authenticate": 'Bearer realm="metrics"'}


@csrf_exempt  # a bearer token, no cookie: the CSRF check would answer any other method with its HTML 403
def metrics_view(request):
    token = settings.METRICS_TOKEN
    if not token and not settings.METRICS_ALLOWED_IPS:
        raise Http404  # off: looks like any unknown URL
    if not _client_ip_allowed(request):
        given = _bearer_token(request)
        if not token:
            return _refuse("permission_denied", "Metrics are not served to this address.", 403)
        if not given:
            return _refuse("not_authenticated", "Send Authorization: Bearer <token>.", 401, CHALLENGE)
        # Wrong tokens count with the API's bad keys, per client address; checked before the comparison,
        # so that a locked-out guesser gets 429 for the right token too and cannot tell it from the others.
        try:
            ratelimit.failed_auth_check(request)
        except Throttled as exc:
            return _refuse("throttled", str(exc.detail), 429, {"Retry-After": str(exc.wait)})
        if not _token_matches(given, token):
            ratelimit.failed_auth_count(request)
            return _refuse("authentication_failed", "Invalid token.", 401, CHALLENGE)
    if request.method not in ("GET", "HEAD"):
        return _refuse("method_not_allowed", f'Method "{request.method}" not allowed.', 405, {"Allow": "GET, HEAD"})
    response = HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_PLAIN_0_0_4)
    response["Cache-Control"] = "no-store"
    return response

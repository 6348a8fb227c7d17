"""What a web request may spend on Redis and on the broker: one try, a short timeout (Redis:
WEB_DEPENDENCY_TIMEOUT_SECONDS here; the broker: BROKER_PUBLISH_TIMEOUT_SECONDS in
donutsite.celery.task_publish), and a circuit breaker per dependency, so that a refused, hung or slow
Redis or broker costs a request one short try and then nothing while the breaker is open.

While a breaker is open (WEB_DEPENDENCY_PAUSE_SECONDS after a failure) the callers degrade as
docs/reliability.md says: the API throttle fails open (requests pass unthrottled), the sale counters
wait in each process's memory, and a restock's hand-over to the queue is left to the outbox sweep. A
breaker is per process; it logs one warning when an outage begins (its first failure since the dependency
last answered) and one when the dependency answers again, however many pauses the outage lasts, and
/metrics shows the scraping process's breakers (donut_web_dependency_open).
"""

import logging
import threading
import time
from urllib.parse import urlsplit

import redis
from django.conf import settings
from redis.backoff import NoBackoff
from redis.retry import Retry

logger = logging.getLogger(__name__)


class Outage:
    """When a dependency stopped answering, so that an outage is told once as it begins and once as it ends,
    however many tries fail in between (a warning per failed try buried the log for the whole outage). The
    breakers below keep one each, as do each notification channel and each of /metrics' Redis reads (Outages)."""

    def __init__(self):
        self._since: float | None = None
        self._lock = threading.Lock()  # two threads may fail at once (a request and the sale counters'): one line

    @property
    def under_way(self) -> bool:
        return self._since is not None

    def began(self) -> bool:
        """A try failed: whether this begins an outage (tell it), not one already under way."""
        with self._lock:
            if self._since is not None:
                return False
            self._since = time.monotonic()
            return True

    def ended(self) -> float | None:
        """A try worked: how long the outage under way lasted, in seconds (tell it), or None for none."""
        with self._lock:
            since, self._since = self._since, None
        return None if since is None else time.monotonic() - since


class Outages:
    """An Outage for each of several things, by name (each notification channel, each of /metrics' reads)."""

    def __init__(self):
        self._by_name: dict[str, Outage] = {}

    def began(self, name: str) -> bool:
        """Outage.began of `name`'s."""
        return self._by_name.setdefault(name, Outage()).began()

    def ended(self, name: str) -> float | None:
        """Outage.ended of `name`'s (None: none under way)."""
        outage = self._by_name.get(name)
        return None if outage is None else outage.ended()

    def clear(self) -> None:
        self._by_name.clear()


class Breaker:
    """Open for WEB_DEPENDENCY_PAUSE_SECONDS after a failure: callers skip the dependency meanwhile."""

    def __init__(self, name: str, degraded: str):
        self.name = name
        self.degraded = degraded  # what its callers do while it is open, for the warning
        self._open_until = 0.0
        self.outage = Outage()  # from the first failure until the dependency answers
        self.trips = 0  # failures that opened it, in this process

    @property
    def is_open(self) -> bool:
        return time.monotonic() < self._open_until

    def trip(self, exc: BaseException) -> None:
        self.trips += 1
        self._open(exc)
        # Redis and the broker are often one server (compose, make run): its failure opens both, so that a
        # request that would use both pays for one short try, not one per dependency.
        for other in self._same_server():
            other._open(exc)

    def _same_server(self) -> list["Breaker"]:
        return [b for b in breakers.values() if b is not self and _server(b.name) == _server(self.name)]

    def _open(self, exc: BaseException) -> None:
        self._open_until = time.monotonic() + settings.WEB_DEPENDENCY_PAUSE_SECONDS
        if not self.outage.began():
            return  # the same outage: the try after a pause failed too, already told
        logger.warning(
            "%s unavailable (%r): %s until it answers again, tried every %s s (circuit open)",
            self.name,
            exc,
            self.degraded,
            settings.WEB_DEPENDENCY_PAUSE_SECONDS,
        )

    def answered(self) -> None:
        """The dependency answered a call. After an outage, one line ends it, at the warning's level so that a
        log read for warnings shows both ends; the other breakers on its server close with it, as they
        opened with it (their next call would find the server answering)."""
        if not self.outage.under_way:
            return
        for breaker in [self, *self._same_server()]:
            seconds = breaker.close()
            if seconds is not None:
                logger.warning("%s answers again after %.1f s (circuit closed)", breaker.name, seconds)

    def close(self) -> float | None:
        """Closed, with no outage under way (tests; answered()): how long the one under way lasted, if any."""
        self._open_until = 0.0
        return self.outage.ended()


breakers = {
    "redis": Breaker(
        "redis",
        "the API throttle lets requests through, the per-address limits (anonymous requests, bad keys, "
        "admin and Flower logins, callbacks) count nothing, and sale counts wait in this process",
    ),
    "broker": Breaker("broker", "tasks are left to the outbox sweep"),
}


def broker_url() -> str:
    """The broker tasks are published to: Celery's write URL when set, else its broker URL."""
    from celery import current_app

    return current_app.conf.broker_write_url or current_app.conf.broker_url or ""


def _server(name: str) -> tuple:
    """Where a breaker's dependency lives: host and port (or a Unix socket's path) of its URL."""
    url = settings.REDIS_URL if name == "redis" else broker_url()
    parts = urlsplit(url or "")
    if parts.scheme == "unix":
        return ("unix", parts.path)
    if parts.scheme not in ("redis", "rediss"):
        return (name, url)  # another kind of broker (AMQP): its own server
    return (parts.hostname, parts.port or 6379)


def redis_try(call, default):
    """What `call()` (Redis commands on a `redis_client`) returns, or `default` while the redis breaker is
    open or when Redis fails, which opens it: how a request path uses Redis."""
    breaker = breakers["redis"]
    if breaker.is_open:
        return default
    try:
        result = call()
    except (redis.RedisError, OSError) as exc:
        breaker.trip(exc)
        return default
    breaker.answered()
    return result


_clients: dict[str, redis.Redis] = {}
_clients_lock = threading.Lock()


def redis_client(url: str) -> redis.Redis:
    """A client for a request path: the short timeout for connecting and for each answer, no retries
    (redis-py retries ten times with backoff by default)."""
    client = _clients.get(url)
    if client is None:
        with _clients_lock:
            client = _clients.get(url) or redis.Redis.from_url(
                url,
                socket_connect_timeout=settings.WEB_DEPENDENCY_TIMEOUT_SECONDS,
                socket_timeout=settings.WEB_DEPENDENCY_TIMEOUT_SECONDS,
                retry=Retry(NoBackoff(), 0),
            )
            _clients[url] = client
    return client

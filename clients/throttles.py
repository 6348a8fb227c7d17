"""Per-client rate limit (API_THROTTLE_RATE), counted in Redis so every web worker shares one budget.

A fixed window per client, counted in Redis. A process does not spend a Redis round trip on every
request: it takes its tokens from the window's counter in batches (one INCRBY per batch) and hands
them out locally, so a sale seldom waits on Redis (docs/benchmarks.md, "Sales": with the throttle off
altogether the bench sold up to a sixth more). The batch is 1% of the limit (1 to 32), so a client
never gets more than the limit in a window, and is refused at most (processes - 1) x (batch - 1)
requests early when other processes still hold tokens they took. Below 200 per window the batch is 1:
exact. Fails open: when Redis does not answer within WEB_DEPENDENCY_TIMEOUT_SECONDS, this request and
every request of the breaker's pause pass unthrottled (donutsite/dependencies.py).
"""

import logging
import threading
import time

from django.conf import settings
from rest_framework.throttling import BaseThrottle, SimpleRateThrottle

from donutsite.dependencies import redis_client, redis_try

logger = logging.getLogger(__name__)

MAX_BATCH = 32


def _client():
    return redis_client(settings.REDIS_URL)


def batch_size(limit: int) -> int:
    return max(1, min(MAX_BATCH, limit // 100))


def window_start(now: float, window: int) -> int:
    return int(now // window) * window


class TokenBatches:
    """The tokens one process holds, per client, for the client's current window."""

    def __init__(self):
        self._lock = threading.Lock()  # gthread workers serve several requests at once
        self._held: dict[int, tuple[int, int]] = {}  # client id -> (window start, tokens left; -1: spent)

    def clear(self) -> None:
        with self._lock:
            self._held.clear()

    def take(self, client_id: int, limit: int, window: int, now: float) -> bool:
        """One request's token; False when the client's budget for this window is spent.
        Raises redis.RedisError when a new batch is needed and Redis does not answer."""
        current = window_start(now, window)
        with self._lock:
            start, left = self._held.get(client_id, (None, 0))
            if start == current and left != 0:
                if left > 0:
                    self._held[client_id] = (start, left - 1)
                return left > 0
        batch = batch_size(limit)
        key = f"throttle:{client_id}:{current}"
        pipe = _client().pipeline(transaction=False)
        pipe.incrby(key, batch)
        pipe.expire(key, window + 1)
        counted = pipe.execute()[0]
        granted = max(0, min(batch, limit - (counted - batch)))  # the batch's tokens that are within the limit
        with self._lock:
            if len(self._held) > 10_000:
                self._held.clear()
            start, left = self._held.get(client_id, (None, 0))
            tokens = granted + (left if start == current and left > 0 else 0)  # + another thread's batch
            self._held[client_id] = (current, tokens - 1 if tokens else -1)
            return tokens > 0


_batches = TokenBatches()


class ApiClientRateThrottle(BaseThrottle):
    """A fixed window per client, shared by every process through Redis. Fails open if Redis does not answer."""

    def __init__(self):
        self.limit, self.window = SimpleRateThrottle.parse_rate(None, settings.API_THROTTLE_RATE)
        self.wait_seconds = None

    def allow_request(self, request, view):
        if request.auth is None:
            return True  # anonymous reads of the catalogue are cheap and public
        now = time.time()
        allowed = redis_try(lambda: _batches.take(request.auth.pk, self.limit, self.window, now), default=True)
        if not allowed:
            self.wait_seconds = window_start(now, self.window) + self.window - now
        return allowed

    def wait(self):
        return self.wait_seconds

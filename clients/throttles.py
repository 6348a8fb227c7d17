"""Per-client rate limit (API_THROTTLE_RATE): a fixed window per client, counted in Redis with one
INCR per request, so every web process shares one budget exactly.

Not DRF's SimpleRateThrottle: it keeps each client's request history as a list in the cache, read and
written back per request, so concurrent processes lose each other's requests. Fails open: when Redis
does not answer within WEB_DEPENDENCY_TIMEOUT_SECONDS, this request and every request of the breaker's
pause pass unthrottled (donutsite/dependencies.py).
"""

import time

import redis
from django.conf import settings
from rest_framework.throttling import BaseThrottle, SimpleRateThrottle

from donutsite.dependencies import breakers, redis_client


def window_start(now: float, window: int) -> int:
    return int(now // window) * window


class ApiClientRateThrottle(BaseThrottle):
    """A fixed window per client, shared by every process through Redis."""

    def __init__(self):
        self.limit, self.window = SimpleRateThrottle.parse_rate(None, settings.API_THROTTLE_RATE)
        self.wait_seconds = None

    def allow_request(self, request, view):
        if request.auth is None:
            return True  # anonymous reads of the catalogue are cheap and public
        breaker = breakers["redis"]
        if breaker.is_open:
            return True
        now = time.time()
        start = window_start(now, self.window)
        key = f"throttle:{request.auth.pk}:{start}"
        try:
            pipe = redis_client(settings.REDIS_URL).pipeline(transaction=False)  # one round trip
            pipe.incr(key)
            pipe.expire(key, self.window + 1)
            counted = pipe.execute()[0]
        except (redis.RedisError, OSError) as exc:
            breaker.trip(exc, "the API throttle lets requests through")
            return True
        if counted > self.limit:
            self.wait_seconds = start + self.window - now
            return False
        return True

    def wait(self):
        return self.wait_seconds

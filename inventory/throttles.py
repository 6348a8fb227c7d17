"""Per-client rate limit (API_THROTTLE_RATE), counted in Redis so every web worker shares one budget."""

import logging
import time

import redis
from django.conf import settings
from rest_framework.throttling import BaseThrottle, SimpleRateThrottle

logger = logging.getLogger(__name__)
_redis = None


def _client():
    global _redis
    if _redis is None:
        _redis = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=0.5, socket_timeout=0.5)
    return _redis


class ApiClientRateThrottle(BaseThrottle):
    """A fixed window per client: one INCR per request. Fails open if Redis does not answer."""

    def __init__(self):
        self.limit, self.window = SimpleRateThrottle.parse_rate(None, settings.API_THROTTLE_RATE)
        self.wait_seconds = None

    def allow_request(self, request, view):
        if request.auth is None:
            return True  # anonymous reads of the catalogue are cheap and public
        now = time.time()
        window_start = int(now // self.window) * self.window
        key = f"throttle:{request.auth.pk}:{window_start}"
        try:
            pipe = _client().pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, self.window + 1)
            count = pipe.execute()[0]
        except redis.RedisError:
            logger.warning("throttle: Redis unavailable, letting the request through")
            return True
        if count <= self.limit:
            return True
        self.wait_seconds = window_start + self.window - now
        return False

    def wait(self):
        return self.wait_seconds

"""The sales endpoint's answer counts (sold, out_of_stock, rejected, stockouts), one HINCRBY per
counted answer into a hash on REDIS_URL that every web process shares and /metrics (ops/metrics.py)
reads. Infrastructure with no app imports, so the sale view and the exception handler can count
without depending on the ops app.

Redis on the request path is bounded (donutsite/dependencies.py): a count that Redis does not take
within WEB_DEPENDENCY_TIMEOUT_SECONDS is dropped, and so are the counts of the breaker's pause after
it; the sale's answer never waits longer and never fails because of a counter.
"""

import redis
from django.conf import settings

from donutsite.dependencies import breakers, redis_client

SALE_OUTCOMES = ("sold", "out_of_stock", "rejected")


def counters_key() -> str:
    # The cache's key prefix is the deployment's namespace in a shared Redis.
    return f"{settings.CACHES['default'].get('KEY_PREFIX') or 'donut'}:metrics:sales"


def count_sale_outcome(outcome: str, *, stockouts: int = 0) -> None:
    """Count one answer of the sales endpoint. `stockouts` is how many products the refused sale
    found short."""
    if outcome not in SALE_OUTCOMES:
        raise ValueError(f"unknown sale outcome {outcome!r}")
    breaker = breakers["redis"]
    if breaker.is_open:
        return
    try:
        pipe = redis_client(settings.REDIS_URL).pipeline(transaction=False)  # one round trip
        pipe.hincrby(counters_key(), outcome, 1)
        if stockouts:
            pipe.hincrby(counters_key(), "stockouts", stockouts)
        pipe.execute()
    except (redis.RedisError, OSError) as exc:
        breaker.trip(exc, "sale outcomes go uncounted")

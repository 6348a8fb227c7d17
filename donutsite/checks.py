"""Start-up checks: the timing settings must nest, or a slow task runs twice.

What bounds a running task depends on the worker's pool. prefork enforces the soft and hard time limits.
The threads pool, which the stock workers run (docs/benchmarks.md, "Restock latency"), enforces neither:
there the factory client's connect + read timeouts are what bound a factory call (factory/client.py enforces
their sum as a deadline on the whole call, not only on each socket read). One chain covers both:
factory HTTP timeout < soft < hard < visibility timeout. A claim counts as abandoned after the hard limit
(plus a margin), so under threads a call that the HTTP timeouts end is still inside its claim and is never
handed to a second worker.
"""

from django.conf import settings
from django.core import checks

# The tag of the checks that a worker runs before it starts (donutsite/celery.py): any app's settings
# that could let a task run twice or be cut off.
TIMING_TAG = "timing"

# Celery pools that enforce no time limit (celery/concurrency/thread.py and solo.py ignore them).
POOLS_WITHOUT_TIME_LIMITS = ("threads", "solo")


def factory_call_bound() -> float:
    """The longest a factory call can wait on the factory: connect timeout + read timeout, in seconds."""
    return settings.FACTORY_CONNECT_TIMEOUT_SECONDS + settings.FACTORY_TIMEOUT_SECONDS


def timing_problems() -> list[str]:
    http = factory_call_bound()
    soft, hard = settings.CELERY_TASK_SOFT_TIME_LIMIT, settings.CELERY_TASK_TIME_LIMIT
    visibility = settings.CELERY_VISIBILITY_TIMEOUT
    longest_wait = max(settings.FACTORY_RETRY_BACKOFF_MAX_SECONDS, settings.NOTIFICATIONS_RETRY_BACKOFF_MAX_SECONDS)
    problems = []
    if not http < soft < hard < visibility:
        problems.append(
            f"need factory HTTP timeout ({http:g} s, connect + read) < soft time limit ({soft} s) "
            f"< hard time limit ({hard} s) < visibility timeout ({visibility} s); under the threads pool, "
            "which enforces no time limit, the HTTP timeout alone bounds a factory call"
        )
    if longest_wait + hard >= visibility:
        problems.append(
            f"a retry countdown ({longest_wait:g} s) plus the hard time limit ({hard} s) must stay under the "
            f"visibility timeout ({visibility} s), or Redis redelivers the waiting task to a second worker"
        )
    return problems


def task_bound(pool: str) -> str:
    """What ends a task that runs too long, for a worker on this pool (logged when a worker starts)."""
    if pool in POOLS_WITHOUT_TIME_LIMITS:
        return (
            f"the {pool} pool enforces no time limit: each factory call is bounded by the client's connect + read "
            f"timeouts ({factory_call_bound():g} s), under the hard time limit ({settings.CELERY_TASK_TIME_LIMIT} s) "
            f"that claims expire after and the visibility timeout ({settings.CELERY_VISIBILITY_TIMEOUT} s)"
        )
    return (
        f"soft and hard time limits {settings.CELERY_TASK_SOFT_TIME_LIMIT} s / {settings.CELERY_TASK_TIME_LIMIT} s, "
        f"over the factory client's connect + read timeouts ({factory_call_bound():g} s)"
    )


@checks.register(TIMING_TAG)
def check_timing(app_configs=None, **kwargs):
    return [checks.Error(problem, id="donutsite.E001") for problem in timing_problems()]

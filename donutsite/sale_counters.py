"""The sales endpoint's answer counts (sold, out_of_stock, throttled, rejected, stockouts), kept per process and
sent to a hash on REDIS_URL, which /metrics (ops/metrics.py) reads. Infrastructure with no app imports,
so the sale view and the exception handler can count without depending on the ops app."""

import atexit
import logging
import os
import threading
import time
import uuid
from collections import Counter

import redis
from django.conf import settings

from donutsite import dependencies

logger = logging.getLogger(__name__)

SALE_OUTCOMES = ("sold", "out_of_stock", "throttled", "rejected")

# The sale counters leave the request path: a sale adds to this process's counts, and a daemon thread
# sends them to Redis every COUNTERS_FLUSH_SECONDS (so does a scrape, for its own process, and exit).
# So a sale's answer never waits on Redis for a counter (docs/benchmarks.md, "Sales").
# Counts wait in memory while Redis is down, and a process killed outright loses at most the last
# half second's. Short timeouts and the redis breaker's pause after a failure (donutsite/dependencies.py)
# keep an unreachable Redis cheap; the breaker's warning tells of the outage once, and the flush that
# sends what waited says how much that was (a warning per failed flush was one every 5 s per process).
COUNTERS_FLUSH_SECONDS = 0.5
_waited: Counter | None = None  # since a flush failed or was skipped: what the flushes after it sent
_pending: Counter = Counter()
_pending_lock = threading.Lock()
_flush_lock = threading.Lock()  # one flush at a time, so a flush that returns has reached Redis
_flusher_pid = 0  # the process whose flusher thread runs (threads do not survive gunicorn's fork)
# A batch whose send failed, sent again as it was: a timeout may come after Redis ran the increments, so
# each batch carries this process's name and a number, and Redis adds a batch only once (_BATCH_ADD).
_unsent: tuple[int, dict] | None = None
_sender = ("", 0)  # (this process's name for its batches, its pid): a forked child takes a new one
_batch_number = 0
SENT_MARK_SECONDS = 86400  # how long Redis remembers a process's last batch number after its last send
_BATCH_ADD = """
local sent = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[1]) > sent then
  for i = 3, #ARGV, 2 do redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1]) end
  sent = tonumber(ARGV[1])
end
redis.call('SET', KEYS[2], sent, 'EX', ARGV[2])
return sent
"""


def redis_client(url: str) -> redis.Redis:
    # The request path's client (short timeouts, no retries): a scrape flushes its own process's counts.
    return dependencies.redis_client(url)


def counters_key() -> str:
    # The cache's key prefix is the deployment's namespace in a shared Redis.
    return f"{settings.CACHES['default'].get('KEY_PREFIX') or 'donut'}:metrics:sales"


def count_sale_outcome(outcome: str, *, stockouts: int = 0) -> None:
    """Count one answer of the sales endpoint; it reaches Redis, shared by every web process, within
    COUNTERS_FLUSH_SECONDS. `stockouts` is how many products the refused sale found short. Never
    touches the network, so the sale's answer cannot wait on or fail because of Redis."""
    global _flusher_pid
    if outcome not in SALE_OUTCOMES:
        raise ValueError(f"unknown sale outcome {outcome!r}")
    with _pending_lock:
        _pending[outcome] += 1
        if stockouts:
            _pending["stockouts"] += stockouts
        start_flusher = _flusher_pid != os.getpid()
        _flusher_pid = os.getpid()
    if start_flusher:
        threading.Thread(target=_counters_flush_forever, name="sale-counters", daemon=True).start()
        atexit.register(counters_flush_at_exit)


def counters_flush() -> bool:
    """Send this process's pending counts to Redis; False if they are still pending (Redis down).

    A batch whose send failed is sent again first, under its own number: a timeout does not say whether
    Redis ran the increments (a Redis slower than WEB_DEPENDENCY_TIMEOUT_SECONDS answers after the
    client gave up), and Redis skips a batch it already added, so no sale is counted twice.

    While the redis breaker is open nothing is tried, and a failure opens it (its one warning per outage
    says that sale counts wait). The flush that sends counts which waited logs them once."""
    global _unsent, _batch_number, _sender, _waited
    breaker = dependencies.breakers["redis"]
    with _flush_lock:
        if _sender[1] != os.getpid():
            _sender, _batch_number, _unsent = (uuid.uuid4().hex, os.getpid()), 0, None
        for _ in range(2):  # the batch a failed send left, then what was counted since
            if _unsent is None:
                with _pending_lock:
                    counts = dict(_pending)
                    _pending.clear()
                if not counts:
                    break
                _batch_number += 1
                _unsent = (_batch_number, counts)
            if breaker.is_open:
                _waited = _waited if _waited is not None else Counter()
                return False
            number, counts = _unsent
            try:
                # One script: all of the batch or none, and only once.
                redis_client(settings.REDIS_URL).eval(
                    _BATCH_ADD,
                    2,
                    counters_key(),
                    f"{counters_key()}:sent:{_sender[0]}",
                    number,
                    SENT_MARK_SECONDS,
                    *(v for name, n in counts.items() for v in (name, n)),
                )
            except (redis.RedisError, OSError) as exc:
                breaker.trip(exc)
                _waited = _waited if _waited is not None else Counter()
                return False
            breaker.answered()
            if _waited is not None:
                _waited.update(counts)
            _unsent = None
        if _waited is not None:
            sent, _waited = dict(_waited), None
            logger.info("metrics: Redis answers again: sent the %s sale outcomes that waited in this process", sent)
        return True


def counters_waiting() -> dict:
    """This process's counts not in Redis yet: a batch a failed send left, then what was counted since (the
    oldest first, whenever the flusher last tried; read under the flush's lock, so that no flush moves counts
    from one to the other meanwhile)."""
    with _flush_lock:
        waiting = Counter(_unsent[1] if _unsent is not None else {})
        with _pending_lock:
            waiting.update(_pending)
    return dict(waiting)


def counters_flush_at_exit() -> None:
    """The last flush, as the process exits: what Redis did not take now is never counted, so say what."""
    if not counters_flush():
        waiting = counters_waiting()
        logger.warning("metrics: Redis unavailable as this process exits: %s sale outcomes not counted", waiting)


def _counters_flush_forever():
    while True:
        time.sleep(COUNTERS_FLUSH_SECONDS)
        counters_flush()

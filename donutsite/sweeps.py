"""When each periodic sweep last finished, for /metrics and `manage.py sweeps_alive`.

Beat sends every sweep, and the sweeps are what notice a lost message or an overdue restock and tell ops.
A stopped or wedged beat (or a maintenance worker that no longer runs them) therefore stops all of that
with no sign of its own: nothing raises the overdue alert about the overdue-alert sweep. So each sweep
notes when it finished, in a hash on REDIS_URL, and its age is watched from outside (a Prometheus rule on
donut_sweep_age_seconds, compose's healthcheck of beat) and by notifications.sweep, which pages ops when
factory.reconcile stops while beat still runs (its worker died). Infrastructure with no app imports."""

import logging
import time

import redis
from django.conf import settings

from donutsite import dependencies

logger = logging.getLogger(__name__)

# The sweeps beat sends every RECONCILE_INTERVAL_SECONDS (CELERY_BEAT_SCHEDULE).
WATCHED = ("factory.reconcile", "notifications.sweep")


def _key() -> str:
    return f"{settings.CACHES['default'].get('KEY_PREFIX') or 'donut'}:sweeps:finished"


def sweep_finished(name: str) -> None:
    """Note that this sweep just finished. Best effort: a Redis that does not answer costs one short try
    and a warning; the sweep's own work is done either way."""
    try:
        dependencies.redis_client(settings.REDIS_URL).hset(_key(), name, repr(time.time()))
    except (redis.RedisError, OSError) as exc:
        logger.warning("sweep %s: could not note that it finished (%r)", name, exc)


def sweep_ages() -> dict[str, float | None]:
    """Seconds since each watched sweep last finished (None: never, as far as Redis knows). Raises
    redis.RedisError when Redis does not answer."""
    finished = dependencies.redis_client(settings.REDIS_URL).hgetall(_key())
    now = time.time()
    return {name: now - float(finished[name.encode()]) if name.encode() in finished else None for name in WATCHED}


def late_after() -> float:
    """How long a watched sweep may go without finishing before `sweeps_alive` calls it late: six of beat's
    intervals, at least 30 s."""
    return max(30.0, 6 * settings.RECONCILE_INTERVAL_SECONDS)


def sweep_last_finished(name: str) -> float | None:
    """When this sweep last finished, as a Unix time (None: never, as far as Redis knows). Raises
    redis.RedisError when Redis does not answer."""
    return _noted(name)


def _noted(field: str) -> float | None:
    noted = dependencies.redis_client(settings.REDIS_URL).hget(_key(), field)
    return None if noted is None else float(noted)


def sweep_stop_claim(name: str, last_finished: float) -> bool:
    """True for the first to claim telling ops of this stop of the sweep (the one after its run that finished
    at `last_finished`), False after: one page per stop, however many sweeps or workers see it. Raises
    redis.RedisError when Redis does not answer."""
    claim = f"{_key()}:{name}:stop-told:{last_finished!r}"
    return bool(dependencies.redis_client(settings.REDIS_URL).set(claim, 1, nx=True, ex=24 * 3600))


def sweep_watch_from_now(name: str) -> None:
    """Watch this sweep from now on, not from its last run: everything was stopped, the watcher too, and the
    sweep's worker may come up a few runs later than the watcher's. Raises redis.RedisError when Redis does
    not answer."""
    dependencies.redis_client(settings.REDIS_URL).hset(_key(), f"{name}:watched-from", repr(time.time()))


def sweep_watched_from(name: str) -> float | None:
    """When `sweep_watch_from_now` last started watching this sweep (None: never). Raises redis.RedisError
    when Redis does not answer."""
    return _noted(f"{name}:watched-from")

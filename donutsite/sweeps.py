"""When each periodic sweep last finished, for /metrics and `manage.py sweeps_alive`.

Beat sends every sweep, and the sweeps are what notice a lost message or an overdue restock and tell ops.
A stopped or wedged beat (or a maintenance worker that no longer runs them) therefore stops all of that
with no sign of its own: nothing raises the overdue alert about the overdue-alert sweep. So each sweep
notes when it finished, in a hash on REDIS_URL, and its age is watched from outside (a Prometheus rule on
donut_sweep_age_seconds, compose's healthcheck of beat) and by notifications.sweep, which pages ops when
factory.reconcile stops while beat still runs (its worker died).

And each beat sweep runs one at a time (`single_flight`): after a broker outage a worker takes the runs beat
queued meanwhile all at once, and side by side they resent the same restocks and deadlocked on the same rows.
Infrastructure with no app imports."""

import functools
import hashlib
import logging
import time
from contextlib import contextmanager

import redis
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, connections

from donutsite import dependencies
from donutsite.db import named_lock_release, named_lock_take

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


def single_flight(name: str):
    """A beat sweep task's decorator: a run that finds another run of the same sweep under way (on any worker
    or host) does nothing and returns {"skipped": ...}; the one under way does the work. A skipped run does
    not note that the sweep finished: only a run that did the sweep's work keeps it alive for /metrics and
    `sweeps_alive`, so a run wedged while holding the guard shows as late, as a stopped sweep does."""

    def decorate(sweep):
        @functools.wraps(sweep)
        def run_alone(*args, **kwargs):
            with sweep_alone(name) as alone:
                if not alone:
                    return {"skipped": f"another {name} run is under way"}
                return sweep(*args, **kwargs)

        return run_alone

    return decorate


@contextmanager
def sweep_alone(name: str, *, wait: float = 0):
    """Yields True with this sweep's guard held until the block ends, False when another run holds it (and
    still did after `wait` seconds).

    The guard is a MariaDB named lock (GET_LOCK) on this thread's own connection, not a row: it blocks only another
    run of the same sweep. Beat's runs never wait for it (the next run comes soon enough); `manage.py reconcile`
    waits a little for the run under way, so that its own sweep runs after it. The server frees it when the
    connection closes, so a killed worker's guard goes with its connection, and a database that is up is all it
    needs (a Redis lock would be out of reach in the Redis outages the sweeps recover from). SQLite (`make run`'s
    default) has no named locks: there the sweeps run unguarded, as they did before."""
    connection = connections[DEFAULT_DB_ALIAS]
    if connection.vendor != "mysql":
        yield True
        return
    lock = _lock_name(name, connection.settings_dict["NAME"])
    taken, holder = named_lock_take(connection, lock, wait)
    if not taken:
        logger.info("sweep %s: skipped, another run is under way (database connection %s)", name, holder)
        yield False
        return
    try:
        yield True
    finally:
        try:
            named_lock_release(connection, lock)  # closes the connection when it fails, which frees the guard
        except DatabaseError as exc:
            logger.warning("sweep guard %s: could not release it, closing the connection instead (%r)", lock, exc)


def _lock_name(name: str, database: str) -> str:
    """The guard's name. Named locks are server-wide: one per sweep and database, since databases share a
    server (the tests' do). MySQL refuses a name over 64 characters; a longer one has the database's digest."""
    lock = f"sweep:{name}:{database}"
    if len(lock) > 64:
        lock = f"sweep:{name}:{hashlib.sha256(database.encode()).hexdigest()}"[:64]
    return lock

"""How calls to outside systems are retried: the one place that decides.

A task built on `RetryingTask` declares which errors are transient (`retry_on`) and where its attempts
are counted (`attempts_used`, less `attempts_spared`: read from the database, the one budget). For each
transient error:

- out of attempts (FACTORY_MAX_ATTEMPTS failed calls counted in the database, across messages and
  resends, the first of them at least FACTORY_RETRY_FOR_SECONDS ago: `failing_since`): `OutOfAttempts`,
  which dead-letters the work; the reason never depends on which message ran.
  A call the outside system turned away with a rate limit (`attempts_spared`, `rate_limited_on`: a 429,
  which says when to come back) is no failure, and never the one that gives the work up: the system is up
  and asked us to wait, and a burst of them in a rush must not give work up and page ops;
- otherwise the next attempt waits capped exponential backoff with full jitter, growing with every call
  (rate limited ones too), and at least the outside system's Retry-After (clamped to
  FACTORY_RETRY_AFTER_MAX_SECONDS);
- a wait the broker may hold (up to FACTORY_RETRY_BACKOFF_MAX_SECONDS, below the visibility timeout)
  is a Celery retry with a countdown, noted through the `retry_scheduled` hook;
- a longer wait is handed to the `park` hook, which keeps it in the database for the reconcile sweep.

Anything else, and running out of attempts, ends in a durable dead letter (`dead_letter_record`): a
row, a critical alert, and a copy in the dead-letter queue for Flower. `dead_letter_context` says what
the dead letter is about; `dead_letter_claim` settles the work in the dead letter's own transaction (a
pending restock becomes failed) and says whether there was anything left to give up on: two messages for
one piece of work (a sweep's resend beside a retry) give up once, with one dead letter.

    @shared_task(base=RestockPlaceTask, bind=True, name="factory.restock_place")
    def restock_place_task(self, restock_id): ...

Notification deliveries are retried by Celery's own autoretry options (notifications/tasks.py).
"""

import json
import logging
import random
import re
import traceback as tb
from datetime import timedelta
from functools import partial

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, transaction
from django.utils import timezone

from donutsite.celery import ArgumentCheckedTask
from donutsite.context import request_id

logger = logging.getLogger(__name__)

DEAD_LETTER_QUEUE = "dead_letter"
_COPY_ID_PREFIX = "dead-letter-"  # the task id of a dead letter's copy, before the dead letter's id

# A deadlock victim, a dropped database connection or a task cut short by its soft time limit is
# transient too: the task re-reads state when it runs again.
ALWAYS_TRANSIENT = (SoftTimeLimitExceeded, OperationalError, InterfaceError)


class OutOfAttempts(Exception):  # noqa: N818 - reads better in a dead letter than OutOfAttemptsError
    """The work used up FACTORY_MAX_ATTEMPTS failed calls (counted in the database, not per message)."""


def backoff_seconds(attempt: int, *, base: float, cap: float) -> float:
    """Capped exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)]. The exponent
    is bounded: rate-limited calls spend no attempt, so a run's count has no limit, and 2**1024 is no float."""
    return random.uniform(0, min(cap, base * 2 ** min(attempt, 64)))  # noqa: S311 - jitter, not a secret


def retry_after_clamped(seconds) -> float:
    """An outside system's Retry-After, bounded: a year-long answer must not park work for a year."""
    try:
        value = float(seconds or 0)
    except (TypeError, ValueError):
        return 0.0
    return min(max(value, 0.0), float(settings.FACTORY_RETRY_AFTER_MAX_SECONDS))


def next_wait(attempt: int, exc: BaseException) -> float:
    """Seconds until attempt `attempt + 1`: the backoff, or the clamped Retry-After if longer."""
    backoff = backoff_seconds(
        attempt, base=settings.FACTORY_RETRY_BACKOFF_SECONDS, cap=settings.FACTORY_RETRY_BACKOFF_MAX_SECONDS
    )
    return max(backoff, retry_after_clamped(getattr(exc, "retry_after", 0)))


class RetryingTask(ArgumentCheckedTask):
    # on_failure below logs the final failure as one DEAD LETTER line; donutsite.logging then keeps
    # Celery's own traceback record for it at DEBUG.
    logs_own_failure = True
    abstract = True
    acks_late = True
    reject_on_worker_lost = True
    retry_on: tuple[type[BaseException], ...] = ()
    # Of retry_on, a call the outside system rate limited (the errors attempts_spared counts): it never gives
    # the work up, however long the run has been failing, as the system is up and asked us to wait.
    rate_limited_on: tuple[type[BaseException], ...] = ()
    # The budget is the database's count of failed attempts (attempts_used less attempts_spared); Celery's
    # retry count is not a budget.
    max_retries = None

    # Hooks a task declares

    def attempts_used(self, args, kwargs) -> int:
        """Attempts recorded in the database for this work in its current run."""
        return 1

    def attempts_spared(self, args, kwargs) -> int:
        """Of attempts_used, those the outside system rate limited: not counted against the budget."""
        return 0

    def failing_since(self, args, kwargs):
        """When the first of the failed attempts counted against the budget was made, or None if unknown
        (then the count alone decides)."""
        return None

    def retry_scheduled(self, args, kwargs, at) -> None:
        """The broker will run the work again at `at`."""

    def park(self, args, kwargs, until) -> bool:
        """Keep the work in the database until `until`, with no message in flight. True if parked; a task
        that cannot park waits in the broker for at most FACTORY_RETRY_BACKOFF_MAX_SECONDS."""
        return False

    def dead_letter_context(self, args, kwargs) -> dict:
        """What the dead letter and its alert should say about the work (a restock id, a SKU...)."""
        return {}

    def dead_letter_claim(self, args, kwargs, reason: str) -> bool:
        """Settle the work as given up, inside the dead letter's transaction. False when another message
        for the same work already settled it, or is still at it: then no (second) dead letter is written."""
        return True

    # The decision

    def __call__(self, *args, **kwargs):
        try:
            # ArgumentCheckedTask drops a message this task cannot take (another release's) with no dead
            # letter, which would give the work up and page ops: its row, still as it was, is sent again by its
            # sweep.
            return super().__call__(*args, **kwargs)
        except (*self.retry_on, *ALWAYS_TRANSIENT) as exc:
            try:
                attempt = self.attempts_used(args, kwargs)
                spared = self.attempts_spared(args, kwargs)
                since = self.failing_since(args, kwargs)
            except DatabaseError as db_exc:
                # The database is away (often the very error being handled): the budget cannot be read,
                # so this try is not counted against it and the broker holds the work until it is back.
                wait = min(next_wait(1, exc), settings.FACTORY_RETRY_BACKOFF_MAX_SECONDS)
                logger.warning(
                    "%s%r: failed (%s), attempts unknown (%r); retrying in %.1f s", self.name, args, exc, db_exc, wait
                )
                raise self.retry(exc=exc, countdown=wait) from exc
            failing_for = (timezone.now() - since).total_seconds() if since else None
            out_of_attempts = attempt - spared >= settings.FACTORY_MAX_ATTEMPTS and (
                failing_for is None or failing_for >= settings.FACTORY_RETRY_FOR_SECONDS
            )
            if out_of_attempts and not isinstance(exc, self.rate_limited_on):
                rate_limited = f" (and {spared} rate limited)" if spared else ""
                over = f" in {failing_for:.0f} s" if failing_for is not None else ""
                raise OutOfAttempts(f"{attempt - spared} failed attempts{over}{rate_limited}; last: {exc}") from exc
            wait = next_wait(attempt, exc)
            until = timezone.now() + timedelta(seconds=wait)
            outcome = "rate limited" if isinstance(exc, self.rate_limited_on) else "failed"  # a 429 is no failure
            # Longer than the broker may safely hold a message (visibility timeout): the database keeps it.
            if wait > settings.FACTORY_RETRY_BACKOFF_MAX_SECONDS and self._bookkeeping(self.park, args, kwargs, until):
                logger.warning(
                    "%s%r: attempt %s %s (%s); parked for %.0f s", self.name, args, attempt, outcome, exc, wait
                )
                return None
            wait = min(wait, settings.FACTORY_RETRY_BACKOFF_MAX_SECONDS)
            self._bookkeeping(self.retry_scheduled, args, kwargs, timezone.now() + timedelta(seconds=wait))
            logger.warning("%s%r: attempt %s %s (%s); retrying in %.1f s", self.name, args, attempt, outcome, exc, wait)
            raise self.retry(exc=exc, countdown=wait) from exc

    def _bookkeeping(self, hook, args, kwargs, at) -> bool:
        """Run a hook that notes the next attempt in the database. A database error there (a deadlock with
        the sweep or a receipt) must not turn a transient failure into a dead letter: the attempt then
        waits in the broker instead, and False says so."""
        try:
            return bool(hook(args, kwargs, at))
        except DatabaseError as exc:
            logger.warning("%s%r: noting the next attempt failed (%r); the broker holds it", self.name, args, exc)
            return False

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        dead_letter_record(
            claim=partial(self.dead_letter_claim, args, kwargs, f"{type(exc).__qualname__}: {exc}"),
            task_name=self.name,
            task_id=task_id,
            args=list(args),
            kwargs=dict(kwargs),
            queue=(self.request.delivery_info or {}).get("routing_key") or "default",
            exc=exc,
            traceback=str(einfo) if einfo else "".join(tb.format_exception(exc)),
            attempts=self.attempts_used(args, kwargs),
            # The request id the message brought (donutsite.celery), not Celery's correlation_id (the task id).
            correlation_id=request_id.get(),
            context=self.dead_letter_context(args, kwargs),
        )


def _dead_letter_failed_again(dead_letter, *, failure: dict, attempts: int):
    """The open dead letter of work that failed again: the latest `failure` (its error and when), the attempts
    added up. Its alert (still open, or acknowledged by whoever took it) and its copy in the dead-letter
    queue stand."""
    for name, value in failure.items():
        setattr(dead_letter, name, value)
    dead_letter.attempts += attempts
    dead_letter.save(update_fields=[*failure, "attempts"])
    logger.error(
        "DEAD LETTER %s: %s%r failed again, %s attempt(s) in all: %s: %s",
        dead_letter.pk,
        dead_letter.task_name,
        tuple(dead_letter.args),
        dead_letter.attempts,
        dead_letter.exception_type,
        dead_letter.exception_message,
    )
    return dead_letter


def dead_letter_record(
    *, task_name, task_id, args, kwargs, queue, exc, traceback, attempts, correlation_id="", context=None, claim=None
):
    """Store a dead letter durably with its critical alert (one transaction), park a copy of the message
    in the dead-letter queue, and log it. `claim`, when given, runs first in that transaction and settles
    the work as given up; if it finds nothing left to settle, nothing is written and None is returned.
    Work that fails again while its dead letter is still open (a new need reopened the failed restock) is
    that dead letter brought up to date (_dead_letter_failed_again): one per work, one page, one copy."""
    from factory.models import DeadLetter

    context = context or {}

    now = timezone.now()
    failure = {
        "exception_type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "exception_message": str(exc)[:5000],
        "traceback": traceback[-20000:],
        "last_failed_at": now,
    }
    with transaction.atomic():
        if claim is not None and not claim():
            logger.info("%s%r: settled or still tried by another message; no dead letter", task_name, tuple(args))
            return None
        still_open = _dead_letter_still_open(task_name, context.get("restock_id"))
        if still_open:
            return _dead_letter_failed_again(still_open, failure=failure, attempts=attempts)
        dead_letter = DeadLetter.objects.create(
            task_name=task_name,
            task_id=task_id or "",
            args=args,
            kwargs=kwargs,
            queue=queue,
            **failure,
            attempts=attempts,
            first_failed_at=now,
            correlation_id=correlation_id[:64],
            restock_id=context.get("restock_id"),
        )
        _dead_letter_alert_raise(dead_letter, context=context, attempts=attempts, correlation_id=correlation_id)
    _park_copy(dead_letter)
    logger.error(
        "DEAD LETTER %s: %s%r failed after %s attempt(s): %s: %s",
        dead_letter.pk,
        task_name,
        tuple(args),
        attempts,
        dead_letter.exception_type,
        dead_letter.exception_message,
    )
    return dead_letter


def _dead_letter_still_open(task_name: str, restock_id: int | None):
    """The open dead letter of the task's work on the restock, locked, if there is one."""
    from factory.models import DeadLetter

    if not restock_id:
        return None
    return next(
        (
            locked
            for locked in DeadLetter.objects.restock_unresolved_locked(restock_id)
            if locked.task_name == task_name
        ),
        None,
    )


def _dead_letter_alert_raise(dead_letter, *, context: dict, attempts: int, correlation_id: str) -> None:
    """A new dead letter's critical alert, in its transaction."""
    from notifications.alerts import alert_raise

    task_name = dead_letter.task_name
    alert_raise(
        kind="dead_letter",
        severity="critical",
        # The SKU first: a phone's lock screen shows 40-60 characters, and the task's name is 21.
        title=f"Dead letter: {context['sku']} ({task_name} gave up)"
        if context.get("sku")
        else f"Dead letter: {task_name} gave up",
        text=f"{dead_letter.exception_type.rsplit('.', 1)[-1]}: {dead_letter.exception_message[:500]}\n"
        "Redrive it from the admin or with `manage.py redrive` once the cause is fixed.",
        dedupe_key=dead_letter_dedupe_key(task_name),
        context={
            **context,
            "dead_letter_id": dead_letter.pk,
            "task": task_name,
            "attempts": attempts,
            "correlation_id": correlation_id,
        },
        correlation_id=correlation_id,
    )


def dead_letter_dedupe_key(task_name: str) -> str:
    """The alert group of a task's dead letters: raised here, acknowledged and settled by the redrive and
    the late receipt (factory.redrive, factory.receipts) once none of that task's dead letters waits."""
    return f"dead_letter:{task_name}"


def _park_copy(dead_letter) -> bool:
    """A copy in the `dead_letter` queue makes the count visible in Flower. The database row is the record;
    the copy is best effort (dead_letter_copies_sync parks one that is missing), and harmless if a worker
    ever consumes it (tasks re-read state). False if the broker refused it."""
    from celery import current_app

    try:
        current_app.send_task(
            dead_letter.task_name,
            args=dead_letter.args,
            kwargs=dead_letter.kwargs,
            # Explicit: the routes would send it to the task's own queue, where a worker would run it.
            queue=DEAD_LETTER_QUEUE,
            task_id=dead_letter_copy_id(dead_letter.pk),
        )
    except Exception as exc:  # the broker is down: the row still holds everything
        logger.warning("dead letter %s: could not park a copy in the queue (%r)", dead_letter.pk, exc)
        return False
    return True


def dead_letter_copy_id(dead_letter_id: int) -> str:
    return f"{_COPY_ID_PREFIX}{dead_letter_id}"


def dead_letter_copy_remove(dead_letter_id: int) -> bool:
    """Take a resolved dead letter's copy out of the `dead_letter` queue, so that Flower's count drops.
    Best effort, like the copy itself: the database row says it is resolved either way, and
    dead_letter_copies_sync puts a copy left behind right. It runs after a redrive commits, in the
    admin's request too, so it takes the broker as a web request does: one short try
    (WEB_DEPENDENCY_TIMEOUT_SECONDS), skipped while the broker's breaker is open
    (donutsite/dependencies.py)."""
    from donutsite.dependencies import breakers, broker_url, redis_client

    if breakers["broker"].is_open:
        return False
    try:
        # The broker is Redis: a queue is a list of messages.
        redis = redis_client(broker_url())
        for copy_of, raw in _dead_letter_copies(redis):
            if copy_of == dead_letter_id:
                return bool(redis.lrem(DEAD_LETTER_QUEUE, 1, raw))
    except Exception as exc:  # the broker is down, hung, slow or not Redis: the copy stays, harmless
        # Not the breaker's business: a long queue read past the short timeout says nothing about the
        # broker, and opening it would keep the redrive's own message from being sent.
        logger.warning("dead letter %s: could not remove its copy from the queue (%r)", dead_letter_id, exc)
    return False


def dead_letter_copies_sync(*, settle_seconds: float = 60.0) -> dict:
    """Make the `dead_letter` queue hold one copy of each unresolved dead letter and nothing else.

    The copies are best effort: one is not parked while the broker is away when its dead letter is
    written, and one is not removed while the broker is away when its dead letter is redriven. Either way
    Flower's count and donut_queue_depth{queue="dead_letter"} drift from the rows; this sweep (beat,
    every minute, on the maintenance worker) puts them right. A dead letter younger than
    `settle_seconds` is left to its own copy, which may still be on its way."""
    import redis

    from donutsite.dependencies import broker_url
    from factory.models import DeadLetter

    url = broker_url()
    if not url.startswith(("redis://", "rediss://", "unix://")):
        return {"parked": 0, "removed": 0}
    # Not two at a time: two that read the queue before either parked would each park every missing copy.
    # Its one caller, the beat task, runs one at a time (single_flight).
    with redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5) as broker:
        # The queue first, then the rows: a copy parked after this read is not judged by older rows.
        copies = _dead_letter_copies(broker)
        unresolved = set(DeadLetter.objects.unresolved().values_list("pk", flat=True))
        kept, removed = set(), 0
        for copy_of, raw in copies:
            if copy_of is None:
                continue  # not a copy of ours: left alone
            if copy_of in unresolved and copy_of not in kept:
                kept.add(copy_of)
                continue
            removed += broker.lrem(DEAD_LETTER_QUEUE, 1, raw)  # resolved, purged, or a second copy
        missing = (
            DeadLetter.objects.unresolved()
            .filter(last_failed_at__lt=timezone.now() - timedelta(seconds=settle_seconds))
            .exclude(pk__in=kept)
            .order_by("pk")
        )
        parked = sum(_park_copy(dead_letter) for dead_letter in missing)
    if parked or removed:
        logger.info("dead-letter queue: %s copies parked, %s removed to match the dead letters", parked, removed)
    return {"parked": parked, "removed": removed}


# ASCII digits only: isdigit() takes "²", which int() then refuses.
_COPY_ID = re.compile(re.escape(_COPY_ID_PREFIX) + r"([0-9]{1,18})")


def _dead_letter_copies(redis) -> list[tuple[int | None, bytes]]:
    """Each message in the `dead_letter` queue with the dead letter it is a copy of (None: not a copy)."""
    copies = []
    for raw in redis.lrange(DEAD_LETTER_QUEUE, 0, -1):
        try:
            message_id = json.loads(raw).get("headers", {}).get("id") or ""
        except (ValueError, AttributeError):
            message_id = ""
        copy_of = _COPY_ID.fullmatch(message_id) if isinstance(message_id, str) else None
        copies.append((int(copy_of[1]) if copy_of else None, raw))
    return copies

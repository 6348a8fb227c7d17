"""The reliable-task base: declared retryable errors with capped, jittered backoff; everything else,
and running out of attempts, ends in a durable dead letter that ops can see and redrive.

    @shared_task(base=ReliableTask, bind=True, name="factory.x", retry_on=(SomeTransientError,))
    def x_task(self, thing_id): ...

A task may define `on_dead_letter(dead_letter)` for its own bookkeeping (a restock becomes `failed`),
and `park(args, kwargs, until)` for waits longer than the broker may hold a message.
"""

import logging
import random
import traceback as tb

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.utils import timezone

from donutsite.context import request_id

logger = logging.getLogger(__name__)

DEAD_LETTER_QUEUE = "dead_letter"


def backoff_seconds(attempt: int, *, base: float, cap: float) -> float:
    """Capped exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    return random.uniform(0, min(cap, base * 2**attempt))


class ReliableTask(Task):
    # on_failure below logs the final failure as one DEAD LETTER line; donutsite.logging then keeps
    # Celery's own traceback record for it at DEBUG.
    logs_own_failure = True
    abstract = True
    acks_late = True
    reject_on_worker_lost = True
    retry_on: tuple[type[BaseException], ...] = ()
    max_attempts: int | None = None  # default: FACTORY_MAX_ATTEMPTS
    # Celery's own budget (3 retries by default) would cut ours short; we count attempts ourselves.
    max_retries = None
    # Transient errors may carry `retry_after` (seconds): we wait at least that long.

    def __call__(self, *args, **kwargs):
        try:
            return super().__call__(*args, **kwargs)
        # A deadlock victim or a dropped database connection is transient too: the task re-reads state.
        except (*self.retry_on, SoftTimeLimitExceeded, OperationalError, InterfaceError) as exc:
            attempt = self.request.retries + 1
            if attempt >= (self.max_attempts or settings.FACTORY_MAX_ATTEMPTS):
                raise  # on_failure dead-letters it
            wait = max(
                backoff_seconds(
                    attempt, base=settings.FACTORY_RETRY_BACKOFF_SECONDS, cap=settings.FACTORY_RETRY_BACKOFF_MAX_SECONDS
                ),
                float(getattr(exc, "retry_after", 0) or 0),
            )
            if wait > settings.FACTORY_RETRY_BACKOFF_MAX_SECONDS and hasattr(self, "park"):
                # Longer than the broker may safely hold a message (visibility timeout): keep it in the
                # database and let the reconcile sweep send it when due.
                self.park(args, kwargs, timezone.now() + timezone.timedelta(seconds=wait))
                return None
            wait = min(wait, settings.FACTORY_RETRY_BACKOFF_MAX_SECONDS)
            logger.warning("%s%r: attempt %s failed (%s); retrying in %.1f s", self.name, args, attempt, exc, wait)
            raise self.retry(exc=exc, countdown=wait) from exc

    def dead_letter_context(self, args, kwargs) -> dict:
        """What the dead letter and its alert should say about the work (a restock id, a SKU...)."""
        return {}

    def on_failure(self, exc, task_id, args, kwargs, einfo):
        dead_letter = dead_letter_record(
            task_name=self.name,
            task_id=task_id,
            args=list(args),
            kwargs=dict(kwargs),
            queue=(self.request.delivery_info or {}).get("routing_key") or self.queue or "default",
            exc=exc,
            traceback=str(einfo) if einfo else "".join(tb.format_exception(exc)),
            attempts=self.request.retries + 1,
            # The request id the message brought (donutsite.celery), not Celery's correlation_id (the task id).
            correlation_id=request_id.get(),
            context=self.dead_letter_context(args, kwargs),
        )
        handler = getattr(self, "on_dead_letter", None)
        if handler:
            handler(dead_letter)


def dead_letter_record(
    *, task_name, task_id, args, kwargs, queue, exc, traceback, attempts, correlation_id="", context=None
):
    """Store a dead letter durably with its critical alert (one transaction), park a copy of the message
    in the dead-letter queue, and log it."""
    from factory.models import DeadLetter
    from notifications.services import alert_raise

    context = context or {}

    now = timezone.now()
    with transaction.atomic():
        dead_letter = DeadLetter.objects.create(
            task_name=task_name,
            task_id=task_id or "",
            args=args,
            kwargs=kwargs,
            queue=queue,
            exception_type=f"{type(exc).__module__}.{type(exc).__qualname__}",
            exception_message=str(exc)[:5000],
            traceback=traceback[-20000:],
            attempts=attempts,
            first_failed_at=now,
            last_failed_at=now,
            correlation_id=correlation_id[:64],
            restock_id=context.get("restock_id"),
        )
        alert_raise(
            kind="dead_letter",
            severity="critical",
            title=f"Dead letter: {task_name} gave up" + (f" on {context['sku']}" if context.get("sku") else ""),
            text=f"{dead_letter.exception_type.rsplit('.', 1)[-1]}: {dead_letter.exception_message[:500]}\n"
            "Redrive it from the admin or with `manage.py redrive` once the cause is fixed.",
            dedupe_key=f"dead_letter:{task_name}",
            context={
                **context,
                "dead_letter_id": dead_letter.pk,
                "task": task_name,
                "attempts": attempts,
                "correlation_id": correlation_id,
            },
            correlation_id=correlation_id,
        )
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


def _park_copy(dead_letter) -> None:
    """A copy in the `dead_letter` queue makes the count visible in Flower. The database row is the record;
    the copy is best effort, and harmless if a worker ever consumes it (tasks re-read state)."""
    from celery import current_app

    try:
        current_app.send_task(
            dead_letter.task_name,
            args=dead_letter.args,
            kwargs=dead_letter.kwargs,
            queue=DEAD_LETTER_QUEUE,
            task_id=f"dead-letter-{dead_letter.pk}",
        )
    except Exception as exc:  # the broker is down: the row still holds everything
        logger.warning("dead letter %s: could not park a copy in the queue (%r)", dead_letter.pk, exc)

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from inventory.models import Restock


def claim_expired_before():
    """A claim older than the hard time limit (plus a margin) belongs to a worker that died mid-call."""
    return timezone.now() - timedelta(seconds=settings.CELERY_TASK_TIME_LIMIT + 5)


class FactoryOrderQuerySet(models.QuerySet):
    def of_pending(self):
        return self.filter(restock__status=Restock.Status.PENDING)

    def unclaimed(self):
        """Nobody is calling the factory for these right now (a claim that outlived its worker is void)."""
        return self.filter(Q(claimed_at__isnull=True) | Q(claimed_at__lt=claim_expired_before()))

    def not_waiting(self):
        """No retry or park holds these back: their next attempt is now (or unset). A message that arrives
        before it (a duplicate, or the same restock sent on a second route) leaves the call to the one
        that waits for it, so a backoff or the factory's Retry-After is never cut short. One second of
        slack for clocks that differ between hosts."""
        return self.filter(
            Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=timezone.now() + timedelta(seconds=1))
        )

    def due(self):
        """Orders whose next attempt is not on its way: never noted as sent, parked until now, lost by the
        broker (no attempt OUTBOX_RESEND_AFTER_SECONDS after it was due), or claimed by a dead worker.
        Restocks with no order row yet are found by `restocks_never_sent`."""
        now = timezone.now()
        resend_after = now - timedelta(seconds=settings.OUTBOX_RESEND_AFTER_SECONDS)
        never_sent = Q(dispatched_at__isnull=True, next_attempt_at__isnull=True, restock__created_at__lte=resend_after)
        parked_due = Q(dispatched_at__isnull=True, next_attempt_at__lte=now)
        lost = Q(dispatched_at__isnull=False) & (
            Q(next_attempt_at__lte=resend_after) | Q(next_attempt_at__isnull=True, dispatched_at__lte=resend_after)
        )
        stuck = Q(claimed_at__lt=claim_expired_before())
        not_claimed = Q(claimed_at__isnull=True) | stuck
        # A dead worker's claim stays stale until a message runs: resent once, then that resend is a
        # message on its way like any other (`lost` if no worker took it), not one more at every sweep.
        not_resent_since = Q(dispatched_at__isnull=True) | Q(dispatched_at__lte=F("claimed_at"))
        return self.filter((not_claimed & (never_sent | parked_due | lost)) | (stuck & not_resent_since))


def restocks_never_sent():
    """Pending restocks that never reached the factory side (no order row) some time after they were
    opened: the process died between commit and send, or the broker was down."""
    resend_after = timezone.now() - timedelta(seconds=settings.OUTBOX_RESEND_AFTER_SECONDS)
    return Restock.objects.pending().filter(factory_order__isnull=True, created_at__lte=resend_after)


class FactoryOrder(models.Model):
    """The factory's side of one restock: how its order is being delivered to the factory.

    inventory's Restock says what the business wants (product, quantity, status); this row says how the
    call is going. It is written by the factory side only, when the restock is first handed to the queue
    or claimed, so the sale that opens a restock still writes one row.
    """

    restock = models.OneToOneField(Restock, primary_key=True, on_delete=models.CASCADE, related_name="factory_order")
    # The outbox: when the work was last handed to the task queue, and when its next attempt is due.
    dispatched_at = models.DateTimeField(null=True, blank=True, help_text="Last hand-over to the task queue.")
    # The overdue clock of a pending restock (restocks_overdue_alert): the sweep's resends of a lost message
    # move dispatched_at, and a grace counted from the last of them would never run out.
    first_dispatched_at = models.DateTimeField(
        null=True, blank=True, help_text="First hand-over to the task queue since the restock was opened or redriven."
    )
    dispatch_count = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # Set while a worker is calling the factory; a stale claim means that worker died mid-call.
    claimed_at = models.DateTimeField(null=True, blank=True)
    # Calls made, numbered across redrives; the retry budget counts those since the last redrive.
    attempt_count = models.PositiveIntegerField(default=0)
    attempts_before_redrive = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    order_id = models.CharField(max_length=64, blank=True, default="", db_index=True, help_text="The factory's id.")
    last_polled_at = models.DateTimeField(null=True, blank=True)
    redriven_at = models.DateTimeField(null=True, blank=True)
    # When ops were told the restock is overdue (one alert per restock; its receipt closes it).
    overdue_alerted_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = FactoryOrderQuerySet.as_manager()

    class Meta:
        ordering = ["-restock_id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(attempts_before_redrive__lte=models.F("attempt_count")),
                name="factory_order_budget_start_within_attempts",
            )
        ]

    def __str__(self):
        return f"factory order for restock {self.restock_id}"

    @property
    def attempts_this_run(self) -> int:
        return self.attempt_count - self.attempts_before_redrive


class FactoryAttempt(models.Model):
    """One call to the factory's order API for a restock: what we sent and what came back."""

    class Outcome(models.TextChoices):
        ACCEPTED = "accepted"  # 202: a new factory order
        REPLAYED = "replayed"  # 200: the order already existed under this reference
        RATE_LIMITED = "rate_limited"
        TRANSIENT = "transient"  # 5xx, timeout, connection error: retried
        PERMANENT = "permanent"  # 400/401/409 and other 4xx: not retried

    restock = models.ForeignKey("inventory.Restock", on_delete=models.CASCADE, related_name="attempts")
    # Both indexed for /metrics (every scrape): calls by outcome and retries (number > 1) are counted from
    # an index rather than by reading every call ever made.
    number = models.PositiveIntegerField(db_index=True)
    outcome = models.CharField(max_length=16, choices=Outcome.choices, db_index=True)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField()
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["restock_id", "number", "id"]

    def __str__(self):
        return f"restock {self.restock_id} attempt {self.number}: {self.outcome}"


class DeadLetterQuerySet(models.QuerySet):
    # Waiting for ops: never redriven (nor settled, which marks it redriven too).
    UNRESOLVED = Q(redriven_at__isnull=True)

    def unresolved(self):
        return self.filter(self.UNRESOLVED)

    def resolved(self):
        return self.exclude(self.UNRESOLVED)

    def restock_unresolved_locked(self, restock_id: int) -> list["DeadLetter"]:
        """Lock the restock's dead letters and return its unresolved ones, oldest first. The lock goes
        through the restock index alone: with `redriven_at IS NULL` (or the task's name) in the query,
        MariaDB may read through another index and lock, or wait for, other restocks' unresolved dead
        letters on the way; a factory completion or a restock giving up in a rush after an outage then
        deadlocked with a redrive marking one."""
        locked = self.select_for_update().filter(restock_id=restock_id).order_by("pk")
        return [dead_letter for dead_letter in locked if not dead_letter.is_resolved]


class DeadLetter(models.Model):
    """Work that failed for good, kept durably so that ops can see it and send it again (redrive).

    Any task built on factory.retries.RetryingTask lands here when it fails permanently or runs out
    of attempts.
    """

    task_name = models.CharField(max_length=200, db_index=True)
    task_id = models.CharField(max_length=64)
    args = models.JSONField(default=list)
    kwargs = models.JSONField(default=dict)
    queue = models.CharField(max_length=64)
    exception_type = models.CharField(max_length=200, db_index=True)
    exception_message = models.TextField(blank=True, default="")
    traceback = models.TextField(blank=True, default="")
    attempts = models.PositiveIntegerField()
    first_failed_at = models.DateTimeField()
    last_failed_at = models.DateTimeField(db_index=True)
    correlation_id = models.CharField(max_length=64, blank=True, default="", db_index=True)
    restock = models.ForeignKey(
        "inventory.Restock", null=True, blank=True, on_delete=models.SET_NULL, related_name="dead_letters"
    )
    redriven_at = models.DateTimeField(null=True, blank=True, db_index=True)
    redriven_by = models.CharField(max_length=150, blank=True, default="")
    redrive_count = models.PositiveIntegerField(default=0)

    objects = DeadLetterQuerySet.as_manager()

    class Meta:
        ordering = ["-last_failed_at"]

    def __str__(self):
        return f"{self.task_name}{tuple(self.args)}: {self.exception_type}"

    @property
    def is_resolved(self) -> bool:
        return self.redriven_at is not None

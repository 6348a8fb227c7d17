from django.db import models


class FactoryAttempt(models.Model):
    """One call to the factory's order API for a restock: what we sent and what came back."""

    class Outcome(models.TextChoices):
        ACCEPTED = "accepted"  # 202: a new factory order
        REPLAYED = "replayed"  # 200: the order already existed under this reference
        RATE_LIMITED = "rate_limited"
        TRANSIENT = "transient"  # 5xx, timeout, connection error: retried
        PERMANENT = "permanent"  # 400/401/409 and other 4xx: not retried

    restock = models.ForeignKey("inventory.Restock", on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveIntegerField()
    outcome = models.CharField(max_length=16, choices=Outcome.choices)
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField()
    error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["restock_id", "number", "id"]

    def __str__(self):
        return f"restock {self.restock_id} attempt {self.number}: {self.outcome}"


class DeadLetter(models.Model):
    """Work that failed for good, kept durably so that ops can see it and send it again (redrive).

    Any task built on factory.reliable.ReliableTask lands here when it fails permanently or runs out
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

    class Meta:
        ordering = ["-last_failed_at"]

    def __str__(self):
        return f"{self.task_name}{tuple(self.args)}: {self.exception_type}"

    @property
    def is_resolved(self) -> bool:
        return self.redriven_at is not None

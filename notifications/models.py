from django.conf import settings
from django.db import models

from donutsite.db import EXACT_COLLATION


class Severity(models.TextChoices):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @classmethod
    def rank(cls, value: str) -> int:
        return [cls.INFO, cls.WARNING, cls.CRITICAL].index(value)


class Alert(models.Model):
    """Something ops must hear about. Written in the transaction of the event that raised it."""

    kind = models.CharField(max_length=40, db_index=True)
    severity = models.CharField(max_length=10, choices=Severity.choices, db_index=True)
    title = models.CharField(max_length=200)
    text = models.TextField(blank=True, default="")
    dedupe_key = models.CharField(max_length=200, db_index=True, db_collation=EXACT_COLLATION)
    context = models.JSONField(default=dict, blank=True)
    correlation_id = models.CharField(max_length=64, blank=True, default="", db_index=True)
    # Storm control: the first alert of a group is sent; later ones in its window only count here (and
    # on its AlertGroup) and write no row. group_leader is set on no new row (older rows may have it).
    group_leader = models.ForeignKey("self", null=True, blank=True, on_delete=models.CASCADE, related_name="grouped")
    suppressed_count = models.PositiveIntegerField(default=0)
    is_summary = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    acknowledged_at = models.DateTimeField(null=True, blank=True)
    acknowledged_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    escalated_at = models.DateTimeField(null=True, blank=True)
    # The push that took it to the phones (alerts_escalate): itself, or the "Unacknowledged: N warnings" it
    # went in with. Their all-clear waits for the last of them (alerts_escalated_with). No database constraint:
    # adding one made MariaDB copy the whole alerts table, every alert write waiting on it; without, the column
    # and its index are added online. Django sets it NULL when the push is deleted (purge_alerts).
    escalation = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_constraint=False
    )

    class Meta:
        ordering = ["-id"]
        indexes = [
            # The sweep's escalation query (alerts_escalate, every few seconds): the few warnings still
            # unacknowledged and not escalated, found without reading every alert the shop ever raised.
            models.Index(
                fields=["severity", "acknowledged_at", "escalated_at", "created_at"], name="alert_escalation_due"
            ),
        ]

    def __str__(self):
        return f"[{self.severity}] {self.title}"


class AlertLock(models.Model):
    """A fixed set of rows that grouping locks, picked by a hash of the dedupe key.

    Locking an AlertGroup row directly would mean inserting it first for a new key, and two inserts of
    one new key deadlock in InnoDB (each holds a shared lock on the duplicate and wants it exclusive).
    These rows always exist, so taking one FOR UPDATE never races an insert.
    """

    STRIPES = 64

    id = models.PositiveSmallIntegerField(primary_key=True)

    def __str__(self):
        return f"alert lock {self.pk}"


class AlertGroup(models.Model):
    """One row per dedupe key: its open window and what the window held back.

    An alert held back writes no row of its own: it counts here (and on its leader) and adds its fact
    (its SKU, or its title) to `facts`. A summary naming every fact goes out at `flush_at`: the window's
    end, or sooner when a critical alert brought a fact no message has named yet.
    """

    # Compared exactly: keys carry SKUs, and MATCHA and MATCHÁ are two products (inventory.Product.sku).
    dedupe_key = models.CharField(max_length=200, unique=True, db_collation=EXACT_COLLATION)
    leader = models.ForeignKey(Alert, null=True, on_delete=models.SET_NULL, related_name="+")
    window_ends_at = models.DateTimeField(null=True)
    suppressed_count = models.PositiveIntegerField(default=0)
    flush_at = models.DateTimeField(null=True, db_index=True)
    facts = models.JSONField(default=list, help_text="What the window's alerts are about (SKUs), in order.")
    new_facts = models.JSONField(default=list, help_text="Facts no message has named yet.")
    # Settled before anyone was told of them (a factory that fails a streak and answers again, again and
    # again): the summary owed is an info line at the window's end, not a Slack line per recovery.
    settled = models.BooleanField(
        default=False, db_default=False, help_text="Everything held back so far was settled; its summary is owed."
    )
    # A trouble that began after everything before it was settled (a second factory outage inside the first
    # one's window) has no alert of its own: its summary says when it began instead of naming the leader.
    began_at = models.DateTimeField(
        null=True, help_text="When what is held back began, if after everything before was settled."
    )

    def __str__(self):
        return self.dedupe_key


class AlertDelivery(models.Model):
    class Channel(models.TextChoices):
        LOG = "log"
        SLACK = "slack"
        FCM = "fcm"

    class Status(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"
        FAILED = "failed"

    alert = models.ForeignKey(Alert, on_delete=models.CASCADE, related_name="deliveries")
    channel = models.CharField(max_length=10, choices=Channel.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    # Indexed for /metrics (every scrape): its latency histogram reads the last 24 h of sends.
    sent_at = models.DateTimeField(null=True, blank=True, db_index=True)
    latency_ms = models.PositiveIntegerField(null=True, blank=True, help_text="From the alert's creation to sent.")
    created_at = models.DateTimeField(auto_now_add=True)
    # The outbox: a task claims the row while it sends (one sender at a time); a pending row past
    # resend_at (its message never left, or was lost with a worker) is sent again by the sweep.
    claimed_at = models.DateTimeField(null=True, blank=True)
    resend_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        verbose_name_plural = "alert deliveries"
        ordering = ["alert_id", "channel"]
        constraints = [models.UniqueConstraint(fields=["alert", "channel"], name="one_delivery_per_channel")]
        # /metrics counts every delivery by channel and status at each scrape: read from this index alone.
        indexes = [models.Index(fields=["channel", "status"], name="alert_delivery_channel_status")]

    def __str__(self):
        return f"{self.channel} for alert {self.alert_id}: {self.status}"


class Device(models.Model):
    """A phone with an FCM token: an ops phone (alerts) or a customer's (back-in-stock pushes)."""

    class Kind(models.TextChoices):
        OPS = "ops"
        CUSTOMER = "customer"

    class Platform(models.TextChoices):
        ANDROID = "android"
        IOS = "ios"
        WEB = "web"

    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.CUSTOMER, db_index=True)
    # FCM tokens are case-sensitive: compared exactly, not by the table's case-insensitive collation.
    token = models.CharField(max_length=255, db_collation=EXACT_COLLATION)
    platform = models.CharField(max_length=10, choices=Platform.choices)
    client = models.ForeignKey(
        "clients.ApiClient", null=True, blank=True, on_delete=models.CASCADE, related_name="devices"
    )
    user_ref = models.CharField(max_length=100, blank=True, default="", help_text="The client app's own user id.")
    is_active = models.BooleanField(default=True)
    deactivated_reason = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        # A device belongs to the client that registered it: another client registering the same token
        # gets a device of its own and cannot move, read or learn of this one.
        constraints = [models.UniqueConstraint(fields=["client", "token"], name="one_device_per_client_token")]

    def __str__(self):
        return f"{self.kind} {self.platform} …{self.token[-6:]}"


class Subscription(models.Model):
    """A device wants one push when a SKU is back in stock; used up (notified_at) once FCM accepted it, or
    accepted the comeback's push to the same token through another client's device (one phone, one push)."""

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="subscriptions")
    # Compared exactly, like the product's SKU: MATCHA and MATCHÁ are two products, so two subscriptions.
    sku = models.CharField(max_length=64, db_index=True, db_collation=EXACT_COLLATION)
    created_at = models.DateTimeField(auto_now_add=True)
    notified_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # Set in the transaction of the receipt that brought the SKU back: this push is owed. The sender
    # moves it ahead while it sends (a claim), clears it once FCM accepted, and puts it back to now when
    # the send failed transiently; the sweep resends what has been owed for a while.
    due_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # The product's name when its comeback was announced: the push says it ("Maple Bar is back"), not the SKU.
    product_name = models.CharField(max_length=200, blank=True, db_default="")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["device", "sku"], name="one_subscription_per_device_sku")]

    def __str__(self):
        return f"{self.device_id} wants {self.sku}"

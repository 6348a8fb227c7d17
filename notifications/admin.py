from django.contrib import admin, messages
from django.db import transaction
from django.utils.html import format_html

from donutsite.admin import EditedFieldsAdmin, ModelAdmin
from notifications.alerts import alerts_acknowledge_by_hand
from notifications.deliveries import alert_resend
from notifications.devices import devices_delete
from notifications.models import Alert, AlertDelivery, Device, Subscription
from notifications.subscriptions import subscriptions_delete


class ReadOnlyMixin:
    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class AlertDeliveryInline(ReadOnlyMixin, admin.TabularInline):
    model = AlertDelivery
    extra = 0
    can_delete = False
    fields = ["channel", "status", "attempts", "sent_at", "latency_ms", "resend_at", "last_error"]
    readonly_fields = fields


@admin.register(Alert)
class AlertAdmin(ModelAdmin):
    list_display = ["id", "severity_badge", "title", "kind", "suppressed_count", "created_at", "acknowledged"]
    list_filter = ["severity", "kind", ("acknowledged_at", admin.EmptyFieldListFilter), "is_summary"]
    search_fields = ["title", "dedupe_key", "correlation_id"]
    date_hierarchy = "created_at"
    inlines = [AlertDeliveryInline]
    actions = ["acknowledge", "resend", "resend_settled_too"]

    class Media:
        css = {"all": ["notifications/admin.css"]}  # the severity colours: no style attribute under the CSP

    readonly_fields = [
        "kind",
        "severity",
        "title",
        "text",
        "dedupe_key",
        "context",
        "correlation_id",
        "group_leader",
        "suppressed_count",
        "is_summary",
        "created_at",
        "acknowledged_at",
        "acknowledged_by",
        "escalated_at",
        "escalation",
    ]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        # No delete page and no "Delete selected alerts": it took an open alert's pending deliveries and its
        # escalation, and a storm group's first alert the alerts grouped under it. `manage.py purge_alerts`
        # deletes only acknowledged (or info) alerts nothing still needs, as purge_dead_letters does for dead
        # letters.
        return False

    @admin.display(description="severity", ordering="severity")
    def severity_badge(self, alert):
        return format_html('<b class="severity-{}">{}</b>', alert.severity, alert.severity.upper())

    @admin.display(boolean=True, description="acknowledged")
    def acknowledged(self, alert):
        return alert.acknowledged_at is not None

    # Both change the alert (or send it again): staff who may only look at alerts are not offered them.
    # Each is written to the alert's history, which says who did it and when.
    @admin.action(description="Acknowledge selected alerts", permissions=["change"])
    def acknowledge(self, request, queryset):
        with transaction.atomic():
            taken = alerts_acknowledge_by_hand(list(queryset), user=request.user)
        for alert in taken:
            self.log_change(request, alert, "Acknowledged.")
        self.message_user(request, f"{len(taken)} alert(s) acknowledged.", messages.SUCCESS)

    @admin.action(description="Send selected alerts again", permissions=["change"])
    def resend(self, request, queryset):
        """Only the open alerts: one acknowledged or settled is skipped, and the message says how many were.
        Sending every selected alert paged the phones about a dead letter settled minutes before; pages about
        solved problems teach ops to ignore pages."""
        self._resend(request, queryset, settled_too=False)

    @admin.action(description="Send selected alerts again, acknowledged or settled ones too", permissions=["change"])
    def resend_settled_too(self, request, queryset):
        """Kept, under its own name, for what only an acknowledged alert can need: an all-clear ("... (all
        settled)"), an "Acknowledged by" line or a settled page whose delivery failed for good while Slack or
        FCM was down. The phones paged about the trouble never heard it was over; this tells them, once
        chosen on purpose, never by selecting every alert for the usual action."""
        self._resend(request, queryset, settled_too=True)

    def _resend(self, request, queryset, *, settled_too: bool) -> None:
        sent = queued = skipped = 0
        for alert in queryset:
            count = alert_resend(alert, settled_too=settled_too)
            if count is None:
                skipped += 1
                continue
            sent += 1
            queued += count
            though = " though acknowledged" if alert.acknowledged_at else ""
            self.log_change(request, alert, f"Sent again{though}: {count} delivery(ies) queued.")
        text = f"{sent} alert(s) sent again: {queued} delivery(ies) queued"
        if skipped:
            text += f"; {skipped} skipped: acknowledged or settled"
        self.message_user(request, text + ".", messages.SUCCESS if sent else messages.WARNING)


@admin.register(Device)
class DeviceAdmin(EditedFieldsAdmin):
    list_display = ["id", "kind", "platform", "client", "user_ref", "is_active", "deactivated_reason", "updated_at"]
    list_filter = ["kind", "platform", "is_active"]
    search_fields = ["user_ref", "token"]
    fields = ["kind", "platform", "token", "client", "user_ref", "is_active", "deactivated_reason"]
    readonly_fields = ["deactivated_reason"]

    def save_edited(self, request, obj, fields):
        # Only what this page changed (EditedFieldsAdmin): FCM or the client's app may have deactivated the
        # device since it opened. updated_at is written only when named.
        obj.save(update_fields=[*fields, "updated_at"])

    # Both deletes (its page and "Delete selected devices") take a device's subscriptions with it as the API
    # does, its row locked first (devices_delete): Django's cascade deadlocked with a tap of "notify me".
    def delete_model(self, request, obj):
        devices_delete([obj.pk])

    def delete_queryset(self, request, queryset):
        devices_delete(list(queryset.values_list("pk", flat=True)))


@admin.register(Subscription)
class SubscriptionAdmin(ReadOnlyMixin, ModelAdmin):
    list_display = ["id", "sku", "device", "created_at", "due_at", "notified_at"]
    list_filter = [("notified_at", admin.EmptyFieldListFilter), ("due_at", admin.EmptyFieldListFilter)]
    search_fields = ["sku"]

    def delete_queryset(self, request, queryset):
        subscriptions_delete(queryset)  # by primary key, whatever the list was filtered by

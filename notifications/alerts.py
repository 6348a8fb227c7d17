"""Alerts for ops: raised inside the transaction of the event behind them, delivered after commit.

Alerts with the same dedupe key inside a window are grouped: the first goes out at once, the rest only
count, and one summary follows when the window closes.
"""

import zlib
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from donutsite.context import request_id
from notifications.channels.registry import fcm_configured
from notifications.deliveries import deliveries_create, delivery_dispatch
from notifications.models import Alert, AlertDelivery, AlertGroup, AlertLock, Severity


def alert_raise(
    *,
    kind: str,
    severity: str,
    title: str,
    text: str = "",
    dedupe_key: str = "",
    context: dict | None = None,
    correlation_id: str = "",
) -> Alert | None:
    """Record an alert and schedule its deliveries for after commit. Call it inside the event's transaction.

    Locks the AlertLock stripe of its dedupe key, which serializes grouping per key. Returns None when this kind
    of alert is switched off. Without a correlation_id it takes the current request's or task's id.
    """
    if kind in settings.ALERTS_DISABLED_KINDS:
        return None
    dedupe_key = (dedupe_key or f"{kind}:{title}")[:200]
    now = timezone.now()
    with transaction.atomic():
        group = _group_locked(dedupe_key)
        in_window = bool(group.leader_id and group.window_ends_at and group.window_ends_at > now)
        alert = Alert.objects.create(
            kind=kind,
            severity=severity,
            title=title[:200],
            text=text,
            dedupe_key=dedupe_key,
            context=context or {},
            correlation_id=(correlation_id or request_id.get())[:64],
            group_leader_id=group.leader_id if in_window else None,
        )
        if in_window:
            Alert.objects.filter(pk=group.leader_id).update(suppressed_count=F("suppressed_count") + 1)
            AlertGroup.objects.filter(pk=group.pk).update(suppressed_count=F("suppressed_count") + 1)
            return alert
        if group.suppressed_count:
            _summarize(group)  # the previous window closed but its summary has not gone out yet
        group.leader = alert
        group.window_ends_at = now + timedelta(seconds=settings.ALERT_GROUP_WINDOW_SECONDS)
        group.suppressed_count = 0
        group.save(update_fields=["leader", "window_ends_at", "suppressed_count"])
        deliveries_create(alert)
    return alert


def _group_locked(dedupe_key: str) -> AlertGroup:
    """The dedupe key's group, created if new, under the lock of its AlertLock stripe."""
    stripe = zlib.crc32(dedupe_key.encode()) % AlertLock.STRIPES
    if not AlertLock.objects.select_for_update().filter(pk=stripe).exists():
        # The migration creates the stripes; this only heals a table someone emptied.
        AlertLock.objects.bulk_create([AlertLock(id=stripe)], ignore_conflicts=True)
        AlertLock.objects.select_for_update().filter(pk=stripe).exists()
    group, _ = AlertGroup.objects.get_or_create(dedupe_key=dedupe_key)
    return group


def _summarize(group: AlertGroup) -> Alert:
    leader = group.leader
    summary = Alert.objects.create(
        kind=leader.kind if leader else "summary",
        severity=leader.severity if leader else Severity.INFO,
        title=f"+{group.suppressed_count} more: {leader.title if leader else group.dedupe_key}"[:200],
        text=f"{group.suppressed_count} more alert(s) like this one in the last "
        f"{settings.ALERT_GROUP_WINDOW_SECONDS // 60 or 1} minute(s).",
        dedupe_key=group.dedupe_key,
        context={**(leader.context if leader else {}), "grouped": group.suppressed_count},
        is_summary=True,
    )
    deliveries_create(summary)
    return summary


def alert_groups_flush() -> int:
    """Send the summary of every group whose window has closed with alerts held back."""
    sent = 0
    for group_id in AlertGroup.objects.filter(window_ends_at__lte=timezone.now(), suppressed_count__gt=0).values_list(
        "pk", flat=True
    ):
        with transaction.atomic():
            group = AlertGroup.objects.select_for_update().select_related("leader").get(pk=group_id)
            if group.suppressed_count and group.window_ends_at <= timezone.now():
                _summarize(group)
                group.suppressed_count = 0
                group.leader = None
                group.window_ends_at = None
                group.save(update_fields=["suppressed_count", "leader", "window_ends_at"])
                sent += 1
    return sent


def alerts_escalate() -> int:
    """Warnings nobody acknowledged in time are pushed to FCM too."""
    if not fcm_configured():
        return 0
    cutoff = timezone.now() - timedelta(seconds=settings.ALERT_ESCALATE_AFTER_SECONDS)
    escalated = 0
    for alert_id in Alert.objects.filter(
        severity=Severity.WARNING,
        acknowledged_at__isnull=True,
        escalated_at__isnull=True,
        group_leader__isnull=True,
        created_at__lte=cutoff,
    ).values_list("pk", flat=True):
        with transaction.atomic():
            if not Alert.objects.filter(pk=alert_id, escalated_at__isnull=True).update(escalated_at=timezone.now()):
                continue
            delivery, created = AlertDelivery.objects.get_or_create(
                alert_id=alert_id,
                channel=AlertDelivery.Channel.FCM,
                defaults={"resend_at": timezone.now() + timedelta(seconds=settings.NOTIFICATIONS_RESEND_AFTER_SECONDS)},
            )
            if created:
                transaction.on_commit(partial(delivery_dispatch, delivery.pk))
                escalated += 1
    return escalated


def alert_acknowledge(alert: Alert, *, user) -> None:
    Alert.objects.filter(pk=alert.pk, acknowledged_at__isnull=True).update(
        acknowledged_at=timezone.now(), acknowledged_by=user
    )

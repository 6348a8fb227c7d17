"""Alerts for ops: raised inside the transaction of the event behind them, delivered after commit.

Alerts with the same dedupe key inside a window are grouped: the first goes out at once, the rest only
count (no row of their own), and one summary naming everything they were about follows when the window
closes, or within ALERT_CRITICAL_FLUSH_SECONDS when a critical one is about something new.
"""

import time
import zlib
from datetime import UTC, datetime, timedelta
from functools import partial

import redis
from django.conf import settings
from django.db import transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from donutsite.context import request_id
from donutsite.sweeps import (
    late_after,
    sweep_last_finished,
    sweep_stop_claim,
    sweep_watch_from_now,
    sweep_watched_from,
)
from notifications.channels.registry import fcm_configured
from notifications.deliveries import deliveries_create, delivery_dispatch, waited_for
from notifications.models import Alert, AlertDelivery, AlertGroup, AlertLock, Severity

# Every kind alert_raise is called with, and so what ALERTS_DISABLED_KINDS may name (notifications/checks.py).
# notifications/tests/test_kinds.py holds it to the calls.
KINDS = (
    "dead_letter",
    "factory_callback_mismatch",
    "factory_cancelled",
    "factory_degraded",
    "factory_over_quantity",
    "factory_quantity_mismatch",
    "forged_callback",
    "ledger_mismatch",
    "restock_overdue",
    "sold_out",
    "stock_over_capacity",
    "sweep_stopped",
)
# Ops' own lines, written here without alert_raise: never switched off.
OWN_KINDS = ("acknowledged", "unacknowledged")


def alert_raise(
    *,
    kind: str,
    severity: str,
    title: str,
    text: str = "",
    dedupe_key: str = "",
    group_key: str = "",
    context: dict | None = None,
    correlation_id: str = "",
) -> Alert | None:
    """Record an alert and schedule its deliveries for after commit. Call it inside the event's transaction.

    Locks the AlertLock stripe of its group key (its dedupe key unless given), which serializes grouping
    per key. Inside the key's open window the alert writes no row: it counts on the group and its leader,
    which is returned. With a `group_key` of its own it keeps its row there, with no delivery: acknowledged
    by its own dedupe key and escalated on its own, as if alone, while Slack reads one message and the
    summary (restock_overdue: each restock's receipt closes its warning). A critical alert about something
    no message has named yet (a new SKU) brings the group's summary forward to ALERT_CRITICAL_FLUSH_SECONDS
    from now. Returns None when this kind of alert is switched off. Without a correlation_id it takes the
    current request's or task's id.
    """
    if kind in settings.ALERTS_DISABLED_KINDS:
        return None
    context = context or {}
    dedupe_key = (dedupe_key or f"{kind}:{title}")[:200]
    group_key = (group_key or dedupe_key)[:200]
    fact = _fact(context, title)
    now = timezone.now()
    row = {
        "kind": kind,
        "severity": severity,
        "title": title[:200],
        "text": text,
        "dedupe_key": dedupe_key,
        "context": context,
        "correlation_id": (correlation_id or request_id.get())[:64],
    }
    with transaction.atomic():
        group = _group_locked(group_key)
        if group.leader_id and group.window_ends_at and group.window_ends_at > now:
            _count_in(group, fact=fact, critical=severity == Severity.CRITICAL, now=now)
            return group.leader if group_key == dedupe_key else Alert.objects.create(**row)
        if group.suppressed_count:
            _summarize(group)  # the previous window closed but its summary has not gone out yet
        alert = Alert.objects.create(**row)
        group.leader = alert
        group.window_ends_at = now + timedelta(seconds=settings.ALERT_GROUP_WINDOW_SECONDS)
        group.suppressed_count = 0
        group.flush_at = None
        group.facts = [fact]
        group.new_facts = []
        group.began_at = None
        group.save(
            update_fields=[
                "leader",
                "window_ends_at",
                "suppressed_count",
                "flush_at",
                "facts",
                "new_facts",
                "settled",
                "began_at",
            ]
        )
        deliveries_create(alert)
    return alert


MAX_FACTS = 50  # named in a summary; more are counted, not listed
GROUP_CONTEXT_KEYS = ("task",)  # what a summary keeps of its first alert's context: the same for the whole group


def _count_in(group: AlertGroup, *, fact: str, critical: bool, now) -> None:
    """Hold an alert back in the group's open window: count it, and note its fact if no message named it.
    A new fact that is critical, or the first alert since the group settled, is summarized within
    ALERT_CRITICAL_FLUSH_SECONDS; other new facts wait for the window's end."""
    Alert.objects.filter(pk=group.leader_id).update(suppressed_count=F("suppressed_count") + 1)
    group.suppressed_count += 1
    group.flush_at = group.flush_at or group.window_ends_at
    # Everything before was settled: this is a new episode (a second factory outage), as urgent as a new
    # critical fact whatever its severity. Without facts, what was settled was told too: this one began it.
    news = group.settled or not group.facts
    if not group.facts:
        group.began_at = now
    group.settled = False
    if fact not in group.facts and len(group.facts) < MAX_FACTS:
        news = news or critical
        group.facts.append(fact)
        group.new_facts.append(fact)
    if news:
        group.flush_at = min(group.flush_at, now + timedelta(seconds=settings.ALERT_CRITICAL_FLUSH_SECONDS))
    group.save(update_fields=["suppressed_count", "flush_at", "facts", "new_facts", "settled", "began_at"])


def _group_locked(dedupe_key: str) -> AlertGroup:
    """The dedupe key's group, created if new, under the lock of its AlertLock stripe."""
    alert_key_lock(dedupe_key)
    group, _ = AlertGroup.objects.select_related("leader").get_or_create(dedupe_key=dedupe_key)
    return group


def alert_key_lock(dedupe_key: str) -> None:
    """Lock the dedupe key's AlertLock stripe until the transaction ends: what raising, grouping and
    settling the key's alerts are serialized by. A caller that decides from other rows whether the key's
    alerts are over (factory: no dead letter of the task waits any more) takes it before it reads them,
    so of two such transactions at once the later one sees what the earlier one committed."""
    _stripe_lock(_stripe(dedupe_key))


def _stripe(dedupe_key: str) -> int:
    return zlib.crc32(dedupe_key.encode()) % AlertLock.STRIPES


def _stripe_lock(stripe: int) -> None:
    if not AlertLock.objects.select_for_update().filter(pk=stripe).exists():
        # The migration creates the stripes; this only heals a table someone emptied.
        AlertLock.objects.bulk_create([AlertLock(id=stripe)], ignore_conflicts=True)
        AlertLock.objects.select_for_update().filter(pk=stripe).exists()


def _summarize(group: AlertGroup, *, to_phones: bool = False) -> Alert:
    """One alert for what the group held back since its last message, naming every fact of the window and
    which of them are new, or settled since for alerts with rows of their own (an acknowledged info line when
    the group is settled: all of it was resolved already; on FCM too with `to_phones`). Resets the count;
    the caller decides whether the window goes on."""
    settled = group.settled
    leader = group.leader
    # The alerts it counts have rows of their own (alert_raise's group_key), each acknowledged and escalated
    # on its own: the summary is only their Slack line. Open, it would be escalated too, naming ones
    # settled since.
    own_rows = leader is not None and leader.dedupe_key != group.dedupe_key
    count = group.suppressed_count
    covers = ", ".join(group.facts)
    leader_context = leader.context if leader else {}
    named = group.new_facts or (group.facts if "sku" in leader_context else [])
    # Those rows are settled one by one: named under "new" once settled, one reads as trouble again.
    open_facts = named if settled or not own_rows else _open_facts(group)
    still_open = [fact for fact in named if fact in open_facts]
    settled_since = [fact for fact in named if fact not in open_facts]
    new = "" if settled else ", ".join(fact for fact in group.new_facts if fact in open_facts)
    # Only what holds for the whole group: the first alert's restock, dead letter, error or request id would
    # read (and link) as the summary's own.
    context = {key: leader_context[key] for key in GROUP_CONTEXT_KEYS if key in leader_context}
    context["grouped"] = count
    context["sku" if "sku" in leader_context else "covers"] = covers
    if new:
        context["new"] = new
    if settled_since:
        context["settled"] = ", ".join(settled_since)
    # What it is about first, then the SKUs: a phone's lock screen shows the first 40-60 characters, and
    # the first alert's title would name its own SKU as if the summary were about it.
    # Settled, the stand-down comes before the SKUs, which a long list would cut off, and none is "new".
    title = _kind_label(leader.kind if leader else group.dedupe_key) + (" (all settled since)" if settled else "")
    title += f": +{count} more" + _named_in_title(still_open, settled_since, new=bool(new))
    summary = Alert.objects.create(
        kind=leader.kind if leader else "summary",
        # Every one it names settled since (its leader, still open, had a line of its own): nothing to do.
        severity=Severity.INFO if settled or not leader or (settled_since and not still_open) else leader.severity,
        title=title[:200],
        text=f"{_since(group, count)} Covers: {covers}."
        + (f" New since the last message: {new}." if new else "")
        + (f" Settled since: {context['settled']}." if settled_since else "")
        + (" Every one of them was settled before this summary was due." if settled else ""),
        dedupe_key=group.dedupe_key,
        context=context,
        is_summary=True,
        acknowledged_at=timezone.now() if settled or own_rows else None,
    )
    deliveries_create(summary, to_phones=to_phones)
    group.suppressed_count = 0
    group.new_facts = []
    group.flush_at = None
    group.settled = False
    return summary


def _open_facts(group: AlertGroup) -> set[str]:
    """The facts of the group's own rows (alert_raise's group_key) since its first alert that are still open.
    A fact is open while any of its rows is: one SKU's next restock can go overdue after its first one's
    receipt. Only restock_overdue keeps rows, all in its one group: its kind finds them."""
    rows = Alert.objects.filter(
        kind=group.leader.kind, is_summary=False, pk__gte=group.leader_id, acknowledged_at__isnull=True
    ).values_list("context", "title")
    return {_fact(context, title) for context, title in rows}


def _fact(context: dict, title: str) -> str:
    """What an alert is about, as its group names it: its SKU, or its title."""
    return str(context.get("sku") or title)[:200]


def _named_in_title(still_open: list[str], settled_since: list[str], *, new: bool) -> str:
    """The facts a summary's title names, the open ones first: ' (new: LEMON; settled since: JELLY)'."""
    parts = [("new: " if new else "") + ", ".join(still_open)] if still_open else []
    if settled_since:
        parts.append("settled since: " + ", ".join(settled_since))
    return f" ({'; '.join(parts)})" if parts else ""


def _kind_label(kind: str) -> str:
    """An alert kind as a person reads it: "dead_letter" -> "Dead letter"."""
    return kind.replace("_", " ").capitalize()


def _listed(titles: list[str]) -> str:
    """Alerts' titles in one line of text: the first MAX_FACTS, then "..." for the rest."""
    return "; ".join(titles[:MAX_FACTS]) + ("; ..." if len(titles) > MAX_FACTS else "")


def _since(group: AlertGroup, count: int) -> str:
    """How many the summary counts and since when: the alert that began the trouble, or, when the trouble
    began after everything before was settled, its start (the settled leader is another trouble's). After
    an earlier summary of the same trouble (a new SKU's critical alert brought one forward), the count
    starts at that summary, and so does the text: "N since the first alert" read as all of them, fewer
    than ops had already been told of."""
    if (last := _last_summary(group)) is not None:
        return (
            f"{count} more alert(s) like this one since {last.created_at:%H:%M:%S} UTC "
            f"(alert {last.pk}, the last message about them)."
        )
    if group.began_at:
        return (
            f"{count} alert(s) like this one since {group.began_at:%H:%M:%S} UTC, none sent on its own: "
            "it began again after everything before it was settled."
        )
    if group.leader is None:
        return f"{count} more alert(s) like this one since the last message."
    return (
        f"{count} more alert(s) like this one since {group.leader.created_at:%H:%M:%S} UTC (alert {group.leader.pk})."
    )


def _last_summary(group: AlertGroup) -> Alert | None:
    """The group's last summary since the trouble it counts began (its leader, or its start after everything
    before was settled), if one went out."""
    began = group.began_at or (group.leader.created_at if group.leader else None)
    if began is None:
        return None
    return (
        Alert.objects.filter(dedupe_key=group.dedupe_key, is_summary=True, created_at__gte=began)
        .order_by("-pk")
        .first()
    )


def alert_groups_flush() -> int:
    """Send the summary of every group whose flush time has come with alerts held back: at its window's end,
    or sooner for a new critical fact. A group whose window has closed starts afresh with its next alert."""
    sent = 0
    now = timezone.now()
    for dedupe_key in AlertGroup.objects.filter(flush_at__lte=now, suppressed_count__gt=0).values_list(
        "dedupe_key", flat=True
    ):
        with transaction.atomic():
            group = _group_locked(dedupe_key)
            if not (group.suppressed_count and group.flush_at and group.flush_at <= timezone.now()):
                continue
            _summarize(group)
            if group.window_ends_at is None or group.window_ends_at <= timezone.now():
                group.leader = None
                group.window_ends_at = None
                group.facts = []
                group.began_at = None
            group.save(
                update_fields=[
                    "suppressed_count",
                    "new_facts",
                    "flush_at",
                    "leader",
                    "window_ends_at",
                    "facts",
                    "settled",
                    "began_at",
                ]
            )
            sent += 1
    return sent


def alerts_settle(dedupe_key: str, *, user=None, by_hand: bool = False, **filters) -> None:
    """What the dedupe key's alerts were about is over: its open alerts acknowledged (`filters` narrow
    them), and what its group held back settled (_group_settle). When that sends no settled summary and
    pages were among the open alerts (critical, or pushed to the phones), one info line says it is over
    (_stand_down): the pages stay the last word otherwise. Whichever of the two goes out is pushed to the
    phones too when one of the open alerts reached them (an FCM delivery, or escalated) and the trouble
    passed by itself; settled `by_hand` (a redrive: that person is at a screen, and Slack tells the
    others), it is not. Call it in the transaction that ended it. With open alerts, takes
    the key's lock before their rows, as alert_raise does (it counts on the leader's row under that lock):
    the other order deadlocked a worker recording an accepted order with one recording a failed call."""
    paged, phoned, closed = [], set(), 0
    # Without the lock when nothing is open: every order the factory accepts settles its warning.
    if Alert.objects.filter(dedupe_key=dedupe_key, acknowledged_at__isnull=True, **filters).exists():
        alert_key_lock(dedupe_key)
        # Locked as read: a warning escalated between this read and its acknowledgement would have reached
        # the phones with no all-clear to follow it there.
        open_alerts = list(
            Alert.objects.select_for_update()
            .filter(dedupe_key=dedupe_key, acknowledged_at__isnull=True, **filters)
            .order_by("pk")
            .values_list("pk", "kind", "title", "context", "severity", "escalated_at")
        )
        pushed = set(
            AlertDelivery.objects.filter(
                alert_id__in=[row[0] for row in open_alerts], channel=AlertDelivery.Channel.FCM
            ).values_list("alert_id", flat=True)
        )
        phoned = {pk for pk, *_, escalated_at in open_alerts if escalated_at or pk in pushed}
        paged = [
            (kind, title, context)
            for pk, kind, title, context, severity, _ in open_alerts
            if severity == Severity.CRITICAL or pk in phoned
        ]
        closed = alerts_acknowledge(dedupe_key, user=user, **filters)
    to_phones = bool(phoned) and not by_hand
    if not _group_settle(dedupe_key, at_once=closed > 0, to_phones=to_phones) and paged:
        _stand_down(dedupe_key, paged, user=user, to_phones=to_phones)


def _stand_down(dedupe_key: str, paged: list[tuple[str, str, dict]], *, user, to_phones: bool) -> None:
    """An info line, born acknowledged, naming what the settled pages were about; one push with `to_phones`,
    however many pages it closes."""
    kind = paged[0][0]
    skus = _skus_named([context for _, _, context in paged])
    about = ", ".join(skus) or paged[0][1]
    by = f" by {user.get_username()}" if user is not None else ""
    stand_down = Alert.objects.create(
        kind=kind,
        severity=Severity.INFO,
        title=f"{_kind_label(kind)} (all settled): {about}"[:200],
        text=f"Settled{by}: the {len(paged)} open page(s) about this are closed; nothing left to do.",
        dedupe_key=dedupe_key,
        context={"sku": about} if any(skus) else {},
        is_summary=True,
        acknowledged_at=timezone.now(),
        acknowledged_by=user,
    )
    deliveries_create(stand_down, to_phones=to_phones)


def _skus_named(contexts: list[dict]) -> list[str]:
    """Each SKU the alerts name, once, in order: a summary's "sku" lists several."""
    skus = [sku.strip() for context in contexts for sku in str(context.get("sku") or "").split(",")]
    return list(dict.fromkeys(sku for sku in skus if sku))


def _group_settle(dedupe_key: str, *, at_once: bool, to_phones: bool = False) -> bool:
    """Everything the dedupe key's group held back was settled (ops resolved every dead letter it counts).
    Its summary is an info line born acknowledged: every fact is still named where ops read (Slack, the
    admin), and nobody's phone is paged about work already done; only the phones an alert it closes
    reached are told it is over (`to_phones`). It goes out now when the settling closed
    an open alert (`at_once`: the pages' last word); otherwise nobody was told of what it counts, and it
    waits for the window's end, so a factory that fails a streak and answers again, again and again, is one
    line per window instead of one per recovery. The window goes on; alerts after this count afresh, and as
    news: what was named before was settled, so a critical one about the same SKU again is summarized within
    ALERT_CRITICAL_FLUSH_SECONDS, not held silently until the window ends behind an alert ops acknowledged.
    Call it in the transaction that settled them. Returns whether it sent that summary."""
    # Without the lock first: every order the factory accepts settles its warnings' group, and there is
    # mostly nothing to settle.
    held = AlertGroup.objects.filter(dedupe_key=dedupe_key).values_list("suppressed_count", "facts", "settled").first()
    if held is None or not (held[0] or held[1]) or (held[2] and not at_once):
        return False
    group = _group_locked(dedupe_key)
    group.settled = bool(group.suppressed_count)
    if group.settled and not at_once:
        group.flush_at = group.window_ends_at
        group.save(update_fields=["flush_at", "settled"])
        return False
    summarized = group.settled
    if summarized:
        _summarize(group, to_phones=to_phones)
    group.facts = []
    group.save(update_fields=["suppressed_count", "new_facts", "flush_at", "facts", "settled"])
    return summarized


def alerts_escalate() -> int:
    """Warnings nobody acknowledged in time are pushed to FCM too. Several in one sweep (a factory outage
    leaves every open restock overdue together) are one push naming them all, not a push each. Returns how
    many warnings were escalated."""
    if not fcm_configured():
        return 0
    due = _escalation_due()
    with transaction.atomic():
        # Asked again as they are locked: acknowledged since the list was read (by ops, or by an overdue
        # restock's receipt), it pages nobody. One another transaction holds is passed over, never waited
        # for: it is being acknowledged or settled, or the next sweep escalates it. Waiting, the sweep
        # deadlocked with whichever worker took two of them in the other order.
        escalated = list(
            Alert.objects.select_for_update(skip_locked=True)
            .filter(pk__in=due, escalated_at__isnull=True, acknowledged_at__isnull=True)
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        if escalated:
            push = escalated[0] if len(escalated) == 1 else _escalations_summary(escalated).pk
            Alert.objects.filter(pk__in=escalated).update(escalated_at=timezone.now(), escalation=push)
            _push_to_phones(push)
    return len(escalated)


def alerts_escalated_with(dedupe_key: str) -> list[Alert]:
    """The warnings of its kind that one push took to the phones with the dedupe key's latest warning
    (alerts_escalate), itself included, once every one of them is acknowledged and none by a person in the
    admin (at a screen already, and Slack told the others who took it); none otherwise, or when it was
    never escalated. Call it after acknowledging that warning, under the lock the others are acknowledged
    under: of two at once, the later one sees the earlier's."""
    warning = (
        Alert.objects.filter(dedupe_key=dedupe_key, is_summary=False)
        .order_by("-pk")
        .values("kind", "escalation_id")
        .first()
    )
    if warning is None or warning["escalation_id"] is None:
        return []
    warnings = list(
        Alert.objects.filter(escalation_id=warning["escalation_id"], kind=warning["kind"])
        .select_related("escalation")
        .order_by("pk")
    )
    if any(w.acknowledged_at is None or w.acknowledged_by_id is not None for w in warnings):
        return []
    return warnings


def alerts_escalation_stand_down(warnings: list[Alert]) -> None:
    """The all-clear of the push that took these warnings to the phones: one info line naming them, on
    Slack and the phones, as alerts_settle's (_stand_down)."""
    paged = [(w.kind, w.title, w.context) for w in warnings]
    _stand_down(warnings[0].escalation.dedupe_key, paged, user=None, to_phones=True)


def _escalation_due() -> list[int]:
    # Due within half a sweep: the factory sweep raises its overdue warnings just after beat's tick, the
    # moment this sweep is sent too, so an exact cutoff fell among them and split one push in two.
    cutoff = timezone.now() - timedelta(
        seconds=settings.ALERT_ESCALATE_AFTER_SECONDS - settings.RECONCILE_INTERVAL_SECONDS / 2
    )
    return list(
        Alert.objects.filter(
            severity=Severity.WARNING,
            acknowledged_at__isnull=True,
            escalated_at__isnull=True,
            group_leader__isnull=True,
            created_at__lte=cutoff,
        ).values_list("pk", flat=True)
    )


def _push_to_phones(alert_id: int) -> None:
    delivery, created = AlertDelivery.objects.get_or_create(
        alert_id=alert_id,
        channel=AlertDelivery.Channel.FCM,
        defaults={"resend_at": timezone.now() + timedelta(seconds=settings.NOTIFICATIONS_RESEND_AFTER_SECONDS)},
    )
    if created:
        transaction.on_commit(partial(delivery_dispatch, delivery.pk))


def _escalations_summary(alert_ids: list[int]) -> Alert:
    """One alert for the phones naming the warnings escalated together; born acknowledged and escalated (it
    is the push, not something more to acknowledge: each warning still is)."""
    warnings = list(Alert.objects.filter(pk__in=alert_ids).order_by("pk"))
    about = ", ".join(_skus_named([w.context for w in warnings]))
    about = about or ", ".join(dict.fromkeys(_kind_label(w.kind) for w in warnings))
    now = timezone.now()
    return Alert.objects.create(
        kind="unacknowledged",
        severity=Severity.WARNING,
        title=f"Unacknowledged: {len(warnings)} warnings ({about})"[:200],
        text=f"No one acknowledged these in {waited_for(settings.ALERT_ESCALATE_AFTER_SECONDS)}: acknowledge them "
        "in the admin. " + _listed([w.title for w in warnings]),
        dedupe_key=f"unacknowledged:{warnings[0].pk}",
        is_summary=True,
        acknowledged_at=now,
        escalated_at=now,
    )


def alert_acknowledge(alert: Alert, *, user) -> bool:
    """Acknowledge one alert; False when it was acknowledged already (by then it is left as it was)."""
    return bool(
        Alert.objects.filter(pk=alert.pk, acknowledged_at__isnull=True).update(
            acknowledged_at=timezone.now(), acknowledged_by=user
        )
    )


def alerts_acknowledge_by_hand(alerts, *, user) -> list[Alert]:
    """Someone in ops took these alerts (the admin's action): each is acknowledged (one acknowledged already
    is left as it was), and if that took a warning or a critical one, one info line tells Slack who did, so
    the others paged with them do not start on the same thing. Returns the alerts this acknowledged. Call it
    in a transaction."""
    # Locked oldest first, as the escalation sweep and a settle take them: in the admin's order (newest first,
    # or any column ops sort by), acknowledging warnings as they came due deadlocked with the sweep.
    list(Alert.objects.select_for_update().filter(pk__in=[alert.pk for alert in alerts]).order_by("pk").values("pk"))
    taken = [alert for alert in alerts if alert_acknowledge(alert, user=user)]
    paged = [alert for alert in taken if alert.severity != Severity.INFO]
    if paged:
        titles = [alert.title for alert in paged]
        line = Alert.objects.create(
            kind="acknowledged",
            severity=Severity.INFO,
            title=(
                f"Acknowledged by {user.get_username()}: {titles[0]}"
                + (f" and {len(titles) - 1} more" if len(titles) > 1 else "")
            )[:200],
            text="In the admin" + (f": {_listed(titles)}" if len(titles) > 1 else "") + ".",
            dedupe_key=f"acknowledged:{paged[0].pk}",
            acknowledged_at=timezone.now(),
            acknowledged_by=user,
        )
        deliveries_create(line)
    return taken


def alerts_acknowledge(dedupe_key: str, *, user=None, **filters) -> int:
    """Acknowledge every open alert of a dedupe key (what it was about is over); `filters` narrow them."""
    return Alert.objects.filter(dedupe_key=dedupe_key, acknowledged_at__isnull=True, **filters).update(
        acknowledged_at=timezone.now(), acknowledged_by=user
    )


PURGE_BATCH = 1000  # alerts a delete: short statements beside the sweeps writing deliveries
# Storm groups read at a time, then deleted a stripe (of AlertLock.STRIPES) at a time: about 150 a statement.
GROUP_PURGE_READ = 10 * PURGE_BATCH


def alerts_purge(*, older_than_days: int, dry_run: bool = False) -> tuple[int, int]:
    """Delete alerts done with older than N days, with their deliveries, then the storm groups over before
    then (_groups_over). Done with: acknowledged, or info (a SKU sold out asks nothing of anyone, so nobody
    acknowledges it: kept until then, a shop selling out daily kept every one). Kept all the same, info or
    not: one with a delivery still owed (pending: the sweep sends it again), one leading a group whose window
    is open or whose summary is owed (the summary reads it), one older rows are grouped under (group_leader
    would delete them with it; it goes once they have), and a warning escalated with others still open.
    Returns how many alerts and groups it deleted, or would."""
    cutoff = timezone.now() - timedelta(days=older_than_days)
    purgeable = _purgeable(cutoff)
    if dry_run:
        leaders_going = purgeable.order_by().values("pk")
        return purgeable.count(), _groups_over(cutoff).filter(Q(leader=None) | Q(leader__in=leaders_going)).count()
    deleted = 0
    while batch := list(purgeable.values_list("pk", flat=True)[:PURGE_BATCH]):
        # Asked again as it deletes: a resend from the admin since the batch was read keeps its alert.
        deleted += purgeable.filter(pk__in=batch).delete()[1].get(Alert._meta.label, 0)
    return deleted, _groups_purge(cutoff)


def _groups_over(cutoff):
    """Storm groups that hold nothing a fresh row would not: no summary owed (nothing held back, none
    settled, no flush due) and a window that ended before the cutoff. A group without a window had it
    ended by its summary (alert_groups_flush), which carries its key: over before the cutoff when no alert
    of its key is younger. Their leader, if any, is the caller's to judge."""
    since = Alert.objects.filter(dedupe_key=OuterRef("dedupe_key"), created_at__gte=cutoff)
    return AlertGroup.objects.filter(
        Q(window_ends_at__lt=cutoff) | (Q(window_ends_at=None) & ~Exists(since)),
        suppressed_count=0,
        settled=False,
        flush_at=None,
    )


def _groups_purge(cutoff) -> int:
    """Delete the groups over before the cutoff whose leader is gone (a leader kept is an alert the purge
    keeps). Each under its key's lock, as alert_raise takes it, and asked again there: a raise on the key at
    that moment finds the group it had (it waited for the purge to look: a new window is open, so it
    stays) or none (the purge went first: it creates a fresh one), never one deleted under it. One stripe
    a transaction: a worker that takes two keys' locks (a restock's overdue warning and their group) in
    the other order would deadlock with a purge holding several."""
    over = _groups_over(cutoff).filter(leader=None).order_by("pk")
    deleted, after = 0, 0
    while batch := list(over.filter(pk__gt=after).values_list("pk", "dedupe_key")[:GROUP_PURGE_READ]):
        after = batch[-1][0]
        stripes = {}
        for pk, dedupe_key in batch:
            stripes.setdefault(_stripe(dedupe_key), []).append(pk)
        for stripe, pks in sorted(stripes.items()):
            deleted += _groups_delete(over, stripe, pks)
    return deleted


def _groups_delete(over, stripe: int, pks: list[int]) -> int:
    with transaction.atomic():
        _stripe_lock(stripe)
        return over.filter(pk__in=pks).delete()[0]


def _purgeable(cutoff):
    owed = AlertDelivery.objects.filter(status=AlertDelivery.Status.PENDING).values("alert_id")
    read = AlertGroup.objects.filter(Q(window_ends_at__gt=timezone.now()) | Q(suppressed_count__gt=0))
    # A push's all-clear waits for every warning it took (alerts_escalated_with): one gone, it would come once
    # the others are over, though the gone one's restock failed or someone took it in the admin.
    pushes_open = Alert.objects.filter(escalation__isnull=False, acknowledged_at__isnull=True).values("escalation_id")
    return (
        Alert.objects.filter(Q(acknowledged_at__isnull=False) | Q(severity=Severity.INFO), created_at__lt=cutoff)
        .exclude(pk__in=owed)
        .exclude(pk__in=read.filter(leader__isnull=False).values("leader_id"))
        .exclude(grouped__isnull=False)
        .exclude(escalation__in=pushes_open)
        .order_by("pk")
    )


SWEEP_STOPPED = "sweep_stopped"  # the alert's kind
FACTORY_SWEEP = "factory.reconcile"


def factory_sweep_stopped_alert() -> int:
    """Page ops when factory.reconcile stopped finishing while this sweep, which the same beat sends, went
    on: the worker that runs it is down or wedged, or it fails at every run. That sweep resends lost
    restocks and raises the overdue warnings, so with the factory's workers dead in a rush nothing else would
    tell Slack or the phones. Measured against this sweep's own last run, not the clock, and from the start
    again after everything was stopped for a while (a host, or make run, started again: this sweep finds
    its own last run old too): the factory worker coming up a few sweeps after this one is no stop to page
    about. Twice the probe's limit (`sweeps_alive`), so a worker restarted in a rolling update pages nobody.
    One critical alert per stop; settled, with a stand-down line, once it finishes again. One that never
    ran (a new Redis) is left to the probe. Call it before this sweep notes its own run. Returns how many
    alerts were raised."""
    limit = 2 * late_after()
    try:
        finished = sweep_last_finished(FACTORY_SWEEP)
        went_on = sweep_last_finished("notifications.sweep")
        if finished is None or went_on is None:
            return 0
        if time.time() - went_on > limit:  # this sweep was stopped too: everything starts again
            sweep_watch_from_now(FACTORY_SWEEP)
            return 0
        stopped = went_on - max(finished, sweep_watched_from(FACTORY_SWEEP) or finished) > limit
        if stopped and not sweep_stop_claim(FACTORY_SWEEP, finished):
            return 0  # told already
    except (redis.RedisError, OSError):
        return 0  # where the sweeps note their runs is away: /readyz and /metrics tell of that Redis
    dedupe_key = f"{SWEEP_STOPPED}:{FACTORY_SWEEP}"
    with transaction.atomic():
        if not stopped:
            alerts_settle(dedupe_key)
            return 0
        alert_raise(
            kind=SWEEP_STOPPED,
            severity=Severity.CRITICAL,
            title=f"The factory sweep stopped ({FACTORY_SWEEP})",
            text=f"{FACTORY_SWEEP} last finished at {datetime.fromtimestamp(finished, UTC):%H:%M:%S} UTC, "
            f"{time.time() - finished:.0f} s ago, while notifications.sweep, which the same beat sends, "
            "still runs: the worker that runs it (factory@, on the maintenance and factory queues) is down "
            "or wedged, or the sweep fails at every run (that worker's log says why). Until it runs again "
            "no lost restock message is resent, no late order polled and no overdue restock told, and the "
            "restocks on that worker's queues wait. Check with `manage.py worker_alive` (or `docker compose "
            "ps`) and restart the worker (`docker compose up -d worker`). This alert is acknowledged by "
            "itself when the sweep runs again.",
            dedupe_key=dedupe_key,
            context={"sweep": FACTORY_SWEEP},
        )
    return 1

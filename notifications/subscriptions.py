"""Back-in-stock subscriptions: a customer's device wants one push when a SKU comes back."""

import logging
import time
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.db import transaction
from django.db.models import Case, Count, F, Value, When
from django.utils import timezone

from donutsite.celery import task_publish
from donutsite.db import exact_lookup_possible
from donutsite.rows import rows_by_primary_key, rows_locked
from notifications.channels.base import Message
from notifications.channels.registry import channel_get, channel_paused, channel_sending, fcm_configured
from notifications.devices import device_deactivate, device_get
from notifications.errors import ChannelError, TokenUnregistered
from notifications.limits import CLAIM_LEASE, RUN_SECONDS
from notifications.models import AlertDelivery, Severity, Subscription

logger = logging.getLogger(__name__)

BACK_IN_STOCK_TASK = "notifications.back_in_stock"


def subscription_create(*, client, device_id: int, sku: str) -> tuple[Subscription, bool]:
    """Subscribe one of the client's active devices to `sku` coming back (the caller vouches for the SKU).
    Subscribing again re-arms a used subscription (a push still owed stays owed). Returns (subscription,
    created). Raises UnknownDevice for a device not the client's, or unregistered by the time it is locked.

    Under the device's row lock, as unsubscribing and unregistering it (device_unregister): taps of "notify
    me" at once go one at a time, the first creating the row and the rest finding it, so no INSERT waits
    on another's duplicate key (two INSERTs waiting behind an unsubscribe's DELETE deadlocked, a 503 after
    three tries), and none subscribes a device an unregister has just deactivated."""
    with transaction.atomic():
        device = device_get(client=client, device_id=device_id, lock=True)
        if rows_by_primary_key(Subscription.objects.filter(device=device, sku=sku)).update(notified_at=None):
            return Subscription.objects.get(device=device, sku=sku), False
        return Subscription.objects.create(device=device, sku=sku), True


def subscription_delete(*, client, device_id: int, sku: str) -> bool:
    """Unsubscribe one of the client's devices from `sku`, a push still owed for it included (a run under
    way finds nothing to claim). Returns whether the device was subscribed. Raises UnknownDevice for a
    device not the client's. An inactive one is still the client's: an app signing out unregisters its device
    and unsubscribes in either order, and one FCM dropped keeps its subscriptions for when its token is
    registered again, so "notify me" turned off meanwhile must take.

    Under the device's row lock, as subscribing and unregistering it (device_unregister): toggles of
    "notify me" take effect in the order they lock it, so an unsubscribe after a subscribe ends unsubscribed,
    and this DELETE deadlocks with neither."""
    if not exact_lookup_possible(sku):
        device_get(client=client, device_id=device_id, active=False)
        return False  # "VIRAL " would unsubscribe VIRAL
    with transaction.atomic():
        device = device_get(client=client, device_id=device_id, active=False, lock=True)
        deleted, _ = rows_by_primary_key(Subscription.objects.filter(device=device, sku=sku)).delete()
    return deleted > 0


def subscriptions_delete(subscriptions) -> int:
    """Delete the subscriptions `subscriptions` finds (the admin's "Delete selected"), pushes still owed
    included, by primary key alone (donutsite.rows.rows_by_primary_key), as every write of them is. The
    admin's DELETE repeated its list's filter ("not notified yet"), and MariaDB found the rows through the
    notified_at index before their primary key. Returns how many were deleted."""
    deleted, _ = rows_by_primary_key(subscriptions).delete()
    return deleted


def back_in_stock_announce(sku: str, name: str) -> int:
    """The SKU, called `name` in the shop, is back: every unused subscription to it is owed a push. Call it
    in the transaction of the receipt that brought the stock back; the pushes go out after commit, and the
    sweep resends any that did not (broker away, FCM failing). Returns how many unused subscriptions it
    found: one pushed between its read and its write stays used up, but is counted.

    The rows are read, then written by primary key, in its order (donutsite.rows.rows_by_primary_key): an
    UPDATE through the SKU's index deadlocked with a device's unregister, a 503 for the app or for the
    factory's callback. This holds the product's lock about twice as long as that UPDATE did
    (bench/announce.py: 16 to 26 ms against 11 for 1,000 subscribers)."""
    if not fcm_configured():
        logger.info("back in stock %s: FCM is not configured; subscribers not told", sku)
        return 0
    unused = rows_by_primary_key(Subscription.objects.filter(sku=sku, notified_at__isnull=True))
    # Checked in the SET, not the WHERE: a condition on notified_at there could send MariaDB through that
    # index instead, and the deadlock back. One pushed since the read stays used up.
    still_unused = When(notified_at__isnull=True, then=Value(timezone.now()))
    owed = unused.update(due_at=Case(still_unused, default=F("due_at")), product_name=name)
    if owed:
        transaction.on_commit(partial(back_in_stock_dispatch, sku))
    return owed


def back_in_stock_withdraw(*skus: str) -> int:
    """The SKUs sold out again before every push owed for their comeback went out (thousands of subscribers,
    a rush that takes the stock in seconds, or FCM away): the rest would be told "back" about a product
    at 0, and their one push used up. Those subscriptions wait for the next announce instead. A push a
    running send is making goes out, or, if it fails, waits too. Call it in the transaction that took
    the last ones (under the products' locks, so a receipt's announce comes after it, never before): a read
    of the pushes still owed and one UPDATE of them by primary key (donutsite.rows.rows_by_primary_key:
    through the SKU's index it deadlocked with a device's unregister). Every SKU a sale sold out in one
    call: one UPDATE per SKU locked a device's rows out of primary-key order (its VIRAL row, then its
    GLAZED row with a lower id) while its unregister locked them in order, and MariaDB rolled one back.
    Returns how many were withdrawn."""
    owed = Subscription.objects.filter(sku__in=skus, notified_at__isnull=True, due_at__isnull=False)
    return rows_by_primary_key(owed).update(due_at=None)


def back_in_stock_dispatch(sku: str) -> bool:
    return task_publish(BACK_IN_STOCK_TASK, [sku])


def back_in_stock_resend(*, limit: int = 100) -> int:
    """Hand the queue again every SKU with pushes owed for NOTIFICATIONS_RESEND_AFTER_SECONDS (the message
    never left, or the send failed). Those are made due now first, so the next sweep waits as long again."""
    if not fcm_configured():
        return 0
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.NOTIFICATIONS_RESEND_AFTER_SECONDS)
    stale = Subscription.objects.filter(due_at__lte=cutoff, notified_at__isnull=True, device__is_active=True)
    skus = list(stale.order_by().values_list("sku", flat=True).distinct()[:limit])
    resent = 0
    for sku in skus:
        _owed_since_made_due(Subscription.objects.filter(sku=sku), since=cutoff, now=now)
        resent += back_in_stock_dispatch(sku)
    return resent


def _owed_since_made_due(subscriptions, *, since, now) -> None:
    """Those of `subscriptions` owed a push since `since` or before are owed it from `now`; one a run has
    claimed meanwhile (due_at moved ahead) or sent is left alone. Their rows are locked by primary key
    (donutsite.rows.rows_locked), so an unregister deleting one at that moment waits, or is waited for."""
    with transaction.atomic():
        stale = subscriptions.filter(due_at__lte=since, notified_at__isnull=True)
        found = rows_locked(stale, "due_at", "notified_at")
        owed = [pk for pk, due_at, notified_at in found if due_at and due_at <= since and notified_at is None]
        Subscription.objects.filter(pk__in=owed).update(due_at=now)


def back_in_stock_send(sku: str, *, batch_size: int = 200, run_seconds: float = RUN_SECONDS) -> int:
    """Push "back in stock" to every subscriber of `sku` owed one; a subscription is used up only once FCM
    accepted its push. Returns how many were sent.

    Each subscription is claimed with a short conditional update (its due_at moved ahead), so two runs
    never push one subscription twice, and no transaction is open during a send. A transient FCM failure
    (FCM down, its quota used up) ends the run: that push and the rest stay due for the sweep, so
    thousands of subscribers cost FCM one failed call per sweep, not one each. An unregistered token
    deactivates the device. After `run_seconds` the run starts no new push and hands the rest to a new
    run at once (thousands of subscribers take longer than a task may run).

    A phone is pushed once per comeback, however many clients registered its token (_twins_used_up).
    """
    channel = channel_get(AlertDelivery.Channel.FCM)
    if channel is None:
        logger.info("back in stock %s: FCM is not configured; subscribers not told", sku)
        return 0
    if channel_paused(channel.name):
        # FCM gave this process no answer lately (channel_pause): the pushes stay owed, for the sweep.
        logger.info("back in stock %s: FCM gave this process no answer lately; left to the sweep", sku)
        return 0
    started = timezone.now()
    owed = Subscription.objects.filter(sku=sku, due_at__lte=started, notified_at__isnull=True)
    name = owed.exclude(product_name="").values_list("product_name", flat=True).first() or sku
    message = Message(
        title="Back in stock",
        text=f"{name} is back. Grab one before the next video goes viral!",
        severity=Severity.INFO,
        kind="back_in_stock",
        data={"kind": "back_in_stock", "sku": sku},
    )
    shared = _tokens_shared(sku)
    stop_at = time.monotonic() + run_seconds
    sent, after = 0, 0
    while True:
        batch = list(
            owed.filter(device__is_active=True, pk__gt=after).select_related("device").order_by("pk")[:batch_size]
        )
        if not batch:
            return sent
        after = batch[-1].pk
        for subscription in batch:
            if time.monotonic() >= stop_at:
                # The soft time limit would end this run in the middle of a push, and the rest would wait
                # for the sweep. If the broker refuses the new run, the sweep still sends them. Those
                # left are made due now, as the sweep does: owed since the hand-over, so the sweep does
                # not start a second chain of runs beside this one.
                _owed_since_made_due(Subscription.objects.filter(sku=sku), since=started, now=timezone.now())
                back_in_stock_dispatch(sku)
                return sent
            outcome = _push(channel, message, subscription)
            if outcome == "transient":
                return sent
            if outcome == "sent" and subscription.device.token in shared:
                _twins_used_up(subscription)
            sent += outcome == "sent"


def _owed_for_the_comeback(sku: str):
    """The SKU's subscriptions owed a push for its comeback, due now or later: announced (due_at set), not
    used up, not withdrawn (a sell-out clears due_at, the next announce sets it again)."""
    return Subscription.objects.filter(sku=sku, notified_at__isnull=True, due_at__isnull=False, device__is_active=True)


def _tokens_shared(sku: str) -> set[str]:
    """The tokens of more than one subscription owed for the SKU's comeback: a phone that two clients registered
    (one app talking through two API keys, or a client's key moved to a new client) has a device, and a
    subscription, for each. Read once a run: one owed later (its push failed for now) counts too."""
    shared = _owed_for_the_comeback(sku).order_by().values("device__token").annotate(owed=Count("pk"))
    return set(shared.filter(owed__gt=1).values_list("device__token", flat=True))


def _twins_used_up(pushed: Subscription) -> None:
    """FCM took the comeback's push to this phone: the other subscriptions owed for it to the same token (another
    client's device for the same phone) are used up too, as if sent, and no run or sweep pushes the phone
    again; as the ops phones are pushed once a token (deliveries._ops_phones_push). The devices and their
    clients are left alone: registering a token never touches another client's device. Locked by primary
    key and checked again (donutsite.rows.rows_locked): one withdrawn meanwhile waits for the next comeback.
    A twin another run is pushing at this very moment may still land."""
    now = timezone.now()
    with transaction.atomic():
        twins = _owed_for_the_comeback(pushed.sku).filter(device__token=pushed.device.token).exclude(pk=pushed.pk)
        found = rows_locked(twins, "due_at", "notified_at")
        owed = [pk for pk, due_at, notified_at in found if due_at is not None and notified_at is None]
        Subscription.objects.filter(pk__in=owed).update(notified_at=now, due_at=None)


def _push(channel, message: Message, subscription: Subscription) -> str:
    """One subscriber's push: "sent", "skipped" (another run has it, or it was sent meanwhile; or it can
    never be sent) or "transient" (owed again, after NOTIFICATIONS_RESEND_AFTER_SECONDS: the next run
    starts with the others, so one device FCM keeps refusing holds up nobody)."""
    claimed_until = timezone.now() + CLAIM_LEASE
    owned = Subscription.objects.filter(
        pk=subscription.pk, due_at=subscription.due_at, notified_at__isnull=True
    ).update(due_at=claimed_until)
    if not owned:
        return "skipped"
    try:
        with channel_sending(channel.name):
            channel.send_to_token(subscription.device.token, message)
    except TokenUnregistered as exc:
        Subscription.objects.filter(pk=subscription.pk).update(due_at=None)
        device_deactivate(subscription.device_id, reason=str(exc))
        return "skipped"
    except ChannelError as exc:
        # Transient: owed again, the sweep resends it; unless the SKU sold out meanwhile (withdrawn: due_at
        # no longer this claim). Permanent (FCM refused the message): give up on it.
        later = timezone.now() + timedelta(seconds=settings.NOTIFICATIONS_RESEND_AFTER_SECONDS)
        Subscription.objects.filter(pk=subscription.pk, due_at=claimed_until).update(
            due_at=later if exc.transient else None
        )
        logger.warning(
            "back in stock %s: push to device %s failed%s: %s",
            subscription.sku,
            subscription.device_id,
            ", will be resent with the rest" if exc.transient else "",
            exc,
        )
        return "transient" if exc.transient else "skipped"
    Subscription.objects.filter(pk=subscription.pk).update(notified_at=timezone.now(), due_at=None)
    return "sent"

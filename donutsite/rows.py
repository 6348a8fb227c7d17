"""Rows that many requests write at the same moment: creating one (an app registering its device twice at once),
and updating or deleting rows that other writers reach through other indexes."""

from django.db import IntegrityError, OperationalError, transaction
from django.utils import timezone

from donutsite.db import DEADLOCK, error_code

ATTEMPTS = 3


def row_create_or_update(model, lookup: dict, defaults: dict):
    """`update_or_create` for a row with a unique key that concurrent requests race to create. Returns
    (row, created).

    The INSERT comes first, in a transaction of its own; if the unique key refuses it, the row that won
    is updated. Django's update_or_create instead locks the row (SELECT FOR UPDATE) after its INSERT
    failed, in the same transaction: two losers then each hold the duplicate-key check's shared lock
    and wait for the other's, and MariaDB kills one (deadlock, 1213), a 503 for a harmless repeat. Call
    it outside a transaction, so that the INSERT's locks end with it.

    The row may also go between the refused INSERT and the update (a DELETE racing it), and INSERTs waiting
    behind that DELETE can still deadlock with each other; either way the INSERT runs again, as if this
    request had come just after the other, a few times at most.

    The UPDATE deadlocks too, with a DELETE of the row: MariaDB may find the row through another index,
    locking it there before its primary key, while the DELETE locks the primary key first. It runs again
    the same way: the INSERT then meets the row, or, the row gone, creates it.

    A row that requests also delete at once needs more than these tries: back-in-stock subscriptions,
    toggled on and off by taps of "notify me", are made under their device's row lock instead
    (notifications.subscriptions.subscription_create)."""
    refused = None
    for attempt in range(ATTEMPTS):
        try:
            return _row_inserted_or_updated(model, lookup, defaults)
        except IntegrityError as exc:
            # No row to update: deleted since the INSERT met it, or not the unique key (a foreign key gone:
            # a real error, raised once the INSERT has been refused every time).
            refused = exc
        except OperationalError as exc:
            if error_code(exc) != DEADLOCK or attempt == ATTEMPTS - 1:
                raise
    raise refused


def _row_inserted_or_updated(model, lookup: dict, defaults: dict):
    """One try: the INSERT in a transaction of its own, or, refused, the row it met updated and read. Raises
    the INSERT's IntegrityError when there is no row by then, and a deadlock of either statement."""
    try:
        with transaction.atomic():
            return model.objects.create(**lookup, **defaults), True
    except IntegrityError:
        updates = dict(defaults)
        updates.update({f.name: timezone.now() for f in model._meta.concrete_fields if getattr(f, "auto_now", False)})
        model.objects.filter(**lookup).update(**updates)
        row = model.objects.filter(**lookup).first()
        if row is None:
            raise
        return row, False


def rows_by_primary_key(rows):
    """The rows `rows` finds now, read without a lock, as a queryset that reaches them through their primary
    key alone: its UPDATE or DELETE locks each row's primary key first, in primary-key order. For rows
    that cannot change meanwhile, or whose change does not matter, or whose UPDATE checks again in its SET
    what must still hold (a Case: notifications.subscriptions.back_in_stock_announce); else rows_locked.

    A write that finds its rows through another index (a SKU's) locks each row's entry there first, then
    the row. A DELETE finding the same row through a third index (a device's) locks the row, then changes
    that first entry as it removes it: the two wait for each other, and MariaDB rolls one back (deadlock,
    1213), a 503. Writers that all reach the rows through their primary key queue instead."""
    return rows.model.objects.filter(pk__in=list(rows.values_list("pk", flat=True)))


def rows_locked(rows, *fields) -> list[tuple]:
    """Lock the rows `rows` finds now through their primary key, in primary-key order (rows_by_primary_key
    says why), until the caller's transaction ends; return each one's primary key and `fields` as they are
    under the lock, for the caller to check again what must still hold and write by primary key. Checked
    here, not in the write's WHERE: a condition on an indexed column (notified_at IS NULL) can send MariaDB
    through that index instead, and the deadlock back."""
    return list(rows_by_primary_key(rows).select_for_update().order_by("pk").values_list("pk", *fields))

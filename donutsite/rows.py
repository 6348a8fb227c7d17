"""Creating a row that many requests may create at the same moment (a double tap on "notify me")."""

from django.db import IntegrityError, transaction
from django.utils import timezone


def row_create_or_update(model, lookup: dict, defaults: dict):
    """`update_or_create` for a row with a unique key that concurrent requests race to create. Returns
    (row, created).

    The INSERT comes first, in a transaction of its own; if the unique key refuses it, the row that won
    is updated. Django's update_or_create instead locks the row (SELECT FOR UPDATE) after its INSERT
    failed, in the same transaction: two losers then each hold the duplicate-key check's shared lock
    and wait for the other's, and MariaDB kills one (deadlock, 1213), a 503 for a harmless repeat. Call
    it outside a transaction, so that the INSERT's locks end with it."""
    try:
        with transaction.atomic():
            return model.objects.create(**lookup, **defaults), True
    except IntegrityError as exc:
        refused = exc
    updates = dict(defaults)
    updates.update({f.name: timezone.now() for f in model._meta.concrete_fields if getattr(f, "auto_now", False)})
    model.objects.filter(**lookup).update(**updates)
    row = model.objects.filter(**lookup).first()
    if row is None:  # not the unique key (a foreign key gone meanwhile): a real error
        raise refused
    return row, False

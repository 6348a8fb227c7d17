"""Failed restocks made pending again: a dead letter's redrive, and a new need's reopen; and the purge of
old resolved dead letters (`manage.py purge_dead_letters`).

Redrive (the admin's action and button, the dashboard's "Redrive all", `manage.py redrive`) goes through
dead_letters_redrive, whose Redrive words the outcome for all three: a failed restock is reopened with a
fresh attempt budget and sent again (superseded by a newer restock of its product, it is settled and
nothing is sent); a dead letter of no restock has its message sent again to the queue it failed on.
A new need reopens a failed restock in inventory (restocks_open), whose signals ask restock_order_refused
first and have restock_run_afresh give its order row a fresh budget (factory/apps.py).

Dead letters are written in factory/retries.py; resolving them where ops look (their alerts, their copy in
the dead-letter queue) and settling them when the factory has the order after all are factory/services.py's,
as is sending a restock (restock_dispatch). This module imports services; services never imports it.
"""

import logging
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from donutsite.celery import task_publish
from factory.client import ORDER_REFUSED
from factory.models import DeadLetter, FactoryAttempt
from factory.services import (
    _dead_letter_resolved,
    _dead_letter_settled,
    _order_row_locked,
    _order_run_afresh,
    restock_dispatch,
)
from inventory.models import Restock
from inventory.services import products_lock

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Superseded:
    """dead_letter_redrive's answer for a failed restock that a newer restock of its product took over:
    nothing was sent (it is false, like "nothing to do"), and the dead letter is settled."""

    restock_id: int  # the newest restock of the product
    status: str

    def __bool__(self) -> bool:
        return False


class SentAlready:
    """dead_letter_redrive's answer for a restock a new need reopened: it is pending and on its way to the
    factory again, so nothing is sent (it is false, like "nothing to do"), and its dead letter is neither
    redriven nor settled: it stays open until the factory takes the order."""

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "SENT_ALREADY"


SENT_ALREADY = SentAlready()


@dataclass
class Redrive:
    """What one redrive run did (or, with dry_run, would do): the one wording every caller shows."""

    dry_run: bool = False
    sent: list[DeadLetter] = field(default_factory=list)
    nothing: list[DeadLetter] = field(default_factory=list)
    unsent: list[DeadLetter] = field(default_factory=list)  # the broker did not take it: still waiting
    superseded: list[tuple[DeadLetter, Superseded]] = field(default_factory=list)
    sent_already: list[DeadLetter] = field(default_factory=list)  # a new need reopened its restock

    NOTHING_TO_DO = "nothing to do (redriven or settled already)"
    NOT_SENT = "not sent, the broker did not take it: still waiting, redrive it again"
    ON_ITS_WAY = "already sent again (a new need reopened its restock): left open until the factory takes it"
    ON_THEIR_WAY = "already sent again (new needs reopened their restocks): left open until the factory takes them"

    @staticmethod
    def outcome(sent: bool | Superseded | SentAlready | None, *, dry_run: bool = False) -> str:
        """sent: True, False (nothing to do), Superseded, SENT_ALREADY or None (not sent), as
        dead_letter_redrive returns it."""
        if sent is None:
            return Redrive.NOT_SENT
        if sent is SENT_ALREADY:
            return Redrive.ON_ITS_WAY
        if isinstance(sent, Superseded):
            return (
                f"superseded by restock {sent.restock_id} ({sent.status}) of the same product: "
                f"{Redrive._settled(dry_run)}, nothing sent"
            )
        if sent:
            return "would be sent again" if dry_run else "sent again"
        return Redrive.NOTHING_TO_DO

    @staticmethod
    def _settled(dry_run: bool) -> str:
        return "would be settled" if dry_run else "settled"

    def outcome_of_one(self) -> str:
        """The outcome of a run of one dead letter."""
        if self.superseded:
            return self.outcome(self.superseded[0][1], dry_run=self.dry_run)
        if self.sent_already:
            return self.outcome(SENT_ALREADY, dry_run=self.dry_run)
        return self.outcome(True if self.sent else None if self.unsent else False, dry_run=self.dry_run)

    def summary(self) -> str:
        if not (self.sent or self.nothing or self.unsent or self.superseded or self.sent_already):
            return "There were no dead letters to redrive."
        sent, nothing = len(self.sent), len(self.nothing)
        text = (
            f"{sent} dead letter{'s' if sent != 1 else ''} {self.outcome(True, dry_run=self.dry_run)}; "
            f"{nothing} had {self.NOTHING_TO_DO}."
        )
        if self.superseded:
            text += (
                f" {len(self.superseded)} superseded by a newer restock of its product: "
                f"{self._settled(self.dry_run)}, nothing sent."
            )
        if self.sent_already:
            many = len(self.sent_already) != 1
            text += f" {len(self.sent_already)} {self.ON_THEIR_WAY if many else self.ON_ITS_WAY}."
        if self.unsent:
            text += f" {len(self.unsent)} {self.NOT_SENT}."
        return f"Dry run: {text} Nothing changed." if self.dry_run else text


def dead_letters_redrive(dead_letters, *, by: str, user=None, dry_run: bool = False, on_each=None) -> Redrive:
    """Redrive each dead letter, oldest first (dead_letter_redrive); `on_each(dead_letter, sent)` lets the
    caller log each one (the admin's history). Each redrive commits on its own and sends after that."""
    result = Redrive(dry_run=dry_run)
    # A dry run reopens nothing, so it notes the products it would reopen a restock of: the real run then
    # finds each such product with an open restock and has nothing to do for its other failed ones.
    planned: set[int] = set()
    for dead_letter in sorted(dead_letters, key=lambda d: d.pk):
        sent = dead_letter_redrive(dead_letter, by=by, user=user, dry_run=dry_run, planned=planned)
        if isinstance(sent, Superseded):
            result.superseded.append((dead_letter, sent))
        elif sent is SENT_ALREADY:
            result.sent_already.append(dead_letter)
        else:
            {True: result.sent, False: result.nothing, None: result.unsent}[sent].append(dead_letter)
        if on_each is not None:
            on_each(dead_letter, sent)
    return result


def dead_letter_redrive(
    dead_letter: DeadLetter, *, by: str, user=None, dry_run: bool = False, planned: set[int] | None = None
) -> bool | Superseded | SentAlready | None:
    """Send a dead letter's work back to its original queue; a failed restock is reopened first (pending,
    a fresh attempt budget; its calls keep their numbers). Locks the product's row, the restock's, then
    the dead letter's.
    Returns False, sending nothing, when there is nothing to do: the restock is no longer failed
    (redriven already, or settled since), or its product has another open restock by now; a dead letter
    of no restock was sent again already. Returns SENT_ALREADY (false too), sending nothing, for a restock
    a new need reopened: it is on its way again, and its dead letter stays open (it resolves when the
    factory takes the order). Returns Superseded, sending nothing, for a failed restock whose
    product has a newer restock, whatever became of it: that one took the need over (open, it covers it;
    received, it met it), and reopening this one would order the same donuts again; its dead letters are
    settled as superseded. So a repeat is harmless. Either way the dead letter (with any
    other of its reopened restock's) is resolved where ops look: its alerts acknowledged (by `user` when
    a person did it) and its copy taken out of the dead-letter queue. A restock's work is sent after
    commit (the sweep resends it if the broker is away); the work of a dead letter of no restock, which no
    sweep resends, is sent first and the dead letter resolved only once the broker took it: None when it
    did not (the dead letter waits as before). With dry_run, says what it would do and changes nothing;
    `planned` carries the products a dry run of several would already have reopened a restock of.
    """
    if not dead_letter.restock_id:  # set when it is written, never changed
        return _task_redrive(dead_letter, by=by, user=user, dry_run=dry_run)
    if dry_run:
        if _restock_sent_already(dead_letter):
            return SENT_ALREADY
        return _restock_reopenable(dead_letter.restock_id, set() if planned is None else planned)
    product_id = Restock.objects.filter(pk=dead_letter.restock_id).values_list("product_id", flat=True).first()
    with transaction.atomic():
        locked = _locked_for_redrive(product_id, dead_letter)
        newer = _restock_superseded_by(locked.restock_id)
        if newer is not None:
            _superseded_settled(locked, newer, by=by, user=user)
            return newer
        if _restock_sent_already(locked):
            _sent_already_left_open(locked)
            return SENT_ALREADY
        if not _restock_reopen(locked.restock_id):
            _nothing_to_redrive(locked, by=by, user=user)
            return False
        _restock_redriven(locked, by=by, user=user)
    return True


def _locked_for_redrive(product_id: int | None, dead_letter: DeadLetter) -> DeadLetter:
    """The product, the restock, then its dead letter, in the order the receipt takes them: a late callback
    arriving during a redrive waits for it instead of deadlocking. Reopening opens a restock, which only a
    holder of the product's lock may do (restocks_open): a sale that needs one meanwhile waits and finds this
    one, instead of inserting a second that the unique open_product refuses. Returns the dead letter locked."""
    if product_id is not None:
        products_lock([product_id])
    list(Restock.objects.select_for_update().filter(pk=dead_letter.restock_id).values_list("pk"))
    return DeadLetter.objects.select_for_update().get(pk=dead_letter.pk)


def _superseded_settled(locked: DeadLetter, newer: Superseded, *, by: str, user) -> None:
    logger.info(
        "dead letter %s: restock %s was superseded by restock %s; settled, nothing sent",
        locked.pk,
        locked.restock_id,
        newer.restock_id,
    )
    settled_by = f"superseded by restock {newer.restock_id} ({by})"
    # This one, if open, and any other.
    for open_one in DeadLetter.objects.restock_unresolved_locked(locked.restock_id):
        _dead_letter_settled(open_one, by=settled_by, user=user)


def _sent_already_left_open(locked: DeadLetter) -> None:
    """Pending with its dead letter open: a new need reopened it (a redrive resolves them), and it is on its way
    again. Nothing to send; the dead letter stays open until the factory takes the order, and is brought up to
    date if it fails again: settled here, that failure was a second dead letter."""
    logger.info(
        "dead letter %s: restock %s was reopened by a new need and is being sent again; left open until "
        "the factory takes it",
        locked.pk,
        locked.restock_id,
    )


def _nothing_to_redrive(locked: DeadLetter, *, by: str, user) -> None:
    logger.info(
        "dead letter %s: restock %s is no longer failed, or its product has another open restock; nothing to redrive",
        locked.pk,
        locked.restock_id,
    )
    if locked.redriven_at is None:  # settled some other way: resolved, though nothing was sent
        _dead_letter_settled(locked, by=by, user=user)


def _restock_redriven(locked: DeadLetter, *, by: str, user) -> None:
    """The restock reopened: its dead letter redriven and resolved, and its work sent after commit."""
    _mark_redriven(locked, by)
    _dead_letter_resolved(locked, user)
    # Any other dead letter of the restock (it failed again after an earlier redrive of this one) is
    # about the same work, sent again now: resolved too, not left waiting for a restock that is pending.
    for other in DeadLetter.objects.restock_unresolved_locked(locked.restock_id):
        _dead_letter_settled(other, by=by, user=user)
    # Records the dispatch; the sweep resends it if the broker is away.
    transaction.on_commit(partial(restock_dispatch, locked.restock_id))


def _restock_sent_already(dead_letter: DeadLetter) -> bool:
    """An open dead letter of a pending restock: a new need reopened it (a redrive resolves its dead letters)."""
    return dead_letter.redriven_at is None and Restock.objects.pending().filter(pk=dead_letter.restock_id).exists()


def _task_redrive(dead_letter: DeadLetter, *, by: str, user, dry_run: bool) -> bool | None:
    """dead_letter_redrive of a dead letter of no restock: its message is sent again as it was, and as no
    sweep resends it, the dead letter is resolved only once the broker took it."""
    if dry_run:
        return dead_letter.redriven_at is None
    with transaction.atomic():
        locked = DeadLetter.objects.select_for_update().get(pk=dead_letter.pk)
        if locked.redriven_at is not None:
            logger.info("dead letter %s: sent again already; nothing to redrive", locked.pk)
            return False
        _mark_redriven(locked, by)  # claimed: a concurrent redrive of it finds nothing to do
    # Explicit queue: the one the message ran on when it failed, which the routes may since have changed.
    if not task_publish(locked.task_name, locked.args, kwargs=locked.kwargs, queue=locked.queue):
        DeadLetter.objects.filter(pk=locked.pk).update(
            redriven_at=None, redriven_by="", redrive_count=F("redrive_count") - 1
        )
        logger.warning("dead letter %s: not sent again, the broker did not take it; it still waits", locked.pk)
        return None
    with transaction.atomic():
        _dead_letter_resolved(locked, user)
    return True


def _restock_superseded_by(restock_id: int) -> Superseded | None:
    """A failed restock's product has a newer restock: that one took the need over. Call with the product's
    row locked (no restock is opened meanwhile)."""
    restock = Restock.objects.failed().filter(pk=restock_id).values("product_id").first()
    newer = (
        restock
        and Restock.objects.filter(product_id=restock["product_id"], pk__gt=restock_id)
        .order_by("-pk")
        .values("pk", "status")
        .first()
    )
    return Superseded(newer["pk"], newer["status"]) if newer else None


def _restock_reopenable(restock_id: int, planned: set[int]) -> bool | Superseded:
    """Would _restock_reopen reopen it, after the restocks of the `planned` products were reopened (then
    this one's product is added to them)? Superseded if a newer restock of its product took it over."""
    newer = _restock_superseded_by(restock_id)
    if newer is not None:
        return newer
    restock = Restock.objects.filter(pk=restock_id).values("status", "product_id").first()
    reopenable = (
        restock is not None
        and restock["status"] == Restock.Status.FAILED
        and restock["product_id"] not in planned
        and not Restock.objects.open().filter(product_id=restock["product_id"]).exists()
    )
    if reopenable:
        planned.add(restock["product_id"])
    return reopenable


def _restock_reopen(restock_id: int) -> bool:
    try:
        with transaction.atomic():  # a savepoint: the unique open_product column refuses a second open restock
            reopened = (
                Restock.objects.failed().filter(pk=restock_id).update(status=Restock.Status.PENDING, closed_at=None)
            )
    except IntegrityError:
        return False  # the product has another open restock, which already covers the need
    if reopened:
        restock_run_afresh(restock_id)
    return bool(reopened)


def restock_order_refused(restock_id: int) -> bool:
    """Whether the factory refused a failed restock's order itself at its last call (ORDER_REFUSED): then no
    order of ours is under its reference (a resend of an order the factory has is answered 200), and the
    same call would be refused again, so a new need opens a new restock instead of reopening it. Any other
    refusal (a wrong key's 401, a 404 from a wrong URL) says nothing of the order an earlier call may have
    made: only this reference finds it."""
    last = FactoryAttempt.objects.filter(restock_id=restock_id).order_by("-number", "-pk").first()
    return last is not None and last.outcome == FactoryAttempt.Outcome.PERMANENT and last.status_code in ORDER_REFUSED


def restock_run_afresh(restock_id: int) -> None:
    """A failed restock pending again (a redrive, or inventory reopening it for a new need through its
    restock_reopened signal): its order row gets a fresh attempt budget, noted as redriven now. Its dead
    letters are the caller's: a redrive resolves them; a new need leaves them until the factory takes the
    order (restock_place). Call in the transaction that reopened it, with the restock's row locked."""
    _order_row_locked(restock_id)
    _order_run_afresh(restock_id, last_error="", redriven_at=timezone.now())


def _mark_redriven(dead_letter: DeadLetter, by: str) -> None:
    dead_letter.redriven_at = timezone.now()
    dead_letter.redriven_by = by[:150]
    dead_letter.redrive_count += 1
    dead_letter.save(update_fields=["redriven_at", "redriven_by", "redrive_count"])


def dead_letters_purge(*, older_than_days: int, dry_run: bool = False) -> int:
    """Delete resolved dead letters (redriven, or settled by the factory) older than N days."""
    old = DeadLetter.objects.resolved().filter(last_failed_at__lt=timezone.now() - timedelta(days=older_than_days))
    return old.count() if dry_run else old.delete()[0]

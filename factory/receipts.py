"""The factory's word that production is done: a completion callback authenticated (callback_authenticate,
the view's DRF authentication) and its receipt applied (restock_receive: stock grows, the restock is fulfilled
or cancelled, and ops are warned of a receipt reporting more than was ordered, another ordered quantity, more
than on-hand can hold, or nothing at all); and the poll of an overdue order (restock_poll, the sweep's task),
whose finished order goes through the same receipt, and whose order still being made, or unknown to the
factory, has the restock placed, or placed again.

Handing restocks to the queue, placing orders, the sweep, overdue alerts and settling the dead letters of an
order the factory had after all are factory/services.py's. This module imports services; services never
imports it.
"""

import logging
import re
from functools import partial

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from factory import refusals, signatures
from factory.client import FactoryClient, FactoryError, RemoteOrder
from factory.errors import CallbackMismatch, InvalidSignature, UnknownOrder
from factory.models import FactoryOrder
from factory.services import (
    _dead_letters_settled_by_factory,
    _not_asked_lately,
    _order_placed,
    _order_row,
    _order_row_locked,
    _order_run_afresh,
    callback_mismatch_dedupe_key,
    restock_dispatch,
    restock_warnings_close,
)
from inventory.models import Product, Restock, StockMovement
from inventory.services import ON_HAND_MAX, products_lock, restocks_open
from notifications.alerts import alert_raise, alerts_settle
from notifications.models import Alert
from notifications.subscriptions import back_in_stock_announce

logger = logging.getLogger(__name__)


def callback_authenticate(*, raw: bytes, timestamp: str | None, signature: str | None, remote_addr: str) -> None:
    """Accept a callback only if it is signed with FACTORY_CALLBACK_SECRET and fresh. A refusal is counted
    and raised, and the first of its window raises the warning alert (factory/refusals.py, its own
    transaction); an address over its refused callbacks is answered 429 instead. A genuine callback is
    never throttled, whatever else came from its address (a proxy or NAT it shares with a forger)."""
    problem = signatures.check(settings.FACTORY_CALLBACK_SECRET, timestamp, signature, raw)
    if not problem:
        return
    refusals.callback_refusals_check(remote_addr)
    refusals.callback_refused(problem=problem, address=remote_addr)
    raise InvalidSignature(f"Callback refused: {problem}.")


def callback_receive(
    *, order_id: str, reference: str, event: str, quantity_produced: int, sku: str, quantity: int
) -> tuple[Restock, bool]:
    """restock_receive for a signed callback. One that names our restock but contradicts it (another SKU, or
    another factory order id than the restock was placed as) is refused with CallbackMismatch as before, the
    factory sending it again until it gives up; ops are told at once (_callback_mismatch_told), not when the
    restock turns overdue hours later. The refusal is the factory's answer whatever the telling meets: a
    failure there is logged, not turned into a 500."""
    callback = dict(
        order_id=order_id,
        reference=reference,
        event=event,
        quantity_produced=quantity_produced,
        sku=sku,
        quantity=quantity,
    )
    try:
        return restock_receive(**callback)
    except CallbackMismatch as mismatch:
        try:
            _callback_mismatch_told(mismatch, **callback)
        except Exception:
            logger.exception("restock %s: the refused callback could not be told to ops", reference)
        raise


def restock_receive(
    *,
    order_id: str,
    reference: str,
    event: str,
    quantity_produced: int,
    sku: str | None = None,
    quantity: int | None = None,
) -> tuple[Restock, bool]:
    """Apply the factory's completion (or cancellation) of an order. Idempotent.

    Locks the product row then the restock row. Stock grows by `quantity_produced` with a receipt
    movement; the restock becomes fulfilled or cancelled. A receipt that leaves the product at or below
    its reorder point opens a new restock; one that brought nothing (cancelled, or none produced) opens
    none and warns ops. `quantity` is what the factory says was ordered: one other than the restock's is
    received all the same, with a warning. Returns (restock, applied); applied is False for a duplicate.
    """
    restock = _restock_for(order_id=order_id, reference=reference)
    if sku is not None and sku != restock.product.sku:
        raise CallbackMismatch(f"Order {order_id} is for {restock.product.sku}, not {sku}.")
    cancelled = event == "order.cancelled"
    with transaction.atomic():
        product = products_lock([restock.product_id])[restock.product_id]
        restock = Restock.objects.select_for_update().get(pk=restock.pk)
        if restock.status in (Restock.Status.FULFILLED, Restock.Status.CANCELLED):
            return restock, False
        # Before any warning below takes its alert lock: a refused callback's warning takes this row, then its
        # own (_callback_mismatch_told).
        _order_row_locked(restock.pk)
        received = produced = 0 if cancelled else quantity_produced
        # Another ordered quantity is the factory's record disagreeing with ours, not a reason to refuse the
        # donuts: a refusal is sent again until the factory gives up, and the overdue poll meets the same order.
        ordered_otherwise = quantity if quantity not in (None, restock.quantity) else None
        if received > restock.quantity:
            received = _over_quantity_capped(restock, order_id, reported=received, reported_order=ordered_otherwise)
        if received > ON_HAND_MAX - product.on_hand:  # a 500 here would have the factory resend it for ever
            received = _over_capacity_capped(restock, product, order_id, reported=received)
        # Else the over-quantity warning names it, or the warning that the order brought nothing does.
        if ordered_otherwise and 0 < produced <= restock.quantity:
            _ordered_quantity_differs(
                restock, order_id, reported=ordered_otherwise, produced=produced, received=received
            )
        was_sold_out = product.on_hand == 0
        if received:
            Product.objects.filter(pk=product.pk).update(on_hand=F("on_hand") + received)
            StockMovement.objects.create(
                product=product,
                kind=StockMovement.Kind.RECEIPT,
                quantity=received,
                restock=restock,
                reason=f"factory order {order_id}",
            )
            product.on_hand += received
        restock.status = Restock.Status.CANCELLED if cancelled else Restock.Status.FULFILLED
        restock.quantity_received = received
        restock.closed_at = timezone.now()
        restock.save(update_fields=["status", "quantity_received", "closed_at", "updated_at"])
        FactoryOrder.objects.filter(restock_id=restock.pk).update(order_id=order_id, claimed_at=None)
        # Settled: an overdue alert about it is closed, and so is its dead letter, if the factory had the order
        # after all (a late callback, or the poll, for a restock that gave up): nothing is left to redrive.
        restock_warnings_close(restock.pk, received=True)
        _dead_letters_settled_by_factory(restock.pk, order_id)
        if not received:
            _nothing_received(restock, product, order_id, cancelled=cancelled, reported_order=ordered_otherwise)
        else:
            # The factory delivers this SKU again: its cancellation warning is over, not pushed to the ops
            # phones ALERT_ESCALATE_AFTER_SECONDS later (the Slack message stays as the record).
            alerts_settle(_cancelled_dedupe_key(product.sku))
            if product.needs_reorder and product.is_active:
                restocks_open([product], reason=Restock.Reason.REORDER_POINT)
        if was_sold_out and received and product.is_active:  # a retired product is not for sale: no push
            back_in_stock_announce(product.sku, product.name)
    logger.info("restock %s %s: +%s %s", restock.pk, restock.status, received, product.sku)
    return restock, True


_RESTOCK_ID = re.compile(r"[0-9]{1,18}")


def _nothing_received(
    restock: Restock, product: Product, order_id: str, *, cancelled: bool, reported_order: int | None
) -> None:
    """A receipt that brought nothing opens no restock of its own: a factory cancelling every order would
    otherwise be sent a new one the moment it cancels the last, for ever. The next sale that needs one
    opens it (a shortage, or a sale down to the reorder point), and ops hear of each such order, in one
    warning that also names another ordered quantity the factory gave (nothing came to count)."""
    theirs = f"; the factory's record of the order says {reported_order}" if reported_order else ""
    title = f"The factory cancelled a restock of {product.sku}"
    if not cancelled:
        title = f"The factory completed a restock of {product.sku} with nothing produced"
    alert_raise(
        kind="factory_cancelled",
        severity="warning",
        title=title,
        text=f"Restock {restock.pk} (factory order {order_id}, {restock.quantity} ordered) brought nothing{theirs}; "
        f"{product.sku} has {product.on_hand}. A new restock opens with the next sale that needs one; if "
        "the factory keeps cancelling, ask it why.",
        dedupe_key=_cancelled_dedupe_key(product.sku),
        context={"sku": product.sku, "restock_id": restock.pk, "order_id": order_id, "on_hand": product.on_hand},
    )


def _cancelled_dedupe_key(sku: str) -> str:
    return f"factory_cancelled:{sku}"


def _over_quantity_capped(restock: Restock, order_id: str, *, reported: int, reported_order: int | None) -> int:
    """The contract allows the factory to produce less than ordered, never more: credit what was
    ordered (the restock closes, nothing is left to retry) and let ops count the delivery."""
    theirs = f" The factory's callback names an order of {reported_order}." if reported_order else ""
    alert_raise(
        kind="factory_over_quantity",
        severity="warning",
        title=f"The factory reported {reported} {restock.product.sku} for an order of {restock.quantity}",
        text=f"Restock {restock.pk} (factory order {order_id}) was credited {restock.quantity}, what was ordered."
        f"{theirs} Count the delivery and adjust the stock if more really arrived.",
        dedupe_key=f"factory_over_quantity:{restock.pk}",
        context={
            "sku": restock.product.sku,
            "restock_id": restock.pk,
            "order_id": order_id,
            "ordered": restock.quantity,
            "reported": reported,
        },
    )
    return restock.quantity


def _ordered_quantity_differs(restock: Restock, order_id: str, *, reported: int, produced: int, received: int) -> None:
    """The factory names our order and reference but another ordered quantity: what it produced is
    received as usual, and ops check the factory's record of the order and the delivery."""
    sku = restock.product.sku
    alert_raise(
        kind="factory_quantity_mismatch",
        severity="warning",
        title=f"The factory has our order of {sku} as {reported}, not {restock.quantity}",
        text=f"Restock {restock.pk} (factory order {order_id}) ordered {restock.quantity} {sku}; the factory says "
        f"{reported} were ordered and {produced} produced, and the restock was credited {received}. Ask the "
        "factory what it has on record for the order, and count the delivery.",
        dedupe_key=f"factory_quantity_mismatch:{restock.pk}",
        context={
            "sku": sku,
            "restock_id": restock.pk,
            "order_id": order_id,
            "ordered": restock.quantity,
            "reported": reported,
        },
    )


def _over_capacity_capped(restock: Restock, product: Product, order_id: str, *, reported: int) -> int:
    """On-hand cannot hold more than ON_HAND_MAX: credit what fits and tell ops (stock set absurdly high)."""
    room = ON_HAND_MAX - product.on_hand
    alert_raise(
        kind="stock_over_capacity",
        severity="warning",
        title=f"{product.sku} cannot hold the {reported} the factory delivered",
        text=f"Restock {restock.pk} (factory order {order_id}) was credited {room}: on hand is {product.on_hand} "
        f"and can be at most {ON_HAND_MAX}. Check the product's stock (set_stock) and count the delivery.",
        dedupe_key=f"stock_over_capacity:{restock.pk}",
        context={"sku": product.sku, "restock_id": restock.pk, "order_id": order_id, "reported": reported},
    )
    return room


def _callback_mismatch_told(mismatch: CallbackMismatch, *, order_id: str, reference: str, **callback) -> None:
    """Ops' one warning about callbacks refused for contradicting their restock, and the restock's order row
    noting it (_poll_noted), so its overdue warning says why. In its own transaction, which the refusal
    leaves committed. Not for a restock received, cancelled or failed already: nothing waits on the first two,
    and a failed one's dead letter paged ops (restock_fail closes this warning, so the phones are not paged
    twice); a warning would be settled by nothing. Under the order row's lock: the receipt, the failure and
    the placing again close the warning after locking that row, so one raised after them sees the restock
    closed; and of the factory's resends, only the first finds no warning."""
    restock = _restock_named(order_id=order_id, reference=reference)
    with transaction.atomic():
        _order_row_locked(restock.pk)
        restock = Restock.objects.select_related("product").get(pk=restock.pk)
        if restock.status in (Restock.Status.FULFILLED, Restock.Status.CANCELLED, Restock.Status.FAILED):
            return
        ours = _order_id(restock.pk)
        said = (
            f"{callback['event']} of order {order_id} for {callback['quantity']} {callback['sku']} "
            f"({callback['quantity_produced']} produced)"
        )
        _poll_noted(restock, failure=f"a factory callback was refused: it said {said}; {mismatch}")
        dedupe_key = callback_mismatch_dedupe_key(restock.pk)
        if Alert.objects.filter(dedupe_key=dedupe_key, acknowledged_at__isnull=True).exists():
            return  # a resend; one closed with an earlier run of the restock is no word on this one
        sku = restock.product.sku
        named = f"order {order_id}" if ours and order_id != ours else callback["sku"]
        alert_raise(
            kind="factory_callback_mismatch",
            severity="warning",
            title=f"A factory callback for our restock of {sku} was refused: it names {named}",
            text=f"Restock {restock.pk} ({restock.quantity} {sku}, factory order {ours or '(not known yet)'}): the "
            f"factory's signed callback said {said}. It was refused ({mismatch}) and no stock was received. The "
            "factory sends it again until it gives up; ask it which order it made. This alert is acknowledged "
            "when the restock is received or cancelled, fails (its dead letter pages) or is placed again.",
            dedupe_key=dedupe_key,
            context={
                "sku": sku,
                "restock_id": restock.pk,
                "order_id": ours,
                "reported_sku": callback["sku"],
                "reported_order_id": order_id,
            },
        )


def _restock_for(*, order_id: str, reference: str) -> Restock:
    restock = _restock_named(order_id=order_id, reference=reference)
    known = _order_id(restock.pk)
    if known and order_id and known != order_id:
        raise CallbackMismatch(f"Restock {restock.pk} is factory order {known}, not {order_id}.")
    return restock


def _order_id(restock_id: int) -> str:
    return FactoryOrder.objects.filter(restock_id=restock_id).values_list("order_id", flat=True).first() or ""


def _restock_named(*, order_id: str, reference: str) -> Restock:
    prefix = f"{settings.FACTORY_REFERENCE_PREFIX}-"
    restock = None
    number = reference[len(prefix) :] if reference.startswith(prefix) else ""
    if _RESTOCK_ID.fullmatch(number):  # ASCII digits only: isdigit() and int() take "²" and "١" too
        restock = Restock.objects.select_related("product").filter(pk=int(number)).first()
    if restock is None and order_id:
        restock = Restock.objects.select_related("product").filter(factory_order__order_id=order_id).first()
    if restock is None:
        raise UnknownOrder(f"No restock for order {order_id!r} / reference {reference!r}.")
    return restock


def restock_poll(restock_id: int, *, client: FactoryClient | None = None) -> str:
    """Ask the factory about an overdue order; a finished one goes through the same receipt as a callback.
    A failed restock is asked about too: a call that failed may have created the order (an error after
    the factory stored it), and with its callback lost, production the factory finished would never be
    received. Found finished, it is received (which resolves its dead letter); found still being made, it is
    placed (_restock_found_placed); unknown, it stays failed. An answer about another order (its reference
    or SKU not this restock's) is refused with CallbackMismatch, and the next sweep asks again."""
    restock = Restock.objects.select_related("product").get(pk=restock_id)
    if restock.status not in (Restock.Status.PLACED, Restock.Status.FAILED):
        return "not placed"
    _order_row(restock.pk)
    # A claim, as restocks_overdue chooses: the sweep sends a poll at each run until one has asked, so with
    # polls waiting behind a backlog several arrive together, and only the first calls the factory.
    now = timezone.now()
    if not FactoryOrder.objects.filter(_not_asked_lately(now), restock_id=restock.pk).update(last_polled_at=now):
        return "asked already"
    order_id = FactoryOrder.objects.filter(restock_id=restock.pk).values_list("order_id", flat=True).get()
    client = client or FactoryClient()
    try:
        order = client.get_order(order_id) if order_id else None
        if order is None:
            order = client.find_order(restock.reference)
    except FactoryError as exc:
        _poll_noted(restock, failure=f"asking the factory failed: {exc}")
        raise
    if order is None:
        if restock.status == Restock.Status.PLACED and _restock_place_again(restock.pk):
            logger.warning("restock %s: the factory knows no order %s; placed again", restock.pk, restock.reference)
            return "placed again"
        logger.warning("restock %s: the factory knows no order %s", restock.pk, restock.reference)
        return "unknown at the factory"
    if not _is_restocks_order(restock, order, order_id):
        mismatch = CallbackMismatch(
            f"Factory order {order.order_id} is {order.reference} for {order.sku}, "
            f"not {restock.reference} for {restock.product.sku}."
        )
        _poll_noted(restock, failure=f"the factory's answer was about another order: {mismatch}")
        raise mismatch
    if order.status not in RemoteOrder.FINISHED:
        if restock.status == Restock.Status.FAILED and _restock_found_placed(restock, order):
            logger.warning(
                "restock %s: the factory has it as order %s (%s); placed", restock.pk, order.order_id, order.status
            )
        elif restock.status == Restock.Status.PLACED:
            if order.estimated_ready_at:
                Restock.objects.filter(pk=restock.pk).update(expected_at=order.estimated_ready_at)
            _poll_noted(restock)  # answered: an earlier poll's failure no longer stands
        return order.status
    restock_receive(
        order_id=order.order_id,
        reference=order.reference,
        event=f"order.{order.status}",
        quantity_produced=order.quantity_produced or 0,
        sku=order.sku,
        quantity=order.quantity,
    )
    return order.status


def _poll_noted(restock: Restock, *, failure: str = "") -> None:
    """Keep why a placed restock's poll told nothing, or "" once the factory answered: its overdue warning
    says so, rather than that the factory reported no completion. A failed restock's last_error is its
    failure's, which its dead letter names, and stays."""
    if restock.status == Restock.Status.PLACED:
        FactoryOrder.objects.filter(restock_id=restock.pk).update(last_error=failure[:2000])


def _is_restocks_order(restock: Restock, order: RemoteOrder, order_id: str) -> bool:
    """Whether the factory's answer is about this restock's order: its SKU, and its reference, or the
    reference of the order id the restock holds as it was placed before FACTORY_REFERENCE_PREFIX changed
    (`<earlier prefix>-<restock id>`; its callback is credited by that id). A factory that answers our id
    with another order (one that reused ids, a stand-in restarted) would otherwise have its estimate or its
    receipt credited here."""
    if order.sku != restock.product.sku:
        return False
    placed_earlier = bool(order_id) and order.order_id == order_id and order.reference.endswith(f"-{restock.pk}")
    return order.reference == restock.reference or placed_earlier


def _restock_found_placed(restock: Restock, order: RemoteOrder) -> bool:
    """A failed restock whose order the factory has after all (a call that timed out or failed had created
    it) and is still making: placed, as its order object says, with its dead letters settled. Left failed,
    its product had no open restock, and the next sale needing one ordered the same donuts a second time.
    Only an order the factory would have answered our call with (our reference, SKU and quantity; anything
    else is the 409's order); not when the product has another open restock by now, which covers the need.
    Locks the product's row, the restock's, then its dead letters', as the receipt does."""
    if (order.reference, order.sku, order.quantity) != (restock.reference, restock.product.sku, restock.quantity):
        return False
    with transaction.atomic():
        products_lock([restock.product_id])
        try:
            with transaction.atomic():  # a savepoint: the unique open_product column refuses a second open restock
                placed = (
                    Restock.objects.failed()
                    .filter(pk=restock.pk)
                    .update(
                        status=Restock.Status.PLACED,
                        closed_at=None,
                        placed_at=timezone.now(),
                        expected_at=order.estimated_ready_at,
                    )
                )
        except IntegrityError:
            return False
        if not placed:
            return False
        _order_placed(restock.pk, order.order_id)
        _dead_letters_settled_by_factory(restock.pk, order.order_id)
    return True


def _restock_place_again(restock_id: int) -> bool:
    """A placed restock whose order the factory does not have, by its id nor by our reference (its order
    object is the source of truth): it is pending again and sent again under the same reference, with a
    fresh attempt budget. Otherwise it would stay open for ever, and the product, which may have only one
    open restock, could never be ordered again. Safe if the factory had the order after all: an order with
    that reference is answered as the existing one (200), not made twice. Its run's overdue warning is
    closed, as a failed restock's is: the new run is told of afresh, and a warning left open with the run it
    was about cleared would be closed by nothing, and escalated to the phones after the restock settled."""
    with transaction.atomic():
        again = (
            Restock.objects.placed()
            .filter(pk=restock_id)
            .update(status=Restock.Status.PENDING, placed_at=None, expected_at=None)
        )
        if again:
            _order_row_locked(restock_id)
            restock_warnings_close(restock_id)
            _order_run_afresh(
                restock_id, order_id="", last_error="the factory knew no such order when asked; placed again"
            )
            transaction.on_commit(partial(restock_dispatch, restock_id))
    return bool(again)

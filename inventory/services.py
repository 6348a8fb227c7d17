"""Writes to stock, sales and restocks. Every change of on-hand goes through here, with a ledger row."""

import difflib
import hashlib
import json
import logging
from collections.abc import Collection
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from functools import partial

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.models import NOT_PROVIDED, F, Sum
from django.utils import timezone
from rest_framework.fields import DateTimeField
from rest_framework.utils import encoders

from clients.models import ApiClient
from donutsite.context import request_id
from inventory import selectors
from inventory.errors import IdempotencyKeyReused, InvalidAdjustment, OutOfStock, SkuCaseTwin, UnknownSku
from inventory.models import (
    SKU_VALIDATOR,
    IdempotencyKey,
    Product,
    Restock,
    Sale,
    SaleLine,
    StockMovement,
    case_twin_message,
)
from inventory.signals import restock_opened, restock_reopen_asked, restock_reopened, restock_sold_out
from notifications.alerts import alert_raise
from notifications.subscriptions import (
    back_in_stock_announce,
    back_in_stock_withdraw,
    subscription_create,
    subscription_delete,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SaleItem:
    sku: str
    quantity: int


@dataclass
class SaleOutcome:
    sale: Sale | None
    lines: list[SaleLine] = field(default_factory=list)
    replayed: bool = False
    shortages: list[dict] = field(default_factory=list)


def products_lock(product_ids) -> dict[int, Product]:
    """Lock these product rows FOR UPDATE, always in primary-key order so that concurrent sales of
    overlapping products queue behind each other instead of deadlocking. Call inside a transaction.

    Hand-written (names from the model) rather than `select_for_update()`: a sale holds these locks
    until it commits, and building the ORM query cost more than its round trip (docs/benchmarks.md,
    "Sales"). Plain FOR UPDATE rather than CONTRIBUTING.md's `of=("self",)`: MariaDB does not support FOR
    UPDATE OF, and with no join both lock exactly the same rows."""
    ids = sorted(set(product_ids))
    sql = _SQL_PRODUCTS_LOCK % _placeholders(len(ids))
    if not connection.features.has_select_for_update:
        sql = sql.removesuffix(" FOR UPDATE")  # SQLite (`make run`'s default) locks the whole file instead
    with connection.cursor() as cursor:
        cursor.execute(sql, ids)
        rows = cursor.fetchall()
    return {
        row[0]: Product.from_db(
            connection.alias, _LOCKED_ATTNAMES, [f.to_python(v) for f, v in zip(_LOCKED_MODEL_FIELDS, row, strict=True)]
        )
        for row in rows
    }


_LOCKED_FIELDS = ("sku", "name", "price", "is_active", "on_hand", "reorder_point", "reorder_quantity")
_LOCKED_MODEL_FIELDS = [Product._meta.pk, *(Product._meta.get_field(name) for name in _LOCKED_FIELDS)]
_LOCKED_ATTNAMES = [f.attname for f in _LOCKED_MODEL_FIELDS]
_SQL_PRODUCTS_LOCK = (
    f"SELECT {', '.join(f.column for f in _LOCKED_MODEL_FIELDS)} FROM {Product._meta.db_table}"  # noqa: S608
    f" WHERE {Product._meta.pk.column} IN (%s) ORDER BY {Product._meta.pk.column} FOR UPDATE"
)


def _insert_sql(model, fields: tuple[str, ...]) -> str:
    """An INSERT of these fields of `model`, its table and column names taken from the model.

    Refuses, when this module is imported, a model with a NOT NULL column the statement would leave
    out: a new required field must be added here, not found by the first sale in production."""
    opts = model._meta
    columns = [opts.get_field(name).column for name in fields]
    left_out = [
        f.name
        for f in opts.concrete_fields
        if f.column not in columns and not (f.primary_key or f.generated or f.null or f.db_default is not NOT_PROVIDED)
    ]
    if left_out:
        raise ImproperlyConfigured(f"The sale's INSERT into {opts.db_table} leaves out NOT NULL {', '.join(left_out)}")
    quoted = ", ".join(connection.ops.quote_name(column) for column in columns)  # `key` is a reserved word
    return f"INSERT INTO {opts.db_table} ({quoted}) VALUES ({_placeholders(len(columns))})"  # noqa: S608 - names from the model


def _placeholders(count: int) -> str:
    return ", ".join(["%s"] * count)


# The statements a sale runs under the row locks. Nothing but placeholders is formatted into them at
# run time. Stock is taken as a relative decrement, so the CHECK constraint (on_hand >= 0) refuses an
# oversell even if the lock were ever lost: the tests see that as an IntegrityError.
_ON_HAND = Product._meta.get_field("on_hand").column
_SQL_ON_HAND_TAKE = (
    f"UPDATE {Product._meta.db_table} SET {_ON_HAND} = {_ON_HAND} - CASE {Product._meta.pk.column} %s END"  # noqa: S608
    f" WHERE {Product._meta.pk.column} IN (%s)"
)
_SQL_SALE_INSERT = _insert_sql(Sale, ("client", "idempotency_key", "total", "created_at"))
_SQL_LINES_INSERT = _insert_sql(SaleLine, ("sale", "product", "quantity", "unit_price", "line_total"))
_SQL_MOVEMENTS_INSERT = _insert_sql(StockMovement, ("product", "kind", "quantity", "sale", "reason", "created_at"))


def sale_create(*, client: ApiClient, items: list[SaleItem], idempotency_key: str = "") -> SaleOutcome:
    """Sell all items or none.

    A refusal that changes nothing is answered without locks: when a line is short and every short
    product already has an open restock, out_of_stock is answered from one plain read of the products
    and their open restocks (under READ COMMITTED it sees every sale and receipt committed before it
    ran), so a sold-out rush does not queue on the row lock. Otherwise the products' rows are locked
    (products_lock) for one short durable transaction: the stock is checked again under the lock, and
    if any line is short nothing is sold, a restock is opened for each short product that has none in
    that same transaction, and OutOfStock is raised after commit. A sale that leaves a product at or
    below its reorder point opens a restock too; one that takes the last one withdraws the back-in-stock
    pushes still owed for it (back_in_stock_withdraw). With an Idempotency-Key, a repeat of the same request
    gets the first answer again: the sale, or the same OutOfStock (with the Idempotent-Replayed
    header), even if stock came back meanwhile, so that a delayed original request cannot sell after
    its retry was told it did not. The key's unique row decides between concurrent requests under one
    key, whichever path each took: the first to commit is the answer of all.
    """
    request_hash = _request_hash(items) if idempotency_key else ""
    try:
        product_ids = selectors.product_ids_for_skus([item.sku for item in items])
    except UnknownSku:
        replay = idempotency_key and _idempotent_replay(client, idempotency_key, request_hash)
        if replay:  # the product was retired after this key's first answer, which still stands
            return _answer(replay)
        raise
    try:
        shortages = _refusal_read(items, product_ids) if _short_products.intersection(product_ids.values()) else []
        if shortages:
            outcome = _refusal_unlocked(client, shortages, idempotency_key, request_hash)
        else:
            replay = idempotency_key and _idempotent_replay(client, idempotency_key, request_hash)
            if replay:
                return _answer(replay)
            with transaction.atomic(durable=True):
                outcome = _sell(client, items, product_ids, idempotency_key, request_hash)
    except IntegrityError:
        # A concurrent request with the same key committed first; its answer is the answer.
        replay = idempotency_key and _idempotent_replay(client, idempotency_key, request_hash)
        if not replay:
            raise
        return _answer(replay)
    return _answer(outcome)


def _answer(outcome: SaleOutcome) -> SaleOutcome:
    if outcome.shortages:
        headers = {"Idempotent-Replayed": "true"} if outcome.replayed else None
        raise OutOfStock(details={"shortages": outcome.shortages}, headers=headers)
    return outcome


# Products this process last saw short (refused, or sold down to 0). Only a hint of when the lock-free
# read is worth its query: an order for none of them goes straight to the locks, so an ordinary sale
# pays nothing for the refusal path, and a stale entry costs one read that finds the stock and drops it.
_short_products: set[int] = set()


def _refusal_read(items, product_ids) -> list[dict]:
    """The shortages of this order, read in one plain statement (no lock), if it is a refusal that
    opens nothing: some line is short and every short product has an open restock. Empty when the
    order must take the locks: it may sell, a shortage needs a restock opened, or a product is retired.
    A refusal `_sell` makes before it looks at stock (a retired product) must be sent to the locks here
    too, or this read answers out_of_stock in its place; test_sold_out's property test compares the two
    paths only over the product fields it varies.

    Hand-written (names from the models): in a sold-out rush this statement is most of what a request
    does, and building it through the ORM cost more CPU than running it (docs/benchmarks.md, "Sales")."""
    ids = list(product_ids.values())
    rows = {row[0]: row for row in _read_without_ping(_SQL_REFUSAL_READ % _placeholders(len(ids)), ids)}
    shortages = []
    for item in items:
        row = rows.get(product_ids[item.sku])
        if row is None or not row[2]:
            return []
        pk, sku, _, on_hand, restock_id, restock_status, restock_quantity, expected_at = row
        if on_hand >= item.quantity:
            _short_products.discard(pk)
            continue
        if restock_id is None:
            return []
        if expected_at is not None:
            expected_at = connection.ops.convert_datetimefield_value(expected_at, None, connection)
        shortages.append(
            _shortage(sku, item.quantity, on_hand, restock_id, restock_status, restock_quantity, expected_at)
        )
    return shortages


def _read_without_ping(sql: str, params: list) -> list[tuple]:
    """The rows of a read-only statement in one round trip. Django pings the database before a
    request's first statement (CONN_HEALTH_CHECKS) so that a connection the server dropped is replaced
    instead of failing; here the statement itself is that check: if it fails, it runs once more on a
    new connection (a read repeats safely). The ping was half of a sold-out refusal's round trips
    (docs/benchmarks.md, "Sales")."""

    def rows():
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall()

    skipped = connection.connection is not None and not connection.health_check_done and not connection.in_atomic_block
    if skipped:
        connection.health_check_done = True
    try:
        return rows()
    except OperationalError:
        if not skipped:
            raise
        connection.close()
    return rows()


def _refusal_read_sql() -> str:
    product, restock = Product._meta, Restock._meta
    columns = [f"p.{product.get_field(name).column}" for name in ("id", "sku", "is_active", "on_hand")]
    columns += [f"r.{restock.get_field(name).column}" for name in ("id", "status", "quantity", "expected_at")]
    # open_product is the product's id while the restock is open and NULL after: unique, so this join
    # finds the one open restock, through its index.
    return (
        f"SELECT {', '.join(columns)} FROM {product.db_table} p"  # noqa: S608 - names from the models
        f" LEFT JOIN {restock.db_table} r ON r.{restock.get_field('open_product').column} = p.{product.pk.column}"
        f" WHERE p.{product.pk.column} IN (%s)"
    )


_SQL_REFUSAL_READ = _refusal_read_sql()


def _shortage(sku, requested, available, restock_id, restock_status, restock_quantity, expected_at) -> dict:
    if expected_at is not None:
        expected_at = _TIME.to_representation(expected_at)  # as every serializer writes a time
    restock = {"id": restock_id, "status": restock_status, "quantity": restock_quantity, "expected_at": expected_at}
    return {"sku": sku, "requested": requested, "available": available, "restock": restock}


_TIME = DateTimeField()


def _refusal(client, shortages, idempotency_key, request_hash) -> SaleOutcome:
    """The out_of_stock answer; with a key, stored under it (unique per client and key: a concurrent
    request under the same key that stored its answer first makes this raise IntegrityError)."""
    if idempotency_key:
        # Stored as it will be rendered, so that a replay answers exactly what this request did.
        shortages = json.loads(json.dumps(shortages, cls=encoders.JSONEncoder))
        _key_store(client, idempotency_key, request_hash, refusal={"shortages": shortages})
    return SaleOutcome(sale=None, shortages=shortages)


def _refusal_unlocked(client, shortages, idempotency_key, request_hash) -> SaleOutcome:
    """The lock-free refusal. Its key is stored without looking it up first: a fresh key (nearly every
    keyed request) costs one INSERT. A key already in use makes that INSERT fail, and its stored answer
    is the answer (the sale or refusal it got, or idempotency_key_reused); an expired one is deleted by
    that lookup and this refusal stored in its place."""
    try:
        return _refusal(client, shortages, idempotency_key, request_hash)
    except IntegrityError:
        replay = _idempotent_replay(client, idempotency_key, request_hash)
        if replay:
            return replay
    # A second IntegrityError: a concurrent request stored its answer under the key first (sale_create replays it).
    return _refusal(client, shortages, idempotency_key, request_hash)


def _sell(client, items, product_ids, idempotency_key, request_hash) -> SaleOutcome:
    products = products_lock(product_ids.values())
    wanted = [(products[product_ids[item.sku]], item.quantity) for item in items]
    inactive = [p.sku for p, _ in wanted if not p.is_active]
    if inactive:
        raise UnknownSku(f"Not for sale: {', '.join(inactive)}.", details={"skus": inactive})

    short = [(p, qty) for p, qty in wanted if p.on_hand < qty]
    _short_products.update(p.pk for p, _ in short)
    if short and idempotency_key:
        # A retry that waited on these locks behind the first request with its key finds the stock gone
        # to that very sale: answer the sale, not out_of_stock.
        replay = _idempotent_replay(client, idempotency_key, request_hash)
        if replay:
            return replay
    if short:
        restocks = restocks_open([p for p, _ in short], reason=Restock.Reason.SHORTAGE)
        shortages = []
        for p, qty in short:
            r = restocks[p.pk]
            shortages.append(_shortage(p.sku, qty, p.on_hand, r.pk, r.status, r.quantity, r.expected_at))
        return _refusal(client, shortages, idempotency_key, request_hash)

    sale, lines = _sale_write(client, wanted, idempotency_key)
    if idempotency_key:
        _key_store(client, idempotency_key, request_hash, sale=sale)

    _short_products.update(p.pk for p, _ in wanted if p.on_hand == 0)
    low = [p for p, _ in wanted if p.needs_reorder]
    sold_out = [p for p in low if p.on_hand == 0]
    if low:
        restocks_open(low, reason=Restock.Reason.REORDER_POINT, sold_out={p.pk for p in sold_out})
    if sold_out:
        back_in_stock_withdraw(*(p.sku for p in sold_out))  # one statement: a SKU at a time deadlocked
    for product in sold_out:
        alert_raise(
            kind="sold_out",
            severity="info",
            title=f"{product.sku} sold out",
            text=f"The last {product.name} just sold; a restock is open.",
            # One group for every SKU: a rush sells out dozens in minutes, and a message each would bury
            # the alerts that need someone. The summary names them all.
            dedupe_key="sold_out",
            context={"sku": product.sku},
        )
    return SaleOutcome(sale=sale, lines=lines)


def _sale_write(client, wanted, idempotency_key) -> tuple[Sale, list[SaleLine]]:
    """Take the stock and record the sale, its lines and their ledger rows: four statements, written
    by hand because they run while the caller holds the products' row locks (docs/benchmarks.md,
    "Sales", says what that buys)."""
    now = timezone.now()
    created_at = connection.ops.adapt_datetimefield_value(now)
    lines = [SaleLine(product=p, quantity=qty, unit_price=p.price, line_total=p.price * qty) for p, qty in wanted]
    total = sum((line.line_total for line in lines), Decimal("0"))
    with connection.cursor() as cursor:
        cursor.execute(
            _SQL_ON_HAND_TAKE % (" ".join(["WHEN %s THEN %s"] * len(wanted)), _placeholders(len(wanted))),
            [v for p, qty in wanted for v in (p.pk, qty)] + [p.pk for p, _ in wanted],
        )
        cursor.execute(_SQL_SALE_INSERT, [client.pk, idempotency_key, total, created_at])
        sale = Sale.from_db(
            connection.alias,
            ["id", "client_id", "idempotency_key", "total", "created_at"],
            [cursor.lastrowid, client.pk, idempotency_key, total, now],
        )
        cursor.executemany(
            _SQL_LINES_INSERT, [(sale.pk, ln.product.pk, ln.quantity, ln.unit_price, ln.line_total) for ln in lines]
        )
        cursor.executemany(
            _SQL_MOVEMENTS_INSERT,
            [(p.pk, StockMovement.Kind.SALE.value, -qty, sale.pk, "", created_at) for p, qty in wanted],
        )
    for product, qty in wanted:
        product.on_hand -= qty
    sale.client = client
    for line in lines:
        line.sale = sale
    return sale, lines


def _key_store(client, key, request_hash, *, sale=None, refusal=None) -> None:
    """Remember the key's first answer: one INSERT, raising IntegrityError if the client already used
    the key (unique per client and key). Written by hand like the sale's statements: in a sold-out rush
    with keys this is half of what a refusal costs, and the ORM's create cost more CPU than the
    statement (docs/benchmarks.md, "Sales")."""
    refusal_value = _KEY_REFUSAL_FIELD.get_db_prep_save(refusal, connection)
    created_at = connection.ops.adapt_datetimefield_value(timezone.now())
    with connection.cursor() as cursor:
        cursor.execute(_SQL_KEY_INSERT, [client.pk, key, request_hash, sale and sale.pk, refusal_value, created_at])


_KEY_REFUSAL_FIELD = IdempotencyKey._meta.get_field("refusal")
_SQL_KEY_INSERT = _insert_sql(IdempotencyKey, ("client", "key", "request_hash", "sale", "refusal", "created_at"))


def _request_hash(items: list[SaleItem]) -> str:
    canonical = json.dumps(sorted((item.sku, item.quantity) for item in items))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _idempotent_replay(client, key, request_hash) -> SaleOutcome | None:
    record = IdempotencyKey.objects.filter(client=client, key=key).select_related("sale").first()
    if record is None:
        return None
    if record.created_at < timezone.now() - timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS):
        record.delete()  # expired: the key may be used afresh
        return None
    if record.request_hash != request_hash:
        raise IdempotencyKeyReused()
    if record.sale is None:
        return SaleOutcome(sale=None, shortages=record.refusal["shortages"], replayed=True)
    lines = list(record.sale.lines.select_related("product").order_by("pk"))
    return SaleOutcome(sale=record.sale, lines=lines, replayed=True)


def restocks_open(products: list[Product], *, reason: str, sold_out: Collection[int] = ()) -> dict[int, Restock]:
    """The open restock of each product, opening one where there is none.

    The caller holds the products' row locks (products_lock), which serializes this check-then-insert
    per product; the unique `open_product` column backs it in the database. Where the product's latest
    restock failed, that one is reopened instead of a new one inserted (_restock_reopen_failed). After
    commit, each restock opened is announced (signals.restock_opened), and the factory app hands it to
    its queue. A new restock keeps the current request id, which follows it to the factory call
    (X-Request-ID), its dead letter and its alerts.

    `sold_out`: the ids of products this transaction took the last of, whose restock is as urgent as a
    shortage's. One opened here says so in its announcement, so its one send takes the shortage route;
    one already open, routine and pending, is hurried there after commit (signals.restock_sold_out). Not
    both for one restock: a restock opened and hurried by one sale was two messages, and with the broker
    away two "not sent" lines for it in the log.
    """
    by_product = {r.product_id: r for r in Restock.objects.open().filter(product__in=products)}
    for product in products:
        restock = by_product.get(product.pk)
        if restock is not None:
            if product.pk in sold_out and _restock_routine_pending(restock):
                transaction.on_commit(partial(restock_sold_out.send, sender=Restock, restock_id=restock.pk))
            continue
        restock = _restock_reopen_failed(product, reason=reason) or Restock.objects.create(
            product=product, quantity=product.reorder_quantity, reason=reason, correlation_id=request_id.get()
        )
        by_product[product.pk] = restock
        announce = partial(
            restock_opened.send, sender=Restock, restock_id=restock.pk, reason=reason, sold_out=product.pk in sold_out
        )
        transaction.on_commit(announce)
    return by_product


def _restock_routine_pending(restock: Restock) -> bool:
    return restock.reason not in Restock.URGENT_REASONS and restock.status == Restock.Status.PENDING


def _restock_reopen_failed(product: Product, *, reason: str) -> Restock | None:
    """The product's latest restock, pending again for this need, if it failed. A call that timed out or
    failed may have created its order at the factory, and only its reference (quantity and SKU unchanged)
    has the factory answer with that order (200) rather than make a second one under a new reference. It
    takes the need's reason (its queue); the factory app gives it a fresh attempt budget in this
    transaction (signals.restock_reopened). Not one the factory refused (signals.restock_reopen_asked).
    Call with the product's row locked, as every change of a failed restock is made."""
    latest = Restock.objects.filter(product=product).order_by("-pk").first()
    if latest is None or latest.status != Restock.Status.FAILED:
        return None
    if any(answer is False for _, answer in restock_reopen_asked.send(sender=Restock, restock_id=latest.pk)):
        return None
    Restock.objects.failed().filter(pk=latest.pk).update(status=Restock.Status.PENDING, closed_at=None, reason=reason)
    latest.status, latest.closed_at, latest.reason = Restock.Status.PENDING, None, reason
    restock_reopened.send(sender=Restock, restock_id=latest.pk)
    logger.info("restock %s of %s failed; reopened for a new need (%s)", latest.pk, product.sku, reason)
    return latest


def idempotency_keys_purge(*, batch_size: int = 5_000) -> int:
    """Delete the keys older than IDEMPOTENCY_KEY_TTL_HOURS, `batch_size` at a time, each DELETE a short
    statement of its own: a backlog (a rush day, or the maintenance worker away for a while) is not one
    statement holding its row locks for seconds, lagging replicas and passing the read timeout, while the
    maintenance queue's sweeps wait behind it. Returns how many were deleted."""
    cutoff = timezone.now() - timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS)
    expired = IdempotencyKey.objects.filter(created_at__lt=cutoff).order_by("created_at", "pk")
    deleted = 0
    while ids := list(expired.values_list("pk", flat=True)[:batch_size]):
        deleted += IdempotencyKey.objects.filter(pk__in=ids).delete()[0]
        if len(ids) < batch_size:
            break
    return deleted


# The most the on-hand column holds (2147483647 on MariaDB): more is refused, not a database error.
ON_HAND_MAX = connection.ops.integer_field_range(Product._meta.get_field("on_hand").get_internal_type())[1]


def stock_adjust(*, product: Product, quantity: int, reason: str, user=None) -> StockMovement:
    """Change on-hand by `quantity` (signed) with a ledger row saying why and who.

    Locks the product row; refuses a change that would take stock below zero or past ON_HAND_MAX. One
    that leaves a product on sale at or below its reorder point opens a restock; a retired one is never
    reordered. A receipt that lifts stock does not close restocks: that is the factory's receipt
    (stock_receive). One that brings a product on sale back from zero owes its subscribers their
    back-in-stock push, like a receipt; one that takes it to zero withdraws the pushes still owed, like
    the sale of the last one.
    """
    if quantity == 0 or not reason.strip():
        raise InvalidAdjustment("An adjustment needs a non-zero quantity and a reason.")
    with transaction.atomic():
        locked = products_lock([product.pk])[product.pk]
        if locked.on_hand + quantity < 0:
            raise InvalidAdjustment(f"{locked.sku} has {locked.on_hand}; cannot take out {-quantity}.")
        if locked.on_hand + quantity > ON_HAND_MAX:
            raise InvalidAdjustment(
                f"{locked.sku} has {locked.on_hand}; adding {quantity} would take it past {ON_HAND_MAX}, "
                "the most it can hold."
            )
        Product.objects.filter(pk=locked.pk).update(on_hand=F("on_hand") + quantity)
        movement = StockMovement.objects.create(
            product=locked, kind=StockMovement.Kind.ADJUSTMENT, quantity=quantity, reason=reason, created_by=user
        )
        was_sold_out = locked.on_hand == 0
        locked.on_hand += quantity
        if locked.needs_reorder and locked.is_active:  # nothing is ordered for a product not for sale
            restocks_open([locked], reason=Restock.Reason.REORDER_POINT)
        if was_sold_out and quantity > 0 and locked.is_active:
            back_in_stock_announce(locked.sku, locked.name)
        elif locked.on_hand == 0:
            back_in_stock_withdraw(locked.sku)
    product.on_hand = locked.on_hand
    return movement


def ledger_correct(*, product_id: int, user=None) -> StockMovement | None:
    """Write the ledger row a change of on-hand made outside the services left out (check_ledger found
    it): an adjustment of on-hand minus the ledger's sum, so that the two agree again. On-hand is kept:
    whether the shelf holds that many is a count's question, answered afterwards with set_stock. Locks
    the product row, as every writer of its ledger does. None if the ledger already agrees."""
    with transaction.atomic():
        locked = products_lock([product_id])[product_id]
        ledger = StockMovement.objects.filter(product_id=product_id).aggregate(total=Sum("quantity"))["total"] or 0
        if locked.on_hand == ledger:
            return None
        return StockMovement.objects.create(
            product=locked,
            kind=StockMovement.Kind.ADJUSTMENT,
            quantity=locked.on_hand - ledger,
            reason=f"ledger correction: on hand {locked.on_hand} was changed outside the ledger, which said {ledger}",
            created_by=user,
        )


def product_set_stock(
    *,
    sku: str,
    quantity: int,
    price=None,
    reorder_point=None,
    reorder_quantity=None,
    name=None,
    user=None,
    create: bool = False,
) -> Product:
    """Bring a product's on-hand to `quantity` through an adjustment, updating the given fields.

    An unknown SKU is UnknownSku (its message names the closest SKUs) unless `create` is set, and then it
    needs a name and a price: a typo must never add a product and order 100 of it from the factory. A
    product on sale left at or below its (new) reorder point is reordered, whether or not its stock changed
    (as product_update does for the admin)."""
    if quantity < 0:
        raise InvalidAdjustment("Stock cannot be negative.")
    if quantity > ON_HAND_MAX:
        raise InvalidAdjustment(f"Stock cannot be more than {ON_HAND_MAX}.")
    if not Product.objects.filter(sku=sku).exists():
        if not create:
            skus = Product.objects.values_list("sku", flat=True)
            close = difflib.get_close_matches(sku.upper(), skus, n=3, cutoff=0.6)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            raise UnknownSku(
                f"No product has the SKU {sku!r}.{hint} To add one, pass --create with --name and --price."
            )
        longest = Product._meta.get_field("sku").max_length
        if not sku or sku != sku.strip() or len(sku) > longest or not SKU_VALIDATOR.regex.search(sku):
            # As the admin's form takes a SKU (the model's SKU_VALIDATOR): what a sale's body takes, and no
            # "/", which would make the product's URLs unreachable.
            raise InvalidAdjustment(
                f"A new SKU needs 1 to {longest} printable ASCII characters, no space and no '/', and is not "
                f"'.' or '..': {sku!r}."
            )
        if not name or price is None:
            raise InvalidAdjustment(f"A new product ({sku}) needs a name and a price.")
        _refuse_case_twin(Product(sku=sku))
    with _case_twin_refused(Product(sku=sku)), transaction.atomic():
        product, created = Product.objects.get_or_create(sku=sku, defaults={"name": name, "price": price})
        changes = {"price": price, "reorder_point": reorder_point, "reorder_quantity": reorder_quantity}
        if name and not created:
            changes["name"] = name
        changes = {k: v for k, v in changes.items() if v is not None}
        if changes:
            Product.objects.filter(pk=product.pk).update(**changes)
        locked = products_lock([product.pk])[product.pk]
        delta = quantity - locked.on_hand
        if delta:
            stock_adjust(product=locked, quantity=delta, reason=f"set_stock to {quantity}", user=user)
        elif locked.needs_reorder and locked.is_active:  # stock_adjust's check, for a new reorder point alone
            restocks_open([locked], reason=Restock.Reason.REORDER_POINT)
    product.refresh_from_db()
    selectors.forget_product_ids()
    return product


def product_create(*, product: Product) -> None:
    """Save a product added by hand (the admin's form). It starts at 0 on hand (stock comes only through
    the ledger), so at or below any reorder point: one on sale is reordered now, as `set_stock --create`
    does, rather than after its first buyers were refused. The new row is locked by its own insert."""
    with _case_twin_refused(product), transaction.atomic():
        product.save()
        if product.is_active and product.needs_reorder:
            restocks_open([product], reason=Restock.Reason.REORDER_POINT)


def _refuse_case_twin(product: Product) -> None:
    """SkuCaseTwin if another product's SKU differs from this one's only in case."""
    if twin := product.case_twin():
        raise SkuCaseTwin(case_twin_message(product.sku, twin), details={"sku": product.sku, "existing": twin})


@contextmanager
def _case_twin_refused(product: Product):
    """Turn the unique sku_folded's refusal of this product's row into SkuCaseTwin. A check before the
    INSERT cannot see a twin another creation has not committed yet: the index waits for that one and
    refuses the second, and only then is the twin there to be named."""
    try:
        yield
    except IntegrityError:
        _refuse_case_twin(product)
        raise


def product_update(*, product: Product, fields: list[str]) -> None:
    """Save these fields of a product edited by hand (the admin's form); never on-hand, which changes only
    through the ledger. Writing only the named fields keeps a sale that committed meanwhile.

    Locks the product row. A product on sale left at or below its (new) reorder point is reordered now,
    as a stock change would: a reorder point raised past the stock, or a product retired while low (never
    reordered while retired) put back on sale, does not wait for its next sale. A retired product put
    back on sale with stock owes its subscribers their back-in-stock push: stock that came while it was
    retired was not announced (stock_adjust and the factory's receipt announce only a product on sale).
    One taken off sale withdraws the pushes still owed for it (back_in_stock_withdraw), as a sell-out does:
    they wait for its return instead of saying "back" about a SKU the API refuses."""
    with transaction.atomic():
        locked = products_lock([product.pk])[product.pk]
        was_active = locked.is_active
        # The edit applied to the row as it is now: the form's other values may predate a sale, or another
        # ops person's change (retired meanwhile, a new reorder point), that committed since.
        for name in fields:
            setattr(locked, name, getattr(product, name))
        locked.save(update_fields=[*fields, "updated_at"])
        if locked.is_active and locked.needs_reorder:
            restocks_open([locked], reason=Restock.Reason.REORDER_POINT)
        if locked.is_active and not was_active and locked.on_hand > 0:
            back_in_stock_announce(locked.sku, locked.name)
        elif was_active and not locked.is_active:
            back_in_stock_withdraw(locked.sku)
    for name in _LOCKED_FIELDS:  # the caller's copy: the row as saved
        setattr(product, name, getattr(locked, name))


def product_subscribe(*, client, sku: str, device_id: int):
    """Subscribe one of the client's devices to a known SKU coming back in stock. Returns (subscription,
    created). Raises UnknownSku, or UnknownDevice for a device that is not the client's."""
    product = selectors.product_get(sku=sku)
    return subscription_create(client=client, device_id=device_id, sku=product.sku)


def product_unsubscribe(*, client, sku: str, device_id: int) -> None:
    """Unsubscribe one of the client's devices from a SKU, a push still owed included. Safe to repeat: a
    SKU we have that the device is not subscribed to changes nothing, a retired one too (a retry after its
    subscription went). Raises UnknownDevice for a device that is not the client's, or UnknownSku for a SKU
    neither subscribed to nor ours."""
    if not subscription_delete(client=client, device_id=device_id, sku=sku) and not selectors.product_exists(sku=sku):
        selectors.product_get(sku=sku)  # the refusal, with did_you_mean

"""Writes to stock, sales and restocks. Every change of on-hand goes through here, with a ledger row."""

import difflib
import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from functools import partial

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F
from django.utils import timezone
from rest_framework.utils import encoders

from clients.models import ApiClient
from donutsite.context import request_id
from inventory import selectors
from inventory.errors import IdempotencyKeyReused, InvalidAdjustment, OutOfStock, UnknownSku
from inventory.models import IdempotencyKey, Product, Restock, Sale, SaleLine, StockMovement
from inventory.signals import restock_opened
from notifications.alerts import alert_raise
from notifications.subscriptions import subscription_create

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

    Hand-written SQL rather than `select_for_update()`: a sale holds these locks until it commits, and
    building the ORM query cost more CPU than its round trip (docs/benchmarks.md, "Sales"). Plain FOR
    UPDATE rather than STYLE's `of=("self",)`: MariaDB does not support FOR UPDATE OF, and with no join
    both lock exactly the same rows. The products carry the fields read here; others load on access."""
    ids = sorted(set(product_ids))
    sql = _SQL_PRODUCTS_LOCK % _placeholders(len(ids))
    if not connection.features.has_select_for_update:
        sql = sql.removesuffix(" FOR UPDATE")  # SQLite (`make run`'s default) locks the whole file instead
    with connection.cursor() as cursor:
        cursor.execute(sql, ids)
        rows = cursor.fetchall()
    return {
        row[0]: Product.from_db(
            connection.alias, _LOCKED_FIELDS, [f.to_python(v) for f, v in zip(_LOCKED_MODEL_FIELDS, row, strict=True)]
        )
        for row in rows
    }


_LOCKED_FIELDS = ("id", "sku", "name", "price", "is_active", "on_hand", "reorder_point", "reorder_quantity")
_LOCKED_MODEL_FIELDS = [Product._meta.get_field(name) for name in _LOCKED_FIELDS]
# The statements of a sale. Nothing but placeholders is ever formatted into them at run time.
_SQL_PRODUCTS_LOCK = (
    f"SELECT {', '.join(_LOCKED_FIELDS)} FROM inventory_product WHERE id IN (%s) ORDER BY id FOR UPDATE"  # noqa: S608 - constant column names
)
_SQL_ON_HAND_SET = "UPDATE inventory_product SET on_hand = CASE id %s END WHERE id IN (%s)"
_SQL_SALE_INSERT = "INSERT INTO inventory_sale (client_id, idempotency_key, total, created_at) VALUES (%s, %s, %s, %s)"
_SQL_LINES_INSERT = (
    "INSERT INTO inventory_saleline (sale_id, product_id, quantity, unit_price, line_total) VALUES (%s, %s, %s, %s, %s)"
)
_SQL_MOVEMENTS_INSERT = (
    "INSERT INTO inventory_stockmovement (product_id, kind, quantity, sale_id, reason, created_at)"
    " VALUES (%s, %s, %s, %s, '', %s)"
)


def _placeholders(count: int) -> str:
    return ", ".join(["%s"] * count)


def sale_create(*, client: ApiClient, items: list[SaleItem], idempotency_key: str = "") -> SaleOutcome:
    """Sell all items or none.

    Locks the products' rows (products_lock) for one short durable transaction. If any line is short,
    nothing is sold, a restock is opened for each short product in that same transaction, and
    OutOfStock is raised after commit. A sale that leaves a product at or below its reorder point opens
    a restock too. With an Idempotency-Key, a repeat of the same request gets the first answer again:
    the sale, or the same OutOfStock (with the Idempotent-Replayed header), even if stock came back
    meanwhile, so that a delayed original request cannot sell after its retry was told it did not.
    """
    request_hash = _request_hash(items) if idempotency_key else ""
    if idempotency_key:
        replay = _idempotent_replay(client, idempotency_key, request_hash)
        if replay:
            return _answer(replay)

    product_ids = selectors.product_ids_for_skus([item.sku for item in items])
    try:
        with transaction.atomic(durable=True):
            outcome = _sell(client, items, product_ids, idempotency_key, request_hash)
    except IntegrityError:
        # A concurrent request with the same key committed first; its sale is the answer.
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


def _sell(client, items, product_ids, idempotency_key, request_hash) -> SaleOutcome:
    products = products_lock(product_ids.values())
    wanted = [(products[product_ids[item.sku]], item.quantity) for item in items]
    inactive = [p.sku for p, _ in wanted if not p.is_active]
    if inactive:
        raise UnknownSku(f"Not for sale: {', '.join(inactive)}.", details={"skus": inactive})

    short = [(p, qty) for p, qty in wanted if p.on_hand < qty]
    if short and idempotency_key:
        # A retry that waited on these locks behind the first request with its key finds the stock gone
        # to that very sale: answer the sale, not out_of_stock.
        replay = _idempotent_replay(client, idempotency_key, request_hash)
        if replay:
            return replay
    if short:
        restocks = restocks_open([p for p, _ in short], reason=Restock.Reason.SHORTAGE)
        shortages = [
            {
                "sku": p.sku,
                "requested": qty,
                "available": p.on_hand,
                "restock": {
                    "id": restocks[p.pk].pk,
                    "status": restocks[p.pk].status,
                    "expected_at": restocks[p.pk].expected_at,
                },
            }
            for p, qty in short
        ]
        if idempotency_key:
            # Stored as it will be rendered, so that a replay answers exactly what this request did.
            shortages = json.loads(json.dumps(shortages, cls=encoders.JSONEncoder))
            IdempotencyKey.objects.create(
                client=client, key=idempotency_key, request_hash=request_hash, refusal={"shortages": shortages}
            )
        return SaleOutcome(sale=None, shortages=shortages)

    sale, lines = _sale_write(client, wanted, idempotency_key)
    if idempotency_key:
        IdempotencyKey.objects.create(client=client, key=idempotency_key, request_hash=request_hash, sale=sale)

    low = [p for p, _ in wanted if p.needs_reorder]
    if low:
        restocks_open(low, reason=Restock.Reason.REORDER_POINT)
    for product in (p for p in low if p.on_hand == 0):
        alert_raise(
            kind="sold_out",
            severity="info",
            title=f"{product.sku} sold out",
            text=f"The last {product.name} just sold; a restock is open.",
            dedupe_key=f"sold_out:{product.sku}",
            context={"sku": product.sku},
        )
    return SaleOutcome(sale=sale, lines=lines)


def _sale_write(client, wanted, idempotency_key) -> tuple[Sale, list[SaleLine]]:
    """Take the stock and record the sale, its lines and their ledger rows: four statements, written
    by hand because they run while the caller holds the products' row locks, and every millisecond
    spent here is one that every other buyer of a hot donut waits (docs/benchmarks.md, "Sales").

    On-hand is set to the value checked under the lock, not decremented in SQL, so that taking the
    lock away would show up as lost updates in the tests rather than be hidden by the CHECK constraint.
    """
    now = timezone.now()
    created_at = connection.ops.adapt_datetimefield_value(now)
    lines = [SaleLine(product=p, quantity=qty, unit_price=p.price, line_total=p.price * qty) for p, qty in wanted]
    total = sum((line.line_total for line in lines), Decimal("0"))
    for product, qty in wanted:
        product.on_hand -= qty
    with connection.cursor() as cursor:
        cursor.execute(
            _SQL_ON_HAND_SET % (" ".join(["WHEN %s THEN %s"] * len(wanted)), _placeholders(len(wanted))),
            [v for p, _ in wanted for v in (p.pk, p.on_hand)] + [p.pk for p, _ in wanted],
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
            [(p.pk, StockMovement.Kind.SALE.value, -qty, sale.pk, created_at) for p, qty in wanted],
        )
    sale.client = client
    for line in lines:
        line.sale = sale
    return sale, lines


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


def restocks_open(products: list[Product], *, reason: str) -> dict[int, Restock]:
    """The open restock of each product, opening one where there is none.

    The caller holds the products' row locks (products_lock), which serializes this check-then-insert
    per product; the unique `open_product` column backs it in the database. After commit, each new
    restock is announced (signals.restock_opened), and the factory app hands it to its queue. A new
    restock keeps the current request id, which follows it to the factory call (X-Request-ID), its
    dead letter and its alerts.
    """
    by_product = {r.product_id: r for r in Restock.objects.open().filter(product__in=products)}
    for product in products:
        if product.pk in by_product:
            continue
        restock = Restock.objects.create(
            product=product, quantity=product.reorder_quantity, reason=reason, correlation_id=request_id.get()
        )
        by_product[product.pk] = restock
        transaction.on_commit(partial(restock_opened.send, sender=Restock, restock_id=restock.pk, reason=reason))
    return by_product


def idempotency_keys_purge() -> int:
    cutoff = timezone.now() - timedelta(hours=settings.IDEMPOTENCY_KEY_TTL_HOURS)
    deleted, _ = IdempotencyKey.objects.filter(created_at__lt=cutoff).delete()
    return deleted


def stock_adjust(*, product: Product, quantity: int, reason: str, user=None) -> StockMovement:
    """Change on-hand by `quantity` (signed) with a ledger row saying why and who.

    Locks the product row; refuses a change that would take stock below zero. A receipt that lifts
    stock does not close restocks: that is the factory's receipt (stock_receive).
    """
    if quantity == 0 or not reason.strip():
        raise InvalidAdjustment("An adjustment needs a non-zero quantity and a reason.")
    with transaction.atomic():
        locked = products_lock([product.pk])[product.pk]
        if locked.on_hand + quantity < 0:
            raise InvalidAdjustment(f"{locked.sku} has {locked.on_hand}; cannot take out {-quantity}.")
        Product.objects.filter(pk=locked.pk).update(on_hand=F("on_hand") + quantity)
        movement = StockMovement.objects.create(
            product=locked, kind=StockMovement.Kind.ADJUSTMENT, quantity=quantity, reason=reason, created_by=user
        )
        locked.on_hand += quantity
        if locked.needs_reorder:
            restocks_open([locked], reason=Restock.Reason.REORDER_POINT)
    product.on_hand = locked.on_hand
    return movement


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
    needs a name and a price: a typo must never add a product and order 100 of it from the factory."""
    if quantity < 0:
        raise InvalidAdjustment("Stock cannot be negative.")
    if not Product.objects.filter(sku=sku).exists():
        if not create:
            skus = Product.objects.values_list("sku", flat=True)
            close = difflib.get_close_matches(sku.upper(), skus, n=3, cutoff=0.6)
            hint = f" Did you mean {' or '.join(close)}?" if close else ""
            raise UnknownSku(
                f"No product has the SKU {sku!r}.{hint} To add one, pass --create with --name and --price."
            )
        if not name or price is None:
            raise InvalidAdjustment(f"A new product ({sku}) needs a name and a price.")
    with transaction.atomic():
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
    product.refresh_from_db()
    selectors.forget_product_ids()
    return product


def product_subscribe(*, client, sku: str, device_id: int):
    """Subscribe one of the client's devices to a known SKU coming back in stock. Returns (subscription,
    created). Raises UnknownSku, or UnknownDevice for a device that is not the client's."""
    product = selectors.product_get(sku=sku)
    return subscription_create(client=client, device_id=device_id, sku=product.sku)

"""Reads: the catalogue, a client's sales, restocks, and the ledger check."""

from datetime import UTC, date, datetime, time

from django.db.models import F, Prefetch, Sum
from django.db.models.functions import Coalesce

from clients.models import ApiClient
from donutsite.db import exact_lookup_possible
from donutsite.errors import echoed
from inventory.errors import UnknownSku
from inventory.models import Product, Restock, Sale, SaleLine

# SKU -> product id never changes (SKUs are read-only once created, products are never deleted), so
# each process remembers it and a sale needs no lookup query before it locks. The first sale a process
# serves loads the whole catalogue's map in one query; after that only a SKU it has not seen costs one.
_product_ids: dict[str, int] = {}
_catalogue_loaded = False


def product_ids_for_skus(skus: list[str]) -> dict[str, int]:
    """Map SKUs to product ids; raise UnknownSku naming every SKU we do not sell."""
    global _catalogue_loaded
    missing = [sku for sku in skus if sku not in _product_ids]
    if missing and not _catalogue_loaded:
        _product_ids.update(Product.objects.filter(is_active=True).values_list("sku", "pk"))
        _catalogue_loaded = True
        missing = [sku for sku in missing if sku not in _product_ids]
    if missing:
        found = dict(Product.objects.filter(sku__in=missing, is_active=True).values_list("sku", "pk"))
        _product_ids.update(found)
        unknown = [sku for sku in missing if sku not in found]
        if unknown:
            raise _unknown_sku(unknown)
    return {sku: _product_ids[sku] for sku in skus}


def forget_product_ids() -> None:
    global _catalogue_loaded
    _product_ids.clear()
    _catalogue_loaded = False


def product_list():
    return Product.objects.filter(is_active=True).order_by("sku")


def product_get(*, sku: str) -> Product:
    product = Product.objects.filter(sku=sku, is_active=True).first() if exact_lookup_possible(sku) else None
    if product is None:
        raise _unknown_sku([sku])
    return product


def product_exists(*, sku: str) -> bool:
    """Whether a product has exactly this SKU, on sale or retired."""
    return exact_lookup_possible(sku) and Product.objects.filter(sku=sku).exists()


def _unknown_sku(unknown: list[str]) -> UnknownSku:
    """The refusal, with the SKU meant when exactly one of ours differs from it only in case
    (`did_you_mean`). When several do, the message names them all and `did_you_mean` none: a client
    correcting by it would buy whichever came last. The database keeps SKUs apart in case as it lowers them
    (Product.sku_folded), but SKUs from before they were ASCII may still fold together here (STRAßE and
    STRASSE: Python folds ß, MariaDB does not). A SKU longer than any we sell (one in a URL) is named cut
    (donutsite.errors.echoed)."""
    unknown = [echoed(sku) for sku in unknown]
    by_fold: dict[str, list[str]] = {}
    for ours in Product.objects.filter(is_active=True).order_by("sku").values_list("sku", flat=True):
        by_fold.setdefault(ours.casefold(), []).append(ours)
    close = {sku: by_fold[sku.casefold()] for sku in unknown if sku.casefold() in by_fold}
    meant = {sku: ours[0] for sku, ours in close.items() if len(ours) == 1}
    details = {"skus": unknown, **({"did_you_mean": meant} if meant else {})}
    hint = "".join(
        f" Did you mean {ours[0]} for {sku}?" if len(ours) == 1 else f" {sku} could be {' or '.join(ours)}."
        for sku, ours in close.items()
    )
    return UnknownSku(f"Unknown SKU: {', '.join(unknown)}.{hint}", details=details)


# A sale's lines in the order they were bought, as the sale's answer and its replays list them: without an
# ORDER BY, MariaDB reads them through the unique (sale, product) index, in the order of the products' ids.
_SALE_LINES = Prefetch("lines", queryset=SaleLine.objects.select_related("product").order_by("pk"))


def sale_get(*, client: ApiClient, sale_id: int) -> Sale | None:
    """A client's own sale with its lines, or None (another client's sale is as good as missing)."""
    return Sale.objects.filter(client=client, pk=sale_id).prefetch_related(_SALE_LINES).first()


def sale_list(*, client: ApiClient, created_after: date | None = None, created_before: date | None = None):
    """A client's own sales with their lines, newest first; the days are UTC, `created_before` exclusive."""
    qs = Sale.objects.filter(client=client).prefetch_related(_SALE_LINES).order_by("-created_at", "-pk")
    if created_after:
        qs = qs.filter(created_at__gte=datetime.combine(created_after, time.min, tzinfo=UTC))
    if created_before:
        qs = qs.filter(created_at__lt=datetime.combine(created_before, time.min, tzinfo=UTC))
    return qs


def restock_get(*, restock_id: int) -> Restock | None:
    """One restock, or None. Restocks are catalogue information: any client may read any of them."""
    return Restock.objects.select_related("product").filter(pk=restock_id).first()


def restock_list(*, sku: str | None = None, status: str | None = None):
    """Restocks, newest first. Raises UnknownSku for a `sku` no product has, on sale or retired (a retired
    product's restocks are still listed): a typo listed nothing, as if no restock were on its way."""
    qs = Restock.objects.select_related("product").order_by("-pk")
    if sku:
        if not product_exists(sku=sku):
            raise _unknown_sku([sku])
        qs = qs.filter(product__sku=sku)
    if status:
        qs = qs.filter(status=status)
    return qs


def ledger_differences() -> list[dict]:
    """Products whose on-hand differs from the sum of their ledger movements.

    One statement, so one snapshot: read as two (the sums, then the products), a sale committing in
    between showed its stock taken and not its ledger row, and check_ledger paged ops about a ledger that
    was fine, in exactly the rush when they run it."""
    rows = (
        Product.objects.annotate(ledger=Coalesce(Sum("movements__quantity"), 0))
        .exclude(on_hand=F("ledger"))
        .order_by("pk")
        .values("pk", "sku", "on_hand", "ledger")
    )
    return [{"product_id": r["pk"], "sku": r["sku"], "on_hand": r["on_hand"], "ledger": r["ledger"]} for r in rows]

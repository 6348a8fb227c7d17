"""Reads for the ops dashboard (ops/dashboard.py). Each one is bounded (a time window or a row
limit) and aggregates in the database, so the page stays cheap however long the shop has been open.

It lives in `ops` because it reads every app, which only `ops` may import freely (CONTRIBUTING.md).
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import (
    Case,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    IntegerField,
    Sum,
    TextField,
    Value,
    When,
)
from django.db.models.functions import Coalesce, TruncMinute
from django.utils import timezone

from factory.models import DeadLetter
from inventory.models import Product, Restock, Sale, StockMovement
from notifications.models import Alert

STOCK_LIMIT = 200
OPEN_RESTOCKS_LIMIT = 50
ALERTS_LIMIT = 10
LEAD_TIMES_LIMIT = 20
LEAD_TIMES_WINDOW = timedelta(days=7)
STOCK_HISTORY_WINDOW = timedelta(hours=24)
SALES_WINDOW_MINUTES = 60


def stock_list(*, limit: int = STOCK_LIMIT) -> list[Product]:
    """Active products, out of stock first, then low (at or below the reorder point), then by SKU.
    Each has `level`: "out", "low" or "ok"."""
    return list(
        Product.objects.filter(is_active=True)
        .annotate(
            level=Case(
                When(Product.OUT, then=Value("out")),
                When(Product.AT_OR_BELOW_REORDER_POINT, then=Value("low")),
                default=Value("ok"),
            ),
            level_rank=Case(
                When(Product.OUT, then=Value(0)),
                When(Product.AT_OR_BELOW_REORDER_POINT, then=Value(1)),
                default=Value(2),
                output_field=IntegerField(),
            ),
        )
        .order_by("level_rank", "sku")
        .only("sku", "name", "on_hand", "reorder_point")[:limit]
    )


def product_count() -> int:
    return Product.objects.filter(is_active=True).count()


def product_for_chart(sku: str | None) -> Product | None:
    """The product named by `sku`; when none is named, the active one whose stock moved last (what ops
    are most likely looking into), or the first by SKU if no stock ever moved."""
    if sku:
        return Product.objects.filter(sku=sku).first()
    # The latest movements down the ledger's primary key, then their products: joined to the products
    # (a few rows) the ledger was read after them and sorted whole (5 s at 4 million movements). A ledger
    # whose last 200 movements are all of retired products falls back to the first by SKU.
    recent = list(StockMovement.objects.order_by("-pk").values_list("product_id", flat=True)[:200])
    active = set(Product.objects.filter(pk__in=recent, is_active=True).values_list("pk", flat=True))
    latest = next((product_id for product_id in recent if product_id in active), None)
    if latest is not None:
        return Product.objects.get(pk=latest)
    return Product.objects.filter(is_active=True).order_by("sku").first()


def restocks_open(*, limit: int = OPEN_RESTOCKS_LIMIT) -> tuple[list[Restock], int]:
    """Open restocks (pending or placed), oldest first, and how many are open in all."""
    open_restocks = Restock.objects.open()
    rows = list(
        open_restocks.select_related("product")
        .annotate(
            attempt_count=Coalesce("factory_order__attempt_count", 0),
            last_error=Coalesce("factory_order__last_error", Value(""), output_field=TextField()),
        )
        .order_by("created_at", "pk")[:limit]
    )
    total = len(rows) if len(rows) < limit else open_restocks.count()
    return rows, total


def dead_letters_unresolved_count() -> int:
    return DeadLetter.objects.unresolved().count()


def alerts_recent(*, limit: int = ALERTS_LIMIT) -> list[Alert]:
    return list(Alert.objects.order_by("-id")[:limit])


@dataclass(frozen=True)
class StockHistory:
    since: datetime
    until: datetime
    points: list[tuple[datetime, int]]  # (time, on-hand from then on), oldest first


def stock_history(product: Product, *, window: timedelta = STOCK_HISTORY_WINDOW) -> StockHistory:
    """On-hand over the window, rebuilt from the ledger: its changes summed per minute in the database,
    counted back from the current on-hand (the ledger's sum is the on-hand, so the two agree; a sale
    committing between the two reads can only shift the line by that one sale until the next load)."""
    until = timezone.now()
    since = until - window
    on_hand = Product.objects.filter(pk=product.pk).values_list("on_hand", flat=True).get()
    changes = list(
        StockMovement.objects.filter(product_id=product.pk, created_at__gte=since)
        .annotate(minute=TruncMinute("created_at"))
        .values("minute")
        .annotate(change=Sum("quantity"))
        .order_by("minute")
        .values_list("minute", "change")
    )
    level = on_hand - sum(change for _, change in changes)
    points = [(since, level)]
    if changes and not StockMovement.objects.filter(product_id=product.pk, created_at__lt=since).exists():
        # The ledger began inside the window: the line starts at its first row, not at a level of 0 for
        # the hours before the product existed.
        since, points = changes[0][0], []
    for minute, change in changes:
        level += change
        points.append((max(minute, since), level))
    return StockHistory(since=since, until=until, points=points)


@dataclass(frozen=True)
class LeadTime:
    restock_id: int
    sku: str
    seconds: float


def restock_lead_times(*, limit: int = LEAD_TIMES_LIMIT, window: timedelta = LEAD_TIMES_WINDOW) -> list[LeadTime]:
    """closed_at - created_at of the most recently closed fulfilled restocks ordered within the window,
    oldest first. Failed and cancelled restocks are left out: their closing time is not a lead time."""
    rows = (
        Restock.objects.filter(
            status=Restock.Status.FULFILLED,
            closed_at__isnull=False,
            created_at__gte=timezone.now() - window,
        )
        .annotate(lead=ExpressionWrapper(F("closed_at") - F("created_at"), output_field=DurationField()))
        .order_by("-closed_at", "-pk")
        .values_list("pk", "product__sku", "lead")[:limit]
    )
    return [LeadTime(pk, sku, lead.total_seconds()) for pk, sku, lead in reversed(rows)]


def sales_per_minute(*, minutes: int = SALES_WINDOW_MINUTES, now: datetime | None = None) -> list[tuple[datetime, int]]:
    """Sales counted per minute over the last `minutes` up to now's minute, oldest first, quiet minutes as 0."""
    this_minute = (now or timezone.now()).replace(second=0, microsecond=0)
    start = this_minute - timedelta(minutes=minutes - 1)
    counts = dict(
        Sale.objects.filter(created_at__gte=start, created_at__lt=this_minute + timedelta(minutes=1))
        .annotate(minute=TruncMinute("created_at"))
        .values("minute")
        .annotate(n=Count("id"))
        .values_list("minute", "n")
    )
    return [(start + timedelta(minutes=i), counts.get(start + timedelta(minutes=i), 0)) for i in range(minutes)]

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Case, F, Q, When
from django.db.models.functions import Lower

from donutsite.db import EXACT_COLLATION

# The SKU is a segment of the product's URLs in the API (/api/v1/products/<sku>/): with a "/" in it the
# product would be listed but unreachable, and nobody could subscribe to it.
# What a sale's body takes (inventory.serializers: printable ASCII, no space), and no "/", which is part of
# the product's address in the API: a SKU outside it could be stocked and never bought.
# Not "." or "..": clients resolve those path segments (/api/v1/products/../ is /api/v1/) before sending.
SKU_VALIDATOR = RegexValidator(
    r"^(?!\.\.?\Z)[!-.0-~]*\Z",
    "A SKU is printable ASCII with no space and no “/”, and not “.” or “..”: what the API can sell and address.",
)


def case_twin_message(sku: str, twin: str) -> str:
    return f"{twin} already exists, and {sku} differs from it only in case: clients could not tell them apart."


class Product(models.Model):
    """A donut we sell. `on_hand` changes only through the services in services.py, each with a ledger row."""

    sku = models.CharField(max_length=64, unique=True, db_collation=EXACT_COLLATION, validators=[SKU_VALIDATOR])
    # The SKU in lower case, unique: no two products whose SKUs differ only in case (GLAZED and glazed), which
    # clients cannot tell apart by eye and an unknown SKU's hint could not choose between. The database
    # holds it, so two creations at once cannot both pass; MariaDB has no index on an expression, hence
    # the column. VIRTUAL: computed on read, stored only in its index.
    sku_folded = models.GeneratedField(
        expression=Lower("sku"),
        output_field=models.CharField(max_length=64, db_collation=EXACT_COLLATION),
        db_persist=False,
    )
    name = models.CharField(max_length=200)
    # The validators give the admin a message beside the field; the constraints below hold regardless.
    price = models.DecimalField(max_digits=10, decimal_places=2, validators=[MinValueValidator(0)])
    is_active = models.BooleanField(default=True)
    on_hand = models.IntegerField(default=0, editable=False)
    reorder_point = models.PositiveIntegerField(default=10, help_text="Reorder when on-hand falls to this.")
    reorder_quantity = models.PositiveIntegerField(
        default=100,
        help_text="How many to order (1 to 10,000).",
        validators=[MinValueValidator(1), MaxValueValidator(10_000)],
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    # Stock levels, one rule for the sale's reorder check, the admin's filter and badge and the ops
    # dashboard: out (none on hand), low (at or below the reorder point, not out), ok (above it).
    OUT = Q(on_hand=0)
    AT_OR_BELOW_REORDER_POINT = Q(on_hand__lte=F("reorder_point"))

    class Meta:
        ordering = ["sku"]
        constraints = [
            models.CheckConstraint(condition=Q(on_hand__gte=0), name="product_on_hand_not_negative"),
            models.CheckConstraint(
                condition=Q(reorder_quantity__gte=1, reorder_quantity__lte=10_000),
                name="product_reorder_quantity_in_factory_range",
            ),
            models.CheckConstraint(condition=Q(price__gte=0), name="product_price_not_negative"),
            # A constraint rather than unique=True: Django warns (mysql.W003) of a unique field with no
            # max_length, which a GeneratedField has not; its column is varchar(64), as the SKU's.
            models.UniqueConstraint(fields=["sku_folded"], name="product_sku_unique_ignoring_case"),
        ]

    def __str__(self):
        return self.sku

    def validate_unique(self, exclude=None):
        """Django's checks, then the SKU's case twin as an error beside the SKU (the admin's form): the
        unique sku_folded is no form field, so Django would leave it to the database's IntegrityError."""
        super().validate_unique(exclude)
        if "sku" not in (exclude or ()) and (twin := self.case_twin()):
            raise ValidationError({"sku": case_twin_message(self.sku, twin)})

    def case_twin(self) -> str | None:
        """The SKU of another product that differs from this one's only in case, or None. Lowered by the
        database, as sku_folded is, so that it finds what the unique index refuses."""
        twins = Product.objects.filter(sku_folded=Lower(models.Value(self.sku))).exclude(sku=self.sku)
        return twins.values_list("sku", flat=True).first()

    @property
    def needs_reorder(self) -> bool:
        """AT_OR_BELOW_REORDER_POINT, on this row as it is in memory."""
        return self.on_hand <= self.reorder_point

    @property
    def stock_level(self) -> str:
        """The level: "out", "low" or "ok" (OUT, AT_OR_BELOW_REORDER_POINT)."""
        if self.on_hand == 0:
            return "out"
        return "low" if self.needs_reorder else "ok"


class Sale(models.Model):
    client = models.ForeignKey("clients.ApiClient", on_delete=models.PROTECT, related_name="sales")
    idempotency_key = models.CharField(max_length=255, blank=True, default="")
    # Room for the dearest sale the API accepts: 20 lines of 100 at 99,999,999.99 is 199,999,999,980.00.
    total = models.DecimalField(max_digits=14, decimal_places=2)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self):
        return f"sale {self.pk}"


class SaleLine(models.Model):
    sale = models.ForeignKey(Sale, on_delete=models.CASCADE, related_name="lines")
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="+")
    quantity = models.PositiveIntegerField()
    unit_price = models.DecimalField(max_digits=10, decimal_places=2)
    line_total = models.DecimalField(max_digits=12, decimal_places=2)  # at most 100 x 99,999,999.99

    class Meta:
        constraints = [models.UniqueConstraint(fields=["sale", "product"], name="sale_line_one_per_product")]

    def __str__(self):
        return f"{self.quantity} x {self.product_id}"


class StockMovement(models.Model):
    """The stock ledger: one row per change of on-hand. Sum of `quantity` per product equals on-hand."""

    class Kind(models.TextChoices):
        SALE = "sale"
        RECEIPT = "receipt"
        ADJUSTMENT = "adjustment"

    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="movements")
    kind = models.CharField(max_length=16, choices=Kind.choices)
    quantity = models.IntegerField(help_text="Signed: negative takes stock out.")
    sale = models.ForeignKey(Sale, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    restock = models.ForeignKey("Restock", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    reason = models.CharField(max_length=255, blank=True, default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]
        constraints = [models.CheckConstraint(condition=~Q(quantity=0), name="movement_quantity_not_zero")]

    def __str__(self):
        return f"{self.kind} {self.quantity:+d} {self.product_id}"


class RestockQuerySet(models.QuerySet):
    def open(self):
        return self.filter(status__in=Restock.OPEN_STATUSES)

    def pending(self):
        return self.filter(status=Restock.Status.PENDING)

    def placed(self):
        return self.filter(status=Restock.Status.PLACED)

    def failed(self):
        return self.filter(status=Restock.Status.FAILED)


class Restock(models.Model):
    """An order for more of one product, as the business sees it. Written in the transaction that noticed
    the need (the outbox row); how its order travels to the factory is the factory app's (FactoryOrder)."""

    class Status(models.TextChoices):
        PENDING = "pending"
        PLACED = "placed"
        FULFILLED = "fulfilled"
        CANCELLED = "cancelled"
        FAILED = "failed"

    class Reason(models.TextChoices):
        SHORTAGE = "shortage"
        REORDER_POINT = "reorder_point"
        MANUAL = "manual"

    # A restock opened for one of these is sent to the factory's urgent queue the first time (a buyer was
    # refused); the others queue behind it, and are hurried there only if their product sells out first.
    URGENT_REASONS = (Reason.SHORTAGE,)
    OPEN_STATUSES = (Status.PENDING, Status.PLACED)

    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="restocks")
    quantity = models.PositiveIntegerField()
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    reason = models.CharField(max_length=16, choices=Reason.choices)
    # At most one open restock per product, enforced by the database: NULL once closed, and NULLs may repeat.
    open_product = models.GeneratedField(
        expression=Case(When(status__in=OPEN_STATUSES, then=F("product_id")), default=None),
        output_field=models.BigIntegerField(null=True),
        db_persist=True,
        unique=True,
    )
    placed_at = models.DateTimeField(null=True, blank=True)
    expected_at = models.DateTimeField(null=True, blank=True)
    # Indexed for /metrics (every scrape): its lead-time histogram reads the restocks closed in the last 24 h.
    closed_at = models.DateTimeField(null=True, blank=True, db_index=True)
    quantity_received = models.PositiveIntegerField(null=True, blank=True)
    correlation_id = models.CharField(max_length=64, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = RestockQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]

    def __str__(self):
        return f"restock {self.pk} ({self.status})"

    @property
    def reference(self) -> str:
        """The factory order reference: stable for this restock, so a resend can never order twice."""
        return f"{settings.FACTORY_REFERENCE_PREFIX}-{self.pk}"

    @property
    def is_open(self) -> bool:
        return self.status in self.OPEN_STATUSES


class IdempotencyKey(models.Model):
    """A client's Idempotency-Key, remembered with its first answer (IDEMPOTENCY_KEY_TTL_HOURS): the sale
    it made, or the out_of_stock refusal it got, as rendered then."""

    client = models.ForeignKey("clients.ApiClient", on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255, db_collation=EXACT_COLLATION)
    request_hash = models.CharField(max_length=64)
    sale = models.ForeignKey(Sale, on_delete=models.CASCADE, related_name="+", null=True, blank=True)
    refusal = models.JSONField(null=True, blank=True)  # the out_of_stock details ({"shortages": [...]})
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["client", "key"], name="idempotency_key_unique_per_client"),
            models.CheckConstraint(
                condition=models.Q(sale__isnull=False) | models.Q(refusal__isnull=False),
                name="idempotency_key_has_an_answer",
            ),
        ]

    def __str__(self):
        return self.key

import re

from django.core.validators import MaxLengthValidator, MinLengthValidator
from rest_framework import serializers

from donutsite.serializers import (  # noqa: F401 (the error shapes are re-exported for the apps' views)
    ChoiceField,
    ErrorOut,
    NoUnknownFieldsMixin,
    StrictCharField,
    StrictIntegerField,
    ValidationErrorOut,
)
from inventory.models import Product, Restock


class SaleItemIn(NoUnknownFieldsMixin, serializers.Serializer):
    sku = StrictCharField(max_length=64)
    quantity = StrictIntegerField(min_value=1, max_value=100)


class CountedFirstListField(serializers.ListField):
    """A ListField whose validators (its bounds) run before its items are judged one by one, as well as
    after: DRF judges every item first, and a 2.4 MB body of a million bare numbers took 35 s of CPU to
    refuse item by item. An empty list keeps DRF's own message."""

    def to_internal_value(self, data):
        if isinstance(data, list) and data:
            self.run_validators(data)
        return super().to_internal_value(data)


class SaleIn(NoUnknownFieldsMixin, serializers.Serializer):
    # A ListField, not a ListSerializer: a problem with the list itself (empty, too long, not a list) is a
    # list of messages under `items` like any field's, not under `items.non_field_errors`; an item's own
    # problems stay under its index. The bounds are validators so that the message can give the count.
    items = CountedFirstListField(
        child=SaleItemIn(),
        allow_empty=False,
        validators=[
            MinLengthValidator(1, message="Send at least %(limit_value)d item."),
            MaxLengthValidator(20, message="Send at most %(limit_value)d items (this has %(show_value)d)."),
        ],
        help_text="1 to 20 lines; each SKU at most once (add up the quantities instead).",
    )

    def validate_items(self, items):
        skus = [item["sku"] for item in items]
        if len(set(skus)) != len(skus):
            raise serializers.ValidationError("Each SKU may appear once; add up the quantities instead.")
        return items


def sale_items_validate(data) -> list[dict]:
    """The items of a sale body, as SaleIn validates them; raises its ValidationError if it is bad.

    SaleIn is the contract (and the schema). A body that is plainly valid, as nearly every sale is,
    skips building it: the serializer cost more CPU than the sale's own SQL (docs/benchmarks.md,
    "Sales"). Anything less plain goes to SaleIn, which judges it and words the errors. A property
    test holds that whatever the shortcut accepts, SaleIn accepts the same.
    """
    items = _sale_items_plain(data)
    if items is None:
        body = SaleIn(data=data)
        body.is_valid(raise_exception=True)
        items = body.validated_data["items"]
    return items


_PLAIN_SKU = re.compile(r"[!-~]{1,64}")  # printable ASCII without spaces, as every SKU we sell
# The keys of a plain line: SaleItemIn's fields, whose values _sale_items_plain judges itself. Written out,
# not read from SaleItemIn, and a test holds the two equal: a field added there alone would send every
# line carrying it down the slower path, or, if required, be skipped here.
_PLAIN_LINE_KEYS = frozenset({"sku", "quantity"})


def _sale_items_plain(data) -> list[dict] | None:
    if type(data) is not dict or data.keys() != {"items"}:
        return None
    items = data["items"]
    if type(items) is not list or not 1 <= len(items) <= 20:
        return None
    skus = set()
    for item in items:
        if type(item) is not dict or item.keys() != _PLAIN_LINE_KEYS:
            return None
        sku, quantity = item["sku"], item["quantity"]
        if type(sku) is not str or not _PLAIN_SKU.fullmatch(sku) or sku in skus:
            return None
        if type(quantity) is not int or not 1 <= quantity <= 100:
            return None
        skus.add(sku)
    return items


class SaleLineOut(serializers.Serializer):
    sku = serializers.CharField(source="product.sku")
    quantity = serializers.IntegerField()
    unit_price = serializers.DecimalField(max_digits=10, decimal_places=2)
    line_total = serializers.DecimalField(max_digits=12, decimal_places=2)


class SaleOut(serializers.Serializer):
    id = serializers.IntegerField()
    total = serializers.DecimalField(max_digits=14, decimal_places=2)
    created_at = serializers.DateTimeField()
    lines = SaleLineOut(many=True)


def sale_representation(sale, lines) -> dict:
    """A sale as SaleOut renders it, built directly with SaleOut's own field formatting: rendering
    through the serializer cost more CPU than the sale's SQL. A test holds the two equal."""
    return {
        "id": sale.pk,
        "total": _MONEY.to_representation(sale.total),
        "created_at": _DATETIME.to_representation(sale.created_at),
        "lines": [
            {
                "sku": line.product.sku,
                "quantity": line.quantity,
                "unit_price": _MONEY.to_representation(line.unit_price),
                "line_total": _MONEY.to_representation(line.line_total),
            }
            for line in lines
        ],
    }


_MONEY = SaleOut().fields["total"]
_DATETIME = SaleOut().fields["created_at"]


class ProductOut(serializers.ModelSerializer):
    available = serializers.IntegerField(source="on_hand")

    class Meta:
        model = Product
        fields = ["sku", "name", "price", "available"]


class RestockOut(serializers.ModelSerializer):
    sku = serializers.CharField(source="product.sku")

    class Meta:
        model = Restock
        fields = ["id", "sku", "quantity", "status", "reason", "expected_at", "quantity_received", "created_at"]
        # Every answer sends each of them (null included): required in the schema, where a model default
        # would make one optional.
        extra_kwargs = {name: {"required": True} for name in fields}


class PageField(serializers.IntegerField):
    """`?page=`: ASCII digits only (after a minus sign, which min_value then refuses as below 1, not as
    no integer). DRF's IntegerField also takes "2.0" (and " 2", "2_0"), which the paginator then refused
    as a 404 `not_found` instead of a 400 naming the parameter."""

    def to_internal_value(self, data):
        if not (isinstance(data, str) and data.isascii() and data.removeprefix("-").isdigit()):
            self.fail("invalid")
        return super().to_internal_value(data)


class DayField(serializers.DateField):
    """`?created_after=` / `?created_before=`: exactly YYYY-MM-DD in ASCII digits, as documented. DRF's
    DateField reads with date.fromisoformat, which also takes "20261207" and the ISO week date
    "2026-W49-1" (30 November: not the day it looks like), and then with a regex that takes "2026-12-7"
    and any Unicode digits; each was answered as if the client had sent some day."""

    _DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")

    def to_internal_value(self, value):
        if not (isinstance(value, str) and self._DAY.fullmatch(value)):
            self.fail("invalid", format="YYYY-MM-DD")
        return super().to_internal_value(value)


class RestockFilterIn(NoUnknownFieldsMixin, serializers.Serializer):
    sku = StrictCharField(  # as sent: " " is an (unknown) SKU, not a blank
        max_length=64,
        required=False,
        help_text="That SKU's restocks only, matched exactly; one we never had is a 404 `unknown_sku`.",
    )
    status = ChoiceField(choices=Restock.Status.choices, required=False)
    page = PageField(min_value=1, required=False)


class SaleFilterIn(NoUnknownFieldsMixin, serializers.Serializer):
    created_after = DayField(required=False, help_text="YYYY-MM-DD: sales made on or after this day (UTC).")
    created_before = DayField(required=False, help_text="YYYY-MM-DD: sales made before this day (UTC).")
    page = PageField(min_value=1, required=False)


class ProductFilterIn(NoUnknownFieldsMixin, serializers.Serializer):
    page = PageField(min_value=1, required=False)


class RestockRefOut(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=Restock.Status.choices)
    quantity = serializers.IntegerField(help_text="How many are ordered from the factory.")
    expected_at = serializers.DateTimeField(allow_null=True)


class ShortageOut(serializers.Serializer):
    sku = serializers.CharField()
    requested = serializers.IntegerField()
    available = serializers.IntegerField()
    restock = RestockRefOut()


class OutOfStockOut(ErrorOut):
    shortages = ShortageOut(many=True)

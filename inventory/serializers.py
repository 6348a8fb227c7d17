from django.core.validators import MaxLengthValidator, MinLengthValidator
from rest_framework import serializers

from donutsite.serializers import (  # noqa: F401 (the error shapes are re-exported for the apps' views)
    ErrorOut,
    NoUnknownFieldsMixin,
    StrictCharField,
    StrictIntegerField,
    ValidationErrorOut,
)
from inventory.models import Product, Restock


class SaleItemIn(NoUnknownFieldsMixin, serializers.Serializer):
    sku = StrictCharField(max_length=64, trim_whitespace=False)
    quantity = StrictIntegerField(min_value=1, max_value=100)


class SaleIn(NoUnknownFieldsMixin, serializers.Serializer):
    # The bounds are validators rather than min_length/max_length so that the schema states them
    # (minItems/maxItems): drf-spectacular reads a list's validators only.
    items = serializers.ListSerializer(
        child=SaleItemIn(),
        allow_empty=False,
        validators=[MinLengthValidator(1), MaxLengthValidator(20)],
        help_text="1 to 20 lines; each SKU at most once (add up the quantities instead).",
    )

    def validate_items(self, items):
        skus = [item["sku"] for item in items]
        if len(set(skus)) != len(skus):
            raise serializers.ValidationError("Each SKU may appear once; add up the quantities instead.")
        return items


class SaleLineOut(serializers.Serializer):
    sku = serializers.CharField(source="product.sku")
    quantity = serializers.IntegerField()
    unit_price = serializers.DecimalField(max_digits=10, decimal_places=2)
    line_total = serializers.DecimalField(max_digits=12, decimal_places=2)


class SaleOut(serializers.Serializer):
    id = serializers.IntegerField()
    total = serializers.DecimalField(max_digits=12, decimal_places=2)
    created_at = serializers.DateTimeField()
    lines = SaleLineOut(many=True)


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


class RestockFilterIn(NoUnknownFieldsMixin, serializers.Serializer):
    sku = serializers.CharField(max_length=64, required=False)
    status = serializers.ChoiceField(choices=Restock.Status.choices, required=False)
    page = serializers.IntegerField(min_value=1, required=False)


class RestockRefOut(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    expected_at = serializers.DateTimeField(allow_null=True)


class ShortageOut(serializers.Serializer):
    sku = serializers.CharField()
    requested = serializers.IntegerField()
    available = serializers.IntegerField()
    restock = RestockRefOut()


class OutOfStockOut(ErrorOut):
    shortages = ShortageOut(many=True)

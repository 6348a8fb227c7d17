from rest_framework import serializers

from inventory.models import Product, Restock


class StrictIntegerField(serializers.IntegerField):
    """An integer and nothing else: no "2", no 2.0, no true."""

    default_error_messages = {"invalid": "Must be a whole number."}

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictCharField(serializers.CharField):
    """A string and nothing else: DRF would quietly turn 12 into "12"."""

    default_error_messages = {"invalid": "Must be a string."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class NoUnknownFieldsMixin:
    """Reject fields we do not know, so a typo ("quantiy") is a 400 instead of being ignored."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


class SaleItemIn(NoUnknownFieldsMixin, serializers.Serializer):
    sku = StrictCharField(max_length=64, trim_whitespace=False)
    quantity = StrictIntegerField(min_value=1, max_value=100)


class SaleIn(NoUnknownFieldsMixin, serializers.Serializer):
    items = SaleItemIn(many=True, min_length=1, max_length=20, allow_empty=False)

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


class ErrorOut(serializers.Serializer):
    code = serializers.CharField(help_text="Stable, machine-readable error code.")
    message = serializers.CharField()


class ValidationErrorOut(ErrorOut):
    errors = serializers.DictField(help_text="Field name -> list of problems.")


class OutOfStockOut(ErrorOut):
    shortages = ShortageOut(many=True)

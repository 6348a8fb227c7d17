# Validators only (no SQL): the admin shows a message beside the field instead of a raw constraint name.

import django.core.validators
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("inventory", "0006_exact_sku_and_idempotency_key"),
    ]

    operations = [
        migrations.AlterField(
            model_name="product",
            name="price",
            field=models.DecimalField(
                decimal_places=2, max_digits=10, validators=[django.core.validators.MinValueValidator(0)]
            ),
        ),
        migrations.AlterField(
            model_name="product",
            name="reorder_quantity",
            field=models.PositiveIntegerField(
                default=100,
                help_text="How many to order (1 to 10,000).",
                validators=[django.core.validators.MinValueValidator(1), django.core.validators.MaxValueValidator(10000)],
            ),
        ),
    ]

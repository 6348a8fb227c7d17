# Sale.total holds the dearest sale the API accepts: 20 lines of 100 at 99,999,999.99 is 199,999,999,980.00,
# 14 digits (12 refused it with a DataError). Widening a DECIMAL keeps every stored value.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("inventory", "0007_product_field_validators"),
    ]

    operations = [
        migrations.AlterField(
            model_name="sale",
            name="total",
            field=models.DecimalField(decimal_places=2, max_digits=14),
        ),
    ]

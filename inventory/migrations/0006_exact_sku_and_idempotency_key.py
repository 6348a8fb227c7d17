# SKUs and Idempotency-Keys compare exactly: a binary collation on MySQL/MariaDB (donutsite/db.py).

from django.db import migrations, models

from donutsite.db import EXACT_COLLATION


class Migration(migrations.Migration):
    dependencies = [
        ("inventory", "0005_restock_delivery_state_moves_to_factory"),
    ]

    operations = [
        migrations.AlterField(
            model_name="product",
            name="sku",
            field=models.CharField(db_collation=EXACT_COLLATION, max_length=64, unique=True),
        ),
        migrations.AlterField(
            model_name="idempotencykey",
            name="key",
            field=models.CharField(db_collation=EXACT_COLLATION, max_length=255),
        ),
    ]

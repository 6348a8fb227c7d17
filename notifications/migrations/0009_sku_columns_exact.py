# SKUs compare exactly (inventory.Product.sku), and so must every column that carries one: a subscription's
# SKU (or subscribing to glazed found the subscription to GLAZED, and GLAZED coming back pushed glazed's
# subscribers) and alert dedupe keys (or glazed selling out was held back in GLAZED's group, under a lock
# stripe that was not the group's). Forward only once rows differing only in case or accents exist: back
# under the case-blind collation their unique keys collide (MariaDB error 1062).

from django.db import migrations, models

from donutsite.db import EXACT_COLLATION


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0008_device_token_exact"),
    ]

    operations = [
        migrations.AlterField(
            model_name="subscription",
            name="sku",
            field=models.CharField(db_collation=EXACT_COLLATION, db_index=True, max_length=64),
        ),
        migrations.AlterField(
            model_name="alert",
            name="dedupe_key",
            field=models.CharField(db_collation=EXACT_COLLATION, db_index=True, max_length=200),
        ),
        migrations.AlterField(
            model_name="alertgroup",
            name="dedupe_key",
            field=models.CharField(db_collation=EXACT_COLLATION, max_length=200, unique=True),
        ),
    ]

# Dedupe keys carry SKUs, which compare exactly (inventory.Product.sku): grouped without case or accents,
# glazed selling out was held back in GLAZED's group, under a lock stripe that was not the group's.

from django.db import migrations, models

from donutsite.db import EXACT_COLLATION


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0009_subscription_sku_exact"),
    ]

    operations = [
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

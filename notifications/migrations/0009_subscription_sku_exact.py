# SKUs compare exactly (inventory.Product.sku): a subscription's SKU too, or subscribing to glazed found the
# subscription to GLAZED, and GLAZED coming back pushed glazed's subscribers.

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
    ]

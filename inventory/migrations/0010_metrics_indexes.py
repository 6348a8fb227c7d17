# /metrics reads this at every scrape (15-30 s): the restocks closed in the last 24 h are found by an
# index, not by reading every restock ever opened. InnoDB builds it online, without blocking writes.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("inventory", "0009_sku_without_slash"),
    ]

    operations = [
        migrations.AlterField(
            model_name="restock",
            name="closed_at",
            field=models.DateTimeField(blank=True, db_index=True, null=True),
        ),
    ]

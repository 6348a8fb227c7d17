# /metrics reads these at every scrape (15-30 s): calls by outcome and retries are counted from indexes,
# not by reading every call ever made. InnoDB builds them online, without blocking writes.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("factory", "0002_factoryorder"),
    ]

    operations = [
        migrations.AlterField(
            model_name="factoryattempt",
            name="number",
            field=models.PositiveIntegerField(db_index=True),
        ),
        migrations.AlterField(
            model_name="factoryattempt",
            name="outcome",
            field=models.CharField(
                choices=[
                    ("accepted", "Accepted"),
                    ("replayed", "Replayed"),
                    ("rate_limited", "Rate Limited"),
                    ("transient", "Transient"),
                    ("permanent", "Permanent"),
                ],
                db_index=True,
                max_length=16,
            ),
        ),
    ]

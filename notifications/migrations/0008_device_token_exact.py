# FCM tokens are case-sensitive: compared exactly, like SKUs and Idempotency-Keys (donutsite/db.py).

from django.db import migrations, models

from donutsite.db import EXACT_COLLATION


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0007_device_per_client"),
    ]

    operations = [
        migrations.AlterField(
            model_name="device",
            name="token",
            field=models.CharField(db_collation=EXACT_COLLATION, max_length=255),
        ),
    ]

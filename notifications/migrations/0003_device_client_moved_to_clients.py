# ApiClient moved to the clients app: the device's foreign key points there in the migration state only.

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0002_alert_lock_stripes"),
        ("clients", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="device",
                    name="client",
                    field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name="devices", to="clients.apiclient"),
                ),
            ],
            database_operations=[],
        ),
    ]

# ApiClient moved to the clients app: the foreign keys point there in the migration state only;
# the table and its rows stay (clients 0001 and 0002).

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("inventory", "0003_idempotencykey_refusal"),
        ("clients", "0001_initial"),
        ("notifications", "0003_device_client_moved_to_clients"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="sale",
                    name="client",
                    field=models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name="sales", to="clients.apiclient"),
                ),
                migrations.AlterField(
                    model_name="idempotencykey",
                    name="client",
                    field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="+", to="clients.apiclient"),
                ),
                migrations.DeleteModel(name="ApiClient"),
            ],
            database_operations=[],
        ),
    ]

# ApiClient moved here from inventory. Its table already exists (inventory_apiclient), so this
# migration only adds the model to the migration state; 0002 renames the table.

from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("inventory", "0003_idempotencykey_refusal"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="ApiClient",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("name", models.CharField(max_length=100, unique=True)),
                        ("key_prefix", models.CharField(editable=False, help_text="First characters, to recognise a key.", max_length=16)),
                        ("key_hash", models.CharField(editable=False, max_length=64, unique=True)),
                        ("is_active", models.BooleanField(default=True)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                    ],
                    options={"db_table": "inventory_apiclient"},
                ),
            ],
            database_operations=[],
        ),
    ]

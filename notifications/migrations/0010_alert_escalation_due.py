# The escalation sweep's query (every few seconds) read every alert ever raised: an index that finds the few
# warnings still unacknowledged and not escalated. InnoDB builds it online, without blocking writes.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0009_sku_columns_exact"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="alert",
            index=models.Index(
                fields=["severity", "acknowledged_at", "escalated_at", "created_at"], name="alert_escalation_due"
            ),
        ),
    ]

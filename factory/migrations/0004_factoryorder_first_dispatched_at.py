# A pending restock's overdue clock counts from its first hand-over to the queue, which the sweep's resends
# of a lost message no longer move. The restocks pending at the upgrade start from their last hand-over, the
# only one noted, as they did before it.

from django.db import migrations, models
from django.db.models import F


def pending_ones_from_their_last_hand_over(apps, schema_editor):
    FactoryOrder = apps.get_model("factory", "FactoryOrder")
    FactoryOrder.objects.filter(restock__status="pending", dispatched_at__isnull=False).update(
        first_dispatched_at=F("dispatched_at")
    )


class Migration(migrations.Migration):
    dependencies = [
        ("factory", "0003_metrics_indexes"),
    ]

    operations = [
        migrations.AddField(
            model_name="factoryorder",
            name="first_dispatched_at",
            field=models.DateTimeField(
                blank=True,
                help_text="First hand-over to the task queue since the restock was opened or redriven.",
                null=True,
            ),
        ),
        migrations.RunPython(pending_ones_from_their_last_hand_over, migrations.RunPython.noop, elidable=True),
    ]

# /metrics reads these at every scrape (15-30 s): the last 24 h of sends, and every delivery counted by
# channel and status, from indexes. InnoDB builds them online, without blocking writes.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("notifications", "0010_alert_escalation_due"),
    ]

    operations = [
        migrations.AlterField(
            model_name="alertdelivery",
            name="sent_at",
            field=models.DateTimeField(blank=True, db_index=True, null=True),
        ),
        migrations.AddIndex(
            model_name="alertdelivery",
            index=models.Index(fields=["channel", "status"], name="alert_delivery_channel_status"),
        ),
    ]

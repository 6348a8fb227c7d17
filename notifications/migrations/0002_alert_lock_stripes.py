from django.db import migrations

STRIPES = 64


def create_stripes(apps, schema_editor):
    AlertLock = apps.get_model("notifications", "AlertLock")
    AlertLock.objects.bulk_create([AlertLock(id=i) for i in range(STRIPES)], ignore_conflicts=True)


class Migration(migrations.Migration):
    dependencies = [("notifications", "0001_initial")]

    operations = [migrations.RunPython(create_stripes, migrations.RunPython.noop)]

# Rename inventory_apiclient to clients_apiclient (InnoDB keeps the foreign keys pointing at it) once
# inventory and notifications point at clients.ApiClient, and carry the content type over so that
# permissions granted on API clients and admin history survive the move.

from django.db import migrations


def move_content_type(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    db = schema_editor.connection.alias
    if not ContentType.objects.using(db).filter(app_label="clients", model="apiclient").exists():
        ContentType.objects.using(db).filter(app_label="inventory", model="apiclient").update(app_label="clients")


def move_content_type_back(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    db = schema_editor.connection.alias
    if not ContentType.objects.using(db).filter(app_label="inventory", model="apiclient").exists():
        ContentType.objects.using(db).filter(app_label="clients", model="apiclient").update(app_label="inventory")


class Migration(migrations.Migration):
    dependencies = [
        ("clients", "0001_initial"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("inventory", "0004_apiclient_moved_to_clients"),
        ("notifications", "0003_device_client_moved_to_clients"),
    ]

    operations = [
        migrations.AlterModelTable(name="apiclient", table=None),
        migrations.RunPython(move_content_type, move_content_type_back),
    ]

"""ApiClient moved from inventory to clients: a database migrated before the move keeps its clients, their
keys, permissions granted on them, and every row that points at a client."""

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.contenttypes.models import ContentType
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

BEFORE = [("inventory", "0003_idempotencykey_refusal"), ("notifications", "0002_alert_lock_stripes")]


@pytest.mark.django_db(transaction=True)
def test_clients_and_what_points_at_them_survive_the_move():
    executor = MigrationExecutor(connection)
    executor.migrate([("clients", None), *BEFORE])
    old = executor.loader.project_state(BEFORE).apps
    OldClient = old.get_model("inventory", "ApiClient")
    client = OldClient.objects.create(name="till-1", key_prefix="abcdefgh", key_hash="h" * 64)
    sale = old.get_model("inventory", "Sale").objects.create(client=client, total="1.50")
    old.get_model("inventory", "IdempotencyKey").objects.create(client=client, key="k1", sale=sale, request_hash="r")
    old.get_model("notifications", "Device").objects.create(client=client, token="tok-1")
    content_type, _ = ContentType.objects.get_or_create(app_label="inventory", model="apiclient")

    call_command("migrate", verbosity=0)

    from clients.models import ApiClient
    from inventory.models import IdempotencyKey, Sale
    from notifications.models import Device

    moved = ApiClient.objects.get(name="till-1")
    assert (moved.pk, moved.key_hash) == (client.pk, "h" * 64)
    assert Sale.objects.get(pk=sale.pk).client == moved
    assert IdempotencyKey.objects.get(key="k1").client == moved
    assert Device.objects.get(token="tok-1").client == moved
    content_type.refresh_from_db()
    assert content_type.app_label == "clients", "permissions on API clients follow the model"
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT table_name FROM information_schema.key_column_usage"
            " WHERE table_schema = DATABASE() AND referenced_table_name = 'clients_apiclient'"
        )
        assert sorted(row[0] for row in cursor.fetchall()) == [
            "inventory_idempotencykey",
            "inventory_sale",
            "notifications_device",
        ], "the database's foreign keys still guard every row that points at a client"


MIGRATION_MISSING = (
    "the models differ from the migrations: make the migration with `DJANGO_DEBUG=1 DJANGO_SECRET_KEY=dev "
    '.venv/bin/python manage.py makemigrations APP -n what_changed` (CONTRIBUTING.md, "Change a model")'
)


@pytest.mark.django_db
def test_the_models_match_the_migrations():
    missing = io.StringIO()
    try:
        call_command("makemigrations", "--check", "--dry-run", stdout=missing)
    except SystemExit:
        pytest.fail(f"{MIGRATION_MISSING}. It would hold:\n{missing.getvalue()}")


def test_make_runs_sqlite_database_migrates_and_matches_the_models(tmp_path):
    """make run's database is SQLite unless DATABASE_URL is set, and every other test runs on MariaDB: only
    this sees a migration that names MariaDB's collation instead of donutsite.db.EXACT_COLLATION."""
    env = {
        "PATH": os.environ["PATH"],
        "DJANGO_ENV_FILE": "",
        "DJANGO_DEBUG": "1",
        "DJANGO_SECRET_KEY": "test-only-not-secret",
        "DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite3",
    }
    differ = (
        "\nIf test_the_models_match_the_migrations passes on MariaDB, a migration names a MariaDB value (a "
        f"collation: use donutsite.db.EXACT_COLLATION); else {MIGRATION_MISSING}"
    )
    for command, hint in ((["migrate", "--verbosity=0"], ""), (["makemigrations", "--check", "--dry-run"], differ)):
        result = subprocess.run(
            [sys.executable, "manage.py", *command],
            cwd=Path(__file__).resolve().parents[2],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, f"{' '.join(command)}: {result.stdout[-1000:]}{result.stderr[-2000:]}{hint}"

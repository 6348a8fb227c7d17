"""Every migration lets the release before it keep running on the new schema, and can be undone
(CONTRIBUTING.md, "Across a deploy"). A deploy migrates while the old web and workers still serve, and a
rollback starts the old code on the schema the new one left; so a migration may add a table, a nullable
column, a column with a database default (`db_default`) or an index, and may not take away or rename what
the old code reads, nor add a NOT NULL column whose value the old code's INSERTs do not give. Nor may it
rebuild a table that grows by millions of rows: MariaDB 10.11 refuses ALGORITHM=INPLACE for a column's
type changed (a wider DECIMAL too) and for a CHECK added, so it copies the table and blocks its writes
meanwhile; and for a FOREIGN KEY constraint added with its column ("Adding foreign keys needs
foreign_key_checks=OFF"): a million alerts took 13.6 s, an alert's INSERT waiting all of it. (A collation
changed, an index or a nullable column added, it does in place.)

A migration that must do one of those anyway (the release before it no longer reads the column, or the
table is known to be small) is listed in ALLOWED with why."""

from pathlib import Path

import pytest
from django.apps import apps
from django.db import connection, migrations
from django.db.migrations.loader import MigrationLoader
from django.db.models import NOT_PROVIDED, CheckConstraint

# Tables that grow with every sale (sales, their lines, the ledger, restocks and the factory's rows for them).
BIG_TABLES = {
    ("inventory", "sale"),
    ("inventory", "saleline"),
    ("inventory", "stockmovement"),
    ("inventory", "restock"),
    ("inventory", "idempotencykey"),
    ("factory", "factoryorder"),
    ("factory", "factoryattempt"),
    ("notifications", "alert"),
    ("notifications", "alertdelivery"),
}

ALLOWED = {
    # Applied before this check existed. Each broke the release before it for the minutes of its deploy
    # (notifications 0006: it could open no alert group for a new key, `facts` having no default), or
    # blocked writes to its table while MariaDB copied it (inventory 0003, 0008).
    ("clients", "0002_rename_table"): "before this check",
    ("inventory", "0002_restock_attempt_count_restock_claimed_at_and_more"): "before this check",
    ("inventory", "0003_idempotencykey_refusal"): "before this check",
    ("inventory", "0005_restock_delivery_state_moves_to_factory"): "before this check",
    ("inventory", "0008_sale_total_fits_the_dearest_sale"): "before this check",
    ("notifications", "0006_alert_group_facts"): "before this check",
}


def _column_type(field) -> str | None:
    if field.is_relation:  # its type is its target's key, which this state does not resolve
        return None
    return field.db_parameters(connection)["type"]


def problems_of(migration, before) -> list[str]:
    """What in `migration`, applied to the project state `before`, the release before it cannot run with."""
    found = []
    state = before.clone()
    for op in migration.operations:
        if not op.reversible:
            found.append(f"{op.describe()}: cannot be undone, so a rollback cannot migrate back past it")
        # What a SeparateDatabaseAndState does to the tables is its database operations.
        for db_op in getattr(op, "database_operations", [op]):
            found += _schema_problems(migration.app_label, db_op, before, state)
        op.state_forwards(migration.app_label, state)
    return found


def _schema_problems(app_label, op, before, state) -> list[str]:
    key = (app_label, getattr(op, "model_name_lower", None))
    if key not in before.models:  # a table this migration creates: no old code uses it
        return []
    if isinstance(op, migrations.AddField):
        field = op.field
        if not (field.null or field.many_to_many or field.generated or field.db_default is not NOT_PROVIDED):
            return [f"{op.describe()}: NOT NULL without db_default; the old release's INSERTs do not give it"]
        if key in BIG_TABLES and field.many_to_one and field.db_constraint:
            return [f"{op.describe()}: a FOREIGN KEY copies the whole table, blocking its writes: db_constraint=False"]
    elif isinstance(op, migrations.AlterField):
        found = []
        old = state.models[key].fields[op.name]
        if old.null and not op.field.null and op.field.db_default is NOT_PROVIDED:
            found.append(f"{op.describe()}: NULL to NOT NULL; the old release may still write NULL")
        old_type, new_type = _column_type(old), _column_type(op.field)
        if key in BIG_TABLES and old_type != new_type:
            found.append(f"{op.describe()}: {old_type} to {new_type} copies the whole table, blocking its writes")
        return found
    elif isinstance(op, migrations.AddConstraint):
        if key in BIG_TABLES and isinstance(op.constraint, CheckConstraint):
            return [f"{op.describe()}: a CHECK on a big table copies it, blocking its writes"]
    elif isinstance(op, (migrations.RemoveField, migrations.RenameField, migrations.DeleteModel)):
        return [f"{op.describe()}: the old release still reads it"]
    elif isinstance(op, (migrations.RenameModel, migrations.AlterModelTable)):
        return [f"{op.describe()}: the old release reads the old table"]
    return []


@pytest.mark.django_db  # a column's type is the server's (MariaDB or MySQL)
def test_every_migration_lets_the_release_before_it_run():
    loader = MigrationLoader(None, ignore_no_migrations=True)
    root = Path(__file__).resolve().parents[2]
    # The project's apps are the folders at its top; .venv (a fresh clone's) is under it too.
    ours = {config.label for config in apps.get_app_configs() if Path(config.path).parent == root}
    found = {}
    for node in loader.graph.leaf_nodes():
        for app, name in loader.graph.forwards_plan(node):
            if app not in ours or (app, name) in found or (app, name) in ALLOWED:
                continue
            before = loader.project_state((app, name), at_end=False)
            found[(app, name)] = problems_of(loader.graph.nodes[(app, name)], before)
    assert {node: problems for node, problems in found.items() if problems} == {}


def test_allowed_names_migrations_that_exist():
    loader = MigrationLoader(None, ignore_no_migrations=True)
    assert set(ALLOWED) <= set(loader.graph.nodes)

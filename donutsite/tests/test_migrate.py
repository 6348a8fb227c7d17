"""`manage.py migrate` during a deploy, with the old release still selling: a schema change that waits for
its table lock must not hold the shop's queries on that table behind it, and two migrates at once apply
each migration once (donutsite/management/commands/migrate.py). Real MariaDB, real `manage.py migrate`
processes, and the API answering from another thread."""

import io
import os
import subprocess
import threading

import pytest
from django.db import connection, connections, transaction
from django.db.migrations.executor import MigrationExecutor

from inventory.models import Product, Restock
from testsupport.data import make_product
from testsupport.processes import BIN, ROOT, wait_until

pytestmark = pytest.mark.django_db(transaction=True)

# inventory 0014 adds a unique index on the products table: online once it has its lock. The newest such
# migration, so that the shop below runs today's code on the schema before it: today's code reads every
# column the models name (0013's sku_folded among them).
BEFORE = [("inventory", "0013_product_sku_folded")]
INDEX = "product_sku_unique_ignoring_case"


def migrate_to(targets):
    executor = MigrationExecutor(connection)
    executor.migrate(targets)


@pytest.fixture
def products_without_the_index():
    migrate_to(BEFORE)
    yield
    migrate_to(MigrationExecutor(connection).loader.graph.leaf_nodes())


def index_exists() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SHOW INDEX FROM inventory_product WHERE Key_name = %s", [INDEX])
        return cursor.fetchone() is not None


def waiting(state: str, statement: str) -> int:
    """How many connections to the test database wait in `state` running a statement that names `statement`."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COUNT(*) FROM information_schema.processlist WHERE db = DATABASE() AND state = %s AND info LIKE %s",
            [state, f"%{statement}%"],
        )
        return cursor.fetchone()[0]


def ddl_waiting_for_its_lock() -> bool:
    return waiting("Waiting for table metadata lock", INDEX) > 0


def migrate_process(*args: str) -> subprocess.Popen:
    db = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_ENV_FILE": "",
        "DATABASE_URL": f"mysql://{db['USER']}:{db['PASSWORD']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 3306}/"
        f"{db['NAME']}",
        "DATABASE_READ_TIMEOUT_SECONDS": "0",  # as compose's migrate service runs
    }
    return subprocess.Popen(  # noqa: S603 - our own command
        [str(BIN / "python"), "manage.py", "migrate", "--noinput", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def in_thread(target) -> threading.Thread:
    def run():
        try:
            target()
        finally:
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


class LongReport:
    """A transaction that has read the products table and stays open until ended: any such transaction (a
    slow admin page, check_ledger, a worker's) holds the table's metadata lock until it ends."""

    def __init__(self):
        self._open, self._may_end = threading.Event(), threading.Event()
        self._thread = in_thread(self._run)
        assert self._open.wait(30)

    def _run(self):
        with transaction.atomic():
            Product.objects.count()
            self._open.set()
            self._may_end.wait(60)

    def end(self):
        self._may_end.set()
        self._thread.join(60)


def test_a_migration_waiting_for_a_table_lock_does_not_hold_the_shop_behind_it(products_without_the_index, client_app):
    Restock.objects.create(product=make_product(sku="GLAZED"), quantity=12, reason="manual")
    report = LongReport()
    migrate = migrate_process("inventory", "0014", "--lock-wait-seconds", "1")
    try:
        wait_until(ddl_waiting_for_its_lock, timeout=60, what="the CREATE INDEX to wait for its lock")

        answers = []
        shop = in_thread(lambda: answers.append(client_app.get("/api/v1/restocks/")))
        shop.join(60)  # a hang detector: without the fix it waits for the report, which waits for this
        answered_during_the_report = not shop.is_alive()
    finally:
        report.end()
        output, _ = migrate.communicate(timeout=120)

    assert answered_during_the_report, "the API waited behind the migration for the report to end"
    assert answers[0].status_code == 200 and answers[0].json()["results"][0]["quantity"] == 12
    # ...and the migration still went through once the report ended.
    assert migrate.returncode == 0, output
    assert "waited 1 s for a table lock" in output
    assert index_exists()


def test_two_migrates_at_once_apply_each_migration_once(products_without_the_index):
    # The report holds the first migrate's CREATE INDEX until the second has started too, so that both are
    # under way at once whatever the machine's speed.
    report = LongReport()
    first, second = migrate_process("--lock-wait-seconds", "60"), None
    try:
        wait_until(ddl_waiting_for_its_lock, timeout=60, what="the first migrate's CREATE INDEX to wait")
        second = migrate_process("--lock-wait-seconds", "60")
        # The second waits too: for the first's turn, or (with nothing keeping them apart) for the same index.
        wait_until(
            lambda: waiting("User lock", "GET_LOCK") + waiting("Waiting for table metadata lock", INDEX) == 2,
            timeout=60,
            what="the second migrate to wait",
        )
    finally:
        report.end()
        outputs = [process.communicate(timeout=120)[0] for process in (first, second) if process]

    assert (first.returncode, second.returncode) == (0, 0), outputs
    assert "Applying inventory.0014_sku_unique_ignoring_case... OK" in outputs[0]
    assert "another migrate" in outputs[1] and "No migrations to apply" in outputs[1]
    assert index_exists()


@pytest.mark.parametrize(
    "option",
    [["--lock-wait-seconds", "-1"], ["--lock-wait-seconds", "0"], ["--lock-attempts", "0"], ["--lock-attempts", "-3"]],
)
def test_a_lock_wait_or_attempts_below_one_is_refused_before_anything_runs(option):
    # MariaDB took -1 s as 0 (no wait at all) with a warning nobody saw, and the retries said "waited -1 s".
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="whole number, 1 or more"):
        call_command("migrate", *option, verbosity=0)


def test_a_migrate_waiting_for_another_past_its_bound_gives_up_naming_the_holder(monkeypatch):
    # One that holds the lock that long is stuck: the deploy stops, saying so, rather than wait for ever.
    import time

    from django.core.management import CommandError, call_command

    from donutsite.management.commands import migrate

    monkeypatch.setattr(migrate, "ONE_AT_A_TIME_SECONDS", 1.5)
    holder = connections.create_connection("default")  # the other migrate's connection
    try:
        with holder.cursor() as cursor:
            cursor.execute("SELECT GET_LOCK(CONCAT('migrate:', DATABASE()), 0), CONNECTION_ID()")
            taken, holder_id = cursor.fetchone()
        assert taken == 1
        said = io.StringIO()
        began = time.monotonic()
        with pytest.raises(CommandError, match=r"another migrate held 'migrate:\w+' for 1.5 s; is it stuck\?"):
            call_command("migrate", "--noinput", verbosity=0, stderr=said)
        assert time.monotonic() - began >= 1.5
        assert said.getvalue() == f"another migrate (connection {holder_id}) is running; waiting for it to finish\n"
    finally:
        holder.close()


def test_a_database_with_skus_differing_only_in_case_is_not_migrated_until_ops_rename_one(products_without_the_index):
    try:
        for sku in ("GLAZED", "glazed", "Glazed", "MAPLE", "maple", "VIRAL"):
            make_product(sku, on_hand=0)

        refused = migrate_process()
        refused_output = refused.communicate(timeout=120)[0]
        assert refused.returncode != 0
        assert "Products whose SKUs differ only in case: GLAZED and Glazed and glazed; MAPLE and maple." in (
            refused_output
        )
        assert not index_exists(), "nothing changed"

        rename_all_but_one()
        migrated = migrate_process()
        assert migrated.communicate(timeout=120)[0] and migrated.returncode == 0
        assert index_exists()
    finally:
        rename_all_but_one()  # for the fixture's migrate


def rename_all_but_one():
    """What docs/operations.md asks of ops: one of each group keeps its SKU."""
    for old, new in (("Glazed", "GLAZED-2"), ("glazed", "GLAZED-3"), ("maple", "MAPLE-2")):
        Product.objects.filter(sku=old).update(sku=new)

"""`manage.py migrate` that never lets a schema change stall the shop behind a lock it waits for.

An ALTER TABLE or CREATE INDEX first needs the table's metadata lock, which waits for every open
transaction that has read the table (a slow admin page, `check_ledger`, a worker mid-transaction). While
it waits, MariaDB and MySQL queue every later query on that table behind it, sales included, for up to
`lock_wait_timeout` (a day by default). Here each statement waits at most --lock-wait-seconds; one that
gives up did nothing, so after a pause in which the queued queries pass it is sent again, up to
--lock-attempts times, and then migrate fails naming it (the deploy stops before any new code starts).

Two migrates at once (a second `docker compose up`, a one-off `run migrate` beside it, init containers)
would apply the same migrations side by side: the slower one fails ("Duplicate key name"), or worse, each
applies half of a migration and neither records it. One migrate per database runs at a time: the others
wait for its named lock, then find what it applied.
"""

import itertools
import time

from django.core.management.base import CommandError
from django.core.management.commands.migrate import Command as DjangoMigrate
from django.db import OperationalError, connections

# LOCK_WAIT_TIMEOUT: a metadata (or row) lock not granted in time.
from donutsite.db import LOCK_WAIT_TIMEOUT, error_code, named_lock_release, named_lock_take
from donutsite.management import at_least_one

PAUSE_SECONDS = 1.0
ONE_AT_A_TIME_SECONDS = 3600


class Command(DjangoMigrate):
    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "--lock-wait-seconds",
            type=at_least_one,
            default=2,
            help="MySQL: how long one schema statement may wait for its table lock (the shop's queries on "
            "that table wait behind it meanwhile); then it is tried again after a pause (default 2).",
        )
        parser.add_argument(
            "--lock-attempts",
            type=at_least_one,
            default=60,
            help="MySQL: how many times a schema statement is tried before migrate gives up (default 60).",
        )

    def handle(self, *args, **options):
        connection = connections[options["database"]]
        if connection.vendor != "mysql":
            return super().handle(*args, **options)
        with connection.cursor() as cursor:
            cursor.execute("SELECT @@SESSION.lock_wait_timeout")
            (before,) = cursor.fetchone()
            cursor.execute("SET SESSION lock_wait_timeout = %s", [options["lock_wait_seconds"]])
        name = f"migrate:{connection.settings_dict['NAME']}"[:64]  # server-wide: one per database
        try:
            self._one_at_a_time(connection, name)
            retry = LockWaitRetry(self, options["lock_wait_seconds"], options["lock_attempts"])
            with connection.execute_wrapper(retry):
                return super().handle(*args, **options)
        finally:
            # The connection outlives a call_command("migrate") (the test database's creation, say).
            if connection.connection is not None:
                with connection.cursor() as cursor:
                    cursor.execute("SET SESSION lock_wait_timeout = %s", [before])
            named_lock_release(connection, name)

    def _one_at_a_time(self, connection, name: str) -> None:
        """Take the named lock of this database's migrations (released with the connection, should this
        process die), waiting for another migrate that holds it."""

        def waiting(holder):
            self.stderr.write(f"another migrate (connection {holder}) is running; waiting for it to finish")

        taken, _ = named_lock_take(connection, name, ONE_AT_A_TIME_SECONDS, on_wait=waiting)
        if not taken:
            raise CommandError(f"another migrate held {name!r} for {ONE_AT_A_TIME_SECONDS} s; is it stuck?")


class LockWaitRetry:
    """An execute wrapper: a statement outside a transaction (Django runs MySQL's schema changes so) that
    timed out waiting for a lock is sent again after a pause. Inside a transaction (a data migration) the
    error stands: the transaction, not the statement, would have to be retried."""

    def __init__(self, command, wait: int, attempts: int):
        self.command, self.wait, self.attempts = command, wait, attempts

    def __call__(self, execute, sql, params, many, context):
        for attempt in itertools.count(1):
            try:
                return execute(sql, params, many, context)
            except OperationalError as exc:
                if error_code(exc) != LOCK_WAIT_TIMEOUT or context["connection"].in_atomic_block:
                    raise
                if attempt >= self.attempts:
                    raise CommandError(
                        f"gave up after {attempt} tries of {self.wait} s waiting for a table lock: {sql[:200]}. "
                        "A transaction held the table all along (SHOW PROCESSLIST names it); end it and run "
                        "migrate again."
                    ) from exc
                self.command.stderr.write(
                    f"waited {self.wait} s for a table lock, letting the queries queued behind it through "
                    f"(try {attempt} of {self.attempts}): {sql[:200]}"
                )
                time.sleep(PAUSE_SECONDS)

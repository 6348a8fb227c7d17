"""`manage.py migrate` that never lets a schema change stall the shop behind a lock it waits for.

An ALTER TABLE or CREATE INDEX first needs the table's metadata lock, which waits for every open
transaction that has read the table (a slow admin page, `check_ledger`, a worker mid-transaction). While
it waits, MariaDB and MySQL queue every later query on that table behind it, sales included, for up to
`lock_wait_timeout` (a day by default). Here each statement waits at most --lock-wait-seconds; one that
gives up did nothing, so after a pause in which the queued queries pass it is sent again, up to
--lock-attempts times, and then migrate fails naming it (the deploy stops before any new code starts).
"""

import itertools
import time

from django.core.management.base import CommandError
from django.core.management.commands.migrate import Command as DjangoMigrate
from django.db import OperationalError, connections

LOCK_WAIT_TIMEOUT = 1205  # ER_LOCK_WAIT_TIMEOUT: a metadata (or row) lock not granted in time
PAUSE_SECONDS = 1.0


class Command(DjangoMigrate):
    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "--lock-wait-seconds",
            type=int,
            default=2,
            help="MySQL: how long one schema statement may wait for its table lock (the shop's queries on "
            "that table wait behind it meanwhile); then it is tried again after a pause (default 2).",
        )
        parser.add_argument(
            "--lock-attempts",
            type=int,
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
        try:
            retry = LockWaitRetry(self, options["lock_wait_seconds"], options["lock_attempts"])
            with connection.execute_wrapper(retry):
                return super().handle(*args, **options)
        finally:
            # The connection outlives a call_command("migrate") (the test database's creation, say).
            if connection.connection is not None:
                with connection.cursor() as cursor:
                    cursor.execute("SET SESSION lock_wait_timeout = %s", [before])


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
                if exc.args[0] != LOCK_WAIT_TIMEOUT or context["connection"].in_atomic_block:
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

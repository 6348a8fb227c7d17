"""What our code needs to know of the database server: a collation that compares strings exactly, the
error numbers of a lock conflict, and its named locks.

A collation that compares strings exactly (case, accents, every code point), on any database we run.

MySQL and MariaDB compare with the table's collation, utf8mb4_unicode_ci by default (compose's too):
`key-abcdef` equals `Key-AbCdEf` and `GLAZED` equals `glazed` or `GLA\\0ZED`. Columns that identify
something (idempotency keys, SKUs) take the binary collation instead. utf8mb4_bin exists on MySQL 8.4
and MariaDB alike; it still ignores trailing spaces (PAD SPACE), which neither keys nor SKUs may end
in. SQLite's BINARY is its default and exact.
"""

import time

from django.conf import settings
from django.db import DatabaseError

EXACT_COLLATION = "utf8mb4_bin" if settings.DATABASES["default"]["ENGINE"] == "django.db.backends.mysql" else "BINARY"


# MariaDB's (and MySQL's) answers to a statement that met another transaction's locks: picked as a deadlock's
# victim (1213: its whole transaction rolled back, so running that again is safe), or not granted a lock
# within innodb_lock_wait_timeout (1205: only the statement rolled back).
DEADLOCK = 1213
LOCK_WAIT_TIMEOUT = 1205


def error_code(exc: Exception) -> int | None:
    """The server's error number of a database error (mysqlclient puts it first in the arguments), or None."""
    code = exc.args[0] if exc.args else None
    return code if isinstance(code, int) else None


def exact_lookup_possible(value: str) -> bool:
    """Whether a lookup of `value` in an EXACT_COLLATION column finds only `value`: one ending in a space
    would find the same without it (PAD SPACE), and no key or SKU ends in one, so it must find nothing."""
    return not value.endswith(" ")


# The longest one GET_LOCK waits, asked again until the caller's wait has passed: one query waiting longer than
# DATABASE_READ_TIMEOUT_SECONDS is cut off as a database that stopped answering.
NAMED_LOCK_STEP_SECONDS = 1.0


def named_lock_take(connection, name: str, wait: float, on_wait=None) -> tuple[bool, int | None]:
    """Take the MySQL or MariaDB named lock `name` (GET_LOCK) on this connection, waiting up to `wait` seconds
    for the connection that holds it to let go: (taken, that connection's id as last seen). `on_wait(holder)`
    is called once, when the first try finds it held and there is time to wait.

    Named locks are server-wide, not per database, and belong to the connection: the server frees one when its
    connection closes, so a killed process's lock goes with it. Free it with `named_lock_release`."""
    deadline = time.monotonic() + wait
    with connection.cursor() as cursor:
        cursor.execute("SELECT GET_LOCK(%s, 0), IS_USED_LOCK(%s)", [name, name])
        taken, holder = cursor.fetchone()
        if taken != 1 and wait > 0 and on_wait is not None:
            on_wait(holder)
        while taken != 1 and (left := deadline - time.monotonic()) > 0:
            step = min(NAMED_LOCK_STEP_SECONDS, left)
            cursor.execute("SELECT GET_LOCK(%s, %s), IS_USED_LOCK(%s)", [name, step, name])
            taken, holder = cursor.fetchone()
    return taken == 1, holder


def named_lock_release(connection, name: str) -> None:
    """Free a named lock taken on this connection; one whose connection closed went with it. A release that
    fails closes the connection, which frees the lock on the server, and raises: kept open (it may still
    answer), an idle persistent connection would hold the lock until CONN_MAX_AGE closed it."""
    if connection.connection is None:
        return
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT RELEASE_LOCK(%s)", [name])
    except DatabaseError:
        connection.close()
        raise

"""What our code needs to know of the database server: a collation that compares strings exactly, and the
error numbers of a lock conflict.

A collation that compares strings exactly (case, accents, every code point), on any database we run.

MySQL and MariaDB compare with the table's collation, utf8mb4_unicode_ci by default (compose's too):
`key-abcdef` equals `Key-AbCdEf` and `GLAZED` equals `glazed` or `GLA\\0ZED`. Columns that identify
something (idempotency keys, SKUs) take the binary collation instead. utf8mb4_bin exists on MySQL 8.4
and MariaDB alike; it still ignores trailing spaces (PAD SPACE), which neither keys nor SKUs may end
in. SQLite's BINARY is its default and exact.
"""

from django.conf import settings

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

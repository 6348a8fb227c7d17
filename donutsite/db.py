"""A collation that compares strings exactly (case, accents, every code point), on any database we run.

MySQL and MariaDB compare with the table's collation, utf8mb4_unicode_ci by default (compose's too):
`key-abcdef` equals `Key-AbCdEf` and `GLAZED` equals `glazed` or `GLA\\0ZED`. Columns that identify
something (idempotency keys, SKUs) take the binary collation instead. utf8mb4_bin exists on MySQL 8.4
and MariaDB alike; it still ignores trailing spaces (PAD SPACE), which neither keys nor SKUs may end
in. SQLite's BINARY is its default and exact.
"""

from django.conf import settings

EXACT_COLLATION = "utf8mb4_bin" if settings.DATABASES["default"]["ENGINE"] == "django.db.backends.mysql" else "BINARY"


def exact_lookup_possible(value: str) -> bool:
    """Whether a lookup of `value` in an EXACT_COLLATION column finds only `value`: one ending in a space
    would find the same without it (PAD SPACE), and no key or SKU ends in one, so it must find nothing."""
    return not value.endswith(" ")

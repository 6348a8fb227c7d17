"""`manage.py database_create`: make run creates the MariaDB/MySQL database DATABASE_URL names, if missing."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


def database_create(db: dict) -> bool:
    """Create the database of this DATABASES entry (utf8mb4, as the tests' is) if its server has none by
    that name; True if it was created. Only MariaDB/MySQL: SQLite makes its file on first use."""
    import MySQLdb

    try:
        server = MySQLdb.connect(
            host=db["HOST"] or "127.0.0.1",
            port=int(db["PORT"] or 3306),
            user=db["USER"],
            password=db["PASSWORD"] or "",
            charset="utf8mb4",
            connect_timeout=5,
        )
    except MySQLdb.OperationalError as exc:
        raise CommandError(
            f"Cannot reach the database server at {db['HOST'] or '127.0.0.1'}:{db['PORT'] or 3306} ({exc.args[-1]}). "
            "Start it (`make services` starts the local MariaDB) or correct DATABASE_URL."
        ) from None
    with server, server.cursor() as cursor:
        cursor.execute("SELECT 1 FROM information_schema.schemata WHERE schema_name = %s", (db["NAME"],))
        if cursor.fetchone():
            return False
        quoted = db["NAME"].replace("`", "``")
        cursor.execute(f"CREATE DATABASE IF NOT EXISTS `{quoted}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci")
    return True


class Command(BaseCommand):
    help = "Create the MariaDB/MySQL database DATABASE_URL names if its server has none by that name (make run does)."

    def handle(self, *args, **options):
        db = settings.DATABASES["default"]
        if db["ENGINE"] == "django.db.backends.mysql" and database_create(db):
            self.stdout.write(f"created database {db['NAME']}")

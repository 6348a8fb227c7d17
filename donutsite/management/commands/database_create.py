"""`manage.py database_create`: make run creates the MariaDB/MySQL database DATABASE_URL names, if missing."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


def database_create(db: dict) -> bool:
    """Create the database of this DATABASES entry (utf8mb4, as the tests' is) if its server has none by
    that name; True if it was created. Only MariaDB/MySQL: SQLite makes its file on first use."""
    import MySQLdb
    from django.db.backends.mysql.base import DatabaseWrapper

    # Connected as Django connects (a socket path as HOST, OPTIONS such as ssl or an option file), only
    # without the database, which may not exist yet.
    params = DatabaseWrapper(db).get_connection_params()
    params.pop("database", None)
    where = params.get("unix_socket") or f"{params.get('host', 'localhost')}:{params.get('port', 3306)}"
    try:
        server = MySQLdb.connect(**params)
    except MySQLdb.OperationalError as exc:
        if exc.args[0] < 2000:  # the server answered: a server error (1045 access denied), not a client one
            raise CommandError(f"The database server at {where} refused: {exc.args[-1]}. Check DATABASE_URL.") from None
        raise CommandError(
            f"Cannot reach the database server at {where} ({exc.args[-1]}). "
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

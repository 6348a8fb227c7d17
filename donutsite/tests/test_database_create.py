"""make run creates the MariaDB database DATABASE_URL names when the server does not have it yet."""

import os

import MySQLdb
import pytest
from django.conf import settings
from django.core.management import CommandError

from donutsite.management.commands.database_create import database_create

# Named after the test database and the pytest worker: one fixed name was dropped and created by every run on the
# server at once (two pytest workers, two checkouts), each under the other's assertions.
NAME = "_".join(
    filter(None, [settings.DATABASES["default"]["NAME"], "created_by_test", os.environ.get("PYTEST_XDIST_WORKER")])
)


def server_cursor():
    db = settings.DATABASES["default"]
    connection = MySQLdb.connect(
        host=db["HOST"] or "127.0.0.1", port=int(db["PORT"] or 3306), user=db["USER"], password=db["PASSWORD"] or ""
    )
    connection.autocommit(True)
    return connection.cursor()


@pytest.fixture
def missing():
    cursor = server_cursor()
    cursor.execute(f"DROP DATABASE IF EXISTS `{NAME}`")
    yield {**settings.DATABASES["default"], "NAME": NAME}
    cursor.execute(f"DROP DATABASE IF EXISTS `{NAME}`")


def test_a_missing_database_is_created_once_in_utf8mb4(missing):
    assert database_create(missing) is True
    assert database_create(missing) is False, "there already: left alone"

    cursor = server_cursor()
    cursor.execute("SELECT default_character_set_name FROM information_schema.schemata WHERE schema_name = %s", (NAME,))
    assert cursor.fetchone() == ("utf8mb4",)


def test_an_unreachable_server_is_a_message_not_a_traceback(missing):
    with pytest.raises(CommandError, match="Cannot reach the database server at 127.0.0.1:9"):
        database_create({**missing, "HOST": "127.0.0.1", "PORT": "9"})


def test_a_login_the_server_refuses_is_said_as_such(missing):
    with pytest.raises(CommandError, match="The database server at 127.0.0.1:3306 refused: Access denied"):
        database_create({**missing, "HOST": "127.0.0.1", "PORT": "3306", "USER": "nobody-here", "PASSWORD": "x"})


def test_a_socket_path_as_host_is_connected_to_as_django_does(missing):
    cursor = server_cursor()
    cursor.execute("SELECT @@socket")
    (socket_path,) = cursor.fetchone()

    assert database_create({**missing, "HOST": socket_path, "PORT": ""}) is True

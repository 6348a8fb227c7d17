"""Query plans on the test database (MariaDB): which index a call's queries use once a table is big."""

from django.db import connection
from django.test.utils import CaptureQueriesContext


def plans(call, table: str) -> list[dict]:
    """Run `call`, then EXPLAIN each SELECT, UPDATE or DELETE it sent that names `table`: that table's row
    of each plan (type, key, rows...), in the order the queries ran."""
    with CaptureQueriesContext(connection) as captured:
        call()
    found = []
    with connection.cursor() as cursor:
        for query in captured.captured_queries:
            sql = query["sql"]
            if sql.split(None, 1)[0].upper() not in ("SELECT", "UPDATE", "DELETE") or f"`{table}`" not in sql:
                continue
            cursor.execute(f"EXPLAIN {sql}")
            columns = [column[0] for column in cursor.description]
            found += [
                row for row in (dict(zip(columns, values)) for values in cursor.fetchall()) if row["table"] == table
            ]
    return found

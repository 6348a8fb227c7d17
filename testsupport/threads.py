"""Threads for tests that race two transactions against each other."""

import threading
import time

from django.db import connections

# information_schema.innodb_trx is a copy that InnoDB refreshes only when no connection of the whole server has
# read it for 0.1 s. A poll faster than that, in this process or in any other on the server (the other pytest
# worker's, another checkout's run), keeps the copy frozen: the wait it looks for is never seen, and every
# test polling it meanwhile waits out its timeout.
LOCK_POLL_SECONDS = 0.15


def thread_keeping(outcomes: dict, name: str, fn) -> threading.Thread:
    """A thread (not started) that runs `fn` on connections of its own and keeps what it returned or raised
    in outcomes[name]."""

    def run_and_keep():
        try:
            outcomes[name] = fn()
        except Exception as exc:
            outcomes[name] = exc
        finally:
            connections.close_all()

    return threading.Thread(target=run_and_keep)


def connection_id() -> int:
    """This thread's MariaDB connection id, as another connection sees it (waiting_for_a_lock)."""
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT CONNECTION_ID()")
        return cursor.fetchone()[0]


def waiting_for_a_lock(connection_id: int) -> bool:
    """Whether that connection's transaction waits for a row lock now: a race's other side is in place."""
    return lock_waiting_transaction(connection_id) is not None


def lock_waiting_transaction(connection_id: int) -> str | None:
    """That connection's transaction (its id and start) while it waits for a row lock, else None: another
    value is another transaction, one run again after the first gave up waiting. Poll it every
    LOCK_POLL_SECONDS at the fastest."""
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "SELECT trx_id, trx_started FROM information_schema.innodb_trx"
            " WHERE trx_mysql_thread_id = %s AND trx_state = %s",
            [connection_id, "LOCK WAIT"],
        )
        row = cursor.fetchone()
        return f"{row[0]} {row[1]}" if row else None


def until_waiting(condition, *, timeout: float) -> bool:
    """Poll `condition` (a race's other side waiting for a lock: waiting_for_a_lock) every LOCK_POLL_SECONDS
    until it holds, or `timeout` seconds have passed (then the race goes on all the same); whether it held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(LOCK_POLL_SECONDS)
    return True

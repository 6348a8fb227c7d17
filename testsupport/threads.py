"""Threads for tests that race two transactions against each other."""

import re
import threading
import time

from django.db import connections

from donutsite.sweeps import sweep_alone

# How often until_waiting asks whether a race's other side waits for a lock.
LOCK_POLL_SECONDS = 0.05


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
    """That connection's transaction (its InnoDB id) while it waits for a row lock, else None: another value is
    another transaction, one run again after the first gave up waiting.

    Read from SHOW ENGINE INNODB STATUS, which InnoDB writes out when asked. information_schema.innodb_trx is
    a copy that InnoDB refreshes only once no connection of the whole server has read it for 0.1 s: two other
    processes polling it (the other pytest worker, another checkout's run) kept it stale for seconds, the
    wait went unseen, and the race went on without its other side in place (test_tasks' lock holder missed
    the record's second wait and never let go)."""
    with connections["default"].cursor() as cursor:
        cursor.execute("SHOW ENGINE INNODB STATUS")
        status = cursor.fetchone()[2]
    transactions = status.partition("\nTRANSACTIONS\n")[2].partition("\nFILE I/O\n")[0]
    this_connection = re.compile(rf"^(MariaDB|MySQL) thread id {connection_id},", re.MULTILINE)
    for transaction in transactions.split("\n---TRANSACTION ")[1:]:
        if this_connection.search(transaction) and "\nLOCK WAIT " in transaction:
            return transaction.partition(",")[0]
    return None


def until_waiting(condition, *, timeout: float) -> bool:
    """Poll `condition` (a race's other side waiting for a lock: waiting_for_a_lock) every LOCK_POLL_SECONDS
    until it holds, or `timeout` seconds have passed (then the race goes on all the same); whether it held."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(LOCK_POLL_SECONDS)
    return True


def sweep_guard_held(name: str, outcomes: dict) -> tuple[threading.Thread, threading.Event]:
    """A thread holding the sweep's guard (donutsite.sweeps.sweep_alone) on a connection of its own, as a run
    under way on another worker does, until `let_go` is set: (holder, let_go), the holder started and holding
    it (outcomes["held"] is True). It ends without leaving the guard (the run died): its connection closes,
    which is all that frees the guard then."""
    held, let_go = threading.Event(), threading.Event()
    guards = []  # kept: a guard collected as garbage would be left normally

    def hold():
        guard = sweep_alone(name)
        guards.append(guard)
        outcomes["held"] = guard.__enter__()
        held.set()
        let_go.wait(10)

    holder = thread_keeping(outcomes, "holder", hold)
    holder.start()
    assert held.wait(5)
    return holder, let_go


def sweep_guard_waited_for() -> bool:
    """Whether a connection to this test database waits for a sweep's guard now (GET_LOCK's "User lock"):
    a command's run is in place behind the run under way."""
    with connections["default"].cursor() as cursor:
        cursor.execute(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE DB = DATABASE() AND STATE = 'User lock'"
        )
        return cursor.fetchone()[0] > 0

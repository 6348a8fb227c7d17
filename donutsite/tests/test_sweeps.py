"""The beat sweeps run one at a time (donutsite.sweeps.single_flight): a run that finds another under way
skips, and the guard goes with the run that held it, however that run ended."""

import pytest
from celery import current_app
from django.conf import settings
from django.db import OperationalError, connection

from donutsite.sweeps import _lock_name, sweep_ages, sweep_alone
from testsupport.threads import sweep_guard_held, thread_keeping

pytestmark = pytest.mark.django_db(transaction=True)

SWEEPS = sorted({entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()})
NOTHING_DUE = {"restocks_resent": 0, "overdue_polled": 0, "overdue_alerted": 0}


def _task(name: str):
    current_app.loader.import_default_modules()  # the apps' tasks, as a worker registers them
    return current_app.tasks[name]


@pytest.mark.parametrize("name", SWEEPS)
def test_every_beat_sweep_skips_while_another_run_of_it_is_under_way_and_notes_nothing(name):
    outcomes = {}
    holder, let_go = sweep_guard_held(name, outcomes)
    try:
        assert outcomes["held"] is True
        assert _task(name)() == {"skipped": f"another {name} run is under way"}
        assert sweep_ages().get(name) is None, "a skipped run does not keep the sweep alive"
    finally:
        let_go.set()
        holder.join(10)


def test_a_run_that_died_holding_the_guard_blocks_the_sweep_only_until_its_connection_closes():
    # A worker killed mid-sweep never leaves the guard: the database frees it with the worker's connection.
    from factory.tasks import reconcile_task

    outcomes = {}
    holder, let_go = sweep_guard_held("factory.reconcile", outcomes)
    assert reconcile_task() == {"skipped": "another factory.reconcile run is under way"}
    let_go.set()
    holder.join(10)

    assert reconcile_task() == NOTHING_DUE


def test_a_sweep_that_failed_frees_its_guard(monkeypatch):
    # Checked from another connection: a named lock is taken again, not refused, on the one that holds it.
    from factory import services
    from factory.tasks import reconcile_task

    reconcile = services.reconcile
    monkeypatch.setattr(services, "reconcile", lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        reconcile_task()
    monkeypatch.setattr(services, "reconcile", reconcile)

    outcomes = {}
    elsewhere = thread_keeping(outcomes, "elsewhere", reconcile_task)
    elsewhere.start()
    elsewhere.join(10)
    assert outcomes["elsewhere"] == NOTHING_DUE


def test_a_guard_whose_release_failed_is_freed_by_closing_its_connection(caplog):
    # A release cut off (a read timeout, say) on a connection that still answers: kept open, the idle worker's
    # connection would hold the guard and every other worker's run would skip until CONN_MAX_AGE closed it.
    from factory.tasks import reconcile_task

    def release_cut_off(execute, sql, params, many, context):
        if "RELEASE_LOCK" in sql:
            raise OperationalError(2013, "Lost connection to server during query")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(release_cut_off), sweep_alone("factory.reconcile") as alone:
        assert alone is True

    outcomes = {}
    elsewhere = thread_keeping(outcomes, "elsewhere", reconcile_task)
    elsewhere.start()
    elsewhere.join(10)
    assert outcomes["elsewhere"] == NOTHING_DUE
    assert "sweep guard sweep:factory.reconcile:" in caplog.text
    assert "could not release it, closing the connection instead" in caplog.text
    assert reconcile_task() == NOTHING_DUE, "this worker's next run connects again"


@pytest.mark.parametrize("name", SWEEPS)
def test_databases_with_long_names_get_guards_of_their_own_that_the_server_takes(name):
    # Two databases whose names (64 characters, the most MySQL allows) differ only at the end: cut to 64
    # characters, both guards would be one lock and each database's runs would skip while the other's ran.
    databases = ("donut_" + "x" * 57 + "1", "donut_" + "x" * 57 + "2")
    locks = [_lock_name(name, database) for database in databases]

    assert locks[0] != locks[1]
    assert all(len(lock) <= 64 for lock in locks), "MySQL refuses a longer name (MariaDB takes it)"
    with connection.cursor() as cursor:
        for lock in locks:
            cursor.execute("SELECT GET_LOCK(%s, 0), RELEASE_LOCK(%s)", [lock, lock])
            assert cursor.fetchone() == (1, 1)

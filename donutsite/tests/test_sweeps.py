"""The beat sweeps run one at a time (donutsite.sweeps.single_flight): a run that finds another under way
skips, and the guard goes with the run that held it, however that run ended."""

import pytest
from celery import current_app
from django.conf import settings

from donutsite.sweeps import sweep_ages
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

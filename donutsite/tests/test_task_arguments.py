"""A message whose arguments a task does not take, as another release may send one while a deploy runs old
and new workers side by side (CONTRIBUTING.md, "Across a deploy"): a real worker drops it with one line
naming the task and the arguments, instead of a TypeError and its traceback. The work is left to the sweep
that watches it (for a restock: factory/tests/test_e2e.py)."""

import inspect
import json

import pytest
from celery import current_app

from testsupport.processes import System, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# A newer release's extra argument.
EXTRA = "from-a-newer-release"


def our_tasks() -> dict[str, list]:
    """Each of our tasks (not Celery's own) by name, with arguments it does not take: what it takes, one
    more at the end."""
    current_app.loader.import_default_modules()  # the apps' tasks modules, as a worker imports them
    tasks = {name: task for name, task in current_app.tasks.items() if not name.startswith("celery.")}
    return {
        name: [0] * sum(p.default is p.empty for p in inspect.signature(task.run).parameters.values()) + [EXTRA]
        for name, task in sorted(tasks.items())
    }


def test_every_task_drops_a_message_it_cannot_take_with_one_line_naming_it():
    tasks = our_tasks()
    assert {"factory.restock_place", "factory.restock_poll", "notifications.deliver"} <= set(tasks)
    system = System(broker_url=current_app.conf.broker_url)
    system.env["LOG_FORMAT"] = "json"
    system.flush_broker()
    try:
        # At DEBUG the worker also shows the task lines of the beat's sweeps (donutsite.logging).
        worker = system.start_worker("-l", "debug")
        sent = {name: current_app.send_task(name, args=args).id for name, args in tasks.items()}
        wait_until(
            lambda: all(
                f"[{message_id}] succeeded" in worker.output() or f"[{message_id}] raised" in worker.output()
                for message_id in sent.values()
            ),
            timeout=30,
            what="the worker to run every message",
        )
        records = [json.loads(line) for line in worker.output().splitlines() if line.startswith("{")]
    finally:
        system.stop()

    for name, args in tasks.items():
        dropped = [r["message"] for r in records if r["message"].startswith(f"{name}{tuple(args)!r}")]
        assert len(dropped) == 1 and "cannot take" in dropped[0], f"one line for {name}: {dropped}"
    failed = [r["message"] for r in records if "raised unexpected" in r["message"]]
    assert failed == [], "no TypeError and its traceback"

"""What `make run`'s console shows: routine sweeps only at DEBUG, an expected dead letter as one line,
each django.request warning once, a sweep that beat could not send while the broker is away as one line.
Run in a child process with make run's settings (DJANGO_DEBUG=1, plain lines), because Django's own
logging defaults differ between debug and production."""

import os
import subprocess
import sys
from pathlib import Path

from testsupport.processes import closed_port_url

ROOT = Path(__file__).resolve().parents[2]

# The records Celery and Django write, with the loggers, levels and arguments they use.
EMIT = """
import django, logging, sys
django.setup()
from celery.app import trace
from celery.worker import strategy
import factory.retries
import factory.tasks

logging.getLogger("celery.beat").info("Scheduler: Sending due task %s (%s)", "reconcile", "factory.reconcile")
strategy.logger.info("Task %(name)s[%(id)s] received", {"name": "notifications.sweep", "id": "s1"})
trace.logger.info("Task %(name)s[%(id)s] succeeded in %(runtime)ss: %(return_value)s",
                  {"name": "factory.reconcile", "id": "r1", "runtime": 0.01, "return_value": None})
strategy.logger.info("Task %(name)s[%(id)s] received", {"name": "factory.restock_place", "id": "p1"})
try:
    raise factory.retries.OutOfAttempts("6 failed attempts; last: refused")
except Exception:
    trace.logger.error("Task %(name)s[%(id)s] %(description)s: %(exc)s",
                       {"name": "factory.restock_place", "id": "p1", "description": "raised unexpected",
                        "exc": "OutOfAttempts('6 attempts')"}, exc_info=True)
try:
    raise ValueError("a bug")
except Exception:
    trace.logger.error("Task %(name)s[%(id)s] %(description)s: %(exc)s",
                       {"name": "factory.reconcile", "id": "r2", "description": "raised unexpected",
                        "exc": "ValueError('a bug')"}, exc_info=True)
logging.getLogger("django.request").warning("Not Found: %s", "/nowhere")
"""


# Beat sending its sweeps, as at each tick: the broker refused (make run's Redis stopped), then a task whose
# arguments no serializer takes (a bug, whatever the broker does).
BEAT_TICK = """
import django
django.setup()
from celery.beat import ScheduleEntry, Scheduler
from donutsite.celery import app
scheduler = Scheduler(app, lazy=True)
scheduler.apply_entry(ScheduleEntry(name="reconcile", task="factory.reconcile", app=app))
scheduler.apply_entry(ScheduleEntry(name="broken", task="factory.reconcile", args=(object(),), app=app))
"""


def _console(level: str, script: str = EMIT, **env_vars) -> str:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "donutsite.settings",
        "DJANGO_DEBUG": "1",
        "LOG_FORMAT": "plain",
        "LOG_LEVEL": level,
        **env_vars,
    }
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return done.stderr + done.stdout


def test_the_console_shows_what_matters_once():
    out = _console("INFO")

    assert "Sending due task" not in out
    assert "succeeded in" not in out
    assert "notifications.sweep" not in out
    # Work that is not a routine sweep still shows.
    assert "Task factory.restock_place[p1] received" in out
    # The expected dead letter's Celery record (with its traceback) is gone; the DEAD LETTER line stands for it.
    assert "OutOfAttempts" not in out
    # An unexpected error keeps its traceback.
    assert "Task factory.reconcile[r2] raised unexpected" in out
    assert "Traceback (most recent call last)" in out and "ValueError: a bug" in out
    assert out.count("Not Found: /nowhere") == 1


def test_log_level_debug_shows_the_routine_lines_again():
    out = _console("DEBUG")

    assert "DEBUG celery.beat [-] Scheduler: Sending due task reconcile (factory.reconcile)" in out
    assert "Task notifications.sweep[s1] received" in out
    assert "OutOfAttempts: 6 failed attempts; last: refused" in out


def test_a_sweep_beat_could_not_send_for_the_broker_is_one_warning_line():
    out = _console("INFO", BEAT_TICK, CELERY_BROKER_URL=closed_port_url())

    refused = [line for line in out.splitlines() if "scheduled task reconcile" in line]
    assert len(refused) == 1, out
    assert "WARNING celery.beat" in refused[0] and "broker unavailable" in refused[0]
    assert "Connection refused" in refused[0]
    # Celery's ERROR record carried the traceback and the whole stack (some 100 lines a tick): gone.
    assert "Traceback" not in out.split("scheduled task broken")[0]
    # Any other failure to send keeps its traceback.
    assert "ERROR celery.beat [-] Message Error: Couldn't apply scheduled task broken" in out
    assert "Traceback (most recent call last)" in out.split("scheduled task broken")[1]

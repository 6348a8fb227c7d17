"""Loaded first by every pytest process (`-p testsupport.workers` in pyproject.toml), before Django reads
its settings: under pytest-xdist, each worker process (gw0, gw1, ...) gets Redis databases of its own for
the broker and for REDIS_URL, as pytest-django gives it a test database of its own (test_<name>_gw1).

gw0 keeps CELERY_BROKER_URL and REDIS_URL; worker gwN reads CELERY_BROKER_URL_GWN and REDIS_URL_GWN
(scripts/test.sh sets them for the workers it starts). Two workers on one Redis database would empty each
other's queues and counters, so a worker without its own is refused."""

import os

import pytest

WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")  # set by pytest-xdist before a worker imports plugins


def _own_redis_databases(worker: str) -> None:
    if worker in ("", "gw0"):
        return
    for name in ("CELERY_BROKER_URL", "REDIS_URL"):
        own = os.environ.get(f"{name}_{worker.upper()}")
        if not own:
            raise pytest.UsageError(
                f"pytest-xdist worker {worker} needs Redis databases of its own: set TEST_{name}_{worker.upper()}"
                " for scripts/test.sh (CONTRIBUTING.md)"
            )
        os.environ[name] = own


_own_redis_databases(WORKER)

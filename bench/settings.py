"""Settings for the benchmark server: production settings, a database of its own, no rate limit.

The environment defaults are put in place *before* importing the production settings so that the
bench runs with exactly the production database options (isolation level, CONN_MAX_AGE, health
checks) and middleware, only pointed at a throwaway database and Redis number.
"""

import os
import runpy
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

os.environ.setdefault("BENCH_DATABASE_URL", "mysql://root@127.0.0.1:3306/donut_bench")
os.environ["DATABASE_URL"] = os.environ["BENCH_DATABASE_URL"]  # never the real DATABASE_URL: the bench drops it
os.environ.setdefault("DJANGO_SECRET_KEY", "bench-only-not-secret")
os.environ.setdefault("DJANGO_SECURE_SSL_REDIRECT", "0")  # wrk speaks plain HTTP to gunicorn, as a proxy would
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/12")
os.environ.setdefault("CELERY_BROKER_URL", "redis://127.0.0.1:6379/12")
os.environ.setdefault("FACTORY_API_KEY", "bench-factory-key")  # required in production; the bench never calls it
os.environ.setdefault("FACTORY_CALLBACK_SECRET", "bench-callback-secret")
os.environ.setdefault("API_THROTTLE_RATE", "100000000/second")  # the throttle runs (batches of 32), never bites

# `from donutsite.settings import *` would be the usual way, but importing anything under donutsite/ runs
# donutsite/__init__.py, whose Celery app reads Django's settings at import time: it would read this
# module while it is half loaded (AttributeError: 'Settings' object has no attribute 'task_queues_names').
# So execute the production settings file itself, then take its names as `import *` would.
_production = runpy.run_path(str(Path(__file__).resolve().parent.parent / "donutsite" / "settings.py"))
globals().update({name: value for name, value in _production.items() if name.isupper()})
DATABASES = _production["DATABASES"]

ROOT_URLCONF = "bench.urls"

if DATABASES["default"]["ENGINE"] != "django.db.backends.mysql":
    raise ImproperlyConfigured("The sales bench runs on MariaDB only (BENCH_DATABASE_URL).")

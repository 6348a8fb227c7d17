import os

from celery import Celery
from celery.signals import worker_init
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "donutsite.settings")

app = Celery("donutsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = [Queue(name) for name in app.conf.task_queues_names]
app.autodiscover_tasks()


@worker_init.connect
def refuse_unsafe_timing(**kwargs):
    """A worker must not start with time limits that let Redis hand a running task to a second worker."""
    from django.core.exceptions import ImproperlyConfigured

    from donutsite.checks import timing_problems

    problems = timing_problems()
    if problems:
        raise ImproperlyConfigured("; ".join(problems))

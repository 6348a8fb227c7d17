import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "donutsite.settings")

app = Celery("donutsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

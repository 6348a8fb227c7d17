"""`python -m donutsite.flower [flower options]`: Celery's Flower, showing every declared queue.

Flower lists only the queues some worker consumes, and no worker consumes `dead_letter` (it holds copies
of dead-lettered messages for ops to count; the database row is the record). This entry point widens
Flower's list to every queue in CELERY_TASK_QUEUES_NAMES, so the dead-letter queue and its length show
on the Broker page and in /api/queues/length.

It is also always read-only (Flower's `--read_only`: its API refuses to send, revoke or abort tasks and
to control workers, 403) and refuses to start without a login (FLOWER_BASIC_AUTH, `--basic_auth` or
`--auth`; each basic login user:password, none empty), also on its Prometheus page /metrics, which
Flower itself leaves open: whoever reaches it may watch the queues, never act on them. Redrives go
through the admin or `manage.py redrive`, which record who did what.

It never asks a worker for its configuration (Celery's `conf` inspection), which Flower shows on each
worker's Config tab and in /api/workers: the answer is every Django setting, and Celery masks only names
with KEY, SECRET, PASS, TOKEN and the like in them, so the broker and Redis URLs (with REDIS_PASSWORD in
them under compose: the broker runs any task it is given) and the Slack webhook were shown whole.
"""

import os
import sys


def widen_queue_list() -> None:
    from flower.views import BaseHandler

    consumed = BaseHandler.get_active_queue_names

    def get_active_queue_names(self):
        declared = {queue.name for queue in self.capp.conf.task_queues or []}
        return sorted(set(consumed(self)) | declared)

    BaseHandler.get_active_queue_names = get_active_queue_names


def hide_worker_settings() -> None:
    """Flower's inspection leaves out `conf`; the worker's stats, queues and tasks are still shown."""
    from flower.inspector import Inspector

    Inspector.inspect_methods = tuple(method for method in Inspector.inspect_methods if method != "conf")


def guard_metrics() -> None:
    """Flower serves its Prometheus page (task names, worker names, counts) without the login that guards
    every other page; ours asks for it there too. Its /healthcheck ("OK", nothing more) stays open."""
    from flower.views.monitor import Metrics
    from tornado.web import authenticated

    Metrics.get = authenticated(Metrics.get)


def flower_argv(args: list[str], environ: dict) -> list[str]:
    """`celery flower` with our options: read-only last, so nothing before it can switch it off."""
    logins = ("--basic_auth", "--basic-auth", "--auth")
    if not ({"--help", "-h"} & set(args) or environ.get("FLOWER_BASIC_AUTH") or environ.get("FLOWER_AUTH")):
        if not any(arg.split("=", 1)[0] in logins for arg in args):
            raise SystemExit("Flower needs a login: set FLOWER_BASIC_AUTH=user:password (or pass --basic_auth).")
    # Flower splits the login at commas and lets in whoever sends any one entry: an empty one (a trailing
    # comma, `--basic_auth=`) is matched by the header `Basic ====`, which decodes to nothing. The command
    # line's login replaces the environment's.
    given = [arg.split("=", 1)[1] for arg in args if "=" in arg and arg.split("=", 1)[0] in logins[:2]]
    for value in given or ([environ["FLOWER_BASIC_AUTH"]] if environ.get("FLOWER_BASIC_AUTH") else []):
        for number, login in enumerate(value.split(","), start=1):
            user, colon, password = login.partition(":")
            if not (user and colon and password):
                raise SystemExit(f"Flower's login {number} is not user:password (logins are comma-separated).")
    return ["celery", "-A", "donutsite", "flower", *args, "--read_only=true"]


def main() -> None:
    from celery.bin.celery import main as celery_main

    widen_queue_list()
    hide_worker_settings()
    guard_metrics()
    sys.argv = flower_argv(sys.argv[1:], os.environ)
    celery_main()


if __name__ == "__main__":
    main()

"""`python -m donutsite.flower [flower options]`: Celery's Flower, showing every declared queue.

Flower lists only the queues some worker consumes, and no worker consumes `dead_letter` (it holds copies
of dead-lettered messages for ops to count; the database row is the record). This entry point widens
Flower's list to every queue in CELERY_TASK_QUEUES_NAMES, so the dead-letter queue and its length show
on the Broker page and in /api/queues/length. Everything else is Flower as `celery flower` runs it.
"""

import sys


def widen_queue_list() -> None:
    from flower.views import BaseHandler

    consumed = BaseHandler.get_active_queue_names

    def get_active_queue_names(self):
        declared = {queue.name for queue in self.capp.conf.task_queues or []}
        return sorted(set(consumed(self)) | declared)

    BaseHandler.get_active_queue_names = get_active_queue_names


def main() -> None:
    from celery.bin.celery import main as celery_main

    widen_queue_list()
    sys.argv = ["celery", "-A", "donutsite", "flower", *sys.argv[1:]]
    celery_main()


if __name__ == "__main__":
    main()

"""`manage.py worker_alive [--destination NODE] [--timeout 5]`: a liveness probe for a Celery worker.

Exits 0 if the worker answers a ping sent through the broker (`celery inspect ping`) within the timeout,
1 if not. NODE defaults to Celery's default node name on this host (celery@<hostname>, what a worker
started without -n calls itself); `%h` in NODE stands for this host, e.g. `--destination alerts@%h`.

Why a ping rather than a heartbeat file: the reply comes from the worker's consumer, through the same
broker connection its tasks arrive on, so it fails exactly when the worker stopped taking work (a hung
main loop, a connection it never got back), which is what a restart fixes. A heartbeat file only proves
that whatever writes it still runs, and needs code inside the worker to write it. The price: one broker
round trip per probe, and a broker outage fails every worker's probe at once, so give the probe a failure
threshold longer than a broker restart (the web's /readyz reports the broker itself).
"""

from celery import current_app
from celery.utils.nodenames import default_nodename, host_format
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Exit 0 if the Celery worker on this host (or --destination) answers a ping, else 1."

    def add_arguments(self, parser):
        parser.add_argument("--destination", default="", help="worker node name (default: celery@<this host>)")
        parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the reply")

    def handle(self, *args, destination, timeout, **options):
        node = host_format(destination) if destination else default_nodename(None)
        try:
            with current_app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=0, timeout=timeout)  # fail fast if the broker is down
                replies = current_app.control.ping(destination=[node], timeout=timeout, connection=connection)
        except Exception as exc:  # the broker is unreachable: we cannot tell, so the probe fails
            raise CommandError(f"cannot ping {node}: {exc!r}", returncode=1) from exc
        if not any(node in reply for reply in replies or []):
            raise CommandError(f"no answer from {node} within {timeout:g} s", returncode=1)
        self.stdout.write(f"{node} is alive")

"""`manage.py worker_alive [--destination NODE] [--timeout 5]`: a liveness probe for Celery workers.

Exits 0 if the worker answers a ping sent through the broker (`celery inspect ping`) within the timeout,
1 if not. Without --destination it pings every worker this project starts on this host
(donutsite.celery.WORKER_NODES: factory@<host>, urgent@<host> and notifications@<host>, the names make
run and docker-compose.yml give them) and needs all of them to answer; `%h` in NODE stands for this host, e.g.
`--destination notifications@%h`.

Why a ping rather than a heartbeat file: the reply comes from the worker's consumer, through the same
broker connection its tasks arrive on, so it fails exactly when the worker stopped taking work (a hung
main loop, a connection it never got back), which is what a restart fixes. A heartbeat file only proves
that whatever writes it still runs, and needs code inside the worker to write it. The price: one broker
round trip per probe, and a broker outage fails every worker's probe at once, so give the probe a failure
threshold longer than a broker restart (the web's /readyz reports the broker itself).
"""

from celery import current_app
from celery.utils.nodenames import host_format
from django.core.management.base import BaseCommand, CommandError

from donutsite.celery import WORKER_NODES
from donutsite.management import positive_seconds


class Command(BaseCommand):
    help = "Exit 0 if this host's Celery workers (or --destination) answer a ping, else 1."

    def add_arguments(self, parser):
        parser.add_argument(
            "--destination",
            default="",
            # argparse %-formats help: "%h" must be written "%%h".
            help="worker node name (default: " + ", ".join(WORKER_NODES).replace("%", "%%") + ")",
        )
        parser.add_argument("--timeout", type=positive_seconds, default=5.0, help="seconds to wait for the reply")

    def handle(self, *args, destination, timeout, **options):
        nodes = [host_format(name) for name in ([destination] if destination else WORKER_NODES)]
        try:
            with current_app.connection_for_write() as connection:
                connection.ensure_connection(max_retries=0, timeout=timeout)  # fail fast if the broker is down
                replies = current_app.control.ping(destination=nodes, timeout=timeout, connection=connection)
        except Exception as exc:  # the broker is unreachable: we cannot tell, so the probe fails
            raise CommandError(f"cannot ping {', '.join(nodes)}: {exc!r}", returncode=1) from exc
        answered = {name for reply in replies or [] for name in reply}
        silent = [node for node in nodes if node not in answered]
        if silent:
            raise CommandError(f"no answer from {', '.join(silent)} within {timeout:g} s", returncode=1)
        for node in nodes:
            self.stdout.write(f"{node} is alive")

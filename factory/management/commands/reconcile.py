from django.core.management.base import BaseCommand

from factory.services import reconcile
from inventory.services import idempotency_keys_purge


class Command(BaseCommand):
    help = (
        "Run the sweeps now: the factory's reconcile (beat runs it every RECONCILE_INTERVAL_SECONDS) and the "
        "purge of expired Idempotency-Keys (every 5 minutes)."
    )

    def handle(self, *args, **options):
        result = {**reconcile(), "idempotency_keys_purged": idempotency_keys_purge()}
        self.stdout.write(", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in result.items()))

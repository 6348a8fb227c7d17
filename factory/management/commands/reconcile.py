from django.core.management.base import BaseCommand

from factory.services import reconcile


class Command(BaseCommand):
    help = "Run one reconcile sweep now (beat runs it every RECONCILE_INTERVAL_SECONDS)."

    def handle(self, *args, **options):
        result = reconcile()
        self.stdout.write(", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in result.items()))

from django.core.management.base import BaseCommand, CommandError

from inventory.models import Product
from inventory.selectors import ledger_differences


class Command(BaseCommand):
    help = "Check that every product's on-hand equals the sum of its ledger movements."

    def handle(self, *args, **options):
        differences = ledger_differences()
        if differences:
            for d in differences:
                self.stderr.write(
                    f"{d['sku']}: on hand {d['on_hand']}, ledger says {d['ledger']} "
                    f"(difference {d['on_hand'] - d['ledger']:+d})"
                )
            raise CommandError(f"ledger mismatch on {len(differences)} product(s)")
        self.stdout.write(f"ledger balanced for {Product.objects.count()} products")

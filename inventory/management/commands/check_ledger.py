from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from inventory.models import Product
from inventory.selectors import ledger_differences
from notifications.alerts import alert_raise


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
            skus = ", ".join(d["sku"] for d in differences)
            with transaction.atomic():
                alert_raise(
                    kind="ledger_mismatch",
                    severity="critical",
                    title=f"Stock differs from the ledger: {skus}",
                    text="\n".join(f"{d['sku']}: on hand {d['on_hand']}, ledger {d['ledger']}" for d in differences),
                    dedupe_key="ledger_mismatch",
                    context={"sku": skus},
                )
            raise CommandError(f"ledger mismatch: {skus}")
        self.stdout.write(f"ledger balanced for {Product.objects.count()} products")

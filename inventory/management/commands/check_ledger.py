from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from inventory.models import Product
from inventory.selectors import ledger_differences
from inventory.services import ledger_correct
from notifications.alerts import alert_raise


class Command(BaseCommand):
    help = (
        "Check that every product's on-hand equals the sum of its ledger movements; with --correct, write the "
        "missing ledger row of each product that differs (on-hand is kept)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--correct",
            action="store_true",
            help="write each difference as a ledger correction (an adjustment) so the ledger agrees with on-hand; "
            "find what changed the stock first, and count the shelf after (set_stock)",
        )

    def handle(self, *args, correct=False, **options):
        differences = ledger_differences()
        if differences and correct:
            for d in differences:
                movement = ledger_correct(product_id=d["product_id"])
                if movement is not None:
                    self.stdout.write(f"{d['sku']}: wrote the missing ledger row {movement.quantity:+d} (on hand kept)")
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

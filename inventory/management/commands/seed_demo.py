from decimal import Decimal

from django.core.management.base import BaseCommand
from django.db import transaction

from inventory.models import Product
from inventory.services import product_set_stock

# sku, name, price, stock
CATALOGUE = [
    ("GLAZED", "Original Glazed", "1.50", 120),
    ("CHOCOLATE", "Chocolate Iced", "1.90", 80),
    ("STRAWBERRY", "Strawberry Sprinkles", "1.90", 80),
    ("BOSTON", "Boston Cream", "2.40", 40),
    ("JELLY", "Raspberry Jelly", "2.10", 50),
    ("MAPLE", "Maple Bar", "2.20", 40),
    ("CINNAMON", "Cinnamon Sugar", "1.60", 60),
    ("OLDFASHION", "Old Fashioned", "1.40", 60),
    ("CRULLER", "French Cruller", "2.00", 30),
    ("MATCHA", "Matcha Glaze", "2.60", 20),
    ("LEMON", "Lemon Filled", "2.30", 25),
    ("VIRAL", "The Viral One", "3.50", 5),
]


class Command(BaseCommand):
    help = "Load the demo catalogue. Idempotent: existing products keep their stock and prices."

    def handle(self, *args, **options):
        created = 0
        with transaction.atomic():
            for sku, name, price, stock in CATALOGUE:
                if Product.objects.filter(sku=sku).exists():
                    continue
                product_set_stock(
                    sku=sku,
                    name=name,
                    price=Decimal(price),
                    quantity=stock,
                    # Below the starting stock, so the demo opens no restock until someone buys.
                    reorder_point=max(1, min(10, stock // 4)),
                    reorder_quantity=100,
                    create=True,
                )
                created += 1
        self.stdout.write(f"demo catalogue: {created} products created, {len(CATALOGUE) - created} already there")

import argparse
from decimal import Decimal, InvalidOperation

from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from donutsite.errors import DomainError
from inventory.models import Product
from inventory.services import product_set_stock

# The column's range (the admin's form gets the same limit from the field); past it MariaDB refuses the row.
REORDER_POINT_MAX = connection.ops.integer_field_range(Product._meta.get_field("reorder_point").get_internal_type())[1]


def _price(value: str) -> Decimal:
    # argparse turns ArgumentTypeError into a usage error; a CommandError here would be a traceback.
    try:
        price = Decimal(value)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"must be a number, not {value!r}") from None
    # Below 99999999.995, so that the rounding to cents below stays within the column (max 99999999.99).
    if not price.is_finite() or price < 0 or price >= Decimal("99999999.995"):
        raise argparse.ArgumentTypeError(f"must be a price from 0 to 99999999.99, not {value!r}")
    return price.quantize(Decimal("0.01"))


class Command(BaseCommand):
    help = (
        "Set a product's stock; the change is a ledger adjustment. An unknown SKU is an error naming close "
        "matches; --create (with --name and --price) adds a new product."
    )

    def add_arguments(self, parser):
        parser.add_argument("sku")
        parser.add_argument("quantity", type=int)
        parser.add_argument("--price", type=_price)
        parser.add_argument("--name", help="the product's name (required with --create; renames an existing one)")
        parser.add_argument("--reorder-point", type=int)
        parser.add_argument("--reorder-quantity", type=int)
        parser.add_argument("--create", action="store_true", help="add the product if the SKU is new")

    def handle(self, *args, sku, quantity, price, name, reorder_point, reorder_quantity, create, **options):
        if reorder_quantity is not None and not 1 <= reorder_quantity <= 10_000:
            raise CommandError("--reorder-quantity must be 1 to 10000 (the factory's limit)")
        if reorder_point is not None and not 0 <= reorder_point <= REORDER_POINT_MAX:
            raise CommandError(f"--reorder-point must be 0 to {REORDER_POINT_MAX}")
        try:
            product = product_set_stock(
                sku=sku,
                quantity=quantity,
                price=price,
                name=name,
                reorder_point=reorder_point,
                reorder_quantity=reorder_quantity,
                create=create,
            )
        except DomainError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(
            f"{product.sku}: on hand {product.on_hand}, price {product.price}, "
            f"reorder at {product.reorder_point} for {product.reorder_quantity}"
        )

# No two products whose SKUs differ only in case (GLAZED and glazed): a unique index on the SKU in lower case
# (0013's generated column: MariaDB has no index on an expression), built in place.
#
# A database that already holds such twins cannot take the index. Rather than rename or retire one of them
# here (which one clients mean is ops' call), the migration refuses before changing anything and names them
# all; ops rename one (docs/operations.md, "Products whose SKUs differ only in case") and migrate again.

from django.core.management.base import CommandError
from django.db import migrations, models
from django.db.models import Count
from django.db.models.functions import Lower


def refuse_case_twins(apps, schema_editor):
    """Stop, naming every group of SKUs that differ only in case, lowered by the database as the index is."""
    Product = apps.get_model("inventory", "Product")
    folded = Product.objects.annotate(folded=Lower("sku"))
    twinned = folded.values("folded").annotate(n=Count("pk")).filter(n__gt=1).values("folded")
    groups: dict[str, list[str]] = {}
    for fold, sku in folded.filter(folded__in=twinned).order_by("folded", "sku").values_list("folded", "sku"):
        groups.setdefault(fold, []).append(sku)
    if groups:
        listed = "; ".join(" and ".join(skus) for skus in groups.values())
        raise CommandError(
            f"Products whose SKUs differ only in case: {listed}. Rename all but one of each (docs/operations.md, "
            "\"Products whose SKUs differ only in case\"), then migrate again. Nothing was changed."
        )


class Migration(migrations.Migration):

    dependencies = [
        ('inventory', '0013_product_sku_folded'),
    ]

    operations = [
        migrations.RunPython(refuse_case_twins, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name='product',
            constraint=models.UniqueConstraint(fields=('sku_folded',), name='product_sku_unique_ignoring_case'),
        ),
    ]

# The SKU in lower case (Product.sku_folded): a VIRTUAL generated column, added in place and at once; the
# old release's INSERTs do not name it. 0014 makes it unique.

import django.db.models.functions.text
from django.db import migrations, models

from donutsite.db import EXACT_COLLATION


class Migration(migrations.Migration):

    dependencies = [
        ('inventory', '0012_sku_not_a_dot_segment'),
    ]

    operations = [
        migrations.AddField(
            model_name='product',
            name='sku_folded',
            field=models.GeneratedField(db_persist=False, expression=django.db.models.functions.text.Lower('sku'), output_field=models.CharField(db_collation=EXACT_COLLATION, max_length=64)),
        ),
    ]

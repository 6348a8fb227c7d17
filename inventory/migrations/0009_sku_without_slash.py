# A SKU may not contain "/" (it is a segment of the product's URLs): a validator only, for the admin's form;
# no change to the column. A product already holding one keeps it.

import django.core.validators
from django.db import migrations, models

from donutsite.db import EXACT_COLLATION


class Migration(migrations.Migration):

    dependencies = [
        ('inventory', '0008_sale_total_fits_the_dearest_sale'),
    ]

    operations = [
        migrations.AlterField(
            model_name='product',
            name='sku',
            field=models.CharField(db_collation=EXACT_COLLATION, max_length=64, unique=True, validators=[django.core.validators.RegexValidator('^[^/]*\\Z', "A SKU cannot contain “/”: it is part of the product's address in the API.")]),
        ),
    ]

# A SKU is not "." or "..": clients resolve those path segments before sending, so the product's URLs could
# not be reached. A validator only, for the admin's form; no change to the column.

import django.core.validators
from django.db import migrations, models

from donutsite.db import EXACT_COLLATION


class Migration(migrations.Migration):

    dependencies = [
        ('inventory', '0011_sku_as_the_api_takes_it'),
    ]

    operations = [
        migrations.AlterField(
            model_name='product',
            name='sku',
            field=models.CharField(db_collation=EXACT_COLLATION, max_length=64, unique=True, validators=[django.core.validators.RegexValidator('^(?!\\.\\.?\\Z)[!-.0-~]*\\Z', 'A SKU is printable ASCII with no space and no “/”, and not “.” or “..”: what the API can sell and address.')]),
        ),
    ]

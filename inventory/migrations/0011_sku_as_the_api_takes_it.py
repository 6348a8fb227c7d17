# A SKU is what a sale's body can name (printable ASCII, no space) and has no "/": a validator only, for the
# admin's form; no change to the column. A product already holding another keeps it.

import django.core.validators
from django.db import migrations, models

from donutsite.db import EXACT_COLLATION


class Migration(migrations.Migration):

    dependencies = [
        ('inventory', '0010_metrics_indexes'),
    ]

    operations = [
        migrations.AlterField(
            model_name='product',
            name='sku',
            field=models.CharField(db_collation=EXACT_COLLATION, max_length=64, unique=True, validators=[django.core.validators.RegexValidator('^[!-.0-~]*\\Z', 'A SKU is printable ASCII with no space and no “/”: what the API can sell and address.')]),
        ),
    ]

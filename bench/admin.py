"""The admin bench: how long ops wait for the admin's lists and the dashboard once the ledger is big.

After a few rushes the sales, their lines, the stock movements and the Idempotency-Keys run to millions of
rows. This bench fills a fresh database with `--sales` sales (one line and one ledger row each, over four
products; a key for every fourth sale) in a few SQL statements, then asks for each page below through
Django's test client in this process, logged in as a superuser, and prints the best of `--repeat` times.

Baseline, measured in the same run: the product list (four rows), the page whose cost is the admin's own.
Each page's time is also given as a multiple of it. A page over DATABASE_READ_TIMEOUT_SECONDS (10 s) is
a 503 in production; the bench reads without that timeout so that it can say how long it would take.

Runs on its own database (BENCH_ADMIN_DATABASE_URL, default donut_bench_admin, dropped and created).
MariaDB only (its sequence engine makes the rows).

    .venv/bin/python -m bench.admin --help
"""

import argparse
import os
import sys
import time
import warnings

from bench.common import bench_environ, database_recreate

PAGES = [
    ("products (baseline)", "/admin/inventory/product/"),
    ("sales", "/admin/inventory/sale/"),
    ("sales, search a sale number", "/admin/inventory/sale/?q={sale}"),
    ("sales, search a SKU", "/admin/inventory/sale/?q=GLAZED"),
    ("stock movements", "/admin/inventory/stockmovement/"),
    ("stock movements, search a SKU", "/admin/inventory/stockmovement/?q=GLAZED"),
    ("stock movements, kind and product", "/admin/inventory/stockmovement/?kind__exact=sale&product__id__exact=1"),
    ("idempotency keys", "/admin/inventory/idempotencykey/"),
    ("dashboard", "/admin/dashboard/"),
]


def fill(sales: int) -> None:
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    from django.contrib.auth.models import User
    from django.db import connection

    from clients.models import ApiClient
    from inventory.services import product_set_stock

    for sku in ("GLAZED", "BOSTON", "MAPLE", "VIRAL"):
        product_set_stock(sku=sku, quantity=10**9, price="1.50", name=sku, create=True)
    client = ApiClient(name="bench")
    client.set_new_key()
    client.save()
    User.objects.create_superuser("bench", "bench@example.com", "bench-only-password")
    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM inventory_product ORDER BY id")
        first = cursor.fetchone()[0]
        cursor.execute(
            "INSERT INTO inventory_sale (client_id, idempotency_key, total, created_at) "
            f"SELECT %s, '', 1.50, NOW(6) - INTERVAL seq SECOND FROM seq_1_to_{sales}",
            [client.pk],
        )
        cursor.execute(
            "INSERT INTO inventory_saleline (sale_id, product_id, quantity, unit_price, line_total) "
            "SELECT id, %s + id %% 4, 1, 1.50, 1.50 FROM inventory_sale",
            [first],
        )
        cursor.execute(
            "INSERT INTO inventory_stockmovement (kind, quantity, reason, created_at, product_id, sale_id) "
            "SELECT 'sale', -1, '', s.created_at, l.product_id, s.id "
            "FROM inventory_sale s JOIN inventory_saleline l ON l.sale_id = s.id"
        )
        cursor.execute(
            "INSERT INTO inventory_idempotencykey (`key`, request_hash, created_at, client_id, sale_id) "
            "SELECT CONCAT('key-', id), 'h', created_at, %s, id FROM inventory_sale WHERE id %% 4 = 0",
            [client.pk],
        )
        cursor.execute("ANALYZE TABLE inventory_sale, inventory_saleline, inventory_stockmovement")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sales", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3, help="times each page is asked for (the best is printed)")
    args = parser.parse_args(argv)

    bench_environ(
        database_url="BENCH_ADMIN_DATABASE_URL=mysql://root@127.0.0.1:3306/donut_bench_admin",
        broker_url="BENCH_ADMIN_BROKER_URL=redis://127.0.0.1:6379/13",
    )
    os.environ["DATABASE_READ_TIMEOUT_SECONDS"] = "0"  # measure past the production timeout
    os.environ["DJANGO_ALLOWED_HOSTS"] = "testserver"
    warnings.filterwarnings("ignore", message="No directory at", module="django.core.handlers.base")  # whitenoise
    _, guard = database_recreate("BENCH_ADMIN_DATABASE_URL")  # held until the run ends
    started = time.monotonic()
    fill(args.sales)
    print(f"admin pages: {args.sales:,} sales, lines and ledger rows (filled in {time.monotonic() - started:.0f} s)")

    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from inventory.models import Sale

    client = Client()
    client.login(username="bench", password="bench-only-password")  # noqa: S106 - the bench's own user
    client.get(PAGES[0][1])  # templates compiled, caches filled
    sale = Sale.objects.order_by("pk").values_list("pk", flat=True)[args.sales // 2]
    baseline = None
    print(f"  {'page':38} {'best of ' + str(args.repeat):>12} {'x baseline':>11}  queries")
    for label, url in PAGES:
        best, queries, status = float("inf"), 0, None
        for _ in range(args.repeat):
            connection.close()  # the test client keeps connections; a new one each time, as a request would
            with CaptureQueriesContext(connection) as captured:
                started = time.perf_counter()
                status = client.get(url.format(sale=sale)).status_code
                best = min(best, time.perf_counter() - started)
            queries = len(captured)
        baseline = baseline or best
        over = "  (over the 10 s read timeout: a 503)" if best > 10 else ""
        print(f"  {label:38} {best * 1000:>9,.0f} ms {best / baseline:>10.1f}x  {queries:>3}  {status}{over}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

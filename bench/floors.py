"""Other designs of the sale, for comparison only (`bench/sales.py --floors`). Never mounted by the app.

Each answers the bench's one-item sale bodies. They show where the API's cost goes, and what designs
the app does not use would reach on the same machine (docs/benchmarks.md, "Sales throughput"):

  drf    the sale view's DRF stack (Api-Key authentication, permission, throttle, JSON parser and
         renderer) and the body validation, answering a canned body: no database at all
  sql    the sale's SQL from a plain Django view, no DRF: START TRANSACTION, SELECT .. FOR UPDATE,
         UPDATE, three INSERTs, COMMIT (7 round trips; the API makes 9: Django's health-check ping
         and its autocommit switches)
  proc   the DRF stack with the whole sale in one stored procedure: one round trip. The procedure is
         created in the bench database only (`procedure_create`); the app has none.
  refuse-view  the sold-out refusal's one read (the app's statement and helper) from a plain Django
         view, no DRF, answering a canned 409: what a refusal costs with Django and one round trip
  refuse-drf   the same read behind the DRF stack (authentication, throttle, parser, renderer), the 409
         returned by the view instead of raised: the floor of the app's phase e
  refuse-view-key  refuse-view with a fresh Idempotency-Key per request, its refusal stored under the key
         by the app's own INSERT: what phase f costs with Django, one read and one durable INSERT

`sql` and `proc` write real sales, lines and ledger rows, so the bench's invariants cover them.
`drf` answers 200, not 201: it sells nothing.
"""

import json

from django.db import connection
from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from rest_framework.response import Response
from rest_framework.views import APIView

from clients.auth import api_client_for_key
from inventory import selectors, services
from inventory.serializers import sale_items_validate

CANNED = {
    "id": 1,
    "total": "1.50",
    "created_at": "2026-11-30T12:00:00Z",
    "lines": [{"sku": "HOT", "quantity": 1, "unit_price": "1.50", "line_total": "1.50"}],
}
SOLD_OUT = {"code": "out_of_stock", "message": "Not enough stock."}


class DrfFloor(APIView):
    def post(self, request):
        sale_items_validate(request.data)
        return Response(CANNED)


def _key_and_item(request):
    """A plain view's Api-Key check and the body's one item: (client, item), client None if refused."""
    client = api_client_for_key(request.headers.get("Authorization", "").partition(" ")[2])
    return client, (sale_items_validate(json.loads(request.body))[0] if client else None)


@csrf_exempt
def sql_sale(request):
    client, item = _key_and_item(request)
    if client is None:
        return JsonResponse({"code": "not_authenticated"}, status=401)
    product_id = selectors.product_ids_for_skus([item["sku"]])[item["sku"]]
    quantity = item["quantity"]
    created_at = timezone.now().replace(tzinfo=None)
    connection.ensure_connection()
    conn = connection.connection  # MySQLdb's own, in autocommit mode between Django's transactions
    cur = conn.cursor()
    try:
        cur.execute("START TRANSACTION")
        cur.execute("SELECT on_hand, price FROM inventory_product WHERE id = %s FOR UPDATE", (product_id,))
        on_hand, price = cur.fetchone()
        if on_hand < quantity:
            conn.rollback()
            return JsonResponse(SOLD_OUT, status=409)
        cur.execute("UPDATE inventory_product SET on_hand = %s WHERE id = %s", (on_hand - quantity, product_id))
        cur.execute(
            "INSERT INTO inventory_sale (client_id, idempotency_key, total, created_at) VALUES (%s, '', %s, %s)",
            (client.pk, price * quantity, created_at),
        )
        sale_id = cur.lastrowid
        cur.execute(
            "INSERT INTO inventory_saleline (sale_id, product_id, quantity, unit_price, line_total)"
            " VALUES (%s, %s, %s, %s, %s)",
            (sale_id, product_id, quantity, price, price * quantity),
        )
        cur.execute(
            "INSERT INTO inventory_stockmovement (product_id, kind, quantity, sale_id, reason, created_at)"
            " VALUES (%s, 'sale', %s, %s, '', %s)",
            (product_id, -quantity, sale_id, created_at),
        )
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return JsonResponse({**CANNED, "id": sale_id}, status=201)


PROCEDURE = """
CREATE PROCEDURE bench_sale(p_client INT, p_product INT, p_quantity INT, p_at DATETIME(6))
BEGIN
  DECLARE v_on_hand INT;
  DECLARE v_price DECIMAL(10, 2);
  DECLARE v_sale BIGINT;
  DECLARE EXIT HANDLER FOR SQLEXCEPTION BEGIN ROLLBACK; RESIGNAL; END;
  START TRANSACTION;
  SELECT on_hand, price INTO v_on_hand, v_price FROM inventory_product WHERE id = p_product FOR UPDATE;
  IF v_on_hand < p_quantity THEN
    ROLLBACK;
    SELECT 0;
  ELSE
    UPDATE inventory_product SET on_hand = v_on_hand - p_quantity WHERE id = p_product;
    INSERT INTO inventory_sale (client_id, idempotency_key, total, created_at)
      VALUES (p_client, '', v_price * p_quantity, p_at);
    SET v_sale = LAST_INSERT_ID();
    INSERT INTO inventory_saleline (sale_id, product_id, quantity, unit_price, line_total)
      VALUES (v_sale, p_product, p_quantity, v_price, v_price * p_quantity);
    INSERT INTO inventory_stockmovement (product_id, kind, quantity, sale_id, reason, created_at)
      VALUES (p_product, 'sale', -p_quantity, v_sale, '', p_at);
    COMMIT;
    SELECT v_sale;
  END IF;
END
"""


def procedure_create(cursor) -> None:
    """Create `bench_sale` in the bench database (a MySQLdb cursor on it)."""
    cursor.execute("DROP PROCEDURE IF EXISTS bench_sale")
    cursor.execute(PROCEDURE)


class ProcedureSale(APIView):
    def post(self, request):
        (item,) = sale_items_validate(request.data)
        product_id = selectors.product_ids_for_skus([item["sku"]])[item["sku"]]
        connection.ensure_connection()
        cur = connection.connection.cursor()
        cur.execute(
            "CALL bench_sale(%s, %s, %s, %s)",
            (request.auth.pk, product_id, item["quantity"], timezone.now().replace(tzinfo=None)),
        )
        (sale_id,) = cur.fetchone()
        while cur.nextset():  # the CALL's own status result
            pass
        if not sale_id:
            return Response(SOLD_OUT, status=409)
        return Response({**CANNED, "id": sale_id}, status=201)


def _soldout_read(sku: str):
    product_id = selectors.product_ids_for_skus([sku])[sku]
    (row,) = services._read_without_ping(services._SQL_REFUSAL_READ % "%s", [product_id])
    return row


def _refusal(body: dict):
    response = JsonResponse(body, status=409)
    response._has_been_logged = True  # as the app's out_of_stock: no warning line per answer
    return response


@csrf_exempt
def refuse_view(request):
    client, item = _key_and_item(request)
    if client is None:
        return JsonResponse({"code": "not_authenticated"}, status=401)
    row = _soldout_read(item["sku"])
    if key := request.headers.get("Idempotency-Key"):
        shortages = [{"sku": item["sku"], "requested": item["quantity"], "available": row[3]}]
        services._key_store(client, key, "0" * 64, refusal={"shortages": shortages})
    return _refusal({**SOLD_OUT, "available": row[3]})


class RefuseDrf(APIView):
    def post(self, request):
        (item,) = sale_items_validate(request.data)
        row = _soldout_read(item["sku"])
        response = Response({**SOLD_OUT, "available": row[3]}, status=409)
        response._has_been_logged = True
        return response

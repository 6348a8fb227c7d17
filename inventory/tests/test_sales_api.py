"""The sales API as a client app sees it: statuses, bodies, stock levels, restocks."""

import gzip
import logging
from decimal import Decimal

import pytest
from django.core.validators import MaxLengthValidator
from django.db.models import Sum
from django.test import override_settings
from django.utils import timezone

from inventory.models import Product, Restock, Sale, StockMovement
from inventory.selectors import ledger_differences
from inventory.serializers import SaleIn
from inventory.services import SaleItem, sale_create
from notifications.alerts import alert_groups_flush
from notifications.models import AlertDelivery, AlertGroup
from testsupport.api import buy
from testsupport.data import make_api_client, make_product

pytestmark = pytest.mark.django_db

SALES = "/api/v1/sales/"


def on_hand(product):
    return Product.objects.get(pk=product.pk).on_hand


def test_a_sale_takes_stock_and_records_lines_and_ledger(client_app):
    glazed = make_product("GLAZED", on_hand=10, price="1.50")
    boston = make_product("BOSTON", on_hand=5, price="2.40")

    response = buy(client_app, ("GLAZED", 2), ("BOSTON", 1))

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["total"] == "5.40"
    assert [(ln["sku"], ln["quantity"], ln["unit_price"], ln["line_total"]) for ln in body["lines"]] == [
        ("GLAZED", 2, "1.50", "3.00"),
        ("BOSTON", 1, "2.40", "2.40"),
    ]
    assert response["Location"] == f"/api/v1/sales/{body['id']}/"
    assert (on_hand(glazed), on_hand(boston)) == (8, 4)
    sale = Sale.objects.get(pk=body["id"])
    assert sale.client == client_app.api_client
    assert sorted(StockMovement.objects.filter(sale=sale).values_list("product__sku", "quantity")) == [
        ("BOSTON", -1),
        ("GLAZED", -2),
    ]
    assert ledger_differences() == []


def sale_bounds() -> tuple[int, int]:
    """The most lines a sale may have and the most of each, as SaleIn takes them."""
    items = SaleIn().fields["items"]
    lines = next(validator.limit_value for validator in items.validators if isinstance(validator, MaxLengthValidator))
    return lines, items.child.fields["quantity"].max_value


def test_the_dearest_sale_the_api_accepts_is_sold_and_shown(client_app):
    # The most a sale can come to: as many lines as the API takes (20), each of the most it takes (100), at
    # the highest price a product can have. Read from SaleIn, so a raised bound is tried against Sale.total.
    lines, most = sale_bounds()
    skus = [f"GOLD{n:03}" for n in range(lines)]
    for sku in skus:
        make_product(sku, on_hand=3 * most, price="99999999.99")

    response = buy(client_app, *((sku, most) for sku in skus))

    assert response.status_code == 201, response.content
    dearest = str(Decimal("99999999.99") * most * lines)  # 199999999980.00
    assert response.json()["total"] == dearest
    assert {line["line_total"] for line in response.json()["lines"]} == {str(Decimal("99999999.99") * most)}
    shown = client_app.get(f"{SALES}{response.json()['id']}/").json()
    assert shown["total"] == dearest
    assert dict(Product.objects.values_list("sku", "on_hand")) == dict.fromkeys(skus, 2 * most)


def test_the_price_of_the_day_is_kept_on_the_line(client_app):
    glazed = make_product("GLAZED", on_hand=10, price="1.50")
    sale_id = buy(client_app, ("GLAZED", 1)).json()["id"]
    Product.objects.filter(pk=glazed.pk).update(price="9.99")

    response = client_app.get(f"{SALES}{sale_id}/")

    assert response.status_code == 200
    assert response.json()["lines"][0]["unit_price"] == "1.50"


def test_short_stock_sells_nothing_and_answers_with_the_restock(client_app):
    glazed = make_product("GLAZED", on_hand=10)
    viral = make_product("VIRAL", on_hand=3, reorder_quantity=120)

    response = buy(client_app, ("GLAZED", 2), ("VIRAL", 5))

    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "out_of_stock"
    restock = Restock.objects.get(product=viral)
    assert body["shortages"] == [
        {
            "sku": "VIRAL",
            "requested": 5,
            "available": 3,
            "restock": {"id": restock.pk, "status": "pending", "quantity": 120, "expected_at": None},
        }
    ]
    assert restock.reason == "shortage"
    assert (on_hand(glazed), on_hand(viral)) == (10, 3), "all or nothing: the GLAZED line was not sold either"
    assert Sale.objects.count() == 0


def test_repeated_shortages_share_one_open_restock(client_app):
    make_product("VIRAL", on_hand=0, reorder_quantity=120)

    # The first opens the restock under the locks; the others are answered by the lock-free read.
    restocks = [buy(client_app, ("VIRAL", 1)).json()["shortages"][0]["restock"] for _ in range(3)]

    [restock] = Restock.objects.all()
    # How many are on the way tells a buyer of more than that not to wait for this restock.
    assert restocks == [{"id": restock.pk, "status": "pending", "quantity": 120, "expected_at": None}] * 3


def test_a_sold_out_answer_is_not_a_warning_in_the_log_but_other_refusals_are(client_app, caplog):
    make_product("GLAZED", on_hand=1)
    caplog.set_level(logging.INFO, logger="django.request")

    refusals = [buy(client_app, ("GLAZED", 5)) for _ in range(3)]  # the first opens the restock under the lock
    unknown = buy(client_app, ("NOPE", 1))

    assert [r.status_code for r in refusals] == [409, 409, 409]
    assert unknown.status_code == 404
    # A sold-out rush answers thousands of these a second: /metrics counts them instead.
    assert [(r.levelname, r.status_code) for r in caplog.records if r.name == "django.request"] == [("WARNING", 404)]


def test_a_closed_restock_does_not_block_a_new_one(client_app):
    viral = make_product("VIRAL", on_hand=0)
    Restock.objects.create(product=viral, quantity=10, reason="shortage", status="fulfilled")

    buy(client_app, ("VIRAL", 1))

    assert Restock.objects.filter(product=viral, status="pending").count() == 1


def test_selling_down_to_the_reorder_point_opens_a_restock(client_app):
    glazed = make_product("GLAZED", on_hand=12, reorder_point=10, reorder_quantity=80)

    assert buy(client_app, ("GLAZED", 1)).status_code == 201
    assert not Restock.objects.exists(), "11 is still above the reorder point"
    assert buy(client_app, ("GLAZED", 1)).status_code == 201

    restock = Restock.objects.get(product=glazed)
    assert (restock.reason, restock.quantity, restock.status) == ("reorder_point", 80, "pending")
    assert buy(client_app, ("GLAZED", 1)).status_code == 201
    assert Restock.objects.count() == 1


def test_restocks_are_listed_and_filtered(client_app):
    make_product("VIRAL", on_hand=0)
    make_product("MAPLE", on_hand=0)
    buy(client_app, ("VIRAL", 1))
    buy(client_app, ("MAPLE", 1))
    Restock.objects.filter(product__sku="MAPLE").update(status="failed")

    everything = client_app.get("/api/v1/restocks/").json()
    pending_viral = client_app.get("/api/v1/restocks/", {"sku": "VIRAL", "status": "pending"}).json()
    bad_status = client_app.get("/api/v1/restocks/", {"status": "lost"})

    assert sorted(r["sku"] for r in everything["results"]) == ["MAPLE", "VIRAL"]
    assert [(r["sku"], r["status"]) for r in pending_viral["results"]] == [("VIRAL", "pending")]
    assert bad_status.status_code == 400 and bad_status.json()["code"] == "validation_error"


def test_a_client_sees_only_its_own_sales(client_app):
    make_product("GLAZED", on_hand=10)
    sale_id = buy(client_app, ("GLAZED", 1)).json()["id"]
    _, other_key = make_api_client()

    own = client_app.get(f"{SALES}{sale_id}/")
    client_app.credentials(HTTP_AUTHORIZATION=f"Api-Key {other_key}")
    other = client_app.get(f"{SALES}{sale_id}/")

    assert own.status_code == 200 and own.json()["id"] == sale_id
    assert other.status_code == 404 and other.json()["code"] == "not_found"


def test_a_sale_read_back_lists_its_lines_as_the_sale_answered(client_app):
    # Products made in another order than they are bought, and enough lines that MariaDB reads a sale's
    # lines through the unique (sale, product) index, in the products' id order, unless told otherwise.
    for sku in ("CRULLER", "BOSTON", "GLAZED", "APPLE"):
        make_product(sku, on_hand=1000)
    other, _ = make_api_client()
    for _ in range(30):
        sale_create(client=other, items=[SaleItem(sku, 1) for sku in ("APPLE", "GLAZED", "BOSTON", "CRULLER")])
    sold = buy(client_app, ("GLAZED", 1), ("APPLE", 2), ("CRULLER", 3), ("BOSTON", 1))
    assert sold.status_code == 201, sold.content

    one = client_app.get(f"{SALES}{sold.json()['id']}/")
    listed = client_app.get(SALES)

    assert one.json() == sold.json()
    assert listed.json()["results"] == [sold.json()]


def test_the_catalogue_is_public_and_read_only(client):
    make_product("GLAZED", on_hand=7, price="1.50")
    make_product("RETIRED", on_hand=7, is_active=False)

    listing = client.get("/api/v1/products/")
    one = client.get("/api/v1/products/GLAZED/")
    missing = client.get("/api/v1/products/NOPE/")
    write = client.post("/api/v1/products/", {}, content_type="application/json")

    assert listing.status_code == 200
    assert listing.json() == {
        "count": 1,
        "next": None,
        "previous": None,
        "results": [{"sku": "GLAZED", "name": "Test donut", "price": "1.50", "available": 7}],
    }
    assert one.json()["available"] == 7
    assert missing.status_code == 404 and missing.json()["code"] == "unknown_sku"
    assert write.status_code == 405 and write.json()["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    "header",
    [None, "Api-Key not-a-real-key", "Bearer something", "Api-Key"],
    ids=["missing", "unknown", "wrong-scheme", "empty"],
)
def test_sales_need_a_valid_api_key(client, header):
    glazed = make_product("GLAZED", on_hand=5)
    extra = {"HTTP_AUTHORIZATION": header} if header else {}

    response = client.post(
        SALES, {"items": [{"sku": "GLAZED", "quantity": 1}]}, content_type="application/json", **extra
    )

    assert response.status_code == 401
    assert response.json()["code"] in {"not_authenticated", "authentication_failed"}
    assert response["WWW-Authenticate"] == "Api-Key"
    assert on_hand(glazed) == 5


def test_the_scheme_is_case_insensitive(client):
    make_product("GLAZED", on_hand=5)
    _, key = make_api_client()

    response = client.post(
        SALES,
        {"items": [{"sku": "GLAZED", "quantity": 1}]},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"api-key {key}",
    )

    assert response.status_code == 201


def test_options_on_sales_names_the_methods_and_describes_no_body(client_app):
    # The body is in /api/schema/; DRF's own description of it was the sale's output fields.
    response = client_app.options(SALES)

    assert response.status_code == 200
    assert set(response["Allow"].replace(" ", "").split(",")) == {"GET", "POST", "HEAD", "OPTIONS"}
    assert "actions" not in response.json()


def test_a_revoked_key_stops_working(client_app):
    make_product("GLAZED", on_hand=5)
    client_app.api_client.is_active = False
    client_app.api_client.save()

    assert buy(client_app, ("GLAZED", 1)).status_code == 401


def test_unknown_sku_is_404_and_sells_nothing(client_app):
    glazed = make_product("GLAZED", on_hand=5)
    make_product("RETIRED", on_hand=5, is_active=False)

    response = buy(client_app, ("GLAZED", 1), ("NOPE", 1), ("RETIRED", 1))

    assert response.status_code == 404
    assert response.json()["code"] == "unknown_sku"
    assert response.json()["skus"] == ["NOPE", "RETIRED"]
    assert on_hand(glazed) == 5


def test_a_sku_two_of_ours_differ_from_only_in_case_suggests_neither(client_app):
    # No two products' SKUs differ only in case as the database lowers them (Product.sku_folded), but a SKU
    # from before SKUs were ASCII may still fold onto another (STRAßE and STRASSE): a client that corrects
    # "strasse" by did_you_mean must not be steered to whichever of them the database listed last.
    make_product("STRASSE", on_hand=5, price="1.50")
    make_product("STRAßE", on_hand=5, price="9.99")
    make_product("MAPLE", on_hand=5)

    response = buy(client_app, ("strasse", 1), ("maple", 1))

    assert response.status_code == 404 and response.json()["code"] == "unknown_sku"
    assert response.json()["skus"] == ["strasse", "maple"]
    assert response.json()["did_you_mean"] == {"maple": "MAPLE"}
    assert "strasse could be STRASSE or STRAßE" in response.json()["message"]
    assert Sale.objects.count() == 0


def test_a_product_retired_after_its_id_was_cached_is_not_sold(client_app):
    retiring = make_product("RETIRING", on_hand=5)
    assert buy(client_app, ("RETIRING", 1)).status_code == 201
    Product.objects.filter(pk=retiring.pk).update(is_active=False)

    response = buy(client_app, ("RETIRING", 1))

    assert response.status_code == 404 and response.json()["code"] == "unknown_sku"
    assert on_hand(retiring) == 4


BAD_BODIES = {
    "no items": {},
    "empty items": {"items": []},
    "items not a list": {"items": {"sku": "GLAZED", "quantity": 1}},
    "zero": {"items": [{"sku": "GLAZED", "quantity": 0}]},
    "negative": {"items": [{"sku": "GLAZED", "quantity": -3}]},
    "over 100": {"items": [{"sku": "GLAZED", "quantity": 101}]},
    "huge": {"items": [{"sku": "GLAZED", "quantity": 10**40}]},
    "string quantity": {"items": [{"sku": "GLAZED", "quantity": "2"}]},
    "float quantity": {"items": [{"sku": "GLAZED", "quantity": 2.5}]},
    "bool quantity": {"items": [{"sku": "GLAZED", "quantity": True}]},
    "null quantity": {"items": [{"sku": "GLAZED", "quantity": None}]},
    "missing sku": {"items": [{"quantity": 1}]},
    "sku not a string": {"items": [{"sku": 12, "quantity": 1}]},
    "sku too long": {"items": [{"sku": "G" * 65, "quantity": 1}]},
    "duplicate sku": {"items": [{"sku": "GLAZED", "quantity": 1}, {"sku": "GLAZED", "quantity": 1}]},
    "unknown top field": {"items": [{"sku": "GLAZED", "quantity": 1}], "coupon": "FREE"},
    "unknown item field": {"items": [{"sku": "GLAZED", "quantity": 1, "colour": "pink"}]},
    "item not an object": {"items": ["GLAZED"]},
    "21 skus": {"items": [{"sku": f"S{i}", "quantity": 1} for i in range(21)]},
    "body is a list": [{"sku": "GLAZED", "quantity": 1}],
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=BAD_BODIES.keys())
def test_bad_bodies_get_a_clear_400_and_sell_nothing(client_app, body):
    glazed = make_product("GLAZED", on_hand=5)

    response = client_app.post(SALES, body, format="json")

    assert response.status_code == 400, response.content
    assert response.json()["code"] == "validation_error"
    assert response.json()["errors"]
    assert on_hand(glazed) == 5


def test_too_many_items_are_refused_by_their_count_before_each_is_judged(client_app):
    # DRF judges every item of a list before the field's validators count them: a 2.4 MB body of a million
    # bare numbers took 35 s of a worker's CPU (past gunicorn's timeout) to answer a million errors.
    response = client_app.post(SALES, {"items": [1] * 1000}, format="json")

    assert response.status_code == 400
    assert response.json()["errors"] == {"items": ["Send at most 20 items (this has 1000)."]}


@pytest.mark.parametrize("where", ["sale", "item"])
def test_thousands_of_unknown_fields_are_refused_naming_the_first_ten(client_app, where):
    # Each was named: a 2 MB body of 120,000 unknown fields took 1.5 to 2.7 s of a worker's CPU to answer
    # with 3.4 MB, so a few such requests at once held every gunicorn worker.
    glazed = make_product("GLAZED", on_hand=5)
    unknown = {f"field{n:05d}": n for n in range(5000)}
    item = {"sku": "GLAZED", "quantity": 1, **(unknown if where == "item" else {})}
    body = {"items": [item], **(unknown if where == "sale" else {})}

    response = client_app.post(SALES, body, format="json")

    named = {f"field{n:05d}": ["Unknown field."] for n in range(10)}
    errors = {**named, "non_field_errors": ["And 4990 more unknown fields."]}
    assert response.status_code == 400
    assert response.json()["errors"] == (errors if where == "sale" else {"items": {"0": errors}})
    assert on_hand(glazed) == 5


@pytest.mark.parametrize(
    "items",
    [None, [], {"sku": "GLAZED", "quantity": 1}, [{"sku": f"S{i}", "quantity": 1} for i in range(21)]],
    ids=["null", "empty", "not-a-list", "21-skus"],
)
def test_a_problem_with_the_whole_list_of_items_is_a_list_of_messages_under_items(client_app, items):
    # As for duplicate SKUs or no `items` at all: a client shows errors["items"] as messages, and reads a
    # dict there only as the items' own problems by index. DRF's list serializer put these under
    # errors["items"]["non_field_errors"], a key no item index or field name is.
    response = client_app.post(SALES, {"items": items}, format="json")

    assert response.status_code == 400
    messages = response.json()["errors"]["items"]
    assert isinstance(messages, list) and messages and all(isinstance(m, str) for m in messages), messages


@pytest.mark.parametrize(
    "raw, content_type, status, code",
    [
        (b'{"items": [', "application/json", 400, "malformed_json"),
        (b"\xff\xfe", "application/json", 400, "malformed_json"),
        (b"items=1", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
    ],
    ids=["truncated", "not-utf8", "form"],
)
def test_unparseable_bodies_are_refused_cleanly(client_app, raw, content_type, status, code):
    response = client_app.generic("POST", SALES, raw, content_type=content_type)

    assert response.status_code == status
    assert response.json()["code"] == code


def test_a_form_sent_by_mistake_is_told_to_send_json(client_app):
    # `curl -d '{"items": ...}'` without -H sends the JSON as a form: the 415 must say what to send, not
    # only what was sent ("Unsupported media type "application/x-www-form-urlencoded" in request.").
    response = client_app.generic(
        "POST",
        SALES,
        b'{"items": [{"sku": "GLAZED", "quantity": 1}]}',
        content_type="application/x-www-form-urlencoded",
    )

    assert response.status_code == 415
    assert "Content-Type: application/json" in response.json()["message"]


@pytest.mark.parametrize(
    "coding, raw",
    [
        ("gzip", gzip.compress(b'{"items": [{"sku": "GLAZED", "quantity": 1}]}')),
        ("GZIP", gzip.compress(b'{"items": [{"sku": "GLAZED", "quantity": 1}]}')),
        ("br", b'{"items": [{"sku": "GLAZED", "quantity": 1}]}'),  # labelled compressed, sent plain
    ],
    ids=["gzip", "gzip-uppercase", "br-label-only"],
)
def test_a_compressed_body_is_a_415_naming_content_encoding_and_sells_nothing(client_app, coding, raw):
    # We read a body as sent: gzip bytes were a 400 malformed_json, which sent the client looking for a
    # mistake in its JSON. The same request again goes the plain POST's way (the API key cached by then).
    glazed = make_product("GLAZED", on_hand=5)

    answers = [
        client_app.generic("POST", SALES, raw, content_type="application/json", headers={"Content-Encoding": coding})
        for _ in range(2)
    ]

    assert [(a.status_code, a.json().get("code")) for a in answers] == [(415, "unsupported_media_type")] * 2
    assert all("Content-Encoding" in a.json()["message"] for a in answers)
    assert all(a["Accept-Encoding"] == "identity" for a in answers)
    assert on_hand(glazed) == 5
    assert not Sale.objects.exists()


def test_a_body_sent_with_content_encoding_identity_is_sold(client_app):
    glazed = make_product("GLAZED", on_hand=5)

    response = client_app.generic(
        "POST",
        SALES,
        b'{"items": [{"sku": "GLAZED", "quantity": 1}]}',
        content_type="application/json",
        headers={"Content-Encoding": "identity"},
    )

    assert response.status_code == 201, response.content
    assert on_hand(glazed) == 4


SALE_BODY = '{"items": [{"sku": "GLAZ\u00c9D", "quantity": 1}]}'


@pytest.mark.parametrize("charset", ["utf-8", "UTF-8", '"utf-8"', "utf8", "latin-1", "utf-16", "bogus", ""])
def test_a_json_body_is_read_as_utf8_whatever_charset_it_names(client_app, charset):
    # JSON is UTF-8 (RFC 8259 defines no charset parameter): a proxy or a log reader reads these bytes as
    # UTF-8 whatever the header says. Decoded in the charset named, "charset=latin-1" bought "GLAZÃ\x89D".
    glazed = make_product("GLAZ\u00c9D", on_hand=5)

    response = client_app.generic(
        "POST", SALES, SALE_BODY.encode(), content_type=f"application/json; charset={charset}"
    )

    assert response.status_code == 201, response.content
    assert on_hand(glazed) == 4


@pytest.mark.parametrize("raw, charset", [("latin-1", "latin-1"), ("utf-16", "utf-16")])
def test_a_json_body_that_is_not_utf8_is_malformed_whatever_charset_it_names(client_app, raw, charset):
    # DRF decoded these in the charset named and sold GLAZÉD: an order a proxy reading UTF-8 never saw.
    glazed = make_product("GLAZ\u00c9D", on_hand=5)

    response = client_app.generic(
        "POST", SALES, SALE_BODY.encode(raw), content_type=f"application/json; charset={charset}"
    )

    assert response.status_code == 400, response.content
    assert response.json()["code"] == "malformed_json"
    assert on_hand(glazed) == 5
    assert not Sale.objects.exists()


@pytest.mark.parametrize(
    "raw",
    [
        b'{"items": [{"sku": "GLAZED", "quantity": 1, "quantity": 5}]}',
        b'{"items": [{"sku": "BOSTON", "quantity": 1}], "items": [{"sku": "GLAZED", "quantity": 5}]}',
        b'{"items": [{"sku": "GLAZED", "sku": "GLAZED", "quantity": 5}]}',
    ],
    ids=["quantity-twice", "items-twice", "same-value-twice"],
)
def test_a_body_naming_a_key_twice_is_malformed_json_and_sells_nothing(client_app, raw):
    # JSON parsers disagree on which of two values wins (Python's: the last), so a proxy, a client-side
    # check or a log reader may see another order than the one we would sell: refused, not guessed.
    glazed, boston = make_product("GLAZED", on_hand=5), make_product("BOSTON", on_hand=5)

    response = client_app.generic("POST", SALES, raw, content_type="application/json")

    assert response.status_code == 400, response.content
    assert response.json()["code"] == "malformed_json"
    assert "twice" in response.json()["message"]
    assert (on_hand(glazed), on_hand(boston)) == (5, 5)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"items": [{"sku": "GLAZED", "quantity": 1}], "\\ud800": 1}',  # an unknown field: its name was echoed
        b'{"items": [{"sku": "GLAZ\\udfffED", "quantity": 1}]}',
    ],
    ids=["in-a-name", "in-a-value"],
)
def test_half_a_character_escaped_is_malformed_json(client_app, raw):
    glazed = make_product("GLAZED", on_hand=5)

    response = client_app.generic("POST", SALES, raw, content_type="application/json")

    assert response.status_code == 400, response.content
    assert response.json()["code"] == "malformed_json"
    assert "lone surrogate" in response.json()["message"]
    assert on_hand(glazed) == 5


@pytest.mark.parametrize("digits", [4301, 100_000])
def test_a_number_too_long_to_read_is_malformed_json_that_names_no_server_internals(client_app, digits):
    # Python refuses int("1" * 4301); its message told the client to call sys.set_int_max_str_digits().
    glazed = make_product("GLAZED", on_hand=5)
    raw = b'{"items": [{"sku": "GLAZED", "quantity": 1' + b"0" * (digits - 1) + b"}]}"

    response = client_app.generic("POST", SALES, raw, content_type="application/json")

    assert response.status_code == 400, response.content
    assert response.json() == {
        "code": "malformed_json",
        "message": "JSON parse error - a number has more than 4300 digits.",
    }
    assert on_hand(glazed) == 5


def test_a_whole_character_escaped_as_a_pair_is_read_as_that_character(client_app):
    make_product("GLAZED", on_hand=5)
    raw = b'{"items": [{"sku": "GLAZED", "quantity": 1}], "\\ud83c\\udf69": 1}'  # a donut emoji, escaped

    response = client_app.generic("POST", SALES, raw, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["code"] == "validation_error", "an unknown field, read as the emoji it names"
    assert "\U0001f369" in response.json()["errors"]


def test_an_order_of_twenty_skus_is_accepted(client_app):
    for i in range(20):
        make_product(f"S{i}", on_hand=1)

    response = client_app.post(SALES, {"items": [{"sku": f"S{i}", "quantity": 1} for i in range(20)]}, format="json")

    assert response.status_code == 201
    assert Product.objects.aggregate(left=Sum("on_hand"))["left"] == 0


def test_the_schema_and_docs_are_served_without_a_cdn(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    docs = client.get("/api/docs/")

    assert schema.status_code == 200
    paths = schema.json()["paths"]
    assert set(paths["/api/v1/sales/"]["post"]["responses"]) >= {"201", "400", "401", "404", "409", "422", "429"}
    assert "/api/v1/restocks/" in paths and "/api/v1/products/{sku}/" in paths
    assert docs.status_code == 200
    assert b"cdn" not in docs.content.lower()


@override_settings(SLACK_WEBHOOK_URL="http://127.0.0.1:9/slack", SLACK_MIN_SEVERITY="info")
def test_a_rush_selling_out_many_skus_tells_slack_once_then_sums_up_the_rest(client_app):
    # In a rush every SKU sells out within minutes: one message per SKU would bury a dead letter.
    skus = ["GLAZED", "BOSTON", "MATCHA", "LEMON", "VIRAL"]
    for sku in skus:
        make_product(sku, on_hand=1)

    for sku in skus:
        assert buy(client_app, (sku, 1)).status_code == 201

    slack = AlertDelivery.objects.filter(channel=AlertDelivery.Channel.SLACK)
    assert [d.alert.title for d in slack] == ["GLAZED sold out"], "the first sell-out is told at once"
    assert Restock.objects.filter(product__sku__in=skus).count() == 5, "each still has its restock"

    AlertGroup.objects.update(window_ends_at=timezone.now(), flush_at=timezone.now())
    alert_groups_flush()

    summary = slack.get(alert__is_summary=True).alert
    assert summary.title == "Sold out: +4 more (new: BOSTON, MATCHA, LEMON, VIRAL)"
    assert summary.severity == "info"

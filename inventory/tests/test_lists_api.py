"""Lists a client developer pages through: GET /api/v1/sales/ (own sales, newest first, by date) and
the paginated catalogue."""

from datetime import UTC, datetime

import pytest
from rest_framework.test import APIClient

from inventory.models import Restock, Sale
from inventory.services import SaleItem, sale_create
from testsupport.data import make_api_client, make_product

pytestmark = pytest.mark.django_db

SALES = "/api/v1/sales/"


def sell(client, sku, quantity, *, at=None):
    sale = sale_create(client=client, items=[SaleItem(sku, quantity)]).sale
    if at is not None:
        Sale.objects.filter(pk=sale.pk).update(created_at=at)
    return sale.pk


def test_a_client_lists_its_own_sales_newest_first(client_app):
    make_product("GLAZED", on_hand=100, price="1.50")
    make_product("VIRAL", on_hand=100, price="3.50")
    other, _ = make_api_client()
    first = sell(client_app.api_client, "GLAZED", 2)
    sell(other, "GLAZED", 1)  # someone else's: never listed
    second = sell(client_app.api_client, "VIRAL", 1)

    response = client_app.get(SALES)

    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["count"], body["next"], body["previous"]) == (2, None, None)
    assert [sale["id"] for sale in body["results"]] == [second, first]
    assert body["results"][1]["total"] == "3.00"
    assert body["results"][1]["lines"] == [{"sku": "GLAZED", "quantity": 2, "unit_price": "1.50", "line_total": "3.00"}]
    assert body["results"][0] == client_app.get(f"{SALES}{second}/").json(), "the same shape as one sale"


def test_sales_are_paginated_fifty_a_page(client_app):
    make_product("GLAZED", on_hand=1000)
    ids = [sell(client_app.api_client, "GLAZED", 1) for _ in range(53)]

    first = client_app.get(SALES).json()
    second = client_app.get(SALES, {"page": 2}).json()
    past = client_app.get(SALES, {"page": 3})

    assert first["count"] == 53 and len(first["results"]) == 50 and first["next"].endswith("?page=2")
    assert [sale["id"] for sale in second["results"]] == ids[2::-1]
    assert past.status_code == 404 and past.json()["code"] == "not_found"


def test_sales_filter_by_day(client_app):
    make_product("GLAZED", on_hand=100)
    client = client_app.api_client
    dec3 = sell(client, "GLAZED", 1, at=datetime(2026, 12, 3, 23, 59, tzinfo=UTC))
    dec4 = sell(client, "GLAZED", 1, at=datetime(2026, 12, 4, 0, 0, tzinfo=UTC))
    dec5 = sell(client, "GLAZED", 1, at=datetime(2026, 12, 5, 12, 0, tzinfo=UTC))

    def listed(**params):
        response = client_app.get(SALES, params)
        assert response.status_code == 200, response.content
        return [sale["id"] for sale in response.json()["results"]]

    assert listed(created_after="2026-12-04") == [dec5, dec4]
    assert listed(created_before="2026-12-04") == [dec3]
    assert listed(created_after="2026-12-04", created_before="2026-12-05") == [dec4]
    assert listed() == [dec5, dec4, dec3]


@pytest.mark.parametrize(
    "params, field",
    [
        ({"created_after": "yesterday"}, "created_after"),
        ({"created_before": "2026-13-01"}, "created_before"),
        ({"created_after": ""}, "created_after"),
        ({"created_after": "20261204"}, "created_after"),
        ({"created_after": "2026-W49-1"}, "created_after"),
        ({"created_before": "2026-12-4"}, "created_before"),
        ({"created_after": "\uff12\uff10\uff12\uff16-12-04"}, "created_after"),
        ({"page": "0"}, "page"),
        ({"page": "1.0"}, "page"),
        ({"page": "2_0"}, "page"),
        ({"since": "2026-12-01"}, "since"),
    ],
    ids=[
        "words",
        "no-such-month",
        "blank",
        "basic-format",
        "week-date",
        "one-digit-day",
        "fullwidth-digits",
        "page-0",
        "page-1.0",
        "page-2_0",
        "unknown-filter",
    ],
)
def test_bad_sale_filters_are_a_400_naming_the_field(client_app, params, field):
    response = client_app.get(SALES, params)

    assert response.status_code == 400
    assert response.json()["code"] == "validation_error" and field in response.json()["errors"]


@pytest.mark.parametrize("page", ["0", "-1", "-20"])
def test_a_page_below_one_is_told_pages_start_at_one(client, page):
    response = client.get("/api/v1/products/", {"page": page})

    assert response.status_code == 400
    assert response.json()["errors"] == {"page": ["Ensure this value is greater than or equal to 1."]}


def test_listing_sales_needs_a_key():
    response = APIClient().get(SALES)

    assert response.status_code == 401 and response.json()["code"] == "not_authenticated"


def test_the_catalogue_is_paginated_like_restocks(client):
    for i in range(55):
        make_product(f"D{i:02}", on_hand=1)

    first = client.get("/api/v1/products/").json()
    second = client.get("/api/v1/products/", {"page": 2}).json()

    assert first["count"] == 55 and len(first["results"]) == 50 and first["next"].endswith("?page=2")
    assert [p["sku"] for p in second["results"]] == ["D50", "D51", "D52", "D53", "D54"]
    assert client.get("/api/v1/products/", {"page": 3}).json()["code"] == "not_found"
    assert client.get("/api/v1/products/", {"page": "x"}).json()["code"] == "validation_error"
    assert client.get("/api/v1/products/", {"page": "2.0"}).json()["code"] == "validation_error"  # was a 404


@pytest.mark.parametrize("path", ["/api/v1/products/", "/api/v1/restocks/", SALES])
def test_a_list_takes_drfs_format_parameter_like_any_other_answer(client_app, path):
    response = client_app.get(path, {"format": "json"})  # make run's DEBUG also takes ?format=api

    assert response.status_code == 200 and "results" in response.json()


@pytest.mark.parametrize("path", ["/api/v1/products/", "/api/v1/restocks/", SALES])
def test_a_list_renders_in_make_runs_browsable_api(client_app, monkeypatch, path):
    # make run's DEBUG adds DRF's browsable API, which asks a list view for its queryset to draw a filter form:
    # the sales list had none, so a browser (or ?format=api) got a 500.
    from django.urls import resolve
    from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer

    make_product("GLAZED", on_hand=10)
    sell(client_app.api_client, "GLAZED", 1)
    monkeypatch.setattr(resolve(path).func.view_class, "renderer_classes", [JSONRenderer, BrowsableAPIRenderer])

    response = client_app.get(path, {"format": "api"})

    assert response.status_code == 200, response.content[:300]
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("debug", [False, True], ids=["production", "make-run"])
def test_an_unknown_format_is_a_json_406_also_under_make_runs_debug(client_app, settings, debug):
    settings.DEBUG = debug

    response = client_app.get("/api/v1/products/", {"format": "xml"})

    assert response.status_code == 406 and response.json()["code"] == "not_acceptable"


def test_a_client_follows_the_restock_an_out_of_stock_names(client_app):
    make_product("GLAZED", on_hand=1)
    refused = client_app.post(SALES, {"items": [{"sku": "GLAZED", "quantity": 5}]}, format="json")
    restock_id = refused.json()["shortages"][0]["restock"]["id"]
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Api-Key {make_api_client()[1]}")

    response = client_app.get(f"/api/v1/restocks/{restock_id}/")

    assert refused.status_code == 409 and response.status_code == 200, response.content
    assert response.json() == client_app.get("/api/v1/restocks/").json()["results"][0], "the same shape as listed"
    restock = response.json()
    assert (restock["id"], restock["sku"], restock["reason"]) == (restock_id, "GLAZED", "shortage")
    assert other.get(f"/api/v1/restocks/{restock_id}/").json() == response.json(), "catalogue information"


def test_an_unknown_restock_is_a_404_and_reading_one_needs_a_key(client_app):
    unknown = client_app.get("/api/v1/restocks/999999/")
    anonymous = APIClient().get("/api/v1/restocks/999999/")

    assert unknown.status_code == 404 and unknown.json() == {"code": "not_found", "message": "No such restock."}
    assert anonymous.status_code == 401 and anonymous.json()["code"] == "not_authenticated"


def test_restocks_filtered_by_sku_list_only_that_sku_as_written(client_app):
    make_product("GLAZED", on_hand=0)
    client_app.post(SALES, {"items": [{"sku": "GLAZED", "quantity": 1}]}, format="json")  # opens its restock

    listed = client_app.get("/api/v1/restocks/", {"sku": "GLAZED"})
    padded = client_app.get("/api/v1/restocks/", {"sku": "GLAZED "})

    assert [r["sku"] for r in listed.json()["results"]] == ["GLAZED"]
    assert (padded.status_code, padded.json()["skus"]) == (404, ["GLAZED "]), "the column ignores trailing spaces"


def test_restocks_filtered_by_a_sku_we_never_sold_are_an_unknown_sku_as_everywhere_else(client_app):
    # A typo or a wrong case listed nothing (200, count 0): the app showed "no restock on its way" for a
    # product that had one. Every other endpoint taking a SKU answers unknown_sku, with the SKU meant.
    make_product("GLAZED", on_hand=0)
    client_app.post(SALES, {"items": [{"sku": "GLAZED", "quantity": 1}]}, format="json")  # opens its restock
    retired = make_product("MAPLE", on_hand=0, is_active=False)
    Restock.objects.create(product=retired, quantity=10, reason="manual", status="cancelled")

    unknown = client_app.get("/api/v1/restocks/", {"sku": "NOPE"})
    other_case = client_app.get("/api/v1/restocks/", {"sku": "glazed", "status": "pending"})
    off_sale = client_app.get("/api/v1/restocks/", {"sku": "MAPLE"})

    assert unknown.status_code == 404
    assert unknown.json() == {"code": "unknown_sku", "message": "Unknown SKU: NOPE.", "skus": ["NOPE"]}
    assert (other_case.status_code, other_case.json()["code"]) == (404, "unknown_sku")
    assert other_case.json()["did_you_mean"] == {"glazed": "GLAZED"}
    assert [r["sku"] for r in off_sale.json()["results"]] == ["MAPLE"], "a retired product's restocks stay listed"

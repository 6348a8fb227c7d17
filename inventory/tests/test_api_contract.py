"""The sales, catalogue and restock endpoints answer as their schema says (regressions found by
donutsite/tests/test_schema_fuzz.py)."""

import re

import pytest
from django.utils.timezone import now

from inventory.models import Restock
from testsupport.data import make_product

pytestmark = pytest.mark.django_db


@pytest.fixture
def schema(client):
    return client.get("/api/schema/", {"format": "json"}).json()


def responses(schema, path, method="get"):
    return set(schema["paths"][path][method]["responses"])


@pytest.mark.parametrize("query", ["status=", "sku="], ids=["blank-status", "blank-sku"])
def test_a_blank_restock_filter_is_refused_instead_of_listing_everything(client_app, query):
    Restock.objects.create(product=make_product("GLAZED"), quantity=10, reason="manual")

    response = client_app.get(f"/api/v1/restocks/?{query}")

    assert response.status_code == 400 and response.json()["code"] == "validation_error"
    assert query.rstrip("=") in response.json()["errors"]


@pytest.mark.parametrize("path", ["/api/v1/restocks/", "/api/v1/sales/", "/api/v1/products/"])
def test_a_filter_given_twice_is_refused_instead_of_answering_for_one_of_them(client_app, path):
    Restock.objects.create(product=make_product("GLAZED"), quantity=10, reason="manual")
    query = "status=pending&status=placed" if "restocks" in path else "page=1&page=2"

    response = client_app.get(f"{path}?{query}")

    assert response.status_code == 400 and response.json()["code"] == "validation_error"
    assert list(response.json()["errors"]) == [query.split("=")[0]]
    assert client_app.get(f"{path}?{query.split('&')[0]}").status_code == 200


def test_a_sku_filter_of_spaces_is_a_sku_like_any_other(client_app):
    # The schema asks for a non-empty string; " " is one, so it must not be trimmed into a blank 400.
    Restock.objects.create(product=make_product("GLAZED"), quantity=10, reason="manual")

    response = client_app.get("/api/v1/restocks/", {"sku": " "})

    assert response.status_code == 404 and response.json()["skus"] == [" "]


def test_an_unknown_sku_filter_is_a_documented_404(client_app, schema):
    make_product("GLAZED")

    response = client_app.get("/api/v1/restocks/", {"sku": "NOPE"})

    documented = schema["paths"]["/api/v1/restocks/"]["get"]["responses"]["404"]["content"]["application/json"]
    assert response.status_code == 404
    assert documented["examples"]["unknown_sku"]["value"] == response.json()


def test_a_page_past_the_last_is_a_documented_404(client_app, schema):
    Restock.objects.create(product=make_product("GLAZED"), quantity=10, reason="manual")

    response = client_app.get("/api/v1/restocks/?page=99")

    assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert "404" in responses(schema, "/api/v1/restocks/")


def test_a_bad_key_on_the_public_catalogue_is_a_documented_401(client, schema):
    make_product("GLAZED")

    response = client.get("/api/v1/products/", HTTP_AUTHORIZATION="Api-Key wrong")

    assert response.status_code == 401 and response.json()["code"] == "authentication_failed"
    assert client.get("/api/v1/products/").status_code == 200  # no key at all is fine
    for path in ("/api/v1/products/", "/api/v1/products/{sku}/"):
        assert {"401", "429"} <= responses(schema, path)
    assert "429" in responses(schema, "/api/v1/sales/{sale_id}/")


def test_the_schema_states_the_sale_bounds_and_strictness(schema):
    components = schema["components"]["schemas"]
    items = components["SaleInRequest"]["properties"]["items"]

    assert (items["minItems"], items["maxItems"]) == (1, 20)
    assert components["SaleInRequest"]["additionalProperties"] is False
    assert components["SaleItemInRequest"]["additionalProperties"] is False


@pytest.mark.parametrize(
    "key, accepted",
    [("order-42", True), ("k" * 255, True), ("", False), ("has space", False), ("é", False), ("k" * 256, False)],
)
def test_the_documented_idempotency_key_pattern_is_what_the_api_accepts(client_app, schema, key, accepted):
    make_product("GLAZED", on_hand=5)
    header = next(p for p in schema["paths"]["/api/v1/sales/"]["post"]["parameters"] if p["name"] == "Idempotency-Key")

    response = client_app.post(
        "/api/v1/sales/", {"items": [{"sku": "GLAZED", "quantity": 1}]}, format="json", HTTP_IDEMPOTENCY_KEY=key
    )

    assert bool(re.fullmatch(header["schema"]["pattern"], key)) is accepted
    assert response.status_code == (201 if accepted else 400)


def test_a_malformed_body_is_a_400_the_schema_allows(client_app, schema):
    response = client_app.generic("POST", "/api/v1/sales/", b"\x00", content_type="application/json")

    assert response.status_code == 400
    assert set(response.json()) == {"code", "message"}  # no `errors`: nothing was parsed
    assert set(schema["components"]["schemas"]["ValidationErrorOut"]["required"]) <= {"code", "message"}


def test_the_sale_headers_clients_rely_on_are_documented_and_sent(client_app, schema):
    make_product("GLAZED", on_hand=1)
    documented = {
        code: set(answer.get("headers", {}))
        for code, answer in schema["paths"]["/api/v1/sales/"]["post"]["responses"].items()
    }

    def buy(quantity):
        body = {"items": [{"sku": "GLAZED", "quantity": quantity}]}
        return client_app.post("/api/v1/sales/", body, format="json", headers={"Idempotency-Key": f"k{quantity}"})

    sold, sold_again, refused, refused_again = buy(1), buy(1), buy(5), buy(5)

    assert {"Location", "Idempotent-Replayed"} <= documented["201"]
    assert "Idempotent-Replayed" in documented["409"] and "Retry-After" in documented["429"]
    assert sold.status_code == 201 and sold["Location"] == f"/api/v1/sales/{sold.json()['id']}/"
    assert sold_again["Idempotent-Replayed"] == "true"
    assert refused.status_code == refused_again.status_code == 409
    assert refused_again["Idempotent-Replayed"] == "true"


@pytest.mark.parametrize(
    "path, component",
    [
        ("/api/v1/restocks/", "RestockOut"),
        ("/api/v1/sales/", "SaleOut"),
        ("/api/v1/products/", "ProductOut"),
    ],
)
def test_every_key_a_list_always_sends_is_required_in_its_schema(client_app, schema, path, component):
    # A client generated from the schema makes a property left out of `required` optional (`status?` in
    # TypeScript, `String?` in Kotlin and Swift), to be unwrapped at every use though no answer lacks it.
    restock = Restock.objects.create(product=make_product("GLAZED", on_hand=5), quantity=10, reason="manual")
    assert restock.expected_at is None and restock.quantity_received is None  # sent as null, still sent
    client_app.post("/api/v1/sales/", {"items": [{"sku": "GLAZED", "quantity": 1}]}, format="json")
    components = schema["components"]["schemas"]

    page = client_app.get(path).json()

    assert set(components[f"Paginated{component}List"]["required"]) == set(page)
    required, sent = set(components[component].get("required", ())), set(page["results"][0])
    assert required == sent, (
        f"{component}: sent in every answer but optional in the schema: {sorted(sent - required)} (mark them "
        f"required in the serializer's Meta.extra_kwargs, as RestockOut does); required but not sent: "
        f"{sorted(required - sent)}"
    )


def test_an_out_of_stock_restock_status_is_the_documented_restock_status_enum(client_app, schema):
    # A generated client gets one RestockStatus type for a restock listed and for the one a refusal names,
    # not a free string it must compare with the enum's values by hand.
    make_product("GLAZED", on_hand=1)
    components = schema["components"]["schemas"]

    refused = client_app.post("/api/v1/sales/", {"items": [{"sku": "GLAZED", "quantity": 5}]}, format="json")

    assert refused.status_code == 409
    status = components["RestockRefOut"]["properties"]["status"]
    assert (
        status
        == components["RestockOut"]["properties"]["status"]
        == {"$ref": "#/components/schemas/RestockOutStatusEnum"}
    )
    assert refused.json()["shortages"][0]["restock"]["status"] in components["RestockOutStatusEnum"]["enum"]


def test_every_operation_id_is_entity_and_verb(schema):
    # Generators name a client's methods after them: productList() beside productGet(), not v1ProductsList().
    operation_ids = [op["operationId"] for path in schema["paths"].values() for op in path.values()]

    assert [op_id for op_id in operation_ids if not re.fullmatch(r"[a-z]+_[a-z]+", op_id)] == []
    assert {"product_list", "restock_list"} <= set(operation_ids)


def test_every_time_a_client_is_sent_has_one_shape(client_app):
    # One parser for every timestamp: Swift's ISO8601DateFormatter, say, takes fractional seconds only when
    # told to, and then only with them. A sale's created_at had microseconds, and a restock's expected_at
    # (whole seconds, as the factory sends it) had none, in the list and in an out_of_stock alike.
    glazed = make_product("GLAZED", on_hand=1)
    Restock.objects.create(
        product=glazed, quantity=10, reason="shortage", status="placed", expected_at="2026-12-06T13:15:45Z"
    )
    sold = client_app.post("/api/v1/sales/", {"items": [{"sku": "GLAZED", "quantity": 1}]}, format="json")
    refused = client_app.post("/api/v1/sales/", {"items": [{"sku": "GLAZED", "quantity": 1}]}, format="json")
    restock = client_app.get("/api/v1/restocks/").json()["results"][0]

    times = [
        sold.json()["created_at"],
        refused.json()["shortages"][0]["restock"]["expected_at"],
        restock["expected_at"],
        restock["created_at"],
    ]

    assert [t for t in times if not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", t)] == []
    assert times[1] == times[2] == "2026-12-06T13:15:45.000000Z"


def test_swagger_describes_the_sale_itself(schema):
    # Swagger showed the view's docstring ("POST: sell; GET: the client's own sales ...") as the sale's
    # description: nothing about all or nothing, the 409 or the key.
    description = schema["paths"]["/api/v1/sales/"]["post"]["description"]

    assert "GET" not in description
    assert all(word in description for word in ("all or nothing", "out_of_stock", "Idempotency-Key"))


def test_a_restock_a_client_polls_is_not_over_at_failed_as_its_description_says(client_app, schema):
    # A client polling the restock an out_of_stock named stopped at `failed`, listed among the statuses with no
    # word of which are final: the same restock comes back pending when its SKU runs short again (or ops
    # redrive it), and then fulfilled, which that client never saw.
    failed = Restock.objects.create(
        product=make_product("MAPLE", on_hand=1), quantity=100, reason="shortage", status="failed", closed_at=now()
    )

    refused = client_app.post("/api/v1/sales/", {"items": [{"sku": "MAPLE", "quantity": 5}]}, format="json")
    polled = client_app.get(f"/api/v1/restocks/{failed.pk}/").json()

    assert refused.json()["shortages"][0]["restock"]["id"] == failed.pk and polled["status"] == "pending"
    described = schema["paths"]["/api/v1/restocks/{restock_id}/"]["get"]["description"]
    assert [status for status in Restock.Status.values if f"`{status}`" not in described] == []
    assert re.search(r"`failed` is not final[^.]*`pending` again", described)

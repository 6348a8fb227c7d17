"""A database that does not answer gives a quick 503 with Retry-After, never a 500: on the API (the DRF
handler) and on plain Django views (DatabaseUnavailableMiddleware). Other errors still answer 500."""

import time
from contextlib import contextmanager

import pytest
from django.db import connections
from django.http import JsonResponse
from django.test import Client, override_settings
from django.urls import path

from inventory.models import Product
from testsupport.data import make_api_client, make_product

pytestmark = pytest.mark.django_db(transaction=True)


@contextmanager
def database_down():
    """This thread's connection points at a port where nothing listens (connection refused at once)."""
    default = connections["default"]
    saved = {key: default.settings_dict[key] for key in ("HOST", "PORT")}
    default.close()
    default.settings_dict.update(HOST="127.0.0.1", PORT=9)
    try:
        yield
    finally:
        default.close()
        default.settings_dict.update(saved)


def product_count(request):
    return JsonResponse({"products": Product.objects.count()})


def broken(request):
    raise RuntimeError("a bug, not an outage")


urlpatterns = [path("count", product_count), path("broken", broken)]


def test_a_sale_while_the_database_is_down_is_a_quick_503_with_retry_after():
    make_product("GLAZED", on_hand=5)
    _, key = make_api_client()
    client = Client(raise_request_exception=False)

    with database_down():
        started = time.monotonic()
        response = client.post(
            "/api/v1/sales/",
            {"items": [{"sku": "GLAZED", "quantity": 1}]},
            content_type="application/json",
            headers={"Authorization": f"Api-Key {key}", "Idempotency-Key": "k-1"},
        )
        elapsed = time.monotonic() - started

    assert response.status_code == 503
    assert response.json()["code"] == "service_unavailable"
    assert response["Retry-After"] == "1"
    assert elapsed < 3
    # Back up: the same key sells once.
    retried = client.post(
        "/api/v1/sales/",
        {"items": [{"sku": "GLAZED", "quantity": 1}]},
        content_type="application/json",
        headers={"Authorization": f"Api-Key {key}", "Idempotency-Key": "k-1"},
    )
    assert retried.status_code == 201
    assert Product.objects.get(sku="GLAZED").on_hand == 4


def test_the_admin_while_the_database_is_down_is_a_503_not_a_500(admin_user):
    client = Client(raise_request_exception=False)
    client.force_login(admin_user)

    with database_down():
        response = client.get("/admin/")

    assert response.status_code == 503
    assert response.json()["code"] == "service_unavailable"
    assert response["Retry-After"] == "1"


@override_settings(ROOT_URLCONF=__name__)
def test_the_middleware_maps_database_errors_only():
    client = Client(raise_request_exception=False)
    assert client.get("/count").json() == {"products": 0}

    with database_down():
        assert client.get("/count").status_code == 503

    assert client.get("/broken").status_code == 500

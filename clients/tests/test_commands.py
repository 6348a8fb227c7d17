"""create_api_key as an operator runs it."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from clients.models import ApiClient
from inventory.models import Sale
from testsupport.data import make_api_client, make_product

pytestmark = pytest.mark.django_db


def run(*args):
    """Run a command; return (stdout, stderr)."""
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_create_api_key_prints_a_key_that_buys_donuts():
    glazed = make_product("GLAZED", on_hand=5)

    out, _ = run("create_api_key", "till-9")

    key = out.strip().splitlines()[-1]
    client = ApiClient.objects.get(name="till-9")
    assert client.key_hash == ApiClient.hash_key(key)
    assert "Api-Key" in out and client.key_hash not in out
    http = APIClient()
    http.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    response = http.post("/api/v1/sales/", {"items": [{"sku": "GLAZED", "quantity": 2}]}, format="json")
    assert response.status_code == 201, response.content
    assert Sale.objects.get().client == client
    glazed.refresh_from_db()
    assert glazed.on_hand == 3


def test_create_api_key_refuses_a_name_in_use():
    client, key = make_api_client("till-9")

    with pytest.raises(CommandError, match="till-9"):
        run("create_api_key", "till-9")

    assert ApiClient.objects.filter(name="till-9").count() == 1
    client.refresh_from_db()
    assert client.key_hash == ApiClient.hash_key(key), "the existing key still works"


@pytest.mark.parametrize("name", ["", "   ", "x" * 101], ids=["empty", "blank", "too-long"])
def test_create_api_key_refuses_a_name_the_admin_would_refuse_and_creates_nothing(name):
    with pytest.raises(CommandError, match="name"):
        run("create_api_key", name)

    assert not ApiClient.objects.exists()

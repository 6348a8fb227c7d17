"""The API client admin as ops staff use it: a key shown once, revoked by unticking Active."""

import re

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from clients.models import ApiClient
from testsupport.admin import form_as_sent, row_for
from testsupport.data import make_api_client, make_product

pytestmark = pytest.mark.django_db

PRODUCTS = reverse("admin:inventory_product_changelist")


def test_adding_an_api_client_shows_its_key_once(admin_client):
    response = admin_client.post(
        reverse("admin:clients_apiclient_add"), {"name": "till-2", "is_active": "on", "_save": "Save"}, follow=True
    )

    match = re.search(r"Copy this key now: ([A-Za-z0-9_-]{40,})", response.content.decode())
    assert match, "the key is shown after adding"
    key = match.group(1)
    client = ApiClient.objects.get(name="till-2")
    assert client.key_hash == ApiClient.hash_key(key)
    assert client.key_prefix == key[: ApiClient.KEY_PREFIX_LENGTH]

    for page in [PRODUCTS, reverse("admin:clients_apiclient_change", args=[client.pk])]:
        html = admin_client.get(page).content.decode()
        assert key not in html and client.key_hash not in html

    make_product("GLAZED", on_hand=3)
    http = APIClient()
    http.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    sale = http.post("/api/v1/sales/", {"items": [{"sku": "GLAZED", "quantity": 1}]}, format="json")
    assert sale.status_code == 201, sale.content


def test_unticking_active_revokes_a_key(admin_client):
    client, key = make_api_client("till-3")
    make_product("GLAZED", on_hand=3)

    response = admin_client.post(
        reverse("admin:clients_apiclient_change", args=[client.pk]), {"name": "till-3", "_save": "Save"}
    )

    assert response.status_code == 302
    http = APIClient()
    http.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    assert http.post("/api/v1/sales/", {"items": [{"sku": "GLAZED", "quantity": 1}]}, format="json").status_code == 401
    client.refresh_from_db()
    assert client.key_hash == ApiClient.hash_key(key), "editing a client keeps its key"


def test_the_api_client_list_shows_prefixes_not_hashes(admin_client):
    client, key = make_api_client("till-4")

    html = admin_client.get(reverse("admin:clients_apiclient_changelist")).content.decode()

    assert key[: ApiClient.KEY_PREFIX_LENGTH] in row_for(html, "till-4")
    assert client.key_hash not in html and key not in html


def test_renaming_a_client_from_a_page_opened_before_its_key_was_revoked_keeps_it_revoked(
    admin_client, admin_user, client
):
    """Two ops at once: one revokes a leaked key, the other, whose page was open before that, renames its client.
    The rename is all the second save writes: compared with the database instead of the page, it took
    "active" for its own change and turned the leaked key back on."""
    till, key = make_api_client("till-5")
    make_product("GLAZED", on_hand=3)
    url = reverse("admin:clients_apiclient_change", args=[till.pk])
    renaming = admin_client.get(url)
    client.force_login(admin_user)

    client.post(url, form_as_sent(client.get(url), is_active=None))
    admin_client.post(url, form_as_sent(renaming, name="till-5 (front counter)"))

    till.refresh_from_db()
    assert (till.name, till.is_active) == ("till-5 (front counter)", False), "the rename turned the key back on"
    http = APIClient()
    http.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    assert http.post("/api/v1/sales/", {"items": [{"sku": "GLAZED", "quantity": 1}]}, format="json").status_code == 401

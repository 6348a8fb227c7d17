"""A changelist's query string cannot break it: a lookup that cannot be run is Django's "invalid lookup"
redirect (`?e=1`), a regular expression is refused (400); never a 500, nor a 503 that says the database is
down. Found by sending junk query strings to every changelist of the running server. Nor can an action's
posted ids: one that is not an id selects nothing."""

import pytest
from django.contrib import admin
from django.urls import reverse

from donutsite.admin import CheckedChangeList
from factory.models import DeadLetter
from notifications.models import Alert
from testsupport.admin import shown_messages
from testsupport.data import make_failed_restock, make_product

pytestmark = pytest.mark.django_db

PRODUCTS = reverse("admin:inventory_product_changelist")
SALES = reverse("admin:inventory_sale_changelist")
ALERTS = reverse("admin:notifications_alert_changelist")  # has a date_hierarchy on created_at
USERS = reverse("admin:auth_user_changelist")  # Django's own
DEAD_LETTERS = reverse("admin:factory_deadletter_changelist")


@pytest.mark.parametrize(
    ("url", "query"),
    [
        (PRODUCTS, "created_at__year=99999"),
        (PRODUCTS, "created_at__year=0"),
        (SALES, "created_at__iso_year=99999"),
        (SALES, "created_at__year__gte=10000"),
        (SALES, "id__range=1"),
        (ALERTS, "created_at__year=9999"),
        (ALERTS, "created_at__year=99999999999999999999"),
        (USERS, "date_joined__year=99999"),
    ],
)
def test_a_lookup_that_cannot_be_run_is_the_invalid_lookup_redirect(admin_client, url, query):
    make_product("GLAZED", on_hand=5)
    Alert.objects.create(kind="test", severity="info", title="t", dedupe_key="k")

    response = admin_client.get(f"{url}?{query}")

    assert response.status_code == 302 and response["Location"] == f"{url}?e=1"


@pytest.mark.parametrize(
    ("url", "query"), [(PRODUCTS, "sku__regex=("), (ALERTS, "title__iregex=["), (USERS, "username__regex=(")]
)
def test_a_regular_expression_in_the_query_string_is_refused(admin_client, url, query):
    response = admin_client.get(f"{url}?{query}")

    assert response.status_code == 400


def test_lookups_the_changelists_offer_still_filter(admin_client):
    make_product("GLAZED", on_hand=0)
    make_product("BOSTON", on_hand=50)

    response = admin_client.get(f"{PRODUCTS}?stock=out&created_at__year=2000")
    assert response.status_code == 200 and list(response.context["cl"].queryset) == []
    response = admin_client.get(f"{PRODUCTS}?stock=out")
    assert [p.sku for p in response.context["cl"].queryset] == ["GLAZED"]


def test_every_admin_page_uses_the_checked_changelist(rf, admin_user):
    request = rf.get("/")
    request.user = admin_user

    assert {
        type(model_admin).__name__
        for model_admin in admin.site._registry.values()
        if not issubclass(model_admin.get_changelist(request), CheckedChangeList)
    } == set()


@pytest.mark.parametrize(
    ("url", "action"),
    [(DEAD_LETTERS, "redrive"), (ALERTS, "acknowledge"), (PRODUCTS, "adjust_stock"), (USERS, "delete_selected")],
)
@pytest.mark.parametrize("selected", ["abc", "1e3", "", "1.5"])
def test_an_action_posted_with_an_id_that_is_not_one_selects_nothing(admin_client, url, action, selected):
    _, dead_letter = make_failed_restock(make_product("GLAZED", on_hand=0))

    response = admin_client.post(url, {"action": action, "_selected_action": [dead_letter.pk, selected], "index": 0})

    assert response.status_code == 302 and response["Location"] == url
    shown = shown_messages(admin_client.get(url))
    assert shown == ["Items must be selected in order to perform actions on them. No items have been changed."]
    dead_letter.refresh_from_db()
    assert dead_letter.redriven_at is None


def test_an_action_posted_with_ids_past_the_column_still_runs_on_the_real_ones(admin_client):
    _, dead_letter = make_failed_restock(make_product("GLAZED", on_hand=0))

    admin_client.post(
        DEAD_LETTERS, {"action": "redrive", "_selected_action": [dead_letter.pk, "9" * 30, "-1"], "index": 0}
    )

    assert DeadLetter.objects.get(pk=dead_letter.pk).redriven_at is not None

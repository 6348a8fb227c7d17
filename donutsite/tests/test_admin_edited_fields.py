"""The change pages two ops may have open at once (EditedFieldsAdmin) write only what their user edited: a page
saved as it was shown writes nothing, so it cannot put back what someone else changed since it opened."""

import pytest
from django.contrib import admin
from django.contrib.admin.models import LogEntry
from django.urls import reverse

from clients.models import ApiClient
from donutsite.admin import EditedFieldsAdmin
from inventory.models import Product
from notifications.models import Device
from testsupport.admin import form_as_sent
from testsupport.data import make_api_client, make_product

pytestmark = pytest.mark.django_db


def a_row_of(model):
    """One row for each model whose admin is an EditedFieldsAdmin, every field the page edits filled in."""
    client, _ = make_api_client("till-1")
    rows = {
        Product: lambda: make_product("GLAZED", on_hand=3, reorder_point=2),
        ApiClient: lambda: client,
        Device: lambda: Device.objects.create(kind="ops", platform="ios", token="t", client=client, user_ref="u"),
    }
    return rows[model]()


EDITED_FIELDS_MODELS = [model for model, found in admin.site._registry.items() if isinstance(found, EditedFieldsAdmin)]


def test_the_edited_fields_admins_are_the_ones_this_test_has_rows_for():
    assert set(EDITED_FIELDS_MODELS) == {Product, ApiClient, Device}, "give a_row_of a row of the new one"


@pytest.mark.parametrize("model", EDITED_FIELDS_MODELS, ids=lambda model: model.__name__)
def test_a_change_page_saved_as_shown_writes_nothing(admin_client, model):
    """Each field must send the value its page showed under one name (`initial-<field>`): a file field, a
    split date and time or a multiple choice does not (EditedFieldsForm), and would be taken for an edit
    (or compared with the database again) on every save."""
    row = a_row_of(model)
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_change", args=[row.pk])
    page = admin_client.get(url)
    sent = form_as_sent(page)

    fields = page.context["adminform"].form.fields
    assert fields, "the page edits something"
    assert [name for name in fields if f"initial-{name}" not in sent] == [], "every field sends what it showed"
    assert admin_client.post(url, sent).status_code == 302
    history = LogEntry.objects.get(object_id=str(row.pk), content_type__model=model._meta.model_name)
    assert history.get_change_message() == "No fields changed."

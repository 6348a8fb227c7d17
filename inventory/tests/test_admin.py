"""The admin as ops staff use it: stock badges, stock adjustments through the ledger, read-only records, API keys."""

import re

import pytest
import requests
from celery import current_app
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from factory.models import FactoryOrder
from inventory.admin import ProductAdmin
from inventory.models import IdempotencyKey, Product, Restock, StockMovement
from inventory.selectors import ledger_differences
from inventory.services import SaleItem, sale_create, stock_adjust
from testsupport.admin import form_as_sent, row_for, shown_messages
from testsupport.data import make_api_client, make_product
from testsupport.processes import System
from testsupport.threads import thread_keeping

pytestmark = pytest.mark.django_db

PRODUCTS = reverse("admin:inventory_product_changelist")
ADJUST = reverse("admin:inventory_product_adjust_stock")


SKU_RULE = "A SKU is printable ASCII with no space and no “/”, and not “.” or “..”: what the API can sell and address."


def adjust_url(*products):
    return f"{ADJUST}?ids={','.join(str(p.pk) for p in products)}"


def on_hand(product):
    return Product.objects.get(pk=product.pk).on_hand


def product_form(product, **changes):
    data = {
        "name": product.name,
        "price": str(product.price),
        "is_active": "on",
        "reorder_point": product.reorder_point,
        "reorder_quantity": product.reorder_quantity,
        "_save": "Save",
    }
    return {**data, **changes}


def buy_once(sku):
    client, _ = make_api_client()
    return sale_create(client=client, items=[SaleItem(sku=sku, quantity=1)]).sale


# Products: badges and filters


def test_the_product_list_flags_out_and_low_stock(admin_client):
    make_product("EMPTY", on_hand=0, reorder_point=10)
    make_product("LOWISH", on_hand=10, reorder_point=10)
    make_product("PLENTY", on_hand=11, reorder_point=10)

    html = admin_client.get(PRODUCTS).content.decode()

    assert ">OUT</span>" in row_for(html, "EMPTY")
    assert ">LOW</span>" in row_for(html, "LOWISH"), "at the reorder point counts as low"
    plenty = row_for(html, "PLENTY")
    assert ">ok</span>" in plenty and ">LOW</span>" not in plenty and ">OUT</span>" not in plenty


@pytest.mark.parametrize(
    "level, expected", [("out", ["EMPTY"]), ("low", ["LOWISH"]), ("ok", ["PLENTY"])], ids=["out", "low", "ok"]
)
def test_the_stock_level_filter(admin_client, level, expected):
    make_product("EMPTY", on_hand=0, reorder_point=10)
    make_product("LOWISH", on_hand=3, reorder_point=10)
    make_product("PLENTY", on_hand=50, reorder_point=10)

    response = admin_client.get(PRODUCTS, {"stock": level})

    assert response.status_code == 200
    assert [p.sku for p in response.context["cl"].result_list] == expected


def test_products_are_searchable_by_sku_and_name(admin_client):
    make_product("GLAZED", name="Original Glazed")
    make_product("MAPLE", name="Maple Bar")

    by_sku = admin_client.get(PRODUCTS, {"q": "glaz"})
    by_name = admin_client.get(PRODUCTS, {"q": "maple bar"})

    assert [p.sku for p in by_sku.context["cl"].result_list] == ["GLAZED"]
    assert [p.sku for p in by_name.context["cl"].result_list] == ["MAPLE"]


# Products: on_hand and sku are not hand-edited


def test_posting_the_product_form_cannot_change_on_hand_or_sku(admin_client):
    glazed = make_product("GLAZED", on_hand=12)
    url = reverse("admin:inventory_product_change", args=[glazed.pk])

    page = admin_client.get(url).content.decode()
    response = admin_client.post(url, product_form(glazed, name="Glazed, new recipe", on_hand=999, sku="HACKED"))

    assert 'name="on_hand"' not in page and 'name="sku"' not in page
    assert response.status_code == 302
    glazed.refresh_from_db()
    assert (glazed.sku, glazed.name, glazed.on_hand) == ("GLAZED", "Glazed, new recipe", 12)
    assert ledger_differences() == []


def test_saving_the_product_form_does_not_undo_a_stock_change_made_meanwhile(admin_client, monkeypatch):
    glazed = make_product("GLAZED", on_hand=10)
    read_product = ProductAdmin.get_object

    def read_then_stock_moves(self, request, object_id, from_field=None):
        product = read_product(self, request, object_id, from_field)
        if request.method == "POST":
            # Stands in for a sale from another request landing after the admin read on_hand=10. (A real
            # sale_create cannot run here: it is durable, and the admin wraps its form view in atomic().)
            stock_adjust(product=Product.objects.get(pk=product.pk), quantity=-4, reason="till sale")
        return product

    monkeypatch.setattr(ProductAdmin, "get_object", read_then_stock_moves)
    url = reverse("admin:inventory_product_change", args=[glazed.pk])

    response = admin_client.post(url, product_form(glazed, price="2.25"))

    assert response.status_code == 302
    glazed.refresh_from_db()
    assert (str(glazed.price), glazed.on_hand) == ("2.25", 6), "the admin save wrote back the stale on_hand"
    assert ledger_differences() == []


def test_the_product_form_has_every_field_ops_may_edit(admin_client):
    """ProductAdmin.get_fields names the form's fields by hand (in the order ops read them): a field added
    to Product is not editable in the admin until it is placed there."""
    form = admin_client.get(reverse("admin:inventory_product_add")).context["adminform"].form
    editable = {field.name for field in Product._meta.fields if field.editable and not field.auto_created}

    assert editable - set(form.fields) == set(), "place these in ProductAdmin.get_fields"


def test_a_product_added_in_the_admin_starts_with_no_stock(admin_client):
    response = admin_client.post(
        reverse("admin:inventory_product_add"),
        {
            "sku": "PISTACHIO",
            "name": "Pistachio",
            "price": "2.80",
            "is_active": "on",
            "reorder_point": 5,
            "reorder_quantity": 60,
            "on_hand": 40,
            "_save": "Save",
        },
    )

    assert response.status_code == 302
    product = Product.objects.get(sku="PISTACHIO")
    assert (product.name, str(product.price), product.on_hand, product.reorder_quantity) == ("Pistachio", "2.80", 0, 60)
    assert ">OUT</span>" in row_for(admin_client.get(PRODUCTS).content.decode(), "PISTACHIO")


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("reorder_quantity", 20_000, "Ensure this value is less than or equal to 10000."),
        ("reorder_quantity", 0, "Ensure this value is greater than or equal to 1."),
        ("price", "-1.00", "Ensure this value is greater than or equal to 0."),
        ("sku", "BOX/6", SKU_RULE),
        # No sale's body can name these: stocked, never bought.
        ("sku", "MAPLE BAR", SKU_RULE),
        ("sku", "TAB\tX", SKU_RULE),
        ("sku", "CAFÉ", SKU_RULE),
        # A URL's dot segments: clients resolve /api/v1/products/../ to /api/v1/ before sending it.
        ("sku", ".", SKU_RULE),
        ("sku", "..", SKU_RULE),
    ],
)
def test_a_value_outside_a_products_limits_is_explained_beside_its_field(admin_client, field, value, message):
    form = {"sku": "PISTACHIO", "name": "Pistachio", "price": "2.80", "reorder_point": 5, "reorder_quantity": 60}

    response = admin_client.post(reverse("admin:inventory_product_add"), {**form, field: value, "_save": "Save"})

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {field: [message]}, "not a raw constraint name"
    assert not Product.objects.filter(sku="PISTACHIO").exists()


# A new product whose SKU differs from GLAZED only in case, and what its page says beside the SKU.
LOWER_CASE_GLAZED = {
    "sku": "glazed",
    "name": "Glazed, lower",
    "price": "2.80",
    "reorder_point": 5,
    "reorder_quantity": 60,
}
CASE_TWIN_ERROR = "GLAZED already exists, and glazed differs from it only in case: clients could not tell them apart."


def test_a_sku_differing_from_an_existing_one_only_in_case_is_refused_beside_its_field(admin_client):
    # Clients could not tell glazed from GLAZED by eye, and an unknown "Glazed" could be either.
    make_product("GLAZED")

    response = admin_client.post(reverse("admin:inventory_product_add"), {**LOWER_CASE_GLAZED, "_save": "Save"})

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {"sku": [CASE_TWIN_ERROR]}
    assert list(Product.objects.values_list("sku", flat=True)) == ["GLAZED"]
    assert not Restock.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_case_twin_made_between_the_forms_check_and_its_save_is_still_refused_beside_its_field(
    admin_client, monkeypatch
):
    # Another ops person's GLAZED is committed after this form found no twin and before its INSERT: the
    # database's unique sku_folded refuses the row, and the page says so as if the twin had been there before.
    validate_unique, landed = Product.validate_unique, {}

    def twin_lands_after_the_check(product, exclude=None):
        validate_unique(product, exclude)
        if not landed:
            other = thread_keeping(landed, "GLAZED", lambda: make_product("GLAZED"))  # its own connection
            other.start()
            other.join(timeout=30)

    monkeypatch.setattr(Product, "validate_unique", twin_lands_after_the_check)

    response = admin_client.post(reverse("admin:inventory_product_add"), {**LOWER_CASE_GLAZED, "_save": "Save"})

    assert response.status_code == 200
    assert response.context["adminform"].form.errors == {"sku": [CASE_TWIN_ERROR]}
    assert list(Product.objects.values_list("sku", flat=True)) == ["GLAZED"]


def test_the_product_page_offers_adjust_stock_and_no_delete(admin_client):
    glazed = make_product("GLAZED")

    page = admin_client.get(reverse("admin:inventory_product_change", args=[glazed.pk])).content.decode()
    delete = admin_client.post(reverse("admin:inventory_product_delete", args=[glazed.pk]), {"post": "yes"})

    assert f'href="{adjust_url(glazed)}"' in page
    assert reverse("admin:inventory_product_delete", args=[glazed.pk]) not in page
    assert delete.status_code == 403
    assert Product.objects.filter(pk=glazed.pk).exists()


# Stock adjustments


def test_an_adjustment_changes_stock_and_writes_a_ledger_row(admin_client, admin_user):
    glazed = make_product("GLAZED", on_hand=10)

    form_page = admin_client.get(adjust_url(glazed))
    response = admin_client.post(adjust_url(glazed), {"quantity": "-3", "reason": "dropped a tray"}, follow=True)

    assert form_page.status_code == 200 and b"GLAZED" in form_page.content
    assert response.redirect_chain[-1][0] == PRODUCTS
    assert "GLAZED: -3, on hand now 7." in shown_messages(response)
    assert on_hand(glazed) == 7
    movement = StockMovement.objects.filter(product=glazed).latest("pk")
    assert (movement.kind, movement.quantity, movement.reason, movement.created_by) == (
        "adjustment",
        -3,
        "dropped a tray",
        admin_user,
    )
    assert ledger_differences() == []


def test_the_adjust_action_applies_to_every_selected_product(admin_client):
    glazed = make_product("GLAZED", on_hand=10)
    maple = make_product("MAPLE", on_hand=4)
    make_product("UNTOUCHED", on_hand=5)

    picked = admin_client.post(PRODUCTS, {"action": "adjust_stock", "_selected_action": [glazed.pk, maple.pk]})
    response = admin_client.post(ADJUST, form_as_sent(picked, quantity="12", reason="stock count"), follow=True)

    assert picked.status_code == 200
    assert [product.sku for product, _ in picked.context["rows"]] == ["GLAZED", "MAPLE"]
    assert response.status_code == 200 and response.redirect_chain[-1][0] == PRODUCTS
    assert dict(Product.objects.values_list("sku", "on_hand")) == {"GLAZED": 22, "MAPLE": 16, "UNTOUCHED": 5}
    assert sorted(StockMovement.objects.filter(reason="stock count").values_list("product__sku", "quantity")) == [
        ("GLAZED", 12),
        ("MAPLE", 12),
    ]


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_the_adjust_action_on_every_product_of_a_long_list_works_under_gunicorn(admin_user, tmp_path):
    # The action redirected to the adjust page with every id in its URL: "Select all" of about a thousand
    # products passed gunicorn's 4094-byte request line, and ops got a 414 instead of the form.
    Product.objects.bulk_create(
        Product(sku=f"TRAY{n:04d}", name="Tray", price="1.00", reorder_point=0) for n in range(1200)
    )
    browser = Client()
    browser.force_login(admin_user)
    csrf = "a" * 32  # the cookie's secret, and the same in the header: what the admin's forms send
    cookies = f"sessionid={browser.cookies['sessionid'].value}; csrftoken={csrf}"
    system = System(broker_url=current_app.conf.broker_url, log_dir=tmp_path)

    def send(path, data=None):
        """A POST (or a GET without data) as a browser sends it: the session's cookies, redirects followed."""
        answer = requests.request(
            "POST" if data else "GET",
            system.web_url + path,
            data=data,
            headers={"Cookie": cookies, "X-CSRFToken": csrf},
            allow_redirects=False,
            timeout=60,
        )
        return send(answer.headers["Location"]) if answer.status_code == 302 else answer

    try:
        system.start_web()
        page = send(PRODUCTS, {"action": "adjust_stock", "select_across": "1", "index": "0", "_selected_action": "1"})
        assert page.status_code == 200, page.text[:300]
        done = send(ADJUST, form_as_sent(page, quantity="6", reason="stock count"))
    finally:
        system.stop()

    assert done.status_code == 200 and "TRAY1199: +6, on hand now 6." in done.text
    assert set(Product.objects.values_list("on_hand", flat=True)) == {6}
    assert StockMovement.objects.filter(reason="stock count").count() == 1200
    assert ledger_differences() == []


def test_an_adjustment_below_zero_is_refused_with_a_message(admin_client):
    viral = make_product("VIRAL", on_hand=2)
    movements = StockMovement.objects.count()

    response = admin_client.post(adjust_url(viral), {"quantity": "-5", "reason": "breakage"}, follow=True)

    assert response.status_code == 200
    assert shown_messages(response) == ["VIRAL not adjusted: VIRAL has 2; cannot take out 5."]
    assert b"VIRAL not adjusted" in response.content
    assert b'value="breakage"' in response.content, "the form is shown again with the input kept"
    assert on_hand(viral) == 2
    assert StockMovement.objects.count() == movements


def test_an_adjustment_past_the_most_stock_can_hold_is_refused_with_a_message(admin_client):
    viral = make_product("VIRAL", on_hand=2_147_483_000)
    movements = StockMovement.objects.count()

    response = admin_client.post(adjust_url(viral), {"quantity": "1000", "reason": "stock count"}, follow=True)

    assert response.status_code == 200
    assert shown_messages(response) == [
        "VIRAL not adjusted: VIRAL has 2147483000; adding 1000 would take it past 2147483647, the most it can hold."
    ]
    assert on_hand(viral) == 2_147_483_000
    assert StockMovement.objects.count() == movements


def test_one_refused_product_does_not_stop_the_others(admin_client):
    glazed = make_product("GLAZED", on_hand=10)
    viral = make_product("VIRAL", on_hand=2)

    response = admin_client.post(adjust_url(glazed, viral), {"quantity": "-5", "reason": "breakage"}, follow=True)

    assert (on_hand(glazed), on_hand(viral)) == (5, 2)
    assert shown_messages(response) == [
        "GLAZED: -5, on hand now 5.",
        "VIRAL not adjusted: VIRAL has 2; cannot take out 5.",
    ]
    assert ledger_differences() == []


@pytest.mark.parametrize(
    "data, field",
    [
        ({"quantity": "0", "reason": "nothing"}, "quantity"),
        ({"quantity": "abc", "reason": "typo"}, "quantity"),
        ({"quantity": "5000000", "reason": "fat finger"}, "quantity"),
        ({"quantity": "5", "reason": "   "}, "reason"),
    ],
    ids=["zero", "not-a-number", "huge", "blank-reason"],
)
def test_a_bad_adjustment_form_is_shown_again_and_changes_nothing(admin_client, data, field):
    glazed = make_product("GLAZED", on_hand=10)

    response = admin_client.post(adjust_url(glazed), data)

    assert response.status_code == 200
    assert field in response.context["form"].errors
    assert on_hand(glazed) == 10
    assert StockMovement.objects.filter(product=glazed).count() == 1


@pytest.mark.parametrize(
    "ids",
    ["9" * 5000, "99999999999999999999999", "-1", "1e3"],
    ids=["5000-digits", "past-bigint", "negative", "exponent"],
)
def test_an_adjust_link_naming_no_product_says_so(admin_client, ids):
    # The ids come from the URL (the action's redirect), so a hand-edited or cut one reaches the view:
    # a number past what int() reads or the id column holds answered a 500.
    glazed = make_product("GLAZED", on_hand=10)

    alone = admin_client.get(f"{ADJUST}?ids={ids}", follow=True)
    beside = admin_client.get(f"{ADJUST}?ids={ids},{glazed.pk}")

    assert alone.status_code == 200
    assert alone.redirect_chain[-1][0] == PRODUCTS
    assert shown_messages(alone) == ["Pick at least one product to adjust."]
    assert beside.status_code == 200 and b"GLAZED" in beside.content


def test_staff_without_change_permission_cannot_adjust(client):
    glazed = make_product("GLAZED", on_hand=10)
    viewer = User.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_product"))
    client.force_login(viewer)

    response = client.post(adjust_url(glazed), {"quantity": "-3", "reason": "why not"})

    assert response.status_code == 403
    assert on_hand(glazed) == 10


def test_the_adjust_page_needs_a_login(client):
    glazed = make_product("GLAZED", on_hand=10)

    response = client.post(adjust_url(glazed), {"quantity": "-3", "reason": "anonymous"})

    assert response.status_code == 302 and "/login/" in response["Location"]
    assert on_hand(glazed) == 10


# Records that are viewed, never edited


@pytest.fixture
def records(db):
    return make_records()


def make_records():
    """One of everything: a sale with a line and an Idempotency-Key, its ledger rows, a restock."""
    viral = make_product("VIRAL", on_hand=5)
    client, _ = make_api_client("till-1")
    sale = sale_create(client=client, items=[SaleItem(sku="VIRAL", quantity=2)], idempotency_key="k-1").sale
    restock = Restock.objects.create(product=viral, quantity=40, reason="manual")
    FactoryOrder.objects.create(restock=restock, order_id="F-77")
    return {
        "sale": sale,
        "stockmovement": StockMovement.objects.filter(sale=sale).get(),
        "restock": restock,
        "idempotencykey": IdempotencyKey.objects.get(sale=sale),
    }


@pytest.mark.parametrize("model", ["sale", "stockmovement", "restock", "idempotencykey"])
def test_records_are_listed_and_viewable_but_not_editable(admin_client, records, model):
    obj = records[model]
    changelist = reverse(f"admin:inventory_{model}_changelist")
    add = reverse(f"admin:inventory_{model}_add")
    change = reverse(f"admin:inventory_{model}_change", args=[obj.pk])

    listing = admin_client.get(changelist)
    detail = admin_client.get(change)

    assert listing.status_code == 200
    assert obj.pk in [row.pk for row in listing.context["cl"].result_list]
    assert add not in listing.content.decode()
    assert admin_client.get(add).status_code == 403
    assert detail.status_code == 200 and b'name="_save"' not in detail.content
    assert admin_client.post(change, {}).status_code == 403
    assert (
        admin_client.post(reverse(f"admin:inventory_{model}_delete", args=[obj.pk]), {"post": "yes"}).status_code == 403
    )
    assert type(obj).objects.filter(pk=obj.pk).exists()


def test_a_sale_page_shows_its_lines(admin_client, records):
    sale = records["sale"]

    html = admin_client.get(reverse("admin:inventory_sale_change", args=[sale.pk])).content.decode()

    assert "VIRAL" in html and "till-1" in html
    assert re.search(r'field-quantity">\s*<p>2</p>', html), "the line's quantity is shown"


def test_the_restock_list_shows_what_ops_need(admin_client, records):
    html = admin_client.get(reverse("admin:inventory_restock_changelist")).content.decode()

    row = row_for(html, str(records["restock"].pk)).lower()
    assert all(text in row for text in [">viral<", ">40<", ">pending<", ">manual<", ">f-77<"]), row


def test_restocks_are_found_by_sku_or_the_request_id_that_opened_them(admin_client):
    # docs/operations.md, "Reading a trace": the request id from a response or an alert finds the restock.
    glazed, viral = make_product("GLAZED"), make_product("VIRAL")
    traced = Restock.objects.create(product=viral, quantity=40, reason="shortage", correlation_id="4f" * 16)
    other = Restock.objects.create(product=glazed, quantity=40, reason="manual", correlation_id="9a" * 16)
    url = reverse("admin:inventory_restock_changelist")

    def found(term):
        response = admin_client.get(url, {"q": term})
        assert response.status_code == 200
        return [restock.pk for restock in response.context["cl"].result_list]

    assert found("4f" * 16) == [traced.pk]
    assert found("GLAZED") == [other.pk]
    assert found("no-such-id") == []


def test_a_restock_is_found_by_its_number_exactly(admin_client):
    # The number an alert, a log line or a client's out_of_stock names (restock_id): ops typed it into the
    # search box and found nothing, the box searching only SKUs and request ids.
    five = Restock.objects.create(id=5, product=make_product("GLAZED"), quantity=40, reason="manual")
    fifteen = Restock.objects.create(id=15, product=make_product("VIRAL"), quantity=40, reason="manual")
    url = reverse("admin:inventory_restock_changelist")

    def found(term):
        response = admin_client.get(url, {"q": term})
        assert response.status_code == 200
        return sorted(restock.pk for restock in response.context["cl"].result_list)

    assert found("5") == [five.pk], "the id itself, not every id containing the digit"
    assert found(" 15 ") == [fifteen.pk]
    assert found("6") == []
    assert found("9" * 40) == [], "past any id: no match, no error"
    assert found("VIRAL") == [fifteen.pk], "SKUs are still searched"


def test_sales_are_found_by_id_or_sku(admin_client, records):
    make_product("GLAZED", on_hand=5)
    glazed_sale = buy_once("GLAZED")
    url = reverse("admin:inventory_sale_changelist")

    def found(term):
        response = admin_client.get(url, {"q": term})
        assert response.status_code == 200
        return [sale.pk for sale in response.context["cl"].result_list]

    assert found("GLAZED") == [glazed_sale.pk]
    assert found(str(records["sale"].pk)) == [records["sale"].pk]
    assert found("nope") == []


def test_movements_filter_by_kind_and_date(admin_client, monkeypatch):
    # One moment for the rows and the filter's "Today": a run that crossed midnight between writing them
    # and asking would find yesterday's rows outside today's link. The records are made here, after the
    # clock is held, since fixtures have no order pytest promises.
    moment = timezone.now()
    monkeypatch.setattr(timezone, "now", lambda: moment)
    records = make_records()
    url = reverse("admin:inventory_stockmovement_changelist")
    sale_movement = records["stockmovement"]
    today = admin_client.get(url).context["cl"].filter_specs
    today_link = next(spec for spec in today if spec.title == "created at").links[1]  # ("Today", {...})

    sales_only = admin_client.get(url, {"kind": "sale"})
    that_day = admin_client.get(url, today_link[1])
    tomorrow = admin_client.get(url, {"created_at__gte": today_link[1]["created_at__lt"]})

    assert today_link[0] == "Today"
    assert [m.pk for m in sales_only.context["cl"].result_list] == [sale_movement.pk]
    assert len(that_day.context["cl"].result_list) == 2, "the stock-in adjustment and the sale"
    assert list(tomorrow.context["cl"].result_list) == []


def test_movements_are_found_by_sku_sale_number_or_reason(admin_client, records):
    url = reverse("admin:inventory_stockmovement_changelist")
    glazed = make_product("GLAZED", on_hand=5)
    stock_adjust(product=glazed, quantity=-1, reason="a tray fell")

    def found(term):
        return {(m.product.sku, m.kind, m.reason) for m in admin_client.get(url, {"q": term}).context["cl"].result_list}

    assert found("GLAZED") == {("GLAZED", "adjustment", "test stock"), ("GLAZED", "adjustment", "a tray fell")}
    assert found(str(records["sale"].pk)) == {("VIRAL", "sale", "")}
    assert found("tray") == {("GLAZED", "adjustment", "a tray fell")}
    assert found("GLAZ") == set(), "a SKU is matched exactly"


@pytest.mark.parametrize("model", ["sale", "stockmovement", "idempotencykey"])
@pytest.mark.parametrize("query", [{}, {"q": "VIRAL"}, {"q": "1"}])
def test_the_ledger_lists_read_a_page_down_the_table_and_count_it_once(admin_client, records, model, query):
    """Sales, stock movements and keys grow by millions: a page must be read down the table's primary key,
    not from a join to a table of a few rows (products, clients) that MariaDB reads first and then sorts
    the whole big table from; and nothing may aggregate the whole table beside the one filtered count
    (docs/benchmarks.md, "Admin" has the times at 2 million sales)."""
    table = f"inventory_{model}"
    with CaptureQueriesContext(connection) as captured:
        response = admin_client.get(reverse(f"admin:{table}_changelist"), query)

    assert response.status_code == 200
    on_table = [q["sql"] for q in captured.captured_queries if f"FROM `{table}`" in q["sql"]]
    page = [sql for sql in on_table if "COUNT(" not in sql]  # LIMITed once there are more rows than a page
    counts = [sql for sql in on_table if "COUNT(" in sql]
    assert len(page) == 1 and len(counts) == 1 and len(on_table) == 2, on_table
    assert f"ORDER BY `{table}`.`id` DESC" in page[0], page[0]
    assert not any(f"JOIN `{small}`" in page[0] for small in ("inventory_product", "clients_apiclient")), page[0]


@pytest.fixture
def fcm_on(settings):
    """FCM configured, so a comeback owes its subscribers a push."""
    settings.FCM_PROJECT_ID, settings.FCM_ACCESS_TOKEN = "donuts", "fcm-test-token"


def subscribe(product):
    """A customer's device subscribed to `product` coming back."""
    from notifications.models import Device, Subscription

    device = Device.objects.create(token="customer-token-1", platform="ios")
    Subscription.objects.create(device=device, sku=product.sku)


def test_stock_brought_back_from_zero_by_an_adjustment_owes_the_subscribers_their_push(admin_client, fcm_on):
    from inventory.services import stock_adjust
    from notifications.models import Subscription

    maple = make_product("MAPLE", on_hand=0)
    subscribe(maple)

    stock_adjust(product=maple, quantity=50, reason="found a tray in the back")

    assert Subscription.objects.get().due_at is not None, "told like after a receipt"


@pytest.mark.parametrize("stock, told", [(40, True), (0, False)], ids=["with-stock", "none-on-hand"])
def test_putting_a_retired_product_back_on_sale_tells_its_subscribers_if_it_has_stock(
    admin_client, fcm_on, stock, told
):
    from notifications.models import Subscription

    boston = make_product("BOSTON", on_hand=0, is_active=False)
    subscribe(boston)
    if stock:
        stock_adjust(product=boston, quantity=stock, reason="a tray came in while it was retired")
    assert Subscription.objects.get().due_at is None, "not told while it is not for sale"

    url = reverse("admin:inventory_product_change", args=[boston.pk])
    response = admin_client.post(url, product_form(boston, is_active="on"))

    assert response.status_code == 302
    assert Product.objects.get(pk=boston.pk).is_active
    assert (Subscription.objects.get().due_at is not None) is told


def test_retiring_a_product_withdraws_the_back_in_stock_pushes_still_owed_for_it(admin_client, fcm_on):
    # It came back and its subscribers are owed a push (thousands, or FCM away: the sweep still has them),
    # then ops take it off sale. Those pushes would tell people it is back while the API refuses its SKU,
    # and use up their subscriptions: they wait for its next return, as when it sells out again.
    from notifications.models import Subscription

    maple = make_product("MAPLE", on_hand=0)
    subscribe(maple)
    stock_adjust(product=maple, quantity=50, reason="a tray came in")
    assert Subscription.objects.get().due_at is not None, "owed"

    url = reverse("admin:inventory_product_change", args=[maple.pk])
    response = admin_client.post(url, product_form(Product.objects.get(pk=maple.pk), is_active=""))

    assert response.status_code == 302 and not Product.objects.get(pk=maple.pk).is_active
    subscription = Subscription.objects.get()
    assert (subscription.due_at, subscription.notified_at) == (None, None), "withdrawn, not used up"
    admin_client.post(url, product_form(Product.objects.get(pk=maple.pk), is_active="on"))
    assert Subscription.objects.get().due_at is not None, "told when it is back on sale"


@pytest.mark.parametrize(
    "on_hand, was_active, change",
    [(10, True, {"reorder_point": 30}), (3, False, {"is_active": "on"})],
    ids=["reorder-point-raised", "put-back-on-sale-while-low"],
)
def test_a_product_edited_into_needing_stock_is_reordered_at_once(admin_client, on_hand, was_active, change):
    """Ops raise the reorder point past the stock, or put back on sale a product retired while low (a retired
    product is never reordered): the factory is asked now, not after the product's next sale."""
    maple = make_product("MAPLE", on_hand=on_hand, reorder_point=5, is_active=was_active)

    url = reverse("admin:inventory_product_change", args=[maple.pk])
    response = admin_client.post(url, product_form(maple, **change))

    assert response.status_code == 302
    restock = Restock.objects.get(product=maple)
    assert (restock.status, restock.reason, restock.quantity) == ("pending", "reorder_point", 50)
    # Saved again unchanged: still the one restock.
    admin_client.post(url, product_form(Product.objects.get(pk=maple.pk)))
    assert Restock.objects.filter(product=maple).count() == 1


@pytest.mark.parametrize("is_active, restocks", [("on", [("pending", "reorder_point", 60)]), ("", [])])
def test_a_product_added_in_the_admin_is_reordered_at_once_if_on_sale(admin_client, is_active, restocks):
    """A product added in the admin starts at 0, at or below any reorder point: the factory is asked now, as
    `set_stock --create` does, not after its first buyers were refused. One added off sale waits."""
    form = {"sku": "PISTACHIO", "name": "Pistachio", "price": "2.80", "reorder_point": 5, "reorder_quantity": 60}

    response = admin_client.post(reverse("admin:inventory_product_add"), {**form, "is_active": is_active})

    assert response.status_code == 302
    opened = Restock.objects.filter(product__sku="PISTACHIO").values_list("status", "reason", "quantity")
    assert list(opened) == restocks


def test_a_product_edited_above_its_reorder_point_or_retired_orders_nothing(admin_client):
    maple = make_product("MAPLE", on_hand=10, reorder_point=5)
    url = reverse("admin:inventory_product_change", args=[maple.pk])

    admin_client.post(url, product_form(maple, reorder_point=9))
    admin_client.post(url, product_form(Product.objects.get(pk=maple.pk), reorder_point=30, is_active=""))

    assert not Product.objects.get(pk=maple.pk).is_active
    assert not Restock.objects.filter(product=maple).exists()


def test_two_ops_editing_one_product_keep_each_others_change(admin_client, admin_user, client, fcm_on):
    """One ops person takes a product off sale while another, whose page was open before that, renames it:
    the rename is all the second save writes. Compared with the database instead of the page, the second save
    took "on sale" for its own change, put the product back on sale and told its subscribers it was back."""
    from notifications.models import Subscription

    maple = make_product("MAPLE", on_hand=40, reorder_point=5)
    subscribe(maple)
    url = reverse("admin:inventory_product_change", args=[maple.pk])
    renaming = admin_client.get(url)
    client.force_login(admin_user)

    retired = client.post(url, form_as_sent(client.get(url), is_active=None))
    renamed = admin_client.post(url, form_as_sent(renaming, name="Maple Bar"))

    assert (retired.status_code, renamed.status_code) == (302, 302)
    maple.refresh_from_db()
    assert (maple.name, maple.is_active) == ("Maple Bar", False), "the rename put the product back on sale"
    assert Subscription.objects.get().due_at is None, "its subscribers were told it is back"
    assert not Restock.objects.filter(product=maple).exists()


def test_two_ops_editing_one_product_both_write_their_fields(admin_client, admin_user, client):
    maple = make_product("MAPLE", on_hand=40, reorder_point=5)
    url = reverse("admin:inventory_product_change", args=[maple.pk])
    repricing = admin_client.get(url)
    client.force_login(admin_user)

    client.post(url, form_as_sent(client.get(url), reorder_point="50"))
    admin_client.post(url, form_as_sent(repricing, price="2.40"))

    maple.refresh_from_db()
    assert (str(maple.price), maple.reorder_point) == ("2.40", 50)
    restock = Restock.objects.get(product=maple)
    assert (restock.status, restock.reason) == ("pending", "reorder_point"), "raised past its stock: reordered"

"""The ops dashboard at /admin/dashboard/: who may see it, what it shows, the SVG charts it draws, and
"Redrive all"."""

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from factory.models import DeadLetter
from inventory.models import Product, Restock, Sale, StockMovement
from ops import charts, selectors
from ops.dashboard import VIEW_PERMISSIONS
from testsupport.admin import shown_messages
from testsupport.data import make_api_client, make_failed_restock, make_product
from testsupport.queues import queued_restocks

DASHBOARD = "/admin/dashboard/"
REDRIVE_ALL = "/admin/dashboard/redrive-all/"
SVG = "{http://www.w3.org/2000/svg}"


def svgs(html: str) -> list[ET.Element]:
    """Every chart on the page, parsed as XML (so each must be well-formed on its own)."""
    return [ET.fromstring(svg) for svg in re.findall(r'<svg\b[^>]*class="chart".*?</svg>', html, re.S)]


@pytest.fixture
def staff_client(client, db):
    """Staff who may view what the dashboard shows, and change nothing."""
    user = User.objects.create_user("staff", password="pw", is_staff=True)
    for permission in VIEW_PERMISSIONS:
        app_label, codename = permission.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    client.force_login(user)
    return client


@pytest.mark.django_db
def test_staff_without_the_view_permissions_are_refused(client):
    user = User.objects.create_user("bare", password="pw", is_staff=True)
    client.force_login(user)

    assert client.get(DASHBOARD).status_code == 403
    user.user_permissions.add(Permission.objects.get(codename="view_product"))
    user = User.objects.get(pk=user.pk)  # permissions are cached on the instance
    client.force_login(user)
    assert client.get(DASHBOARD).status_code == 403, "every view permission, not one"


# Who may see it


@pytest.mark.django_db
def test_anonymous_visitors_are_sent_to_the_admin_login(client):
    for response in (client.get(DASHBOARD), client.post(REDRIVE_ALL)):
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("admin:login"))


@pytest.mark.django_db
def test_users_who_are_not_staff_are_sent_to_the_admin_login(client):
    client.force_login(User.objects.create_user("customer", password="pw"))

    response = client.get(DASHBOARD)

    assert response.status_code == 302
    assert response["Location"] == f"{reverse('admin:login')}?next={DASHBOARD}"


@pytest.mark.django_db
def test_the_admin_index_links_to_the_dashboard(admin_client):
    response = admin_client.get(reverse("admin:index"))

    assert response.status_code == 200
    assert f'<a href="{DASHBOARD}">Dashboard</a>' in response.content.decode()
    assert "Recent actions" in response.content.decode(), "the admin's own index is still there"


@pytest.mark.django_db
def test_the_admin_index_links_to_the_dashboard_only_for_staff_who_may_open_it(staff_client):
    # Staff without every view permission were shown the link and got a 403 behind it.
    bare = Client()
    bare.force_login(User.objects.create_user("bare", password="pw", is_staff=True))

    assert f'<a href="{DASHBOARD}">' not in bare.get(reverse("admin:index")).content.decode()
    assert f'<a href="{DASHBOARD}">' in staff_client.get(reverse("admin:index")).content.decode()


# What it shows


@pytest.mark.django_db
def test_the_dashboard_shows_stock_badges_restocks_dead_letters_and_alerts(admin_client, queues):
    make_product("OK-GLAZED", on_hand=80, reorder_point=10)
    low = make_product("LOW-CRULLER", on_hand=5, reorder_point=10)
    make_product("OUT-JAM", on_hand=0, reorder_point=10)
    make_product("GONE-OLD", on_hand=0, is_active=False)
    open_restock = Restock.objects.create(product=low, quantity=40, reason=Restock.Reason.REORDER_POINT)
    Restock.objects.filter(pk=open_restock.pk).update(created_at=timezone.now() - timedelta(hours=3))
    make_failed_restock(make_product("DEAD-<b>BOSTON</b>", on_hand=0))
    make_failed_restock()

    response = admin_client.get(DASHBOARD)

    assert response.status_code == 200
    html = response.content.decode()
    assert 'class="badge badge-out">OUT<' in stock_row(html, "OUT-JAM")
    assert 'class="badge badge-low">LOW<' in stock_row(html, "LOW-CRULLER")
    assert 'class="badge badge-ok">ok<' in stock_row(html, "OK-GLAZED")
    assert "GONE-OLD" not in html, "inactive products are left out"
    assert '<span id="dead-letter-count">2</span> unresolved' in html
    assert 'value="Redrive all"' in html
    assert "Open restocks (1)" in html
    assert "3\xa0hours" in html, "the open restock's age"
    assert "Dead letter: DEAD-&lt;b&gt;BOSTON&lt;/b&gt; (factory.restock_place gave up)" in html, "alerts, escaped"
    assert "<b>BOSTON</b>" not in html
    titles = [svg.find(f"{SVG}title").text for svg in svgs(html)]
    assert titles == [
        "Stock of LOW-CRULLER over the last 24 hours",  # by default, the product whose stock moved last
        "Sales per minute, last hour",
        "Restock lead times (last fulfilled, ordered in the past 7 days)",
    ]


def stock_row(html: str, sku: str) -> str:
    match = re.search(rf'<tr class="stock-\w+">\s*<td><a href="\?sku={re.escape(sku)}".*?</tr>', html, re.S)
    assert match, f"no stock row for {sku}"
    return match.group(0)


@pytest.mark.django_db
def test_out_of_stock_products_come_first_then_low_ones(admin_client):
    make_product("A-OK", on_hand=80, reorder_point=10)
    make_product("B-LOW", on_hand=5, reorder_point=10)
    make_product("C-OUT", on_hand=0, reorder_point=10)

    html = admin_client.get(DASHBOARD).content.decode()

    assert re.findall(r'<tr class="stock-(\w+)">\s*<td><a href="\?sku=([^"]+)"', html) == [
        ("out", "C-OUT"),
        ("low", "B-LOW"),
        ("ok", "A-OK"),
    ]


@pytest.mark.django_db
def test_staff_without_the_dead_letter_permission_see_no_redrive_button(staff_client, queues):
    make_failed_restock()

    html = staff_client.get(DASHBOARD).content.decode()

    assert '<span id="dead-letter-count">1</span> unresolved' in html
    assert 'value="Redrive all"' not in html
    assert "Redriving needs the permission to change dead letters." in html


@pytest.mark.django_db
def test_an_empty_shop_still_draws_its_charts(admin_client):
    response = admin_client.get(DASHBOARD)

    assert response.status_code == 200
    html = response.content.decode()
    assert len(svgs(html)) == 3
    assert "No products yet" in html
    assert "No restock fulfilled in the past 7 days" in html
    assert 'value="Redrive all" disabled' in html


# The charts' data


@pytest.mark.django_db
def test_the_stock_chart_follows_the_ledger_of_the_product_picked_with_sku(admin_client):
    make_product("A-FIRST", on_hand=10)
    product = make_product("B-PICKED", on_hand=0)
    for quantity, minutes_ago in [(100, 300), (-30, 120), (-20, 5)]:
        movement = StockMovement.objects.create(product=product, kind="adjustment", quantity=quantity, reason="t")
        StockMovement.objects.filter(pk=movement.pk).update(created_at=timezone.now() - timedelta(minutes=minutes_ago))
    Product.objects.filter(pk=product.pk).update(on_hand=50)
    old = StockMovement.objects.create(product=product, kind="adjustment", quantity=7, reason="before the window")
    StockMovement.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=2))
    Product.objects.filter(pk=product.pk).update(on_hand=57)
    product.refresh_from_db()

    history = selectors.stock_history(product)
    levels = [level for _, level in history.points]
    assert levels == [7, 107, 77, 57], "from the level a day ago, through each change, to the on-hand now"

    html = admin_client.get(DASHBOARD, {"sku": "B-PICKED"}).content.decode()
    chart = svgs(html)[0]
    assert chart.find(f"{SVG}title").text == "Stock of B-PICKED over the last 24 hours"
    assert chart.find(f"{SVG}polyline").get("points").count(",") == 3 * 2 + 1 + 1, "a step line to the end"
    assert chart.find(f".//{SVG}circle/{SVG}title").text == "57"
    assert '<option value="B-PICKED" selected>' in html


@pytest.mark.django_db
def test_the_stock_chart_starts_at_the_first_ledger_row(admin_client):
    """A product three hours old: its line starts then at its first stock, not at 0 for 21 hours."""
    product = make_product("FRESH", on_hand=40)
    three_hours_ago = timezone.now() - timedelta(hours=3)
    StockMovement.objects.filter(product=product).update(created_at=three_hours_ago)
    sold = StockMovement.objects.create(product=product, kind="adjustment", quantity=-5, reason="t")
    StockMovement.objects.filter(pk=sold.pk).update(created_at=timezone.now() - timedelta(hours=1))
    Product.objects.filter(pk=product.pk).update(on_hand=35)

    history = selectors.stock_history(product)

    assert [level for _, level in history.points] == [40, 35]
    assert history.since == history.points[0][0] == three_hours_ago.replace(second=0, microsecond=0)
    chart = svgs(admin_client.get(DASHBOARD, {"sku": "FRESH"}).content.decode())[0]
    first_tick = chart.find(f".//{SVG}text[@class='tick'][@text-anchor='middle']").text
    assert first_tick == timezone.localtime(three_hours_ago).strftime("%H:%M"), "the x axis starts there too"
    assert " 0" not in " " + " ".join(t.text for t in chart.iter(f"{SVG}title")), "no level of 0 drawn"


@pytest.mark.django_db
def test_without_a_sku_the_chart_shows_the_product_that_moved_last(admin_client):
    make_product("A-QUIET", on_hand=10)
    busy = make_product("B-BUSY", on_hand=10)
    make_product("C-OLDER", on_hand=10)
    StockMovement.objects.create(product=busy, kind="adjustment", quantity=-1, reason="t")
    Product.objects.filter(pk=busy.pk).update(on_hand=9)

    html = admin_client.get(DASHBOARD).content.decode()

    assert svgs(html)[0].find(f"{SVG}title").text == "Stock of B-BUSY over the last 24 hours"


@pytest.mark.django_db
def test_the_product_that_moved_last_is_found_down_the_ledger_not_through_a_join(admin_client):
    """Joined to the products (a few rows), MariaDB read them first and sorted the whole ledger: 5 s at
    4 million movements (docs/benchmarks.md, "Admin")."""
    busy = make_product("B-BUSY", on_hand=10)
    retired = make_product("R-RETIRED", on_hand=10)
    Product.objects.filter(pk=retired.pk).update(is_active=False)
    StockMovement.objects.create(product=busy, kind="adjustment", quantity=-1, reason="t")
    StockMovement.objects.create(product=retired, kind="adjustment", quantity=-1, reason="t")

    with CaptureQueriesContext(connection) as captured:
        html = admin_client.get(DASHBOARD).content.decode()

    assert svgs(html)[0].find(f"{SVG}title").text == "Stock of B-BUSY over the last 24 hours", "retired skipped"
    ledger_reads = [q["sql"] for q in captured.captured_queries if "FROM `inventory_stockmovement`" in q["sql"]]
    assert ledger_reads and not any(" JOIN " in sql for sql in ledger_reads), ledger_reads


@pytest.mark.django_db
def test_an_unknown_sku_says_so_in_the_chart(admin_client):
    make_product("REAL")

    html = admin_client.get(DASHBOARD, {"sku": "NOPE<>"}).content.decode()

    assert "No product with SKU NOPE&lt;&gt;" in html


@pytest.mark.django_db
def test_sales_are_counted_per_minute_over_the_last_hour():
    client, _ = make_api_client()
    now = timezone.now()
    for minutes_ago in (0, 0, 0, 10, 59, 61, 120):
        sale = Sale.objects.create(client=client, total=Decimal("2.00"))
        Sale.objects.filter(pk=sale.pk).update(created_at=now - timedelta(minutes=minutes_ago))

    per_minute = selectors.sales_per_minute(now=now)

    assert len(per_minute) == 60
    counts = [count for _, count in per_minute]
    assert counts[-1] == 3 and counts[-11] == 1 and counts[0] == 1
    assert sum(counts) == 5, "sales older than the hour are left out"
    assert [minute for minute, _ in per_minute] == sorted(minute for minute, _ in per_minute)


@pytest.mark.django_db
def test_lead_times_are_those_of_recently_fulfilled_restocks():
    product = make_product(on_hand=0)
    now = timezone.now()
    for status, hours in [("fulfilled", 2), ("fulfilled", 1), ("failed", 5), ("cancelled", 3)]:
        restock = Restock.objects.create(product=product, quantity=10, reason="manual", status=status)
        Restock.objects.filter(pk=restock.pk).update(created_at=now - timedelta(hours=hours), closed_at=now)
    too_old = Restock.objects.create(product=product, quantity=10, reason="manual", status="fulfilled")
    Restock.objects.filter(pk=too_old.pk).update(created_at=now - timedelta(days=8), closed_at=now)
    Restock.objects.create(product=product, quantity=10, reason="manual")  # open: not closed yet

    lead_times = selectors.restock_lead_times()

    assert [round(lead.seconds) for lead in lead_times] == [7200, 3600]
    assert {lead.sku for lead in lead_times} == {product.sku}


# Redrive all


@pytest.mark.django_db(transaction=True)  # each redrive commits, then sends its restock to the queue
def test_redrive_all_reopens_every_failed_restock_and_says_so(admin_client, queues):
    first, first_dead = make_failed_restock()
    second, _ = make_failed_restock()
    settled, _ = make_failed_restock()
    Restock.objects.filter(pk=settled.pk).update(status=Restock.Status.CANCELLED)

    response = admin_client.post(REDRIVE_ALL, follow=True)

    assert response.redirect_chain == [(DASHBOARD, 302)]
    assert shown_messages(response) == ["2 dead letters sent again; 1 had nothing to do (redriven or settled already)."]
    statuses = dict(Restock.objects.filter(pk__in=[first.pk, second.pk, settled.pk]).values_list("pk", "status"))
    assert statuses == {first.pk: "pending", second.pk: "pending", settled.pk: "cancelled"}
    assert not DeadLetter.objects.filter(redriven_at__isnull=True).exists()
    first_dead.refresh_from_db()
    assert first_dead.redriven_by == "admin" and first_dead.redrive_count == 1
    assert '<span id="dead-letter-count">0</span> unresolved' in response.content.decode()
    assert sorted(queued_restocks()) == [first.pk, second.pk], "each reopened restock is sent to the factory again"


@pytest.mark.django_db(transaction=True)
def test_redrive_all_during_an_outage_says_a_reopened_restocks_dead_letter_waits_for_the_factory(admin_client, queues):
    # A new need reopened the failed restock, which is failing again against a factory still down: its dead
    # letter stays open until the factory takes the order, and clicking again would change nothing.
    restock, dead_letter = make_failed_restock()
    Restock.objects.filter(pk=restock.pk).update(status=Restock.Status.PENDING, closed_at=None)

    response = admin_client.post(REDRIVE_ALL, follow=True)

    assert shown_messages(response) == [
        "0 dead letters sent again; 0 had nothing to do (redriven or settled already). "
        "1 already sent again (a new need reopened its restock): left open until the factory takes it."
    ]
    dead_letter.refresh_from_db()
    assert not dead_letter.is_resolved


@pytest.mark.django_db(transaction=True)
def test_redrive_all_tells_reopened_restocks_past_its_batch_apart_from_those_to_click_again_for(
    admin_client, queues, monkeypatch
):
    monkeypatch.setattr("ops.dashboard.REDRIVE_BATCH", 1)
    for _ in range(2):  # two restocks new needs reopened
        restock, _ = make_failed_restock()
        Restock.objects.filter(pk=restock.pk).update(status=Restock.Status.PENDING, closed_at=None)
    waiting, _ = make_failed_restock()

    response = admin_client.post(REDRIVE_ALL, follow=True)

    assert shown_messages(response) == [
        "0 dead letters sent again; 0 had nothing to do (redriven or settled already). "
        "1 already sent again (a new need reopened its restock): left open until the factory takes it. "
        "1 more already sent again (a new need reopened its restock): left open until the factory takes it. "
        "1 still waiting: click Redrive all again."
    ]
    assert Restock.objects.get(pk=waiting.pk).status == "failed", "past the batch"


@pytest.mark.django_db
def test_redrive_all_with_nothing_to_redrive_says_so(admin_client):
    response = admin_client.post(REDRIVE_ALL, follow=True)

    assert shown_messages(response) == ["There were no dead letters to redrive."]


@pytest.mark.django_db
def test_redrive_all_needs_the_permission_to_change_dead_letters(staff_client, queues):
    restock, _ = make_failed_restock()

    response = staff_client.post(REDRIVE_ALL)

    assert response.status_code == 403
    restock.refresh_from_db()
    assert restock.status == "failed"
    assert DeadLetter.objects.filter(redriven_at__isnull=True).count() == 1

    user = User.objects.get(username="staff")
    user.user_permissions.add(Permission.objects.get(codename="change_deadletter"))
    response = staff_client.post(REDRIVE_ALL)

    assert response.status_code == 302
    restock.refresh_from_db()
    assert restock.status == "pending"


@pytest.mark.django_db
def test_redrive_all_is_a_post_with_a_csrf_token(admin_user, queues):
    from django.test import Client

    make_failed_restock()
    client = Client(enforce_csrf_checks=True)
    client.force_login(admin_user)

    assert client.get(REDRIVE_ALL).status_code == 405
    assert client.post(REDRIVE_ALL).status_code == 403, "no CSRF token"
    assert DeadLetter.objects.filter(redriven_at__isnull=True).count() == 1


# The SVG helper


def test_chart_text_is_escaped_and_the_svg_is_well_formed():
    nasty = "<script>alert(\"x\")</script> & 'quotes'"

    for svg in (
        charts.line_chart([(0, 1), (1, 3)], title=nasty, x_label=nasty, y_label=nasty),
        charts.bar_chart([(nasty, 2), ("b", 5)], title=nasty, x_label=nasty, y_label=nasty),
        charts.line_chart([], title=nasty, x_label="x", y_label="y", empty_message=nasty),
    ):
        assert "<script>" not in svg
        root = ET.fromstring(svg)
        assert root.tag == f"{SVG}svg"
        assert root.get("aria-label") == nasty
        assert root.find(f"{SVG}title").text == nasty
        assert nasty in [text.text for text in root.iter(f"{SVG}text")]


def test_characters_xml_cannot_carry_are_replaced_so_the_svg_still_parses(admin_client):
    svg = charts.line_chart([], title="A\x00B\x1bC\ud800", x_label="x", y_label="y", empty_message="m")

    assert ET.fromstring(svg).find(f"{SVG}title").text == "A\ufffdB\ufffdC\ufffd"
    html = admin_client.get(DASHBOARD, {"sku": "NUL\x00"}).content.decode()
    assert "\x00" not in html and svgs(html), "the dashboard's charts still parse"


def test_a_line_chart_draws_a_polyline_with_labelled_axes():
    start = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    points = [(start + timedelta(hours=h), level) for h, level in [(0, 10), (1, 40), (2, 25)]]

    root = ET.fromstring(charts.line_chart(points, title="Stock", x_label="time", y_label="on hand", step=True))

    coords = [tuple(map(float, p.split(","))) for p in root.find(f"{SVG}polyline").get("points").split()]
    assert len(coords) == 5, "three points, and a horizontal run before each change"
    assert coords[1][1] == coords[0][1] and coords[1][0] == coords[2][0]
    xs = [x for x, _ in coords]
    assert xs == sorted(xs)
    assert all(0 <= x <= charts.WIDTH for x in xs)
    texts = [text.text for text in root.iter(f"{SVG}text")]
    assert {"time", "on hand", "12:00", "14:00"} <= set(texts)
    assert "40" in texts, "a y tick reaches the highest value"


def test_a_bar_chart_draws_one_bar_per_value_to_scale():
    root = ET.fromstring(charts.bar_chart([("a", 0), ("b", 5), ("c", 10)], title="t", x_label="x", y_label="y"))

    heights = [float(rect.get("height")) for rect in root.iter(f"{SVG}rect")]
    assert heights[0] == 0 and heights[2] == pytest.approx(2 * heights[1], abs=0.2)
    assert [rect.find(f"{SVG}title").text for rect in root.iter(f"{SVG}rect")] == ["a: 0", "b: 5", "c: 10"]
    with pytest.raises(ValueError):
        charts.bar_chart([("a", -1)], title="t", x_label="x", y_label="y")


def test_many_bars_get_only_some_labels():
    bars = [(f"{i:02d}", i % 3) for i in range(60)]

    root = ET.fromstring(charts.bar_chart(bars, title="t", x_label="x", y_label="y", max_x_labels=6))

    labels = [
        t.text for t in root.iter(f"{SVG}text") if t.get("class") == "tick" and t.text.isdigit() and len(t.text) == 2
    ]
    assert labels == ["00", "10", "20", "30", "40", "50"]
    assert len(list(root.iter(f"{SVG}rect"))) == 60


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (0, 10, [0, 2, 4, 6, 8, 10]),
        (0, 0, [0, 0.2, 0.4, 0.6, 0.8, 1]),
        (0, 97, [0, 20, 40, 60, 80, 100]),
        (0, 119, [0, 20, 40, 60, 80, 100, 120]),
        (0, 101, [0, 20, 40, 60, 80, 100, 120]),
        (-3, 4, [-4, -2, 0, 2, 4]),
    ],
)
def test_nice_ticks(low, high, expected):
    assert charts.nice_ticks(low, high) == pytest.approx(expected)


def test_counted_things_get_whole_ticks():
    assert charts.nice_ticks(0, 0, integers=True) == [0, 1]
    assert charts.nice_ticks(0, 3, integers=True) == [0, 1, 2, 3]

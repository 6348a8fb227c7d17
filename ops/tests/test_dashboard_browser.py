"""The ops dashboard in a real browser: Debian's Chromium driven by Playwright against pytest-django's
live server. Log in through the admin's form, find the dashboard from the admin index, look at the
charts and the dead letters, press "Redrive all" and see the restock go back to pending.

Screenshots go to test-output/browser/. Playwright never downloads a browser here: it launches
/usr/bin/chromium, which scripts/install.sh installs. Without it the test is skipped on a developer's
machine, but fails in CI, where it must run.
"""

from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.utils import timezone

from factory.models import DeadLetter
from inventory.models import Restock, StockMovement
from testsupport.browser import PASSWORD, SCREENSHOTS, browser_test, chromium_page
from testsupport.data import make_failed_restock, make_product
from testsupport.queues import queued_restocks

pytestmark = browser_test


@pytest.mark.django_db(transaction=True)  # the live server reads what the test commits
def test_ops_staff_see_the_dashboard_and_redrive_all_dead_letters(live_server, queues):
    User.objects.create_superuser("ops", "ops@example.com", PASSWORD)
    glazed = make_product("GLAZED", on_hand=40, reorder_point=10)
    # GLAZED's ledger began five hours ago: its chart starts there, not at 0 nineteen hours earlier.
    five_hours_ago = timezone.now() - timedelta(hours=5)
    StockMovement.objects.filter(product=glazed).update(created_at=five_hours_ago)
    restock, dead_letter = make_failed_restock(make_product("JAM", on_hand=0))
    assert restock.status == "failed"

    # The ORM stays outside the browser block: Playwright's sync API runs an event loop in this thread,
    # and Django refuses database calls while one is running.
    results = _drive_the_browser(live_server.url)

    assert results["first_tick"] == timezone.localtime(five_hours_ago).strftime("%H:%M")
    assert results["levels"] == ["40"]

    assert results["charts"] == 3
    assert results["count_before"] == "1"
    assert results["count_after"] == "0"
    assert "1 dead letter sent again; 0 had nothing to do" in results["message"]
    assert results["restock_status"] == "pending"
    restock.refresh_from_db()
    assert (restock.status, restock.factory_order.attempts_this_run) == ("pending", 0)
    dead_letter.refresh_from_db()
    assert (dead_letter.redriven_by, dead_letter.redrive_count) == ("ops", 1)
    assert not DeadLetter.objects.filter(redriven_at__isnull=True).exists()
    assert queued_restocks() == [restock.pk], "the reopened restock went back to the factory queue"
    assert Restock.objects.open().filter(pk=restock.pk).exists()
    for name in ("1-login", "2-admin-index", "3-dashboard", "3-stock-chart", "4-after-redrive"):
        assert (SCREENSHOTS / f"{name}.png").stat().st_size > 0


def _drive_the_browser(base_url: str) -> dict:
    from playwright.sync_api import expect

    results = {}
    with chromium_page(1400, 1000) as page:
        page.goto(f"{base_url}/admin/dashboard/")
        expect(page).to_have_url(f"{base_url}/admin/login/?next=/admin/dashboard/")
        page.fill("#id_username", "ops")
        page.fill("#id_password", PASSWORD)
        page.screenshot(path=SCREENSHOTS / "1-login.png")
        page.click("input[type=submit]")
        expect(page).to_have_url(f"{base_url}/admin/dashboard/")

        # The admin index links to it too.
        page.goto(f"{base_url}/admin/")
        page.screenshot(path=SCREENSHOTS / "2-admin-index.png")
        page.get_by_role("link", name="Dashboard", exact=True).click()
        expect(page).to_have_url(f"{base_url}/admin/dashboard/")
        expect(page.locator("h1")).to_have_text("Ops dashboard")

        charts = page.locator("svg.chart")
        expect(charts).to_have_count(3)
        for i in range(3):
            expect(charts.nth(i)).to_be_visible()
        stock_chart = page.locator("#stock-chart svg.chart")
        expect(stock_chart.locator("title").first).to_have_text("Stock of GLAZED over the last 24 hours")
        expect(stock_chart.locator("polyline")).to_have_count(1)
        # The first x tick is where the line starts; the y axis has no tick for a level never held.
        results["first_tick"] = stock_chart.locator("text.tick[text-anchor=middle]").first.text_content()
        results["levels"] = [stock_chart.locator("circle.last-point title").text_content()]
        stock_chart.screenshot(path=SCREENSHOTS / "3-stock-chart.png")
        expect(page.locator("#sales-chart svg.chart rect.bar")).to_have_count(60)
        results["charts"] = charts.count()

        expect(page.locator("#stock tr.stock-out .badge")).to_have_text("OUT")
        expect(page.locator("#stock tr.stock-ok .badge")).to_have_text("ok")
        count = page.locator("#dead-letter-count")
        expect(count).to_be_visible()
        results["count_before"] = count.inner_text()
        expect(page.locator("#open-restocks")).to_contain_text("No open restocks.")
        expect(page.locator("#alerts")).to_contain_text("Dead letter: JAM (factory.restock_place gave up)")
        page.screenshot(path=SCREENSHOTS / "3-dashboard.png", full_page=True)

        # Pick another product's stock chart through the form.
        page.select_option("#sku-picker", "JAM")
        page.click("#stock-chart input[type=submit]")
        expect(stock_chart.locator("title").first).to_have_text("Stock of JAM over the last 24 hours")

        page.click("#redrive-all")
        expect(page).to_have_url(f"{base_url}/admin/dashboard/")
        message = page.locator("ul.messagelist li.success")
        expect(message).to_be_visible()
        results["message"] = message.inner_text()
        expect(count).to_have_text("0")
        results["count_after"] = count.inner_text()
        expect(page.locator("#redrive-all")).to_be_disabled()
        expect(page.locator("#open-restocks h2")).to_have_text("Open restocks (1)")
        status = page.locator("#open-restocks td.restock-status")
        expect(status).to_have_text("pending")
        results["restock_status"] = status.inner_text()
        page.screenshot(path=SCREENSHOTS / "4-after-redrive.png", full_page=True)
    return results

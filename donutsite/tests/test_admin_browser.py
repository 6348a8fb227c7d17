"""The admin as ops see it in a real browser (Debian's Chromium through Playwright, as the dashboard's
browser test): the site's own name, plural names that read right, and a dead-letters list that fits a
1,400 px window next to its filters. Screenshots go to test-output/browser/."""

import pytest
from django.contrib.auth.models import User

from factory.models import DeadLetter
from testsupport.browser import PASSWORD, SCREENSHOTS, browser_test, chromium_page
from testsupport.data import make_failed_restock, make_product

pytestmark = browser_test


@pytest.mark.django_db(transaction=True)  # the live server reads what the test commits
def test_the_admin_names_itself_and_its_dead_letters_list_fits_1400_px(live_server):
    User.objects.create_superuser("ops", "ops@example.com", PASSWORD)
    for sku in ("JAM", "CRULLER-WITH-A-LONG-NAME", "MATCHA"):
        make_failed_restock(make_product(sku, on_hand=0))
    # The longest error a dead letter can show: the list must cut it, not widen.
    DeadLetter.objects.update(exception_message="502: <html>Bad Gateway</html> " * 40)

    seen = _look(live_server.url)

    assert seen["title"] == "Site administration | Donut-States ops"
    assert seen["header"] == "Donut-States ops"
    assert seen["deliveries"] == "Alert deliveries"
    assert seen["rows"] == 3
    assert seen["table_width"] <= seen["results_width"], seen
    assert seen["page_width"] <= 1400, seen
    assert (SCREENSHOTS / "admin-dead-letters.png").stat().st_size > 0


def _look(base_url: str) -> dict:
    with chromium_page(1400, 900) as page:
        page.goto(f"{base_url}/admin/login/?next=/admin/")
        page.fill("#id_username", "ops")
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_url(f"{base_url}/admin/")
        seen = {"title": page.title(), "header": page.locator("#site-name").inner_text().strip()}
        # An alert's page lists its deliveries (an inline) under the model's plural name.
        page.goto(f"{base_url}/admin/notifications/alert/")
        page.locator("#result_list tbody tr th a").first.click()
        seen["deliveries"] = page.locator(".inline-group h2").first.text_content().strip()

        page.goto(f"{base_url}/admin/factory/deadletter/")
        seen["rows"] = page.locator("#result_list tbody tr").count()
        seen["table_width"] = page.evaluate("document.querySelector('#result_list').scrollWidth")
        seen["results_width"] = page.evaluate("document.querySelector('#changelist .results').clientWidth")
        seen["page_width"] = page.evaluate("document.documentElement.scrollWidth")
        page.screenshot(path=SCREENSHOTS / "admin-dead-letters.png", full_page=True)
    return seen

"""The Content-Security-Policy in a real browser (Debian's Chromium through Playwright, as the other
browser tests): the API docs and the admin's pages run under it with nothing refused, which the parse in
test_csp cannot see for what their scripts do once running (Swagger UI draws the whole docs page)."""

import pytest
from django.contrib.auth.models import User

from factory.models import DeadLetter
from testsupport.browser import PASSWORD, SCREENSHOTS, browser_test, chromium_page
from testsupport.data import make_failed_restock, make_product

pytestmark = browser_test


@pytest.mark.django_db(transaction=True)  # the live server reads what the test commits
def test_the_docs_and_the_admin_run_under_their_policy_with_nothing_refused(live_server):
    User.objects.create_superuser("ops", "ops@example.com", PASSWORD)
    make_product("GLAZED", on_hand=40, reorder_point=10)
    dead_letter = make_failed_restock(make_product("JAM", on_hand=0))[1]
    pages = [
        "/admin/",
        "/admin/inventory/product/",
        "/admin/notifications/alert/",
        "/admin/factory/deadletter/",
        "/admin/dashboard/",
        f"/admin/factory/deadletter/{dead_letter.pk}/change/",  # last: its screenshot shows the Redrive button
    ]
    assert DeadLetter.objects.count() == 1

    seen = _look(live_server.url, pages)

    assert seen["policy"].startswith("default-src 'self'")
    assert seen["operations"] >= 10, "Swagger UI drew the API's operations"
    assert seen["refused"] == []
    assert (SCREENSHOTS / "api-docs.png").stat().st_size > 0


def _look(base_url: str, pages: list[str]) -> dict:
    with chromium_page(1400, 900) as page:
        refused = []
        # Every refusal, whoever caused it: a resource, an inline script or style, or a script's eval.
        page.on("console", lambda message: "Content Security Policy" in message.text and refused.append(message.text))
        docs = page.goto(f"{base_url}/api/docs/")
        seen = {"policy": docs.headers.get("content-security-policy", "")}
        page.locator(".opblock").first.wait_for()
        page.locator(".opblock-summary").first.click()  # an operation unfolds: its example bodies drawn
        page.locator(".opblock-body").first.wait_for()
        seen["operations"] = page.locator(".opblock").count()
        page.screenshot(path=SCREENSHOTS / "api-docs.png", full_page=False)

        page.goto(f"{base_url}/admin/login/?next=/admin/")
        page.fill("#id_username", "ops")
        page.fill("#id_password", PASSWORD)
        page.click("input[type=submit]")
        page.wait_for_url(f"{base_url}/admin/")
        for path in pages:
            page.goto(f"{base_url}{path}")
            page.wait_for_load_state("load")
        page.screenshot(path=SCREENSHOTS / "admin-dead-letter-page.png", full_page=True)
        seen["refused"] = refused
    return seen

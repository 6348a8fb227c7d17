"""The Content-Security-Policy of the HTML we serve (donutsite/csp.py): each page says it, and everything
the page itself contains is allowed by it. The pages are parsed, so a template that adds an inline script,
a style attribute or an asset from elsewhere fails here, not in a browser in production."""

import base64
import hashlib
from html.parser import HTMLParser
from urllib.parse import urlsplit

import pytest
from django.contrib.staticfiles import finders
from django.test import Client

from testsupport.data import make_failed_restock, make_product

# Script types a browser does not run (a data block such as DRF's CSRF token in JSON): CSP leaves them be.
_DATA_SCRIPT_TYPES = {"application/json", "application/ld+json", "text/template"}


class _Page(HTMLParser):
    """What a page loads or runs that CSP governs: each as (directive, what), `what` being a URL, or
    ("inline", text) for an inline <script>/<style>, or ("attribute", text) for a style="" or on*=""."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.loads: list[tuple[str, tuple[str, str]]] = []
        self._inline: tuple[str, list[str]] | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name, value in attrs.items():
            if name.startswith("on"):
                self.loads.append(("script-src", ("attribute", value or "")))
            elif name == "style":
                self.loads.append(("style-src", ("attribute", value or "")))
            elif name in ("href", "src", "action") and (value or "").lower().startswith("javascript:"):
                self.loads.append(("script-src", ("attribute", value)))
        if tag == "script" and (attrs.get("type") or "").lower() not in _DATA_SCRIPT_TYPES:
            if attrs.get("src"):
                self.loads.append(("script-src", ("url", attrs["src"])))
            else:
                self._inline = ("script-src", [])
        elif tag == "style":
            self._inline = ("style-src", [])
        elif tag == "link" and attrs.get("href"):
            rel = (attrs.get("rel") or "").lower().split()
            if "stylesheet" in rel:
                self.loads.append(("style-src", ("url", attrs["href"])))
            elif "icon" in rel:
                self.loads.append(("img-src", ("url", attrs["href"])))
        elif tag == "img" and attrs.get("src"):
            self.loads.append(("img-src", ("url", attrs["src"])))
        elif tag in ("iframe", "frame") and attrs.get("src"):
            self.loads.append(("frame-src", ("url", attrs["src"])))
        elif tag in ("object", "embed"):
            self.loads.append(("object-src", ("url", attrs.get("data") or attrs.get("src") or "")))
        elif tag == "base":
            self.loads.append(("base-uri", ("url", attrs.get("href") or "")))
        elif tag == "form":
            self.loads.append(("form-action", ("url", attrs.get("action") or "")))

    def handle_data(self, data):
        if self._inline:
            self._inline[1].append(data)

    def handle_endtag(self, tag):
        if self._inline and tag in ("script", "style"):
            directive, text = self._inline
            self.loads.append((directive, ("inline", "".join(text))))
            self._inline = None


# Directives that do not fall back to default-src when absent: absent, they allow anything.
_NO_FALLBACK = {"base-uri", "form-action", "frame-ancestors"}


def policy_of(response) -> dict[str, list[str]]:
    header = response["Content-Security-Policy"]
    directives = [part.split() for part in header.split(";") if part.strip()]
    return {name: sources for name, *sources in directives}


def sources_for(policy: dict[str, list[str]], directive: str) -> list[str] | None:
    if directive in policy:
        return policy[directive]
    return None if directive in _NO_FALLBACK else policy.get("default-src")


def sha256_source(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def refused(policy: dict[str, list[str]], directive: str, what: tuple[str, str]) -> bool:
    """Whether a browser under `policy` refuses to load or run `what` (same origin: the test client's host)."""
    sources = sources_for(policy, directive)
    if sources is None:
        return False
    kind, value = what
    if kind == "inline":
        return sha256_source(value) not in sources and "'unsafe-inline'" not in sources
    if kind == "attribute":
        return "'unsafe-inline'" not in sources
    url = urlsplit(value)
    if url.scheme == "data":
        return "data:" not in sources
    same_origin = url.scheme in ("", "http") and url.netloc in ("", "testserver")
    return not (same_origin and "'self'" in sources)


def loads_of(response) -> list[tuple[str, tuple[str, str]]]:
    page = _Page()
    page.feed(response.content.decode())
    page.close()
    return page.loads


def assert_allowed(response):
    """The page has its policy, everything in it is allowed by it, and each of its own assets exists."""
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    policy = policy_of(response)
    loads = loads_of(response)
    assert loads, "the page was parsed"
    assert [(d, w) for d, w in loads if refused(policy, d, w)] == []
    for directive, (kind, value) in loads:
        path = urlsplit(value).path
        if kind == "url" and path.startswith("/static/"):
            assert finders.find(path.removeprefix("/static/")), f"{value} ({directive}) is not a static file"
    return policy, loads


BASELINE = {
    "default-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}


def assert_baseline(policy):
    assert {name: policy.get(name) for name in BASELINE} == BASELINE
    # Neither scripts nor styles may come from anywhere but here (hashes aside); scripts never inline.
    assert sources_for(policy, "script-src") == ["'self'"]
    assert all(s == "'self'" or s.startswith("'sha256-") for s in sources_for(policy, "style-src"))


@pytest.fixture
def ops(admin_client):
    make_product("GLAZED", on_hand=40, reorder_point=10)
    make_failed_restock(make_product("JAM", on_hand=0))
    return admin_client


def test_the_admin_login_page_is_allowed_by_its_policy(db, client):
    policy, _ = assert_allowed(client.get("/admin/login/?next=/admin/"))

    assert_baseline(policy)


@pytest.mark.parametrize(
    "path",
    [
        "/admin/",
        "/admin/inventory/product/",
        "/admin/factory/deadletter/",
        "/admin/notifications/alert/",
        "/admin/inventory/product/adjust-stock/?ids={glazed}",
        "/admin/dashboard/",
    ],
)
def test_admin_pages_are_allowed_by_their_policy(ops, path):
    from inventory.models import Product

    policy, _ = assert_allowed(ops.get(path.format(glazed=Product.objects.get(sku="GLAZED").pk)))

    assert_baseline(policy)


def test_the_admins_own_change_forms_are_allowed_by_their_policy(ops):
    from factory.models import DeadLetter
    from inventory.models import Product

    for path in (
        f"/admin/factory/deadletter/{DeadLetter.objects.get().pk}/change/",
        f"/admin/inventory/product/{Product.objects.get(sku='GLAZED').pk}/change/",
    ):
        assert_allowed(ops.get(path))


def csrf_failure_page():
    """The admin's login posted without its CSRF cookie (or with a token rotated since, by a login in another
    tab): Django's own 403 page, styled inline, answers it."""
    return Client(enforce_csrf_checks=True).post("/admin/login/", {"username": "ops", "password": "x"})


def test_the_csrf_failure_page_is_allowed_by_its_policy(db):
    page = csrf_failure_page()

    assert page.status_code == 403 and "CSRF verification failed" in page.content.decode()
    assert any(kind == "inline" for _, (kind, _) in loads_of(page)), "its style is inline"
    assert refusals(page) == []
    assert_baseline(policy_of(page))


def test_the_api_docs_are_allowed_by_their_policy_and_run_no_inline_script(db, client):
    docs = client.get("/api/docs/")
    policy, loads = assert_allowed(docs)
    scripts = [value for directive, (kind, value) in loads if directive == "script-src"]
    # Swagger UI's start-up script comes from the docs' own URL, not inline: the policy runs no inline script.
    [start] = [url for url in scripts if url.startswith("/api/docs/?")]
    script = client.get(start)

    assert_baseline(policy)
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")
    assert "SwaggerUIBundle(" in script.content.decode() and "/api/schema/" in script.content.decode()


def test_every_hash_in_the_policy_is_of_something_a_page_holds(ops):
    # No more than the pages need: a hash left behind by an upgrade that changed an inline style goes.
    held, hashes = set(), set()
    for path in ("/admin/login/", "/admin/", "/admin/inventory/product/", "/admin/dashboard/", "/api/docs/"):
        response = (Client() if path.startswith("/admin/login/") else ops).get(path)
        held |= {sha256_source(value) for _, (kind, value) in loads_of(response) if kind == "inline"}
        hashes |= {s for sources in policy_of(response).values() for s in sources if s.startswith("'sha")}
    held |= {sha256_source(value) for _, (kind, value) in loads_of(csrf_failure_page()) if kind == "inline"}

    assert hashes <= held


def refusals(response) -> list:
    policy = policy_of(response) if "Content-Security-Policy" in response else {}
    return [(d, w) for d, w in loads_of(response) if refused(policy, d, w)]


def test_debugs_own_error_page_keeps_its_inline_style(db, client, settings):
    # Django's technical 404 page, which only DEBUG (make run) shows, is styled inline.
    settings.DEBUG = True
    page = client.get("/no-such-page/")

    assert page.status_code == 404 and "Using the URLconf defined in" in page.content.decode()
    assert any(kind == "inline" for _, (kind, _) in loads_of(page))
    assert refusals(page) == []


def test_debugs_browsable_api_keeps_its_inline_style(db, settings):
    # DRF's browsable API, which make run's DEBUG adds to the API's renderers, styles its code inline.
    from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer
    from rest_framework.response import Response
    from rest_framework.test import APIRequestFactory
    from rest_framework.views import APIView

    from donutsite.csp import ContentSecurityPolicyMiddleware

    class Products(APIView):
        authentication_classes, permission_classes = [], []
        renderer_classes = [JSONRenderer, BrowsableAPIRenderer]

        def get(self, request):
            return Response({"count": 0, "results": []})

    settings.DEBUG = True
    request = APIRequestFactory().get("/api/v1/products/", HTTP_ACCEPT="text/html")
    page = ContentSecurityPolicyMiddleware(lambda request: Products.as_view()(request).render())(request)

    assert page["Content-Type"].startswith("text/html") and "Django REST framework" in page.content.decode()
    assert any(kind in ("inline", "attribute") for d, (kind, _) in loads_of(page) if d == "style-src")
    assert refusals(page) == []

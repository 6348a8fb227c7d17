"""The Content-Security-Policy of every HTML page we serve: the admin, the ops dashboard and the API docs.

It allows what those pages load and nothing more (donutsite/tests/test_csp.py parses them against it):
scripts, stylesheets and images from our own static files, no inline script at all (the docs load Swagger
UI's start-up script from their own URL: urls.py), and two inline styles, by their hashes. A page can be
neither framed (as X-Frame-Options: DENY already says) nor post its forms elsewhere.

Django 5.2 has no CSP of its own, and a fixed policy needs no package (django-csp): a nonce would not
help, since the inline styles are in Django's and drf-spectacular's templates, which write none.
"""

from django.conf import settings

# drf-spectacular's swagger_ui.html has one inline <style> (html box-sizing, body margin). Its hash
# changes when that template does: test_csp then names the page.
SWAGGER_UI_STYLE = "'sha256-MMpT0iDxyjALd9PdfepImGX3DBfJPXZ4IlDWdPAgtn0='"
# Django's CSRF failure page (views/templates/csrf_403.html), which an admin form posted with an outdated
# token gets (a second login tab), has one too: refused, it came unstyled. DEBUG changes only its body.
CSRF_FAILURE_STYLE = "'sha256-jYJ/qrz4ojqMFEXV4ROer3I8bInDaDsKjQuktj9ESIk='"

POLICY = {
    "default-src": ["'self'"],
    "style-src": ["'self'", SWAGGER_UI_STYLE, CSRF_FAILURE_STYLE],
    # Swagger UI's stylesheet draws its icons and arrows as data: URIs.
    "img-src": ["'self'", "data:"],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}
HEADER = "Content-Security-Policy"
VALUE = "; ".join(" ".join([name, *sources]) for name, sources in POLICY.items())

# Pages that exist only under DEBUG, made for the developer with inline scripts and styles of their own:
# Django's technical 404 and 500 pages (their tracebacks unfold by script) and DRF's browsable API.
_DEBUG_PAGE_STATUSES = (404, 500)


class ContentSecurityPolicyMiddleware:
    """Adds the policy to HTML answers only: a JSON answer (a sale) is left as it was, one check of its
    Content-Type. Goes near the top of MIDDLEWARE, so the HTML that a middleware below answers gets it too."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if response.get("Content-Type", "").startswith("text/html") and not _debug_page(response):
            response.headers.setdefault(HEADER, VALUE)
        return response


def _debug_page(response) -> bool:
    if not settings.DEBUG:
        return False
    renderer = getattr(response, "accepted_renderer", None)
    return response.status_code in _DEBUG_PAGE_STATUSES or getattr(renderer, "format", None) == "api"

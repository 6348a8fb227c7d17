"""Shared middleware."""

from django.http import JsonResponse
from django.urls import get_urlconf, is_valid_path
from rest_framework.response import Response

from donutsite.context import request_id_bound, request_id_new, request_id_valid

HEADER = "X-Request-ID"


class RequestIdMiddleware:
    """Give every request an id: the client's X-Request-ID when it is valid (1-64 characters of
    [A-Za-z0-9._:-]), else a new uuid4 hex. It is the current request id (donutsite.context) while the
    request runs, so log lines, restocks, alerts and the Celery tasks sent from here carry it, and it
    is echoed in the response. Goes first in MIDDLEWARE so every later middleware's logs have it."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        given = request.headers.get(HEADER)
        with request_id_bound(given if request_id_valid(given) else request_id_new()) as current:
            request.request_id = current
            response = self.get_response(request)
        response[HEADER] = current
        return response


class HeadMiddleware:
    """A HEAD is answered as the GET would be, headers and Content-Length included, without its body.

    Django's views answer a HEAD with the GET's body and leave dropping it to the server: runserver and
    the test client do, but gunicorn drops it with a warning per request, and uptime probes send HEADs.
    Goes above every middleware that can replace the answer (ApiMiddleware's JSON errors), so whatever
    answer leaves the stack is emptied.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        if request.method == "HEAD":
            if response.streaming:
                response.streaming_content = []  # a file's closer stays registered: closed with the answer
            else:
                response.content = b""  # Content-Length, set from the GET's body below us, is left as it was
        return response


# The code of an API answer that Django or a middleware made without our error shape.
_STATUS_CODES = {
    400: ("bad_request", "The request is malformed."),
    403: ("permission_denied", "You may not do this."),
    404: ("not_found", "Not found."),
    405: ("method_not_allowed", "Method not allowed."),
    413: ("request_too_large", "The request body is too large."),
    429: ("throttled", "Too many requests."),
    500: ("server_error", "Something went wrong on our side; it has been logged."),
}


class ApiMiddleware:
    """Under /api/ every answer is JSON in the one error shape, DEBUG or not, and a missing trailing
    slash is forgiven.

    - `POST /api/v1/sales` is served as `/api/v1/sales/`: CommonMiddleware's APPEND_SLASH would
      answer a 301 that clients follow with a GET (the sale dropped), or raise RuntimeError under
      DEBUG. Only a path that matches no route while its slashed form does is rewritten.
    - An error answer that is not JSON (Django's HTML 400/404/500 pages, the DEBUG technical pages,
      a CSRF or host refusal) is replaced by `{"code", "message"}` with the same status. A DRF error
      rendered otherwise (the schema's YAML, the Swagger page's HTML) keeps the body our exception
      handler made, as JSON; only the browsable API under DEBUG renders HTML on purpose.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if not api_path(request.path_info):
            return self.get_response(request)
        if not request.path_info.endswith("/"):
            urlconf = getattr(request, "urlconf", None) or get_urlconf()
            slashed = request.path_info + "/"
            if not is_valid_path(request.path_info, urlconf) and is_valid_path(slashed, urlconf):
                request.path_info = slashed
                request.path = request.path + "/"
        response = self.get_response(request)
        if response.status_code >= 400 and not _json_or_browsable(response):
            if isinstance(response, Response) and isinstance(response.data, dict) and "code" in response.data:
                # Our exception handler's, rendered as YAML or HTML by the view's renderer; the HTML one (DRF's
                # TemplateHTMLRenderer) wrote its template's status_code into it.
                body = {key: value for key, value in response.data.items() if key != "status_code"}
            else:
                code, message = _STATUS_CODES.get(response.status_code, ("error", "The request failed."))
                body = {"code": code, "message": message}
            replacement = JsonResponse(body, status=response.status_code)
            # Only the body changes: what the answer said of itself and the middleware below added (Allow,
            # Retry-After, nosniff, HSTS, Vary, cookies) stays.
            for header, value in response.items():
                if header.lower() not in ("content-type", "content-length"):
                    replacement[header] = value
            replacement.cookies = response.cookies
            if getattr(response, "_has_been_logged", False):
                # Django's mark (django.utils.log.log_response): a 500 was logged with its traceback, and
                # logged a second time, without it, once this answer lost the mark.
                replacement._has_been_logged = True
            return replacement
        return response


def api_path(path: str) -> bool:
    """Under /api/, also as `//api/` or `/API/` (no route matches those; their 404 is the API's too), and
    `/api` itself: a client trying the API's root got Django's HTML page. `/apiary` is not the API's."""
    head = path.lstrip("/")[:4].lower()
    return head in ("api", "api/")


def _json_or_browsable(response) -> bool:
    if response.get("Content-Type", "").startswith("application/json"):
        return True
    return getattr(getattr(response, "accepted_renderer", None), "format", None) == "api"

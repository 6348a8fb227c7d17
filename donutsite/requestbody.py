"""Request bodies the way clients send them: chunked or with a length, never bigger than the limit.

Django reads `CONTENT_LENGTH` bytes of a body, so a chunked body (no Content-Length; gunicorn
de-chunks it and marks `wsgi.input_terminated`) was read as empty and a sale answered "items
required". `ChunkedBody` reads such a body up to DATA_UPLOAD_MAX_MEMORY_SIZE + 1 bytes and hands
Django a body with its length. `BodySizeMiddleware` answers a body over the limit, chunked or not,
with `413 request_too_large` before anything parses it (Django would raise RequestDataTooBig, an
HTML 400 page). Behind a server that does not de-chunk (Django's runserver), a chunked body is
`411 length_required` rather than read as empty.

A `Content-Type` Django cannot read (an RFC 2231 parameter, `a*=zz''b`, naming a charset Python has no
codec for) raised ValueError while Django built the request, before any middleware: a 500 with a
traceback on every URL, /healthz included. `ChunkedBody` hands Django the request without it, flagged,
and `BodySizeMiddleware` answers it `400 bad_request`, as gunicorn answers a header it cannot read: with
the request id and the headers every answer carries.
"""

import io

from django.conf import settings
from django.http import JsonResponse
from django.utils.http import parse_header_parameters

from donutsite.errors import echoed

OVER_LIMIT = "donutsite.body_over_limit"
LENGTH_UNKNOWN = "donutsite.body_length_unknown"
CONTENT_TYPE_UNREADABLE = "donutsite.content_type_unreadable"


class ChunkedBody:
    """WSGI wrapper (donutsite/wsgi.py) giving de-chunked bodies a Content-Length."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        if problem := content_type_unreadable(environ.get("CONTENT_TYPE", "")):
            environ[CONTENT_TYPE_UNREADABLE] = problem  # answered 400 by BodySizeMiddleware
            environ["CONTENT_TYPE"] = ""
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if chunked and not environ.get("CONTENT_LENGTH") and not environ.get("wsgi.input_terminated"):
            environ[LENGTH_UNKNOWN] = True  # a server that does not de-chunk (runserver): say so, 411
        elif chunked and not environ.get("CONTENT_LENGTH"):
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            body = environ["wsgi.input"].read(-1 if limit is None else limit + 1)
            if limit is not None and len(body) > limit:
                environ[OVER_LIMIT] = True
                body = b""
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
        return self.app(environ, start_response)


def content_type_unreadable(content_type: str) -> str:
    """Why Django cannot read this Content-Type, or "". Only a `name*=` parameter (RFC 2231) can fail, so
    the usual request is not parsed twice."""
    if "*" not in content_type:
        return ""
    try:
        parse_header_parameters(content_type)
    except ValueError as exc:
        return str(exc)
    return ""


def _too_big(request) -> bool:
    if request.META.get(OVER_LIMIT):
        return True
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return False  # gunicorn refuses a malformed Content-Length before we see it
    return limit is not None and length > limit


class BodySizeMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if problem := request.META.get(CONTENT_TYPE_UNREADABLE):
            return JsonResponse(
                {"code": "bad_request", "message": f"The Content-Type cannot be read: {echoed(problem).rstrip('.')}."},
                status=400,
            )
        if request.META.get(LENGTH_UNKNOWN):
            return JsonResponse(
                {"code": "length_required", "message": "This server needs a Content-Length; send the body unchunked."},
                status=411,
            )
        if _too_big(request):
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            return JsonResponse(
                {"code": "request_too_large", "message": f"The body may be at most {limit} bytes."}, status=413
            )
        return self.get_response(request)

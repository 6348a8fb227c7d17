"""Shared middleware."""

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

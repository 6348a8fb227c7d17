"""A database that does not answer is a 503 the client may retry, never a 500.

MariaDB restarting, a failover, or a connection cut mid-request surfaces as Django's OperationalError or
InterfaceError. The client gets `503 {"code": "service_unavailable", ...}` with Retry-After, at once (the
connect timeout in settings bounds the wait), and retrying with the same Idempotency-Key is safe: a
sale whose COMMIT went through before the connection broke is answered again, not sold twice.

DRF views map it in donutsite.drf; this middleware does the same for plain Django views (admin,
dashboard). It sees only exceptions raised by views, which is where database access happens.

A database that is up and does not answer costs a request its timeouts (DATABASE_READ_TIMEOUT_SECONDS,
then the connect timeout for a new connection): seconds, in which a sync worker serves nobody else. So a
request that ended in an outage (no connection, or one lost or timed out mid-query; not a deadlock or a
lock wait, which are answers from a working server) opens the process's database breaker
(donutsite.dependencies), and for WEB_DEPENDENCY_PAUSE_SECONDS this middleware answers every request but
the liveness probe with the same 503 at once; then one request tries the database again.
"""

import logging

from django.db import InterfaceError, OperationalError
from django.http import JsonResponse
from django.urls import reverse

from donutsite.dependencies import breakers

logger = logging.getLogger(__name__)

DATABASE_ERRORS = (OperationalError, InterfaceError)
CODE = "service_unavailable"
MESSAGE = "The service is briefly unavailable; retry (with the same Idempotency-Key) after Retry-After seconds."
RETRY_AFTER_SECONDS = 1


# MySQL client errors that mean no server is answering: cannot connect (2002 socket, 2003 TCP), the
# connection gone (2006), lost or timed out during a query (2013).
OUTAGE_ERRORS = {2002, 2003, 2006, 2013}


def database_unavailable(exc: BaseException) -> tuple[dict, dict]:
    """Log the error (with its traceback, server side only), open the database breaker if it was an
    outage, and return the 503's body and headers."""
    logger.error("database unavailable: %s: %s", type(exc).__name__, exc, exc_info=exc)
    if isinstance(exc, InterfaceError) or (exc.args and exc.args[0] in OUTAGE_ERRORS):
        breakers["database"].trip(exc)
    return _unavailable()


def _unavailable() -> tuple[dict, dict]:
    return {"code": CODE, "message": MESSAGE}, {"Retry-After": str(RETRY_AFTER_SECONDS)}


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response
        self.liveness = reverse("healthz")  # answers without the database: a process waiting it out is alive

    def __call__(self, request):
        if breakers["database"].is_open and request.path != self.liveness:
            body, headers = _unavailable()
            return JsonResponse(body, status=503, headers=headers)
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, DATABASE_ERRORS):
            return None
        body, headers = database_unavailable(exception)
        return JsonResponse(body, status=503, headers=headers)

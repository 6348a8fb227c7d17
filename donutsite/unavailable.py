"""A database that does not answer is a 503 the client may retry, never a 500.

MariaDB restarting, a failover, or a connection cut mid-request surfaces as Django's OperationalError or
InterfaceError. The client gets `503 {"code": "service_unavailable", ...}` with Retry-After, at once (the
connect timeout in settings bounds the wait), and retrying with the same Idempotency-Key is safe: a
sale whose COMMIT went through before the connection broke is answered again, not sold twice.

DRF views map it in donutsite.drf; this middleware does the same for plain Django views (admin,
dashboard). It sees only exceptions raised by views, which is where database access happens.
"""

import logging

from django.db import InterfaceError, OperationalError
from django.http import JsonResponse

logger = logging.getLogger(__name__)

DATABASE_ERRORS = (OperationalError, InterfaceError)
CODE = "service_unavailable"
MESSAGE = "The service is briefly unavailable; retry (with the same Idempotency-Key) after Retry-After seconds."
RETRY_AFTER_SECONDS = 1


def database_unavailable(exc: BaseException) -> tuple[dict, dict]:
    """Log the error (with its traceback, server side only) and return the 503's body and headers."""
    logger.error("database unavailable: %s: %s", type(exc).__name__, exc, exc_info=exc)
    return {"code": CODE, "message": MESSAGE}, {"Retry-After": str(RETRY_AFTER_SECONDS)}


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        return self.get_response(request)

    def process_exception(self, request, exception):
        if not isinstance(exception, DATABASE_ERRORS):
            return None
        body, headers = database_unavailable(exception)
        return JsonResponse(body, status=503, headers=headers)

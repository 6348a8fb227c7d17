"""The one DRF exception handler: every error leaves as {"code", "message", ...details}."""

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.metadata import SimpleMetadata
from rest_framework.response import Response
from rest_framework.views import set_rollback

from donutsite import sale_counters
from donutsite.errors import DomainError
from donutsite.unavailable import DATABASE_ERRORS, database_unavailable

# DRF's own exceptions, mapped to our stable codes.
_DRF_CODES = {
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "throttled",
    exceptions.ParseError: "malformed_json",
    exceptions.ValidationError: "validation_error",
}


def error_body(code: str, message: str, **details) -> dict:
    return {"code": code, "message": message, **details}


def exception_handler(exc, context):
    # Django's own, which DRF's default handler also turns into its own (an unknown ?format= raises Http404).
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = _error_response(exc)
    if response is not None and _counts_sale_outcomes(context):
        if response.headers.get("Idempotent-Replayed") == "true":
            pass  # a replay of an earlier answer: that one was counted
        elif response.data.get("code") == "out_of_stock":
            sale_counters.count_sale_outcome("out_of_stock", stockouts=len(response.data.get("shortages", ())))
        elif 400 <= response.status_code < 500 and response.status_code != 409:
            sale_counters.count_sale_outcome("rejected")
    return response


def _counts_sale_outcomes(context) -> bool:
    # The view says whether its refusals are sale outcomes (`counts_sale_outcomes`), so this handler
    # knows no app's URLs.
    request, view = context.get("request"), context.get("view")
    return getattr(view, "counts_sale_outcomes", False) and request is not None and request.method == "POST"


def _error_response(exc):
    if isinstance(exc, DomainError):
        set_rollback()
        response = Response(error_body(exc.code, exc.message, **exc.details), status=exc.status, headers=exc.headers)
        if exc.routine:
            # Django's own mark (django.utils.log.log_response) that the answer needs no warning line.
            response._has_been_logged = True
        return response

    if isinstance(exc, DATABASE_ERRORS):  # the database restarts or a connection was cut: retry soon
        set_rollback()
        body, headers = database_unavailable(exc)
        return Response(body, status=status.HTTP_503_SERVICE_UNAVAILABLE, headers=headers)

    if not isinstance(exc, exceptions.APIException):
        return None  # a real bug: let Django log it and answer 500

    set_rollback()
    code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), "error")
    headers = {}
    if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
        headers["Retry-After"] = str(max(1, int(exc.wait + 0.999)))
    if isinstance(exc, exceptions.ValidationError):
        body = error_body(code, "The request is invalid; see `errors`.", errors=exc.detail)
    else:
        body = error_body(code, str(exc.detail))
    if isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)):
        # DRF would answer 403 without a WWW-Authenticate header; clients expect 401.
        headers["WWW-Authenticate"] = "Api-Key"
        return Response(body, status=status.HTTP_401_UNAUTHORIZED, headers=headers)
    return Response(body, status=exc.status_code, headers=headers)


class MetadataWithoutActions(SimpleMetadata):
    """OPTIONS answers a view's name, description and media types, without DRF's `actions`: those are
    built from the view's serializer_class, which for a list-and-create view (sales) is the list's
    output, so a POST was described with the wrong fields. /api/schema/ describes every body."""

    def determine_actions(self, request, view):
        return {}

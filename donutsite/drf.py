"""The one error answer: every error leaves as {"code", "message", ...details}, through DRF's exception
handler below or, for the sales view's plain POST (inventory/views.py), through error_answer itself."""

import re
from dataclasses import dataclass, field

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.metadata import SimpleMetadata
from rest_framework.response import Response
from rest_framework.views import set_rollback

from donutsite import sale_counters
from donutsite.errors import DomainError, echoed
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


# DRF's 415 names the Content-Type sent, whole: that part of its message is cut (donutsite.errors.echoed).
_MEDIA_TYPE_SENT = re.compile(r'(?s)(Unsupported media type ")(.*)(" in request\.)')


def error_body(code: str, message: str, **details) -> dict:
    return {"code": code, "message": message, **details}


def exception_handler(exc, context):
    answer = error_answer(exc)
    if answer is None:
        return None  # a real bug: let Django log it and answer 500
    if _counts_sale_outcomes(context):
        # One app's phones share its key, so a rush over its rate is refused hundreds of times a second:
        # /metrics counts those (throttled), as it counts out_of_stock, instead of a warning line each. An
        # address over the bad keys' limit (no client authenticated) is a guesser, not a rush: a warning
        # line naming it, and a rejected sale.
        over_rate = answer.status == status.HTTP_429_TOO_MANY_REQUESTS and context["request"].auth is not None
        sale_outcome_count(answer, over_rate=over_rate)
        answer.routine = answer.routine or over_rate
    response = Response(answer.body, status=answer.status, headers=answer.headers)
    if answer.routine:
        # Django's own mark (django.utils.log.log_response) that the answer needs no warning line.
        response._has_been_logged = True
    return response


def _counts_sale_outcomes(context) -> bool:
    # The view says whether its refusals are sale outcomes (`counts_sale_outcomes`), so this handler
    # knows no app's URLs.
    request, view = context.get("request"), context.get("view")
    return getattr(view, "counts_sale_outcomes", False) and request is not None and request.method == "POST"


def sale_outcome_count(answer: "ErrorAnswer", *, over_rate: bool = False) -> None:
    """Count a refused sale in /metrics: out_of_stock (with its short products), throttled (`over_rate`: a
    client over its own rate) or rejected; a replay of an earlier answer is not counted again (that one
    was)."""
    if answer.headers.get("Idempotent-Replayed") == "true":
        return
    if answer.body.get("code") == "out_of_stock":
        sale_counters.count_sale_outcome("out_of_stock", stockouts=len(answer.body.get("shortages", ())))
    elif over_rate:
        sale_counters.count_sale_outcome("throttled")
    elif 400 <= answer.status < 500 and answer.status != 409:
        sale_counters.count_sale_outcome("rejected")


@dataclass
class ErrorAnswer:
    status: int
    body: dict
    headers: dict = field(default_factory=dict)
    routine: bool = False  # logged by nobody: an answer a rush gives thousands of times a second


def error_answer(exc) -> ErrorAnswer | None:
    """The answer to an exception a view raised, in the one error shape; None for a bug (a 500)."""
    if isinstance(exc, DomainError):
        set_rollback()
        return ErrorAnswer(exc.status, error_body(exc.code, exc.message, **exc.details), exc.headers, exc.routine)

    if isinstance(exc, DATABASE_ERRORS):  # the database restarts or a connection was cut: retry soon
        set_rollback()
        body, headers = database_unavailable(exc)
        return ErrorAnswer(status.HTTP_503_SERVICE_UNAVAILABLE, body, headers)

    # Django's own, which DRF's default handler also turns into its own.
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    if not isinstance(exc, exceptions.APIException):
        return None

    set_rollback()
    code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), "error")
    headers = {}
    if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
        headers["Retry-After"] = str(max(1, int(exc.wait + 0.999)))
    if isinstance(exc, exceptions.ValidationError):
        body = error_body(code, "The request is invalid; see `errors`.", errors=exc.detail)
    elif isinstance(exc, exceptions.UnsupportedMediaType):
        # DRF names the type sent, not the one we take: `curl -d` without a Content-Type sends a form. Every
        # API view parses JSON only (the factory's callbacks take any type, so never answer this).
        sent = _MEDIA_TYPE_SENT.sub(lambda m: m[1] + echoed(m[2]) + m[3], str(exc.detail))
        body = error_body(code, f"{sent} Send the body as JSON, with `Content-Type: application/json`.")
    elif isinstance(exc, exceptions.NotAcceptable) and exc.available_renderers:
        # DRF says only that the Accept header cannot be met; a client needs what can.
        offered = ", ".join(dict.fromkeys(renderer.media_type for renderer in exc.available_renderers))
        body = error_body(code, f"{exc.detail} This answers {offered}.")
    else:
        body = error_body(code, str(exc.detail))
    if isinstance(exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)):
        # DRF would answer 403 without a WWW-Authenticate header; clients expect 401.
        headers["WWW-Authenticate"] = "Api-Key"
        return ErrorAnswer(status.HTTP_401_UNAUTHORIZED, body, headers)
    return ErrorAnswer(exc.status_code, body, headers)


class MetadataWithoutActions(SimpleMetadata):
    """OPTIONS answers a view's name, description and media types, without DRF's `actions`: those are
    built from the view's serializer_class, which for a list-and-create view (sales) is the list's
    output, so a POST was described with the wrong fields. /api/schema/ describes every body."""

    def determine_actions(self, request, view):
        return {}

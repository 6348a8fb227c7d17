"""Every documented error response in /api/schema/ carries example bodies: one per error code it can
answer with, as the exception handler (donutsite/drf.py) writes them, so that Swagger shows real errors
rather than {"code": "string", "message": "string"}.

A drf-spectacular postprocessing hook (settings.SPECTACULAR_SETTINGS): an error response whose
description names codes in backticks gets those codes' examples; one that names none gets the usual
codes of its status. Every operation also gets the 503 `service_unavailable` that any request meeting a
database outage answers (donutsite/unavailable.py), unless it documents one itself. Every 429 and 503
states its Retry-After header, which the exception handler sends with each.

`SchemaView` serves it at /api/schema/. `parameter_examples` declares a request example of path or query
parameters for a view's `extend_schema`."""

import re

from drf_spectacular.utils import OpenApiExample, OpenApiParameter
from drf_spectacular.views import SpectacularAPIView

from donutsite import unavailable


class SchemaView(SpectacularAPIView):
    """drf-spectacular's schema view without its `?version=`: the API has one version (the /v1/ in its paths),
    and the view wrote the parameter, unchecked, into the schema's info.version and its Content-Disposition
    header, where a NUL or a line break was a 500 and a quote added a header parameter of the caller's."""

    def _get_version_parameter(self, request):
        return None


def parameter_examples(name: str, location: str = OpenApiParameter.QUERY, **values) -> list[OpenApiExample]:
    """One request example over several parameters, for `extend_schema(examples=...)`. OpenAPI keeps a
    parameter's examples on the parameter, so drf-spectacular takes one per parameter; given one name,
    schemathesis sends them together as one request (test_the_schema_examples_answer_as_documented)."""
    return [OpenApiExample(name, value=value, parameter_only=(key, location)) for key, value in values.items()]


_OUT_OF_STOCK = {
    "code": "out_of_stock",
    "message": "Not enough stock; nothing was sold. A restock is on its way.",
    "shortages": [
        {
            "sku": "VIRAL",
            "requested": 50,
            "available": 5,
            "restock": {"id": 1, "status": "pending", "quantity": 120, "expected_at": None},
        }
    ],
}

# code -> (status, body). The bodies are what the API answers today (see the tests in
# donutsite/tests/test_openapi_examples.py, which call the API for each).
ERROR_EXAMPLES: dict[str, tuple[int, dict]] = {
    "validation_error": (
        400,
        {
            "code": "validation_error",
            "message": "The request is invalid; see `errors`.",
            "errors": {"items": {"0": {"quantity": ["Ensure this value is less than or equal to 100."]}}},
        },
    ),
    "malformed_json": (400, {"code": "malformed_json", "message": "JSON parse error - Expecting value"}),
    "not_authenticated": (
        401,
        {"code": "not_authenticated", "message": "Authentication credentials were not provided."},
    ),
    "authentication_failed": (
        401,
        {"code": "authentication_failed", "message": "Unknown or revoked API key."},
    ),
    "invalid_signature": (
        401,
        {"code": "invalid_signature", "message": "Callback refused: missing signature headers."},
    ),
    "callback_mismatch": (
        400,
        {"code": "callback_mismatch", "message": "Order F-000001 is for VIRAL, not GLAZED."},
    ),
    "not_found": (404, {"code": "not_found", "message": "Invalid page."}),
    "unknown_sku": (404, {"code": "unknown_sku", "message": "Unknown SKU: NOPE.", "skus": ["NOPE"]}),
    "unknown_device": (
        404,
        {"code": "unknown_device", "message": "No active device with that id is registered by this client."},
    ),
    "unknown_order": (
        404,
        {"code": "unknown_order", "message": "No restock for order 'F-404' / reference 'restock-999999'."},
    ),
    "out_of_stock": (409, _OUT_OF_STOCK),
    "unsupported_media_type": (
        415,
        {
            "code": "unsupported_media_type",
            "message": "Content-Encoding 'gzip' is not supported; send the body uncompressed, without it.",
        },
    ),
    "idempotency_key_reused": (
        422,
        {
            "code": "idempotency_key_reused",
            "message": "This Idempotency-Key was already used with a different request body.",
        },
    ),
    "throttled": (
        429,
        {"code": "throttled", "message": "Request was throttled. Expected available in 1 second."},
    ),
    unavailable.CODE: (503, {"code": unavailable.CODE, "message": unavailable.MESSAGE}),
}

# validation_error's `errors` for each operation, as that operation answers one typical mistake (the
# sales example above would mislead on any other endpoint).
VALIDATION_ERRORS: dict[str, dict] = {
    "sale_create": ERROR_EXAMPLES["validation_error"][1]["errors"],
    "sale_list": {"created_after": ["Date has wrong format. Use one of these formats instead: YYYY-MM-DD."]},
    "restock_list": {"status": ['"lost" is not a valid choice.']},
    "product_list": {"page": ["Ensure this value is greater than or equal to 1."]},
    "device_register": {"platform": ['"nokia" is not a platform we push to: android, ios, web.']},
    "product_subscribe": {"device_id": ["Must be a whole number."]},
    "factory_callback": {"event": ['"order.shipped" is not a valid choice.']},
}

# What a response that names no code answers with.
_BY_STATUS = {
    400: ["validation_error", "malformed_json"],
    401: ["not_authenticated", "authentication_failed"],
    404: ["not_found"],
    409: ["out_of_stock"],
    422: ["idempotency_key_reused"],
    429: ["throttled"],
    503: ["service_unavailable"],
}

# Statuses whose answers carry Retry-After (donutsite/drf.py).
_RETRY_AFTER = {"429", "503"}


def _unavailable() -> dict:
    # A new one for each operation: error_examples adds the header and examples to it.
    return {
        "description": "The database is briefly unreachable (`service_unavailable`): retry after Retry-After "
        "seconds, a sale with the same Idempotency-Key.",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}},
    }


_NAMED = re.compile(r"`([a-z_]+)`")


def error_examples(result, generator, request, public):
    for path in result.get("paths", {}).values():
        for method, operation in path.items():
            operation.setdefault("responses", {}).setdefault("503", _unavailable())
            for status, response in operation["responses"].items():
                if not status.isdigit() or not 400 <= int(status) < 600:
                    continue
                if status in _RETRY_AFTER:
                    response.setdefault("headers", {}).setdefault(
                        "Retry-After",
                        # Required: every such answer sends it, and a generated client makes an optional header a
                        # wait each caller must invent a default for.
                        {
                            "schema": {"type": "integer"},
                            "required": True,
                            "description": "Seconds to wait before trying again.",
                        },
                    )
                content = response.get("content", {}).get("application/json")
                if content is None or "examples" in content:  # a view's own examples win
                    continue
                codes = [code for code in _named(response) if ERROR_EXAMPLES.get(code, (0,))[0] == int(status)]
                codes = codes or _BY_STATUS.get(int(status), [])
                if method == "get":  # a GET has no body to be malformed
                    codes = [code for code in codes if code != "malformed_json"]
                if codes:
                    content["examples"] = {
                        code: {"summary": code, "value": _example(code, operation.get("operationId"))} for code in codes
                    }
    return result


def _example(code: str, operation_id: str | None) -> dict:
    body = ERROR_EXAMPLES[code][1]
    if code == "validation_error" and operation_id in VALIDATION_ERRORS:
        return {**body, "errors": VALIDATION_ERRORS[operation_id]}
    return body


def _named(response) -> list[str]:
    return list(dict.fromkeys(_NAMED.findall(response.get("description", ""))))

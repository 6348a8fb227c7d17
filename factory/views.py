"""The factory's completion callbacks: signed, at-least-once, in any order."""

import json

from django.contrib.auth.models import AnonymousUser
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import authentication, exceptions, serializers, status
from rest_framework.parsers import BaseParser
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from donutsite.parsers import content_coded_refuse, no_duplicate_keys
from donutsite.ratelimit import client_address
from factory import receipts
from factory.client import RemoteOrder
from factory.errors import MalformedCallback
from inventory.serializers import ChoiceField, ErrorOut, StrictCharField, StrictIntegerField, ValidationErrorOut


class CallbackIn(serializers.Serializer):
    event = ChoiceField(choices=[f"order.{status}" for status in RemoteOrder.FINISHED])
    order_id = StrictCharField(max_length=64)
    reference = StrictCharField(max_length=64)
    sku = StrictCharField(max_length=64)
    quantity = StrictIntegerField(min_value=1, max_value=10_000)
    quantity_produced = StrictIntegerField(min_value=0, max_value=10_000)
    # quantity_produced above quantity breaks the contract, but the donuts may well be there: the receipt
    # credits what the restock ordered and warns ops (factory.receipts), rather than refusing a callback
    # the factory would send again and again while the product waits at 0.
    completed_at = serializers.DateTimeField(required=False, allow_null=True)


class CallbackOut(serializers.Serializer):
    status = serializers.ChoiceField(choices=["applied", "duplicate"])
    restock = serializers.IntegerField()


class FactorySignatureAuthentication(authentication.BaseAuthentication):
    """The factory proves a callback is its own with an HMAC over the exact body bytes; DRF runs this
    before the body is parsed. A refusal answers 401 `invalid_signature` and alerts ops."""

    def authenticate(self, request):
        receipts.callback_authenticate(
            raw=request.body,
            timestamp=request.headers.get("X-Factory-Timestamp"),
            signature=request.headers.get("X-Factory-Signature"),
            remote_addr=client_address(request),
        )
        return AnonymousUser(), "factory-signature"

    def authenticate_header(self, request):
        return "X-Factory-Signature"


class FactorySignatureScheme(OpenApiAuthenticationExtension):
    target_class = FactorySignatureAuthentication
    name = "factorySignature"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "X-Factory-Signature",
            "description": "`sha256=<hex>`: HMAC-SHA256 keyed with the callback secret over "
            "`<X-Factory-Timestamp>.<raw body>`; the timestamp must be within 5 minutes of our clock.",
        }


class CallbackJsonParser(BaseParser):
    """JSON, parsed only after the signature over the raw bytes was checked (authentication runs first).
    UTF-8 and each key once, as the API's own parser demands: json.loads would take UTF-16 bytes, and
    keep the last of two values under one key where the factory's own log may show the first."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        content_coded_refuse(parser_context)
        try:
            payload = json.loads(stream.read().decode("utf-8"), object_pairs_hook=no_duplicate_keys)
        except (ValueError, RecursionError):  # nested past the recursion limit; UnicodeDecodeError is a ValueError
            raise MalformedCallback() from None
        return payload if isinstance(payload, dict) else {}


class FactoryCallbackView(APIView):
    authentication_classes = [FactorySignatureAuthentication]
    permission_classes = [AllowAny]
    throttle_classes = []
    parser_classes = [CallbackJsonParser]
    # JSON only, as in production, also under make run's DEBUG: the factory is no browser. The browsable
    # API's page asks request.user again after a refusal (DRF remembers only a failed authentication that
    # raised its own exception, not our InvalidSignature), which checked the signature and counted the
    # refusal a second time, then escaped from rendering as a 500.
    renderer_classes = [JSONRenderer]
    # A 405's Allow names what is answered: APIView's `options` would add OPTIONS, which initial() refuses.
    http_method_names = ["post"]

    def initial(self, request, *args, **kwargs):
        # Only a POST is a callback: anything else is 405 before the signature is checked, so a crawler's
        # or an uptime check's GET is neither counted against its address nor alerted as a forgery.
        if request.method != "POST":
            raise exceptions.MethodNotAllowed(request.method)
        super().initial(request, *args, **kwargs)

    @extend_schema(
        operation_id="factory_callback",
        request={"application/json": CallbackIn},
        # The body only: its signature headers are computed over the body and the time it is sent, so no
        # example can carry them (the examples test signs it as the factory does).
        examples=[
            OpenApiExample(
                "Restock 1 produced in full",
                value={
                    "event": "order.completed",
                    "order_id": "F-000001",
                    "reference": "restock-1",
                    "sku": "GLAZED",
                    "quantity": 40,
                    "quantity_produced": 40,
                    "completed_at": "2026-12-06T13:15:45.000000Z",
                },
                request_only=True,
            ),
        ],
        responses={
            200: CallbackOut,
            400: OpenApiResponse(
                ValidationErrorOut,
                description="A malformed body (`validation_error`, `malformed_json`), or one whose SKU or order id "
                "contradicts its restock (`callback_mismatch`).",
            ),
            401: OpenApiResponse(ErrorOut, description="Bad signature or stale timestamp (`invalid_signature`)."),
            404: OpenApiResponse(ErrorOut, description="No such order (`unknown_order`); the factory retries."),
            415: OpenApiResponse(
                ErrorOut,
                description="A body sent compressed (`unsupported_media_type`): send it without Content-Encoding.",
            ),
            429: OpenApiResponse(
                ErrorOut, description="Too many refused callbacks from this address (`throttled`); see Retry-After."
            ),
        },
        description="Signed with HMAC-SHA256 over `<X-Factory-Timestamp>.<raw body>`, header "
        "`X-Factory-Signature: sha256=<hex>`. Idempotent: a duplicate answers 200 and changes nothing.",
    )
    def post(self, request):
        body = CallbackIn(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        restock, applied = receipts.callback_receive(
            order_id=data["order_id"],
            reference=data["reference"],
            event=data["event"],
            quantity_produced=data["quantity_produced"],
            sku=data["sku"],
            quantity=data["quantity"],
        )
        return Response(
            {"status": "applied" if applied else "duplicate", "restock": restock.pk}, status=status.HTTP_200_OK
        )

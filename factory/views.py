"""The factory's completion callbacks: signed, at-least-once, in any order."""

import json
import logging

from django.conf import settings
from django.db import transaction
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import BaseParser
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from donutsite.errors import DomainError
from factory import services, signatures
from inventory.serializers import ErrorOut, StrictCharField, StrictIntegerField, ValidationErrorOut
from notifications.services import alert_raise

logger = logging.getLogger(__name__)


class CallbackIn(serializers.Serializer):
    event = serializers.ChoiceField(choices=["order.completed", "order.cancelled"])
    order_id = StrictCharField(max_length=64)
    reference = StrictCharField(max_length=64)
    sku = StrictCharField(max_length=64)
    quantity = StrictIntegerField(min_value=1, max_value=10_000)
    quantity_produced = StrictIntegerField(min_value=0, max_value=10_000)
    completed_at = serializers.DateTimeField(required=False, allow_null=True)

    def validate(self, data):
        if data["quantity_produced"] > data["quantity"]:
            raise serializers.ValidationError({"quantity_produced": ["More than was ordered."]})
        return data


class CallbackOut(serializers.Serializer):
    status = serializers.ChoiceField(choices=["applied", "duplicate"])
    restock = serializers.IntegerField()


class InvalidSignature(DomainError):
    code = "invalid_signature"
    status = 401


class RawBodyParser(BaseParser):
    """The signature covers the exact bytes, so the body is parsed only after it is checked."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None):
        return stream.read()


class FactoryCallbackView(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]
    throttle_classes = []
    parser_classes = [RawBodyParser]

    @extend_schema(
        operation_id="factory_callback",
        request={"application/json": CallbackIn},
        responses={
            200: CallbackOut,
            400: ValidationErrorOut,
            401: OpenApiResponse(ErrorOut, description="Bad signature or stale timestamp (`invalid_signature`)."),
            404: OpenApiResponse(ErrorOut, description="No such order (`unknown_order`); the factory retries."),
        },
        description="Signed with HMAC-SHA256 over `<X-Factory-Timestamp>.<raw body>`, header "
        "`X-Factory-Signature: sha256=<hex>`. Idempotent: a duplicate answers 200 and changes nothing.",
    )
    def post(self, request):
        raw = request.body
        problem = signatures.check(
            settings.FACTORY_CALLBACK_SECRET,
            request.headers.get("X-Factory-Timestamp"),
            request.headers.get("X-Factory-Signature"),
            raw,
        )
        if problem:
            logger.warning("factory callback refused: %s", problem)
            with transaction.atomic():
                alert_raise(
                    kind="forged_callback",
                    severity="warning",
                    title="A factory callback was refused",
                    text=f"{problem} (from {request.META.get('REMOTE_ADDR')}). Someone may be forging callbacks, "
                    "or FACTORY_CALLBACK_SECRET differs from the factory's.",
                    dedupe_key="forged_callback",
                    context={"error": problem},
                )
            raise InvalidSignature(f"Callback refused: {problem}.")
        try:
            payload = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return Response({"code": "malformed_json", "message": "The body is not JSON."}, status=400)
        body = CallbackIn(data=payload if isinstance(payload, dict) else {})
        body.is_valid(raise_exception=True)
        data = body.validated_data
        restock, applied = services.restock_receive(
            order_id=data["order_id"],
            reference=data["reference"],
            event=data["event"],
            quantity_produced=data["quantity_produced"],
            sku=data["sku"],
        )
        return Response(
            {"status": "applied" if applied else "duplicate", "restock": restock.pk}, status=status.HTTP_200_OK
        )

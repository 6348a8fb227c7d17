import io
import re

from django.http import HttpResponse
from django.utils.cache import patch_vary_headers
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.exceptions import APIException
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from clients import auth
from donutsite import drf, sale_counters
from donutsite.openapi import parameter_examples
from donutsite.parsers import JSONParser, content_coded
from donutsite.serializers import CLIENT_ERRORS, QUERY_ERRORS, NoUnknownFieldsMixin, StrictIntegerField
from inventory import selectors, services
from inventory.errors import RestockNotFound, SaleNotFound
from inventory.serializers import (
    ErrorOut,
    OutOfStockOut,
    ProductFilterIn,
    ProductOut,
    RestockFilterIn,
    RestockOut,
    SaleFilterIn,
    SaleIn,
    SaleOut,
    sale_items_validate,
    sale_representation,
)

# Printable ASCII, no spaces, no comma: servers and proxies join two header lines into one value with a
# comma, so "a,b" may be two keys, and which one the client meant is anyone's guess.
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x2b\x2d-\x7e]{1,255}$")

_errors = CLIENT_ERRORS
# The catalogue is public, but a request that does send a key is authenticated and rate limited.
_public_errors = {
    401: OpenApiResponse(ErrorOut, description="A bad API key was sent (none is needed)."),
    429: _errors[429],
}


def _not_found(description: str, message: str) -> OpenApiResponse:
    """A detail view's 404 in the schema, with the answer it gives as its example."""
    example = OpenApiExample("not_found", value={"code": "not_found", "message": message}, status_codes=["404"])
    return OpenApiResponse(ErrorOut, description=f"{description} (`not_found`).", examples=[example])


class ListPagination(PageNumberPagination):
    """Every list: 50 a page, `?page=N`; a page past the last is a 404 (`not_found`)."""

    page_size = 50

    def get_paginated_response_schema(self, schema):
        # Every page sends all four keys (`next` and `previous` are null at the ends): DRF's schema
        # requires only two, and a generated client made the links optional as well as nullable.
        paginated = super().get_paginated_response_schema(schema)
        paginated["required"] = ["count", "next", "previous", "results"]
        return paginated


def _filters(serializer_class, request) -> dict:
    # A plain dict, not the QueryDict: DRF reads a blank value in a QueryDict as "not given", so `?status=`
    # would be ignored instead of refused like any other bad value.
    query = request.query_params.dict()
    query.pop(api_settings.URL_FORMAT_OVERRIDE, None)  # ?format=: DRF's own, read by content negotiation
    # `?status=pending&status=placed` would silently list one of the two (dict() keeps the last): refused.
    repeated = sorted(name for name in query if len(request.query_params.getlist(name)) > 1)
    if repeated:
        raise serializers.ValidationError({name: ["Given more than once; give it once."] for name in repeated})
    filters = serializer_class(data=query)
    filters.is_valid(raise_exception=True)
    return filters.validated_data


class SaleCreateView(generics.GenericAPIView):
    """POST: sell; GET: the client's own sales (the two share the collection's URL)."""

    counts_sale_outcomes = True  # donutsite/drf.py counts its POST refusals as sale outcomes
    serializer_class = SaleOut
    pagination_class = ListPagination

    @extend_schema(
        operation_id="sale_list",
        parameters=[SaleFilterIn],
        examples=parameter_examples("A week of sales", created_after="2026-12-01", created_before="2026-12-08", page=1),
        responses={
            200: SaleOut(many=True),
            **QUERY_ERRORS,
            404: OpenApiResponse(ErrorOut, description="A page past the last (`not_found`)."),
        },
        description="Your own sales, newest first, 50 a page.",
    )
    def get(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response([sale_representation(sale, sale.lines.all()) for sale in page])

    def get_queryset(self):
        # Also asked by make run's browsable API, to draw a filter form for the list.
        filters = _filters(SaleFilterIn, self.request)
        return selectors.sale_list(
            client=self.request.auth,
            created_after=filters.get("created_after"),
            created_before=filters.get("created_before"),
        )

    @extend_schema(
        operation_id="sale_create",
        description="Buy 1-20 SKUs, 1-100 of each, all or nothing: 201 with the sale, or 409 `out_of_stock` "
        "naming each short SKU with what is available and its restock (nothing is sold; subscribe a device "
        "to the SKU to hear when it is back). With an `Idempotency-Key`, a retry of the same body gets the "
        "first answer again.",
        request=SaleIn,
        examples=[
            # Swagger's "Try it out" starts from this body: SKUs of the demo catalogue (manage.py seed_demo).
            OpenApiExample(
                "Two glazed and a Boston cream",
                value={"items": [{"sku": "GLAZED", "quantity": 2}, {"sku": "BOSTON", "quantity": 1}]},
                request_only=True,
            ),
            # A key per purchase, the same on each retry of it: a phone that timed out buys once.
            *parameter_examples(
                "Two glazed and a Boston cream",
                OpenApiParameter.HEADER,
                **{"Idempotency-Key": "3f1c9a52-8d1e-4e0b-9c57-2b6f1a0d4e7c"},
            ),
        ],
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                str,
                OpenApiParameter.HEADER,
                description="Up to 255 printable ASCII characters, no space, no comma (two Idempotency-Key headers "
                "arrive joined by one, and are refused); a retry with the same key and body replays the first answer "
                "(header `Idempotent-Replayed: true`). Sent empty, it is refused like any other malformed key.",
                pattern=IDEMPOTENCY_KEY.pattern,
            ),
            OpenApiParameter(
                "Location", str, OpenApiParameter.HEADER, response=[201], required=True, description="The sale."
            ),
            OpenApiParameter(
                "Idempotent-Replayed",
                str,
                OpenApiParameter.HEADER,
                response=[201, 409],
                enum=["true"],
                description="Present when this is the stored first answer to a request with the same "
                "Idempotency-Key and body: the sale, or the out_of_stock refusal (even if stock came back since).",
            ),
        ],
        responses={
            201: SaleOut,
            **_errors,
            404: OpenApiResponse(ErrorOut, description="A SKU we do not sell (`unknown_sku`)."),
            409: OpenApiResponse(OutOfStockOut, description="Not enough stock (`out_of_stock`); nothing sold."),
            422: OpenApiResponse(ErrorOut, description="Key reused with another body (`idempotency_key_reused`)."),
        },
    )
    def post(self, request):
        key = request.headers.get("Idempotency-Key")
        # Sent but empty is malformed, not "no key": a client whose key variable was empty would buy twice on
        # a retry.
        if key is not None and not IDEMPOTENCY_KEY.match(key):
            raise serializers.ValidationError(
                {"Idempotency-Key": ["1 to 255 printable ASCII characters, no space, no comma; send the header once."]}
            )
        data, headers = _sale(request.auth, sale_items_validate(request.data), key)
        return Response(data, status=status.HTTP_201_CREATED, headers=headers)

    @property
    def _plain_post_fits(self) -> bool:
        # The plain POST authenticates and permits as these two classes do, and knows no other: a view or a
        # setting that adds or swaps one sends every POST to DRF's dispatch.
        authenticators, permissions = list(self.authentication_classes), list(self.permission_classes)
        return authenticators == [auth.ApiKeyAuthentication] and permissions == [IsAuthenticated]

    def dispatch(self, request, *args, **kwargs):
        if request.method == "POST" and (response := self._post_plain(request)) is not None:
            return response
        return super().dispatch(request, *args, **kwargs)

    def _post_plain(self, request) -> HttpResponse | None:
        """The usual POST (an API key this process has cached, JSON in and out, a valid body and key, within
        the client's rate), answered without DRF's request, response and exception machinery but with the
        same functions as post() and DRF's dispatch: without that machinery a sold-out rush is refused about
        15% faster (docs/benchmarks.md, "Sales"). None for anything else, having changed nothing (the
        throttle's token is taken last, once the answer is this path's), and DRF's dispatch answers it in
        full: test_sale_dispatch holds that a client cannot tell the two apart."""
        client = auth.api_client_cached(request)
        if (
            client is None
            or not self._plain_post_fits
            or request.content_type != "application/json"
            # DRF's negotiation reads no Content-Type over this length (a 415), however JSON its type.
            or len(request.META.get("CONTENT_TYPE", "")) > self.content_negotiation_class.max_media_type_length
            or content_coded(request.headers)
            or request.headers.get("Accept", "*/*") not in ("*/*", "application/json")
            or request.META.get("QUERY_STRING")
        ):
            return None
        key = request.headers.get("Idempotency-Key")
        if key is not None and not IDEMPOTENCY_KEY.match(key):
            return None
        try:
            raw = request.body
        except ValueError:  # a Content-Length that is no number (DRF reads no body)
            return None
        if len(raw) > PLAIN_BODY_MAX_BYTES:
            return None  # DRF throttles before it parses: a client over its rate costs no parse of a big body
        try:
            items = sale_items_validate(JSONParser().parse(io.BytesIO(raw)))
        except APIException:
            return None
        drf_request = Request(request)
        drf_request.user, drf_request.auth = auth.ClientUser(client), client
        if not all(throttle.allow_request(drf_request, self) for throttle in self.get_throttles()):
            return None
        try:
            body, headers = _sale(client, items, key)
            status_code, routine = status.HTTP_201_CREATED, False
        except Exception as exc:
            answer = drf.error_answer(exc)
            if answer is None:
                raise  # a bug: Django logs it and answers 500, as DRF's dispatch would
            drf.sale_outcome_count(answer)
            body, headers, status_code, routine = answer.body, answer.headers, answer.status, answer.routine
        response = HttpResponse(_JSON.render(body), status=status_code, content_type=_JSON.media_type)
        for name, value in headers.items():
            response[name] = value
        # Then the view's own, as DRF's finalize_response adds them: Vary (`Accept` under DEBUG) added to.
        view_headers = self.default_response_headers
        if vary := view_headers.pop("Vary", None):
            patch_vary_headers(response, [vary])
        for name, value in view_headers.items():
            response[name] = value
        if routine:
            response._has_been_logged = True  # as DRF's exception handler marks it: no warning line
        return response


_JSON = JSONRenderer()
PLAIN_BODY_MAX_BYTES = 16_384  # a sale of 20 lines with 64-character SKUs is under 2 KB


def _sale(client, items: list[dict], key: str | None) -> tuple[dict, dict]:
    """Sell (services.sale_create raises a refusal); the 201's body and headers."""
    items = [services.SaleItem(item["sku"], item["quantity"]) for item in items]
    outcome = services.sale_create(client=client, items=items, idempotency_key=key or "")
    if not outcome.replayed:  # a replay sold nothing new
        sale_counters.count_sale_outcome("sold")
    headers = {"Location": f"/api/v1/sales/{outcome.sale.pk}/"}
    if outcome.replayed:
        headers["Idempotent-Replayed"] = "true"
    return sale_representation(outcome.sale, outcome.lines), headers


class SaleDetailView(APIView):
    @extend_schema(
        operation_id="sale_get",
        examples=parameter_examples("Sale 1", OpenApiParameter.PATH, sale_id=1),
        responses={
            200: SaleOut,
            401: _errors[401],
            404: _not_found("No sale of yours has this id", "No such sale."),
            429: _errors[429],
        },
    )
    def get(self, request, sale_id: int):
        sale = selectors.sale_get(client=request.auth, sale_id=sale_id)
        if sale is None:
            raise SaleNotFound()
        return Response(sale_representation(sale, sale.lines.all()))


class ProductListView(generics.ListAPIView):
    permission_classes = [AllowAny]
    serializer_class = ProductOut
    pagination_class = ListPagination

    @extend_schema(
        operation_id="product_list",
        parameters=[ProductFilterIn],
        examples=parameter_examples("The first page", page=1),
        responses={
            200: ProductOut(many=True),
            400: QUERY_ERRORS[400],
            **_public_errors,
            404: OpenApiResponse(ErrorOut, description="A page past the last (`not_found`)."),
        },
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        _filters(ProductFilterIn, self.request)
        return selectors.product_list()


class ProductDetailView(APIView):
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="product_get",
        examples=parameter_examples("The viral one", OpenApiParameter.PATH, sku="VIRAL"),
        responses={
            200: ProductOut,
            404: OpenApiResponse(ErrorOut, description="A SKU we do not sell (`unknown_sku`)."),
            **_public_errors,
        },
    )
    def get(self, request, sku: str):
        return Response(ProductOut(selectors.product_get(sku=sku)).data)


class RestockListView(generics.ListAPIView):
    serializer_class = RestockOut
    pagination_class = ListPagination

    @extend_schema(
        operation_id="restock_list",
        parameters=[RestockFilterIn],
        examples=parameter_examples("GLAZED restocks the factory has taken", sku="GLAZED", status="placed", page=1),
        responses={
            200: RestockOut(many=True),
            **QUERY_ERRORS,
            404: OpenApiResponse(
                ErrorOut, description="A page past the last (`not_found`), or a SKU we never had (`unknown_sku`)."
            ),
        },
    )
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    def get_queryset(self):
        filters = _filters(RestockFilterIn, self.request)
        return selectors.restock_list(sku=filters.get("sku"), status=filters.get("status"))


class RestockDetailView(APIView):
    @extend_schema(
        operation_id="restock_get",
        examples=parameter_examples("Restock 1", OpenApiParameter.PATH, restock_id=1),
        description="One restock: the one an `out_of_stock` refusal names for a short SKU, say, to see whether it "
        "is placed, when the factory expects it, and whether it was fulfilled. `pending` (not yet taken by the "
        "factory) and `placed` (taken; `expected_at` says when) are on their way. `fulfilled` (`quantity_received` "
        "came in, possibly fewer than ordered) and `cancelled` (the factory cancelled it; none came) are over. "
        "`failed` is not final: ops are paged, and the same restock becomes `pending` again when they redrive it "
        "or its SKU runs short again, or `placed` or `fulfilled` if the factory took it after all; keep polling "
        "it, slowly (an `out_of_stock` names the restock to follow, a new one if the factory refused this one), "
        "or subscribe a device to the SKU for a push when it is back.",
        responses={
            200: RestockOut,
            401: _errors[401],
            404: _not_found("No restock has this id", "No such restock."),
            429: _errors[429],
        },
    )
    def get(self, request, restock_id: int):
        restock = selectors.restock_get(restock_id=restock_id)
        if restock is None:
            raise RestockNotFound()
        return Response(RestockOut(restock).data)


class SubscriptionIn(NoUnknownFieldsMixin, serializers.Serializer):
    device_id = StrictIntegerField(min_value=1)


class SubscriptionOut(serializers.Serializer):
    id = serializers.IntegerField()
    sku = serializers.CharField()
    device_id = serializers.IntegerField()
    created_at = serializers.DateTimeField()


class ProductSubscribeView(APIView):
    @extend_schema(
        operation_id="product_subscribe",
        request=SubscriptionIn,
        examples=[
            *parameter_examples("Device 1 waits for CRULLER", OpenApiParameter.PATH, sku="CRULLER"),
            OpenApiExample("Device 1 waits for CRULLER", value={"device_id": 1}, request_only=True),
        ],
        responses={
            201: SubscriptionOut,
            200: SubscriptionOut,
            **_errors,
            404: OpenApiResponse(
                ErrorOut, description="A SKU we do not sell (`unknown_sku`), or not your device (`unknown_device`)."
            ),
        },
        description="Ask for one push when this SKU is back in stock, from none (a delivery, a stock adjustment, "
        "or back on sale): subscribed while some are left, the push comes once it has sold out and come back. "
        "The device is one this client registered with POST /api/v1/devices/.",
    )
    def post(self, request, sku: str):
        body = SubscriptionIn(data=request.data)
        body.is_valid(raise_exception=True)
        subscription, created = services.product_subscribe(
            client=request.auth, sku=sku, device_id=body.validated_data["device_id"]
        )
        return Response(
            SubscriptionOut(subscription).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK
        )


class ProductUnsubscribeView(APIView):
    @extend_schema(
        operation_id="product_unsubscribe",
        examples=parameter_examples(
            "Device 1 no longer waits for CRULLER", OpenApiParameter.PATH, sku="CRULLER", device_id=1
        ),
        responses={
            204: OpenApiResponse(description="The device is not subscribed to this SKU (any more)."),
            401: _errors[401],
            404: OpenApiResponse(
                ErrorOut,
                description="Not your device (`unknown_device`), or a SKU we do not sell that the device is not "
                "subscribed to either (`unknown_sku`).",
            ),
            429: _errors[429],
        },
        description="Unsubscribe one of your devices from this SKU: no push when it is back in stock, including "
        "one owed and not yet sent. Not subscribed (never, or unsubscribed before) answers 204 too, so a retry "
        "is safe. A SKU taken off sale can still be unsubscribed from.",
    )
    def delete(self, request, sku: str, device_id: int):
        services.product_unsubscribe(client=request.auth, sku=sku, device_id=device_id)
        return Response(status=status.HTTP_204_NO_CONTENT)

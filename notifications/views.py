from django.core.validators import RegexValidator
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from donutsite.openapi import parameter_examples
from donutsite.serializers import CLIENT_ERRORS, ChoiceField, ErrorOut, NoUnknownFieldsMixin, StrictCharField
from notifications.devices import device_register, device_unregister
from notifications.models import Device


class DeviceIn(NoUnknownFieldsMixin, serializers.Serializer):
    """A customer device's FCM token; unknown fields and non-string values are refused."""

    token = StrictCharField(
        max_length=255,
        min_length=8,
        validators=[RegexValidator(r"^[\x21-\x7e]+\Z", "Printable ASCII characters, no spaces (an FCM token).")],
    )
    platform = ChoiceField(
        choices=Device.Platform.choices,
        error_messages={"invalid_choice": f'"{{input}}" is not a platform we push to: {", ".join(Device.Platform)}.'},
    )
    user_ref = StrictCharField(max_length=100, required=False, default="", allow_blank=True)


class DeviceOut(serializers.ModelSerializer):
    class Meta:
        model = Device
        fields = ["id", "platform", "user_ref", "is_active", "created_at", "updated_at"]
        # Every answer sends each of them (null included): required in the schema, where a model default
        # would make one optional.
        extra_kwargs = {name: {"required": True} for name in fields}


class DeviceRegisterView(APIView):
    @extend_schema(
        operation_id="device_register",
        request=DeviceIn,
        examples=[
            OpenApiExample(
                "A customer's Android phone",
                value={"token": "demo-fcm-token-1", "platform": "android", "user_ref": "customer-42"},
                request_only=True,
            ),
        ],
        responses={
            201: DeviceOut,
            200: OpenApiResponse(DeviceOut, description="A token this client registered before: updated."),
            **CLIENT_ERRORS,
        },
        description="Register a customer device's FCM token for back-in-stock pushes. Devices belong to the client "
        "that registered them: re-registering one of your own tokens updates that device (200); any other token "
        "makes a new device of yours (201), whether or not another client registered it, whose device is "
        "neither changed nor revealed.",
    )
    def post(self, request):
        body = DeviceIn(data=request.data)
        body.is_valid(raise_exception=True)
        device, created = device_register(client=request.auth, **body.validated_data)
        return Response(DeviceOut(device).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class DeviceUnregisterView(APIView):
    @extend_schema(
        operation_id="device_unregister",
        examples=parameter_examples("Device 1", OpenApiParameter.PATH, device_id=1),
        responses={
            204: OpenApiResponse(description="Unregistered, now or before: the device is pushed no more."),
            401: CLIENT_ERRORS[401],
            404: OpenApiResponse(ErrorOut, description="Not a device this client registered (`unknown_device`)."),
            429: CLIENT_ERRORS[429],
        },
        description="Unregister one of your devices (a user signed out, or uninstalled the app): it gets no more "
        "pushes, and its back-in-stock subscriptions are deleted, pushes still owed included. A device already "
        "unregistered answers 204 again, so a retry is safe. Registering its token again makes it active again "
        "(200, the same id), with no subscriptions.",
    )
    def delete(self, request, device_id: int):
        device_unregister(client=request.auth, device_id=device_id)
        return Response(status=status.HTTP_204_NO_CONTENT)

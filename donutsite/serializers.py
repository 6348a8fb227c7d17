"""What every app's API shares: strict input fields, and the one error shape (donutsite.drf) as schema
components."""

from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers
from rest_framework.settings import api_settings

from donutsite.errors import echoed


class StrictIntegerField(serializers.IntegerField):
    """An integer and nothing else: no "2", no 2.0, no true."""

    default_error_messages = {"invalid": "Must be a whole number."}

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictCharField(serializers.CharField):
    """A string and nothing else, judged as sent: DRF would quietly turn 12 into "12", and would trim
    whitespace before checking the length, so that a string longer than the schema's maxLength passed."""

    default_error_messages = {"invalid": "Must be a string."}

    def __init__(self, **kwargs):
        kwargs.setdefault("trim_whitespace", False)
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class ChoiceField(serializers.ChoiceField):
    """DRF's, repeating a value it refuses cut to its first characters (donutsite.errors.echoed). A value
    that is not a string is "Must be a string.", as StrictCharField says: DRF would repeat it in Python's
    spelling ("['ios']" for ["ios"], "True" for true), which is not what the client sent."""

    default_error_messages = {"invalid": "Must be a string."}

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)

    def fail(self, key, **kwargs):
        if "input" in kwargs:
            kwargs["input"] = echoed(kwargs["input"])
        super().fail(key, **kwargs)


UNKNOWN_FIELDS_NAMED = 10


class NoUnknownFieldsMixin:
    """Reject fields we do not know, so a typo ("quantiy") is a 400 instead of being ignored. Each is named
    as sent, a long name cut (donutsite.errors.echoed); past the first UNKNOWN_FIELDS_NAMED, one line counts
    the rest: naming all of them, a 2 MB body of 120,000 took seconds of a worker's CPU to answer with 3.4 MB."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                errors = {echoed(name): ["Unknown field."] for name in unknown[:UNKNOWN_FIELDS_NAMED]}
                if len(unknown) > UNKNOWN_FIELDS_NAMED:
                    more = len(unknown) - UNKNOWN_FIELDS_NAMED
                    errors[api_settings.NON_FIELD_ERRORS_KEY] = [f"And {more} more unknown fields."]
                raise serializers.ValidationError(errors)
        return super().to_internal_value(data)


class NoUnknownFieldsScheme(OpenApiSerializerExtension):
    """The schema says so too (`additionalProperties: false`), so clients and fuzzers know."""

    target_class = NoUnknownFieldsMixin
    match_subclasses = True

    def map_serializer(self, auto_schema, direction):
        schema = auto_schema._map_serializer(self.target, direction, bypass_extensions=True)
        return {**schema, "additionalProperties": False}


class ErrorOut(serializers.Serializer):
    code = serializers.CharField(help_text="Stable, machine-readable error code.")
    message = serializers.CharField()


class ValidationErrorOut(ErrorOut):
    # `malformed_json` and domain refusals answer 400 without `errors`.
    errors = serializers.DictField(
        required=False,
        help_text="Field name -> list of problems (`validation_error`); for a list of objects, such as a sale's "
        "`items`, a problem of one item is under its index instead: index -> field name -> list of problems.",
    )


# What any authenticated endpoint that takes a body may answer besides its own responses.
CLIENT_ERRORS = {
    400: OpenApiResponse(ValidationErrorOut, description="Invalid body (`validation_error`, `malformed_json`)."),
    401: OpenApiResponse(ErrorOut, description="Missing or bad API key."),
    415: OpenApiResponse(
        ErrorOut, description="A body that is not JSON, or sent compressed (`unsupported_media_type`)."
    ),
    429: OpenApiResponse(ErrorOut, description="Rate limited (`throttled`); see Retry-After."),
}
# The same for a GET, whose 400 is about its query parameters, and which takes no body.
QUERY_ERRORS = {
    **{status: response for status, response in CLIENT_ERRORS.items() if status != 415},
    400: OpenApiResponse(ValidationErrorOut, description="Invalid query parameters (`validation_error`)."),
}

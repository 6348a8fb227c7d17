"""Device registration answers as its schema says (regressions found by test_schema_fuzz)."""

import pytest

from notifications.models import Device

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "fields",
    [{"user_ref": 0}, {"user_ref": ["u"]}, {"token": 1234567890}],
    ids=["number-user-ref", "list-user-ref", "number-token"],
)
def test_non_string_values_are_refused_not_turned_into_strings(client_app, fields):
    body = {"token": "fcm-token-abcdef", "platform": "android", **fields}

    response = client_app.post("/api/v1/devices/", body, format="json")

    assert response.status_code == 400 and response.json()["code"] == "validation_error"
    assert set(response.json()["errors"]) == set(fields)
    assert not Device.objects.exists()


def test_registration_documents_its_refusals_and_strict_body(client):
    schema = client.get("/api/schema/", {"format": "json"}).json()

    responses = schema["paths"]["/api/v1/devices/"]["post"]["responses"]
    assert {"400", "401", "429"} <= set(responses)
    assert schema["components"]["schemas"]["DeviceInRequest"]["additionalProperties"] is False


@pytest.mark.parametrize("token", ["\t" + "t" * 255, "t" * 255 + " "], ids=["leading-tab", "trailing-space"])
def test_a_token_over_the_documented_length_is_refused_whitespace_and_all(client_app, token):
    response = client_app.post("/api/v1/devices/", {"token": token, "platform": "android"}, format="json")

    assert response.status_code == 400 and set(response.json()["errors"]) == {"token"}
    assert not Device.objects.exists()


def test_every_key_a_device_answer_sends_is_required_in_its_schema(client_app, client):
    # A client generated from the schema makes a property left out of `required` optional (`is_active?`).
    schema = client.get("/api/schema/", {"format": "json"}).json()

    response = client_app.post("/api/v1/devices/", {"token": "fcm-token-abcdef", "platform": "ios"}, format="json")

    assert response.status_code == 201
    assert set(schema["components"]["schemas"]["DeviceOut"]["required"]) == set(response.json())

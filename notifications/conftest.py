import pytest
from django.test import override_settings

from notifications.channels import registry
from testsupport.fake_slack_fcm import FcmStandIn, SlackStandIn


@pytest.fixture
def slack():
    with SlackStandIn() as standin:
        yield standin


@pytest.fixture
def fcm():
    with FcmStandIn(token="fcm-test-token", project_id="donuts") as standin:
        yield standin


@pytest.fixture
def channels_at(slack, fcm):
    """Settings pointing both channels at the stand-ins; adapters are rebuilt for them."""
    registry.channels_forget()
    with override_settings(
        SLACK_WEBHOOK_URL=slack.url + "/services/T/B/x",
        FCM_ENDPOINT=fcm.url,
        FCM_PROJECT_ID="donuts",
        FCM_ACCESS_TOKEN="fcm-test-token",
        FCM_OPS_TOPIC="ops-alerts",
        FLOWER_URL="http://flower.example",
    ):
        yield
    registry.channels_forget()

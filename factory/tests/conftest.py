import pytest


@pytest.fixture
def phones(settings):
    """Slack and FCM stand-ins, with the channels pointed at them: (slack, fcm)."""
    from notifications.channels import registry
    from testsupport.fake_slack_fcm import FcmStandIn, SlackStandIn

    with SlackStandIn() as slack, FcmStandIn(token="fcm-test-token", project_id="donuts") as fcm:
        settings.SLACK_WEBHOOK_URL = slack.url + "/services/T/B/x"
        settings.FCM_ENDPOINT, settings.FCM_PROJECT_ID, settings.FCM_ACCESS_TOKEN = fcm.url, "donuts", "fcm-test-token"
        registry.channels_forget()
        try:
            yield slack, fcm
        finally:
            registry.channels_forget()

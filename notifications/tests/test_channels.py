"""Channel adapters against the real stand-in HTTP servers (no database, no mocks of HTTP)."""

import json
import logging
import re
import socket
import threading
import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.oauth2 import service_account

from notifications.channels.base import Message
from notifications.channels.fcm import FCM_SCOPE, FcmChannel
from notifications.channels.log import LogChannel
from notifications.channels.slack import SlackChannel, to_blocks
from notifications.errors import ChannelError, TokenUnregistered
from testsupport.fake_slack_fcm import FcmStandIn, SlackStandIn, describe, fcm_error


def make_message(**overrides) -> Message:
    values = {
        "title": "Sold out: Glazed",
        "text": "The last Glazed went at 10:02.",
        "severity": "warning",
        "kind": "sold_out",
        "alert_id": 42,
        "facts": {"SKU": "GLAZED", "Restock": "#17 placed"},
        "links": {"Admin": "https://donuts.example.com/admin/inventory/product/3/"},
    }
    values.update(overrides)
    return Message(**values)


def free_port() -> int:
    """A port nothing listens on (bound once, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fcm_channel(standin: FcmStandIn, **kwargs) -> FcmChannel:
    kwargs.setdefault("access_token", "fcm-test-token")
    return FcmChannel(standin.url, "donuts", **kwargs)


# LogChannel --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("severity", "level"), [("info", logging.INFO), ("warning", logging.WARNING), ("critical", logging.ERROR)]
)
def test_log_channel_writes_one_line_at_the_severity_level(caplog, severity, level):
    caplog.set_level(logging.INFO, logger="donutsite.alerts")

    LogChannel().send(make_message(severity=severity, title="Factory down\nagain"))

    [record] = [r for r in caplog.records if r.name == "donutsite.alerts"]
    assert record.levelno == level
    line = record.getMessage()
    assert "\n" not in line
    assert "id=42" in line and "Factory down" in line and "SKU='GLAZED'" in line


# Slack: message content --------------------------------------------------------------------------


def test_to_blocks_has_header_text_facts_links_and_alert_id():
    blocks = to_blocks(make_message(severity="critical"))

    assert [b["type"] for b in blocks] == ["header", "section", "section", "context"]
    assert blocks[0]["text"] == {"type": "plain_text", "text": ":rotating_light: Sold out: Glazed", "emoji": True}
    assert blocks[1]["text"] == {"type": "mrkdwn", "text": "The last Glazed went at 10:02."}
    assert [f["text"] for f in blocks[2]["fields"]] == ["*SKU*\nGLAZED", "*Restock*\n#17 placed"]
    link_text, meta_text = (e["text"] for e in blocks[3]["elements"])
    assert link_text == "<https://donuts.example.com/admin/inventory/product/3/|Admin>"
    assert meta_text == "critical · sold_out · alert #42"


def test_to_blocks_escapes_control_characters_and_drops_non_http_links():
    message = make_message(
        title="<b> & co",
        text="Ping <!channel> & <https://evil.example|click>",
        facts={"Note <x>": "a & b > c"},
        links={"Admin & more": "https://donuts.example.com/a?x=1&y=<2>", "Bad": "javascript:alert(1)"},
    )

    blocks = to_blocks(message)

    assert blocks[0]["text"]["text"] == ":warning: <b> & co"  # plain_text is not parsed: left as typed
    assert blocks[1]["text"]["text"] == "Ping &lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;"
    assert blocks[2]["fields"][0]["text"] == "*Note &lt;x&gt;*\na &amp; b &gt; c"
    links = blocks[3]["elements"][0]["text"]
    assert links == "<https://donuts.example.com/a?x=1&amp;y=%3C2%3E|Admin &amp; more>"
    assert "javascript" not in json.dumps(blocks)


def test_slack_send_posts_fallback_text_and_blocks(slack):
    message = make_message(text="Stock <0> & falling")

    SlackChannel(f"{slack.url}/services/T000/B000/XXXX").send(message)

    [request] = slack.wait_for(1)
    assert request["method"] == "POST" and request["path"] == "/services/T000/B000/XXXX"
    assert request["headers"]["content-type"].startswith("application/json")
    assert request["status"] == 200
    body = request["body"]
    assert body["text"] == ":warning: [WARNING] Sold out: Glazed: Stock &lt;0&gt; &amp; falling"
    assert body["blocks"] == to_blocks(message)
    assert SlackStandIn.title_of(request) == ":warning: Sold out: Glazed"


def test_slack_long_message_is_cut_to_block_kit_limits(slack):
    message = make_message(
        title="T" * 400,
        text="<&>" * 2000,
        facts={f"fact {i}": "v" * 3000 for i in range(13)},
        links={f"link {i}": f"https://donuts.example.com/{'x' * 500}/{i}" for i in range(10)},
    )

    SlackChannel(slack.url).send(message)  # the stand-in answers 400 invalid_blocks past Slack's limits

    [request] = slack.wait_for(1)
    assert request["status"] == 200
    sections = [b for b in request["body"]["blocks"] if b["type"] == "section" and "fields" in b]
    assert [len(s["fields"]) for s in sections] == [10, 3]
    assert request["body"]["blocks"][1]["text"]["text"].endswith("…")


def test_slack_webhook_url_stays_out_of_debug_logs(slack, caplog):
    caplog.set_level(logging.DEBUG)

    SlackChannel(f"{slack.url}/services/T000/B000/SECRET").send(make_message())
    slack.fail_next(500)
    with pytest.raises(ChannelError):
        SlackChannel(f"{slack.url}/services/T000/B000/SECRET").send(make_message())

    assert not [r for r in caplog.records if "SECRET" in r.getMessage()]


# Slack: failures ---------------------------------------------------------------------------------


def test_slack_429_waits_retry_after_then_retries_once(slack):
    slack.fail_next(429, "rate_limited", {"Retry-After": "1"})

    SlackChannel(slack.url).send(make_message())

    first, second = slack.wait_for(2)
    assert [first["status"], second["status"]] == [429, 200]
    assert second["body"] == first["body"]
    assert second["time"] - first["time"] >= 1.0  # slack_sdk slept Retry-After before the second attempt


def test_slack_429_twice_is_transient_with_retry_after(slack):
    slack.fail_next(429, "rate_limited", {"Retry-After": "1"}, times=2)

    with pytest.raises(ChannelError) as caught:
        SlackChannel(slack.url).send(make_message())

    assert caught.value.transient and caught.value.status_code == 429
    assert caught.value.retry_after == 1.0
    assert [r["status"] for r in slack.received] == [429, 429]


def test_slack_429_with_a_long_retry_after_is_handed_back_not_slept(slack):
    slack.fail_next(429, "rate_limited", {"Retry-After": "120"})

    with pytest.raises(ChannelError) as caught:
        SlackChannel(slack.url).send(make_message())

    assert caught.value.transient and caught.value.retry_after == 120.0
    assert len(slack.received) == 1


def test_slack_persisting_500_is_transient(slack):
    slack.fail_next(500, times=5)

    with pytest.raises(ChannelError) as caught:
        SlackChannel(slack.url).send(make_message())

    assert caught.value.transient and caught.value.status_code == 500
    assert "rollup_error" in str(caught.value)
    assert len(slack.received) == 1  # no server-error retry in-process: the task's retry handles it


@pytest.mark.parametrize(
    ("status", "body"), [(404, "no_service"), (403, "action_prohibited"), (410, "channel_is_archived")]
)
def test_slack_4xx_is_permanent_with_slacks_reason(slack, status, body):
    slack.fail_next(status, body)

    with pytest.raises(ChannelError) as caught:
        SlackChannel(slack.url).send(make_message())

    assert not caught.value.transient and caught.value.status_code == status
    assert body in str(caught.value)


def test_slack_invalid_blocks_is_permanent(slack):
    slack.fail_next(400, "invalid_blocks")

    with pytest.raises(ChannelError) as caught:
        SlackChannel(slack.url).send(make_message())

    assert not caught.value.transient and "invalid_blocks" in str(caught.value)


def test_slack_that_never_answers_is_transient_and_not_posted_twice(slack):
    slack.hang_next()

    with pytest.raises(ChannelError) as caught:
        SlackChannel(slack.url, timeout=0.3).send(make_message())

    assert caught.value.transient and caught.value.status_code is None
    assert len(slack.received) == 1  # a read timeout is not retried: Slack may have posted it already


def test_a_stand_in_answering_a_sender_that_gave_up_prints_one_line_not_a_traceback(slack, capfd):
    """The stand-in answers only after our Slack adapter timed out and hung up, as it does when slow on
    purpose. Writing to the closed connection raised BrokenPipeError (or ConnectionResetError), and the server
    printed its traceback into make run's output, where it read as a crash of ours."""
    gave_up = threading.Event()
    slack.on_receive = lambda record: gave_up.wait(10)  # answers once the sender has hung up
    with pytest.raises(ChannelError):
        SlackChannel(slack.url, timeout=0.3).send(make_message())
    gave_up.set()

    err = ""
    for _ in range(100):  # until the stand-in's thread has written its answer and said what became of it
        err += capfd.readouterr().err
        if "hung up" in err or re.search(r"^(BrokenPipe|ConnectionReset)Error", err, re.MULTILINE):
            break
        time.sleep(0.1)
    assert "Traceback" not in err
    assert re.fullmatch(r"slack stand-in: the sender at 127\.0\.0\.1:\d+ hung up \(\w+Error\), [^\n]+\n", err)


def test_slack_connection_refused_is_transient():
    with pytest.raises(ChannelError) as caught:
        SlackChannel(f"http://127.0.0.1:{free_port()}/services/x", timeout=1).send(make_message())

    assert caught.value.transient and caught.value.status_code is None


def test_slack_refusing_the_connection_leaves_the_log_to_the_caller_without_the_webhook_url(caplog):
    # slack_sdk logged each failed try at ERROR, and the webhook URL (a secret) at INFO before its retry; the
    # ChannelError raised is what the delivery logs, once per outage (notifications.channels.registry).
    caplog.set_level(logging.DEBUG)

    with pytest.raises(ChannelError):
        SlackChannel(f"http://127.0.0.1:{free_port()}/services/T000/B000/SECRET", timeout=1).send(make_message())

    assert not [r for r in caplog.records if "SECRET" in r.getMessage()]
    assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("url", ["ftp://hooks.example/services/SECRET", "http://[::1/services/SECRET"])
def test_slack_bad_webhook_url_is_permanent_and_not_quoted(url):
    with pytest.raises(ChannelError) as caught:
        SlackChannel(url, timeout=1).send(make_message())

    assert not caught.value.transient
    assert "SECRET" not in str(caught.value)


def test_slack_from_settings(settings):
    settings.SLACK_WEBHOOK_URL = ""
    assert SlackChannel.from_settings() is None

    settings.SLACK_WEBHOOK_URL = "https://hooks.slack.com/services/T/B/X"
    channel = SlackChannel.from_settings()
    assert channel is not None and channel.webhook_url == "https://hooks.slack.com/services/T/B/X"


# FCM: request shape ------------------------------------------------------------------------------


def test_fcm_topic_send_shape(fcm):
    name = fcm_channel(fcm).send_to_topic("ops-alerts", make_message())

    [request] = fcm.wait_for(1)
    assert request["method"] == "POST"
    assert request["path"] == "/v1/projects/donuts/messages:send"
    assert request["headers"]["authorization"] == "Bearer fcm-test-token"
    message = request["body"]["message"]
    assert message["topic"] == "ops-alerts" and "token" not in message
    assert message["notification"] == {"title": "Sold out: Glazed", "body": "The last Glazed went at 10:02."}
    assert message["data"] == {"kind": "sold_out", "severity": "warning", "alert_id": "42"}
    assert message["android"] == {"priority": "high"}
    assert message["apns"] == {"headers": {"apns-priority": "10"}}
    assert name == "projects/donuts/messages/1"


def test_fcm_token_send_shape_with_data_as_strings(fcm):
    message = make_message(alert_id=7, data={"sku": "GLAZED", "count": 3, "from": "reserved"})

    name = fcm_channel(fcm).send_to_token("device-token-abc", message)

    [request] = fcm.wait_for(1)
    sent = request["body"]["message"]
    assert sent["token"] == "device-token-abc" and "topic" not in sent
    assert sent["data"] == {"sku": "GLAZED", "count": "3", "kind": "sold_out", "severity": "warning", "alert_id": "7"}
    assert all(isinstance(v, str) for v in sent["data"].values())
    assert request["status"] == 200 and name.startswith("projects/donuts/messages/")


def test_make_runs_stand_in_line_names_the_sku_a_customers_push_is_about(fcm):
    """make run prints one line per push; five SKUs back at once were five identical "Back in stock" lines."""
    message = make_message(title="Back in stock", kind="back_in_stock", data={"sku": "GLAZED"})

    fcm_channel(fcm).send_to_token("device-token-abc", message)

    [request] = fcm.wait_for(1)
    assert describe(request).split(" [")[0].endswith("fcm   Back in stock: GLAZED")


def test_fcm_message_that_need_not_wake_anyone_is_sent_at_normal_priority(fcm):
    fcm_channel(fcm).send_to_token("device-token-abc", make_message(severity="info", urgent=False))

    [request] = fcm.wait_for(1)
    assert request["body"]["message"]["android"] == {"priority": "normal"}
    assert request["body"]["message"]["apns"] == {"headers": {"apns-priority": "5"}}


def test_fcm_message_without_alert_id_has_no_alert_id_key(fcm):
    fcm_channel(fcm).send_to_topic("ops-alerts", make_message(alert_id=None))

    [request] = fcm.wait_for(1)
    assert "alert_id" not in request["body"]["message"]["data"]


def test_fcm_invalid_topic_is_refused_before_sending(fcm):
    with pytest.raises(ChannelError) as caught:
        fcm_channel(fcm).send_to_topic("ops alerts!", make_message())

    assert not caught.value.transient
    assert fcm.received == []


# FCM: answers ------------------------------------------------------------------------------------


def test_fcm_unregistered_token_raises_token_unregistered(fcm):
    fcm.mark_unregistered("gone-token")

    with pytest.raises(TokenUnregistered) as caught:
        fcm_channel(fcm).send_to_token("gone-token", make_message())

    assert caught.value.status_code == 404 and not caught.value.transient
    assert "UNREGISTERED" in str(caught.value)


def test_fcm_invalid_registration_token_raises_token_unregistered(fcm):
    fcm.fail_next(
        400,
        fcm_error(
            400, "INVALID_ARGUMENT", "The registration token is not a valid FCM registration token", "INVALID_ARGUMENT"
        ),
    )

    with pytest.raises(TokenUnregistered):
        fcm_channel(fcm).send_to_token("not-a-token", make_message())


def test_fcm_a_token_of_another_project_raises_token_unregistered(fcm):
    # 403 SENDER_ID_MISMATCH is the token's fault, not our credentials': deactivate it, never retry.
    fcm.fail_next(403, fcm_error(403, "PERMISSION_DENIED", "SenderId mismatch", "SENDER_ID_MISMATCH"), times=1)

    with pytest.raises(TokenUnregistered) as caught:
        fcm_channel(fcm).send_to_token("their-project-token", make_message())

    assert caught.value.status_code == 403 and not caught.value.transient


def test_fcm_invalid_payload_is_permanent_but_not_a_token_problem(fcm):
    bad_request = {
        "@type": "type.googleapis.com/google.rpc.BadRequest",
        "fieldViolations": [{"field": "message.data[0].value", "description": "Invalid value"}],
    }
    fcm.fail_next(
        400, fcm_error(400, "INVALID_ARGUMENT", "Invalid value at 'message.data[0].value'", detail=bad_request)
    )

    with pytest.raises(ChannelError) as caught:
        fcm_channel(fcm).send_to_token("device-token", make_message())

    assert type(caught.value) is ChannelError and not caught.value.transient and caught.value.status_code == 400


def test_fcm_not_found_on_a_topic_send_is_not_token_unregistered(fcm):
    fcm.fail_next(404)

    with pytest.raises(ChannelError) as caught:
        fcm_channel(fcm).send_to_topic("ops-alerts", make_message())

    assert type(caught.value) is ChannelError and not caught.value.transient


def test_fcm_quota_exceeded_is_transient_with_retry_after(fcm):
    fcm.fail_next(429, headers={"Retry-After": "30"})

    with pytest.raises(ChannelError) as caught:
        fcm_channel(fcm).send_to_topic("ops-alerts", make_message())

    assert caught.value.transient and caught.value.status_code == 429 and caught.value.retry_after == 30.0
    assert "QUOTA_EXCEEDED" in str(caught.value)


def test_fcm_quota_exceeded_without_retry_after_waits_at_least_a_minute(fcm):
    fcm.fail_next(429)

    with pytest.raises(ChannelError) as caught:
        fcm_channel(fcm).send_to_token("device-token", make_message())

    assert caught.value.transient and caught.value.retry_after == 60.0


@pytest.mark.parametrize("status", [500, 503])
def test_fcm_server_errors_are_transient(fcm, status):
    fcm.fail_next(status)

    with pytest.raises(ChannelError) as caught:
        fcm_channel(fcm).send_to_token("device-token", make_message())

    assert caught.value.transient and caught.value.status_code == status
    assert not isinstance(caught.value, TokenUnregistered)


# Our credentials or project, not the message: sent again once ops fix them, not given up.
def test_fcm_wrong_bearer_token_is_tried_again_later(fcm):
    with pytest.raises(ChannelError) as caught:
        fcm_channel(fcm, access_token="wrong").send_to_topic("ops-alerts", make_message())

    assert caught.value.transient and caught.value.status_code == 401
    assert fcm.received[0]["headers"]["authorization"] == "Bearer wrong"


def test_fcm_permission_denied_is_tried_again_later(fcm):
    # Our service account lacks the role: no FcmError code (a token of another project has one, below).
    fcm.fail_next(403, fcm_error(403, "PERMISSION_DENIED", "The caller does not have permission"))

    with pytest.raises(ChannelError) as caught:
        fcm_channel(fcm).send_to_token("device-token", make_message())

    assert type(caught.value) is ChannelError and caught.value.transient and caught.value.status_code == 403


def test_fcm_that_never_answers_is_transient_after_the_timeout(fcm):
    fcm.hang_next()

    with pytest.raises(ChannelError) as caught:
        fcm_channel(fcm, timeout=0.2).send_to_topic("ops-alerts", make_message())

    assert caught.value.transient and caught.value.status_code is None
    assert len(fcm.received) == 1


def test_fcm_connection_refused_is_transient():
    channel = FcmChannel(f"http://127.0.0.1:{free_port()}", "donuts", access_token="t", timeout=1)

    with pytest.raises(ChannelError) as caught:
        channel.send_to_topic("ops-alerts", make_message())

    assert caught.value.transient


# FCM: service account ----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_regional_access_boundary_lookup(monkeypatch):
    """Keep google-auth off the internet.

    After minting a token, google-auth (2.6x) starts a background lookup of the service account's
    "Regional Access Boundary" at https://iamcredentials.googleapis.com/..., a host no stand-in can take.
    It is best-effort and does not affect the send; tests switch it off.
    """
    monkeypatch.setattr(service_account.Credentials, "_is_regional_access_boundary_lookup_required", lambda self: False)


def write_service_account(tmp_path, token_uri: str) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "donuts",
        "private_key_id": "test-key-1",
        "private_key": pem,
        "client_email": "fcm-sender@donut-test.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": token_uri,
    }
    path = tmp_path / "service-account.json"
    path.write_text(json.dumps(info))
    return str(path)


def test_fcm_service_account_gets_an_oauth_token_and_sends_with_it(fcm, tmp_path):
    channel = fcm_channel(fcm, access_token="", credentials_file=write_service_account(tmp_path, fcm.token_uri))

    channel.send_to_topic("ops-alerts", make_message())
    channel.send_to_token("device-token", make_message())

    first, second = fcm.wait_for(2)
    assert first["headers"]["authorization"] == "Bearer sa-token"
    assert second["headers"]["authorization"] == "Bearer sa-token"
    [token_request] = fcm.token_requests  # the token is cached for its lifetime
    assert token_request["form"]["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    claims = token_request["claims"]
    assert claims["scope"] == FCM_SCOPE
    assert claims["iss"] == "fcm-sender@donut-test.iam.gserviceaccount.com"
    # google-auth signs for Google's token endpoint whatever token_uri says; the stand-in does not check it.
    assert claims["aud"] == "https://oauth2.googleapis.com/token"


def test_fcm_service_account_with_unreachable_token_endpoint_is_transient(fcm, tmp_path):
    path = write_service_account(tmp_path, f"http://127.0.0.1:{free_port()}/token")
    channel = fcm_channel(fcm, access_token="", credentials_file=path, timeout=1)

    with pytest.raises(ChannelError) as caught:
        channel.send_to_topic("ops-alerts", make_message())

    assert caught.value.transient
    assert fcm.received == []


def test_fcm_unreadable_credentials_file_is_permanent(fcm, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")

    with pytest.raises(ChannelError) as caught:
        fcm_channel(fcm, access_token="", credentials_file=str(broken)).send_to_topic("ops-alerts", make_message())

    assert not caught.value.transient and "credentials" in str(caught.value)


# FCM: configuration ------------------------------------------------------------------------------


def test_fcm_from_settings(settings, tmp_path):
    settings.FCM_ENDPOINT = "http://127.0.0.1:8092/"
    settings.FCM_PROJECT_ID = ""
    settings.FCM_CREDENTIALS_FILE = ""
    settings.FCM_ACCESS_TOKEN = "dev-token"
    assert FcmChannel.from_settings() is None  # no project id

    settings.FCM_PROJECT_ID = "donut-dev"
    settings.FCM_ACCESS_TOKEN = ""
    assert FcmChannel.from_settings() is None  # neither credentials nor token

    settings.FCM_ACCESS_TOKEN = "dev-token"
    channel = FcmChannel.from_settings()
    assert channel is not None and channel.is_configured
    assert channel.url == "http://127.0.0.1:8092/v1/projects/donut-dev/messages:send"

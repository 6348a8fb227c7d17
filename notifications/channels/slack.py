"""Slack incoming-webhook adapter (slack_sdk's WebhookClient). HTTP only: no ORM, no Celery.

slack_sdk returns a WebhookResponse for every HTTP answer instead of raising, and raises only when no
answer came back; both are mapped to ChannelError here. 429 is retried once in-process by slack_sdk's
rate-limit handler when Retry-After is short; a longer wait is handed back as a transient ChannelError
(with retry_after) so the delivery task's backoff waits instead of a worker thread.
"""

import http.client
import logging
import urllib.error
from email.utils import parsedate_to_datetime
from time import time
from urllib.parse import quote, urlsplit

from slack_sdk.errors import SlackRequestError
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.webhook import WebhookClient

from notifications.errors import ChannelError

from .base import Message

# slack_sdk logs the request URL (the webhook URL is a secret) and whole bodies at DEBUG, the URL again at INFO
# before it retries a failed connection, and each failed try at ERROR; it decides by its logger's own level
# rather than the effective one. Every failure is raised to SlackChannel.send as a ChannelError, which the
# delivery tells (once per outage: notifications.channels.registry), so none of its lines is kept.
sdk_logger = logging.getLogger(f"{__name__}.sdk")
sdk_logger.setLevel(logging.CRITICAL)

SEVERITY_EMOJI = {"critical": ":rotating_light:", "warning": ":warning:", "info": ":information_source:"}

# Block Kit limits (https://docs.slack.dev/reference/block-kit/blocks): past them Slack answers 400 invalid_blocks.
HEADER_MAX = 150
SECTION_TEXT_MAX = 3000
FIELDS_PER_SECTION = 10
FIELD_TEXT_MAX = 2000
FIELD_VALUE_MAX = FIELD_TEXT_MAX - 210  # room for the bold label (at most 200) and the markup
CONTEXT_TEXT_MAX = 3000
FALLBACK_TEXT_MAX = 3000

# Statuses worth retrying later; every other 4xx is a problem with the webhook or the payload itself.
TRANSIENT_4XX = {408, 429}

# The longest Retry-After waited out in the send itself; a longer one goes back to the caller.
RATE_LIMIT_WAIT_MAX = 2.0


def send_bound(timeout: float, max_rate_limit_wait: float = RATE_LIMIT_WAIT_MAX) -> float:
    """The longest `SlackChannel.send` takes when each call ends within its timeout: two calls (the one
    retry) and the wait between them (Retry-After plus up to 1 s of jitter, or slack_sdk's backoff of at
    most 1.5 s after a failed connection)."""
    return 2 * timeout + max(max_rate_limit_wait + 1, 1.5)


def escape(text: str) -> str:
    """Escape Slack's mrkdwn control characters so user text cannot form links or @channel mentions."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _truncate_escaped(text: str, limit: int) -> str:
    """Truncate after escaping without cutting an entity such as `&amp;` in half."""
    escaped = escape(text)
    if len(escaped) <= limit:
        return escaped
    cut = escaped[: limit - 1]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]
    return cut + "…"


def _link(label: str, url: str) -> str | None:
    """`<url|label>` for an http(s) URL; None for anything else (javascript:, relative paths...)."""
    if urlsplit(url).scheme not in ("http", "https"):
        return None
    # `|` and `>` would end the URL part early; `&`/`<` are escaped as Slack asks for all control characters.
    safe_url = escape(quote(url, safe=":/?#[]@!$&'()*+,;=%~-._"))
    label = escape(label).replace("|", "¦")
    return f"<{safe_url}|{label}>"


def fallback_text(message: Message) -> str:
    """The top-level `text`: shown in notifications and by clients that cannot render blocks (mrkdwn)."""
    emoji = SEVERITY_EMOJI.get(message.severity, "")
    head = f"{emoji} [{message.severity.upper()}] {message.title}".strip()
    text = f"{head}: {message.text}" if message.text else head
    return _truncate_escaped(text, FALLBACK_TEXT_MAX)


def to_blocks(message: Message) -> list[dict]:
    """Block Kit blocks for a message: header, text section, facts as fields, then links and the alert id."""
    emoji = SEVERITY_EMOJI.get(message.severity, "")
    # plain_text is not parsed for links or mentions, so the title goes in unescaped.
    header = _truncate(f"{emoji} {message.title}".strip(), HEADER_MAX)
    blocks: list[dict] = [{"type": "header", "text": {"type": "plain_text", "text": header, "emoji": True}}]
    if message.text.strip():
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": _truncate_escaped(message.text, SECTION_TEXT_MAX)}}
        )
    fields = [
        {"type": "mrkdwn", "text": f"*{_truncate_escaped(label, 200)}*\n{_truncate_escaped(value, FIELD_VALUE_MAX)}"}
        for label, value in message.facts.items()
    ]
    for start in range(0, len(fields), FIELDS_PER_SECTION):
        blocks.append({"type": "section", "fields": fields[start : start + FIELDS_PER_SECTION]})
    context = []
    links = ""
    for label, url in message.links.items():
        link = _link(label, url)
        if link and len(links) + len(link) + 3 <= CONTEXT_TEXT_MAX:  # whole links only, never half of one
            links = f"{links} · {link}" if links else link
    if links:
        context.append({"type": "mrkdwn", "text": links})
    meta = f"{escape(message.severity)} · {escape(message.kind)}"
    if message.alert_id is not None:
        meta += f" · alert #{message.alert_id}"
    context.append({"type": "mrkdwn", "text": meta})
    blocks.append({"type": "context", "elements": context})
    return blocks


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None if absent or garbled."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _header(headers, name: str) -> str | None:
    for key, value in (headers or {}).items():
        if key.lower() == name.lower():
            return value[0] if isinstance(value, list) else value
    return None


class BoundedRateLimitRetryHandler(RateLimitErrorRetryHandler):
    """slack_sdk's 429 handler, but only for short integer Retry-After values.

    The stock handler sleeps `int(Retry-After) + random()` however long that is, and raises ValueError on a
    non-integer value. Longer or odd waits are left to the caller (ChannelError.retry_after) instead.
    """

    def __init__(self, max_wait: float, max_retry_count: int = 1):
        super().__init__(max_retry_count=max_retry_count)
        self.max_wait = max_wait

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if response is None or response.status_code != 429:
            return False
        raw = _header(response.headers, "Retry-After")
        try:
            wait = int(raw) if raw is not None else 0
        except ValueError:
            return False
        return 0 <= wait <= self.max_wait


class SlackChannel:
    """Posts alerts to one Slack incoming webhook. `send` returns None or raises ChannelError."""

    name = "slack"

    def __init__(self, webhook_url: str, timeout: float = 3.0, *, max_rate_limit_wait: float = RATE_LIMIT_WAIT_MAX):
        self.webhook_url = webhook_url
        self.timeout = timeout
        self.client = WebhookClient(
            webhook_url,
            timeout=timeout,  # urllib's socket timeout: applies to connect and to each read
            logger=sdk_logger,
            retry_handlers=[
                # One retry when the connection failed before Slack answered (reset, refused, DNS). A read
                # timeout raises TimeoutError, which this handler ignores: Slack may already have posted it.
                ConnectionErrorRetryHandler(max_retry_count=1),
                BoundedRateLimitRetryHandler(max_wait=max_rate_limit_wait, max_retry_count=1),
            ],
        )

    @classmethod
    def from_settings(cls) -> "SlackChannel | None":
        """The channel configured in settings, or None when Slack is not configured."""
        from django.conf import settings

        channel = cls(settings.SLACK_WEBHOOK_URL, timeout=settings.SLACK_TIMEOUT_SECONDS)
        return channel if channel.is_configured else None

    @property
    def is_configured(self) -> bool:
        return bool(self.webhook_url)

    def send(self, message: Message) -> None:
        try:
            response = self.client.send(text=fallback_text(message), blocks=to_blocks(message))
        except SlackRequestError as exc:  # a webhook URL that is not http(s); its text quotes the secret URL
            raise ChannelError("slack: the webhook URL is not an http(s) URL", transient=False) from exc
        except (OSError, http.client.HTTPException, urllib.error.URLError) as exc:
            # URLError (refused, DNS), TimeoutError, ConnectionResetError, RemoteDisconnected...
            raise ChannelError(f"slack: no answer: {type(exc).__name__}: {exc}", transient=True) from exc
        except ValueError as exc:  # urllib rejects a malformed URL (the text would quote it)
            raise ChannelError("slack: the webhook URL is malformed", transient=False) from exc

        status, body = response.status_code, (response.body or "").strip()
        if status == 200 and body == "ok":
            return
        detail = _truncate(body, 300) or "(empty body)"
        if status == 200:
            raise ChannelError(f"slack: 200 but body {detail!r}, not 'ok'", transient=False, status_code=status)
        if status >= 500 or status in TRANSIENT_4XX:
            retry_after = parse_retry_after(_header(response.headers, "Retry-After"))
            raise ChannelError(
                f"slack: HTTP {status} {detail}", transient=True, status_code=status, retry_after=retry_after
            )
        raise ChannelError(f"slack: HTTP {status} {detail}", transient=False, status_code=status)

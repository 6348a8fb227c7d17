"""Firebase Cloud Messaging HTTP v1 adapter (`POST /v1/projects/{id}/messages:send`). HTTP only.

Pages are sent at high priority and a message that need not wake anyone (`Message.urgent`) at normal.

Answers map to typed errors (https://firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode):
200 -> the message name; 404 UNREGISTERED, 403 SENDER_ID_MISMATCH or 400 about the registration token ->
TokenUnregistered (only for token sends); 429 QUOTA_EXCEEDED -> transient, Retry-After or at least 60 s as
FCM asks; 5xx, 408, timeouts and connection errors -> transient; 401/403 (our credentials or project, not
the message) -> transient too, so a push is not used up by our mistake; other 4xx -> permanent.

Auth is either a service-account JSON file (google-auth mints and refreshes OAuth tokens from its
`token_uri`) or a fixed bearer token for test and staging endpoints.
"""

import logging
import re
import threading

import google.auth.exceptions
import requests
from google.auth.transport.requests import AuthorizedSession
from google.oauth2 import service_account

from notifications.errors import ChannelError, TokenUnregistered

from .base import Message
from .slack import parse_retry_after

logger = logging.getLogger(__name__)

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
DEFAULT_ENDPOINT = "https://fcm.googleapis.com"
QUOTA_MIN_RETRY_AFTER = 60.0  # "exponential backoff with a minimum initial delay of 1 minute"
TOPIC_RE = re.compile(r"^[a-zA-Z0-9\-_.~%]{1,900}$")
RESERVED_DATA_KEYS = {"from", "notification", "message_type"}
RESERVED_DATA_PREFIXES = ("google", "gcm")
TITLE_MAX = 200
BODY_MAX = 1000  # keeps the whole payload well under FCM's 4 KB (2 KB for topics)


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def to_fcm_message(message: Message, *, topic: str | None = None, token: str | None = None) -> dict:
    """The `message` object of a messages:send request; exactly one of topic / token."""
    if (topic is None) == (token is None):
        raise ValueError("give exactly one of topic or token")
    data = {}
    for key, value in message.data.items():
        key = str(key)
        if key in RESERVED_DATA_KEYS or key.lower().startswith(RESERVED_DATA_PREFIXES):
            logger.warning("fcm: dropping reserved data key %r from alert %s", key, message.alert_id)
            continue
        data[key] = str(value)
    data["kind"] = str(message.kind)
    data["severity"] = str(message.severity)
    if message.alert_id is not None:
        data["alert_id"] = str(message.alert_id)
    body = {
        "notification": {"title": _truncate(message.title, TITLE_MAX), "body": _truncate(message.text, BODY_MAX)},
        "data": data,
        # High wakes a phone in Doze and sounds at once; normal may wait for the phone to wake, as FCM advises
        # for what is not time-critical.
        "android": {"priority": "high" if message.urgent else "normal"},
        "apns": {"headers": {"apns-priority": "10" if message.urgent else "5"}},
    }
    if topic is not None:
        return {"topic": topic, **body}
    return {"token": token, **body}


def _error_info(response: requests.Response) -> tuple[str, str, str, list[dict]]:
    """(status, message, FCM errorCode, details) from a Google API error body; blanks when it is not one."""
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        return "", _truncate(response.text.strip(), 300), "", []
    if not isinstance(error, dict):
        return "", _truncate(str(error), 300), "", []
    details = [d for d in error.get("details") or [] if isinstance(d, dict)]
    error_code = next((str(d["errorCode"]) for d in details if d.get("errorCode")), "")
    return str(error.get("status") or ""), str(error.get("message") or ""), error_code, details


def _is_bad_token(message: str, details: list[dict]) -> bool:
    """A 400 INVALID_ARGUMENT about the registration token itself, not about the payload."""
    if "registration token" in message.lower():
        return True
    return any(
        violation.get("field") == "message.token"
        for detail in details
        for violation in detail.get("fieldViolations") or []
        if isinstance(violation, dict)
    )


class FcmChannel:
    """Sends alerts through FCM HTTP v1 to a topic or one device token.

    `send_to_topic` / `send_to_token` return the message name FCM assigned, or raise ChannelError
    (TokenUnregistered when the token should be deactivated).
    """

    name = "fcm"

    def __init__(
        self,
        endpoint: str,
        project_id: str,
        *,
        credentials_file: str = "",
        access_token: str = "",
        timeout: float = 5.0,
    ):
        self.endpoint = (endpoint or DEFAULT_ENDPOINT).rstrip("/")
        self.project_id = project_id
        self.credentials_file = credentials_file
        self.access_token = access_token
        self.timeout = timeout
        self.url = f"{self.endpoint}/v1/projects/{project_id}/messages:send"
        self._session: requests.Session | None = None
        self._session_lock = threading.Lock()

    @classmethod
    def from_settings(cls) -> "FcmChannel | None":
        """The channel configured in settings, or None when FCM is not configured."""
        from django.conf import settings

        channel = cls(
            settings.FCM_ENDPOINT or DEFAULT_ENDPOINT,
            settings.FCM_PROJECT_ID,
            credentials_file=settings.FCM_CREDENTIALS_FILE,
            access_token=settings.FCM_ACCESS_TOKEN,
            timeout=settings.FCM_TIMEOUT_SECONDS,
        )
        return channel if channel.is_configured else None

    @property
    def is_configured(self) -> bool:
        return bool(self.project_id and (self.credentials_file or self.access_token))

    def send_to_topic(self, topic: str, message: Message) -> str:
        topic = topic.removeprefix("/topics/")
        if not TOPIC_RE.match(topic):
            raise ChannelError(f"fcm: invalid topic name {topic!r}", transient=False)
        return self._send(to_fcm_message(message, topic=topic), to_token=False)

    def send_to_token(self, token: str, message: Message) -> str:
        if not token:
            raise TokenUnregistered("fcm: empty registration token")
        return self._send(to_fcm_message(message, token=token), to_token=True)

    def _get_session(self) -> requests.Session:
        """Built on first use so a broken credentials file surfaces as a typed error from a send."""
        with self._session_lock:
            if self._session is not None:
                return self._session
            if not self.is_configured:
                raise ChannelError("fcm: not configured (project id and credentials or token)", transient=False)
            if self.credentials_file:
                try:
                    credentials = service_account.Credentials.from_service_account_file(
                        self.credentials_file, scopes=[FCM_SCOPE]
                    )
                except (OSError, ValueError, KeyError) as exc:
                    raise ChannelError(
                        f"fcm: cannot load credentials file {self.credentials_file!r}: {exc}", transient=False
                    ) from exc
                session: requests.Session = AuthorizedSession(credentials)
            else:
                session = requests.Session()
                session.headers["Authorization"] = f"Bearer {self.access_token}"
            self._session = session
            return session

    def _send(self, fcm_message: dict, *, to_token: bool) -> str:
        session = self._get_session()
        try:
            # With AuthorizedSession the timeout also bounds each call to the OAuth token endpoint.
            response = session.post(self.url, json={"message": fcm_message}, timeout=self.timeout)
        except (
            requests.exceptions.InvalidURL,
            requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema,
        ) as exc:
            raise ChannelError(f"fcm: bad endpoint {self.url!r}: {exc}", transient=False) from exc
        except requests.Timeout as exc:
            raise ChannelError(f"fcm: no answer within {self.timeout}s: {exc}", transient=True) from exc
        except requests.RequestException as exc:
            raise ChannelError(f"fcm: request failed: {type(exc).__name__}: {exc}", transient=True) from exc
        except google.auth.exceptions.TransportError as exc:
            raise ChannelError(f"fcm: cannot reach the OAuth token endpoint: {exc}", transient=True) from exc
        except google.auth.exceptions.RefreshError as exc:
            # retryable: the token endpoint failed with 5xx/429 after google-auth's own retries.
            raise ChannelError(f"fcm: OAuth token refresh failed: {exc}", transient=exc.retryable) from exc

        status = response.status_code
        if status == 200:
            try:
                return str(response.json().get("name") or "")
            except (ValueError, AttributeError):
                logger.warning("fcm: 200 with a body that is not JSON: %.200s", response.text)
                return ""

        error_status, error_message, error_code, details = _error_info(response)
        described = " ".join(part for part in (error_status, error_code, error_message) if part)
        text = f"fcm: HTTP {status} {described}".strip()
        retry_after = parse_retry_after(response.headers.get("Retry-After"))

        if to_token and (
            (status == 404 and error_code == "UNREGISTERED")
            # The token belongs to another Firebase project: no credentials of ours will ever reach it.
            or (status == 403 and error_code == "SENDER_ID_MISMATCH")
            or (status == 400 and error_status == "INVALID_ARGUMENT" and _is_bad_token(error_message, details))
        ):
            raise TokenUnregistered(text, status_code=status)
        if status == 429:
            if retry_after is None:
                retry_after = QUOTA_MIN_RETRY_AFTER
            raise ChannelError(text, transient=True, status_code=status, retry_after=retry_after)
        if status >= 500 or status == 408:
            raise ChannelError(text, transient=True, status_code=status, retry_after=retry_after)
        if status in (401, 403):
            # Our credentials or project, not the message: once ops fix them, the same push goes through.
            # Sent again later rather than given up, so a subscriber's push is not used up by our mistake.
            raise ChannelError(text, transient=True, status_code=status)
        raise ChannelError(text, transient=False, status_code=status)

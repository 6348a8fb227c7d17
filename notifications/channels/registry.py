"""Which channels exist, which are configured, and one adapter of each per process."""

from django.conf import settings

from notifications.channels.fcm import FcmChannel
from notifications.channels.log import LogChannel
from notifications.channels.slack import SlackChannel
from notifications.models import AlertDelivery, Severity

_ADAPTERS = {
    AlertDelivery.Channel.LOG: LogChannel,
    AlertDelivery.Channel.SLACK: SlackChannel,
    AlertDelivery.Channel.FCM: FcmChannel,
}
_channels: dict[str, object] = {}


def channels_for(severity: str) -> list[str]:
    """The channels an alert of this severity goes to: the log always, Slack and FCM when configured and
    the severity reaches their minimum."""
    channels = [AlertDelivery.Channel.LOG]
    if settings.SLACK_WEBHOOK_URL and Severity.rank(severity) >= Severity.rank(settings.SLACK_MIN_SEVERITY):
        channels.append(AlertDelivery.Channel.SLACK)
    if fcm_configured() and Severity.rank(severity) >= Severity.rank(settings.FCM_MIN_SEVERITY):
        channels.append(AlertDelivery.Channel.FCM)
    return channels


def fcm_configured() -> bool:
    return bool(settings.FCM_PROJECT_ID and (settings.FCM_CREDENTIALS_FILE or settings.FCM_ACCESS_TOKEN))


def channel_get(name: str):
    """The adapter for a channel name, or None when that channel is not configured. Adapters keep their
    HTTP sessions, so a process builds each once."""
    if name not in _channels:
        _channels[name] = _ADAPTERS[name].from_settings()
    return _channels[name]


def channels_forget() -> None:
    """Drop the adapters built so far (settings changed, e.g. in tests)."""
    _channels.clear()

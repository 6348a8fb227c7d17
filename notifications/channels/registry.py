"""Which channels exist, which are configured, and one adapter of each per process; and which channels
this process leaves alone for a while because they stopped answering."""

import logging
import time
from contextlib import contextmanager

from django.conf import settings

from notifications.channels.fcm import FcmChannel
from notifications.channels.log import LogChannel
from notifications.channels.slack import SlackChannel
from notifications.errors import ChannelError
from notifications.limits import cut_short_as_transient
from notifications.models import AlertDelivery, Severity

_ADAPTERS = {
    AlertDelivery.Channel.LOG: LogChannel,
    AlertDelivery.Channel.SLACK: SlackChannel,
    AlertDelivery.Channel.FCM: FcmChannel,
}
_channels: dict[str, object] = {}
_paused_until: dict[str, float] = {}

logger = logging.getLogger(__name__)


def channels_for(severity: str, *, to_phones: bool = False) -> list[str]:
    """The channels an alert of this severity goes to: the log always, Slack and FCM when configured and
    the severity reaches their minimum; FCM whatever the severity with `to_phones` (the all-clear of
    alerts that reached the phones)."""
    channels = [AlertDelivery.Channel.LOG]
    if settings.SLACK_WEBHOOK_URL and Severity.rank(severity) >= Severity.rank(settings.SLACK_MIN_SEVERITY):
        channels.append(AlertDelivery.Channel.SLACK)
    if fcm_configured() and (to_phones or Severity.rank(severity) >= Severity.rank(settings.FCM_MIN_SEVERITY)):
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
    """Drop the adapters built so far (settings changed, e.g. in tests), and the pauses."""
    _channels.clear()
    _paused_until.clear()


def channel_pause(name: str, reason: str) -> None:
    """The channel gave no answer (hung, refused, timed out): this process calls it again only after
    NOTIFICATIONS_RESEND_AFTER_SECONDS, when the sweep resends what waited. Otherwise a hung Slack holds
    the process for its whole timeout once per delivery, and a critical page to FCM waits behind them."""
    if not channel_paused(name):
        logger.warning(
            "%s gave no answer (%s): its deliveries wait for the sweep for the next %s s",
            name,
            reason,
            settings.NOTIFICATIONS_RESEND_AFTER_SECONDS,
        )
    _paused_until[name] = time.monotonic() + settings.NOTIFICATIONS_RESEND_AFTER_SECONDS


@contextmanager
def channel_sending(name: str):
    """Around one send on a channel: the soft time limit cutting it is a transient failure
    (cut_short_as_transient), and a send that got no answer at all pauses the channel in this process."""
    try:
        with cut_short_as_transient(name):
            yield
    except ChannelError as exc:
        if exc.transient and exc.status_code is None:
            channel_pause(name, str(exc))
        raise


def channels_paused() -> list[str]:
    return [name for name in _paused_until if channel_paused(name)]


def channel_paused(name: str) -> bool:
    return time.monotonic() < _paused_until.get(name, 0.0)

"""Which channels exist, which are configured, and one adapter of each per process; and which channels
this process leaves alone for a while because they stopped answering."""

import logging
import time
from contextlib import contextmanager

from django.conf import settings

from donutsite.dependencies import Outages
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
_outages = Outages()  # from a channel's first send with no answer until a send goes through

logger = logging.getLogger(__name__)


def channels_for(severity: str, *, to_phones: bool = False) -> list[str]:
    """The channels an alert of this severity goes to: the log always, Slack and FCM when configured and
    the severity reaches their minimum; FCM whatever the severity with `to_phones` (the all-clear of
    alerts that reached the phones)."""
    channels = [AlertDelivery.Channel.LOG]
    if slack_configured() and Severity.rank(severity) >= Severity.rank(settings.SLACK_MIN_SEVERITY):
        channels.append(AlertDelivery.Channel.SLACK)
    if fcm_configured() and (to_phones or Severity.rank(severity) >= Severity.rank(settings.FCM_MIN_SEVERITY)):
        channels.append(AlertDelivery.Channel.FCM)
    return channels


def slack_configured() -> bool:
    """Whether this process has a Slack adapter (SlackChannel.is_configured: a webhook URL)."""
    return channel_get(AlertDelivery.Channel.SLACK) is not None


def fcm_configured() -> bool:
    """Whether this process has an FCM adapter (FcmChannel.is_configured: a project id, and a credentials file
    or a token)."""
    return channel_get(AlertDelivery.Channel.FCM) is not None


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
    _outages.clear()


def channel_pause(name: str, reason: str) -> None:
    """The channel gave no answer (hung, refused, timed out): this process calls it again only after
    NOTIFICATIONS_RESEND_AFTER_SECONDS, when the sweep resends what waited. Otherwise a hung Slack holds
    the process for its whole timeout once per delivery, and a critical page to FCM waits behind them.

    One warning when the channel stops answering and channel_answered's one line when a send goes through
    again, however many pauses the outage lasts: a warning at each pause came every 30 s for hours."""
    _paused_until[name] = time.monotonic() + settings.NOTIFICATIONS_RESEND_AFTER_SECONDS
    if not _outages.began(name):
        return  # the same outage: the try after a pause got no answer either, already told
    logger.warning(
        "%s gave no answer (%s): this process leaves its deliveries to the sweep and tries it again every %s s",
        name,
        reason,
        settings.NOTIFICATIONS_RESEND_AFTER_SECONDS,
    )


def channel_answered(name: str) -> None:
    """A send on the channel went through. After an outage, one line ends it, at the warning's level so that
    a log read for warnings shows both ends."""
    seconds = _outages.ended(name)
    if seconds is not None:
        logger.warning("%s sends again after %.1f s", name, seconds)


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
    channel_answered(name)


def channels_paused() -> list[str]:
    return [name for name in _paused_until if channel_paused(name)]


def channel_paused(name: str) -> bool:
    return time.monotonic() < _paused_until.get(name, 0.0)

"""The channel that is always there: one log line per alert on the `donutsite.alerts` logger."""

import logging

from .base import Message

logger = logging.getLogger("donutsite.alerts")

_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.ERROR}


class LogChannel:
    """Writes each alert as one line: INFO, WARNING or ERROR by severity (unknown severities log as WARNING)."""

    name = "log"

    def __init__(self, logger_: logging.Logger | None = None):
        self.logger = logger_ or logger

    @classmethod
    def from_settings(cls) -> "LogChannel":
        return cls()

    @property
    def is_configured(self) -> bool:
        return True

    def send(self, message: Message) -> None:
        level = _LEVELS.get(message.severity, logging.WARNING)
        facts = " ".join(f"{label}={value!r}" for label, value in message.facts.items())
        self.logger.log(
            level,
            "alert id=%s kind=%s severity=%s title=%r%s",
            message.alert_id if message.alert_id is not None else "-",
            message.kind,
            message.severity,
            message.title,
            f" {facts}" if facts else "",
            extra={"alert_id": message.alert_id, "alert_kind": message.kind},
        )

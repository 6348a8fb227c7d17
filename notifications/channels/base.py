"""What every alert channel adapter offers. Adapters do HTTP only: no ORM, no Celery."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Message:
    """One notification as a person reads it, whichever channel carries it."""

    title: str
    text: str
    severity: str  # "info" | "warning" | "critical"
    kind: str  # what happened, e.g. "dead_letter", "sold_out", "back_in_stock"
    alert_id: int | None = None
    facts: dict[str, str] = field(default_factory=dict)  # shown as label/value pairs (SKU, restock, attempts...)
    links: dict[str, str] = field(default_factory=dict)  # label -> absolute URL (admin page, Flower)
    data: dict[str, str] = field(default_factory=dict)  # machine-readable payload (FCM `data`), strings only


class ChannelError(Exception):
    """A send that failed. `transient` ones are retried (after `retry_after` seconds at least, if set)."""

    def __init__(
        self, message: str, *, transient: bool, status_code: int | None = None, retry_after: float | None = None
    ):
        super().__init__(message)
        self.transient = transient
        self.status_code = status_code
        self.retry_after = retry_after


class TokenUnregistered(ChannelError):
    """FCM says this device token is gone (UNREGISTERED) or invalid: deactivate the device, do not retry."""

    def __init__(self, message: str, *, status_code: int | None = None):
        super().__init__(message, transient=False, status_code=status_code)

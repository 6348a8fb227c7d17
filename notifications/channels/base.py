"""What every channel adapter sends. Adapters do HTTP only: no ORM, no Celery; they raise the channel
errors of notifications/errors.py."""

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
    # Whether it may wake a sleeping phone (FCM's high priority): an all-clear has nothing to do, so it need not.
    urgent: bool = True

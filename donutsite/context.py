"""The current request id: set by RequestIdMiddleware for a request and by the Celery task signals for
a task, read by the log filter, by services that stamp it on rows, and by the task publisher."""

import re
import uuid
from contextlib import contextmanager
from contextvars import ContextVar

request_id: ContextVar[str] = ContextVar("request_id", default="")

# What we accept from a client: short and log-safe (no spaces, quotes or newlines), fits the
# 64-character correlation_id columns.
VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def request_id_valid(value) -> bool:
    return isinstance(value, str) and VALID_REQUEST_ID.fullmatch(value) is not None


def request_id_new() -> str:
    return uuid.uuid4().hex


@contextmanager
def request_id_bound(value: str):
    """Make `value` the current request id inside the block."""
    token = request_id.set(value)
    try:
        yield value
    finally:
        request_id.reset(token)

"""HMAC-SHA256 signatures of factory callbacks: `sha256=<hex>` over `<timestamp>.<raw body>`."""

import hashlib
import hmac
import re
import time

_UNIX_TIME = re.compile(r"[0-9]{1,12}")
MAX_SKEW_SECONDS = 300  # the contract: reject a timestamp more than 5 minutes from our clock


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def check(secret: str, timestamp: str | None, signature: str | None, body: bytes, *, now: float | None = None) -> str:
    """Return "" when the callback is genuine and fresh, else the reason it is not."""
    if not timestamp or not signature:
        return "missing signature headers"
    # ASCII only: int() reads Unicode digits, and compare_digest raises TypeError on non-ASCII str.
    if not _UNIX_TIME.fullmatch(timestamp):
        return "timestamp is not a unix time"
    if not signature.isascii():
        return "signature is not ASCII"
    sent_at = int(timestamp)
    if abs((now if now is not None else time.time()) - sent_at) > MAX_SKEW_SECONDS:
        return "timestamp is more than 5 minutes away from our clock"
    if not hmac.compare_digest(sign(secret, timestamp, body), signature):
        return "signature does not match"
    return ""

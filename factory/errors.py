"""What the factory side refuses, each a DomainError with a stable code that the one DRF exception
handler (donutsite/drf.py) turns into the one JSON error shape."""

from donutsite.errors import DomainError, NotFound


class InvalidSignature(DomainError):
    code = "invalid_signature"
    status = 401
    message = "Callback refused: bad signature or stale timestamp."


class MalformedCallback(DomainError):
    code = "malformed_json"
    message = "The body is not JSON."


class UnknownOrder(NotFound):
    code = "unknown_order"
    message = "No restock matches this factory order."


class CallbackMismatch(DomainError):
    code = "callback_mismatch"
    message = "The callback does not match the restock it names."

"""One error hierarchy: every refusal the API can give is a DomainError with a stable `code`."""

ECHO_MAX = 64  # as long as the longest name or value we take (a SKU, a factory reference)


def echoed(value: object) -> str:
    """A name or value the client sent, as an error answer repeats it: whole up to ECHO_MAX characters, else
    its first ECHO_MAX and an ellipsis. An answer repeating what it was sent whole was as large as the
    request (a 100 KB field name made a 100 KB error); what we accept is never longer, so the client
    still recognises it."""
    text = str(value)
    return text if len(text) <= ECHO_MAX else text[:ECHO_MAX] + "…"


class DomainError(Exception):
    """A business rule said no. `code` is stable and documented; `status` is the HTTP status it maps to."""

    code = "error"
    status = 400
    message = "The request could not be completed."
    # An answer expected in normal trade (a sold-out product), counted in /metrics: not logged as a
    # warning for every request, as Django logs other 4xx answers.
    routine = False

    def __init__(self, message: str | None = None, *, details: dict | None = None, headers: dict | None = None):
        self.message = message or self.message
        self.details = details or {}
        self.headers = headers or {}
        super().__init__(self.message)


class NotFound(DomainError):
    code = "not_found"
    status = 404
    message = "Not found."


class Conflict(DomainError):
    code = "conflict"
    status = 409

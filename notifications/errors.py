"""Every error the notifications app raises: API refusals (DomainError) and channel failures."""

from donutsite.errors import NotFound


class UnknownDevice(NotFound):
    code = "unknown_device"
    message = "No active device with that id is registered by this client."


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


class DeliveryRetry(Exception):  # noqa: N818 - a signal to the task
    """A delivery failed transiently and has attempts left: the task's autoretry_for retries it."""

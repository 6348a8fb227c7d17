"""Refused factory callbacks (bad or missing signature, stale timestamp): counted, rate-limited per
client address, and told to ops once per window rather than once per refusal.

A burst of forged callbacks used to write one Alert row per refusal, each taking the alert lock
(2,000 refusals in 6 s: 2,021 rows). Now every refusal is a Redis INCR and a log line; the first
refusal of each CALLBACK_REFUSAL_WINDOW_SECONDS window raises the one `forged_callback` alert, which
also says how many were refused in the window before it; an address refused
CALLBACK_REFUSALS_PER_ADDRESS times in a window gets `429 throttled` for its refused callbacks until
its window ends. A correctly signed callback is never throttled. With Redis down nothing is counted:
every refusal raises the alert, which alert grouping then holds back.
"""

import logging
import time
from datetime import UTC, datetime

from django.conf import settings
from django.db import transaction

from donutsite import ratelimit
from donutsite.errors import DomainError
from notifications.alerts import alert_raise

logger = logging.getLogger(__name__)


class CallbackRefusalsThrottled(DomainError):
    code = "throttled"
    status = 429
    message = "Too many refused callbacks from your address."


def callback_refusals_check(address: str) -> None:
    """Raise CallbackRefusalsThrottled while `address` is over its refusals in the current window."""
    refused, wait = ratelimit.count(f"callback-refused:{address}")
    if refused >= settings.CALLBACK_REFUSALS_PER_ADDRESS:
        raise CallbackRefusalsThrottled(headers={"Retry-After": str(wait)})


def callback_refused(*, problem: str, address: str) -> None:
    """Count a refusal; raise the window's one alert if it is the window's first."""
    window = settings.CALLBACK_REFUSAL_WINDOW_SECONDS
    logger.warning("factory callback refused: %s (from %s)", problem, address)
    ratelimit.hit(f"callback-refused:{address}", window)
    bucket = int(time.time() // window)
    # Kept two windows, so the next window's alert can read this one's total.
    total, _ = ratelimit.hit(f"callback-refused-all:{bucket}", 2 * window)
    if total > 1:
        return
    before, _ = ratelimit.count(f"callback-refused-all:{bucket - 1}")
    earlier = f" {before} callback(s) were refused in the {window} s before." if before else ""
    window_end = datetime.fromtimestamp((bucket + 1) * window, tz=UTC).strftime("%H:%M:%S UTC")
    with transaction.atomic():
        alert_raise(
            kind="forged_callback",
            severity="warning",
            title="A factory callback was refused",
            text=f"{problem} (from {address}). Someone may be forging callbacks, or FACTORY_CALLBACK_SECRET "
            f"differs from the factory's. Further refusals until {window_end} are counted, not alerted.{earlier}",
            dedupe_key=f"forged_callback:{bucket}",  # its own group: one alert per window, whatever grouping does
            context={"error": problem, "address": address, "refused_in_previous_window": before},
        )

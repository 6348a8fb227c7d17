"""What the project's management commands share."""

import argparse
import math


def positive_seconds(value: str) -> float:
    """An argparse type: a positive, finite number of seconds (`nan` passed every check, and a negative or
    zero one made a probe fail, or pass, whatever it probed)."""
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, not {value!r}") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, not {value!r}")
    return seconds

"""What the project's management commands share."""

import argparse
import math

# sysexits' EX_TEMPFAIL: nothing (or not all) was done and running the command again later may work, which a
# script can tell from success (0) and from a failure (1).
EX_TEMPFAIL = 75


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


def at_least_one(value: str) -> int:
    """An argparse type: a whole number, 1 or more (migrate's seconds and tries: MariaDB took a lock wait of
    -1 s as 0, no wait at all, with a warning nobody saw)."""
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number, 1 or more, not {value!r}")
    return number


MAX_DAYS = 36_500  # a cutoff before year 1 is an OverflowError traceback


def age_in_days(value: str) -> int:
    """An argparse type: a purge's age in whole days, 0 to a hundred years."""
    try:
        days = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number of days, not {value!r}") from None
    if days < 0:
        raise argparse.ArgumentTypeError("cannot be negative")
    if days > MAX_DAYS:
        raise argparse.ArgumentTypeError(f"can be at most {MAX_DAYS} (a hundred years)")
    return days

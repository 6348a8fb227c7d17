"""How long a notification task may run, and how long a task's claim on a row lasts (a delivery, a
back-in-stock push): spelled once, because a claim counts as abandoned only once it has outlived any
task that could still hold it. A lease shorter than the hard time limit would let the sweep send again
what a live task is still sending (notifications/tests/test_tasks.py holds the order)."""

from contextlib import contextmanager
from datetime import timedelta

from celery.exceptions import SoftTimeLimitExceeded

from notifications.errors import ChannelError

# The notifications worker runs prefork, which enforces both: the soft limit raises SoftTimeLimitExceeded
# in the task, the hard limit kills its process.
TASK_SOFT_TIME_LIMIT = 10
TASK_TIME_LIMIT = 12

# A task that sends one message after another (back-in-stock pushes to every subscriber of a SKU) starts
# no new send after this and hands the rest to a new task: the one send it is in then ends within the
# channel's timeout, before the soft limit would cut it off (a push FCM took, its subscription not yet
# marked: pushed again after the lease).
RUN_SECONDS = 4

# Longer than TASK_TIME_LIMIT: a claim older than this belongs to a task that died.
CLAIM_LEASE = timedelta(seconds=60)

# The longest wait a channel's Retry-After may impose on a delivery (as FACTORY_RETRY_AFTER_MAX_SECONDS for
# the factory): a Slack, FCM or proxy answering a year, or an infinite or far-future date, must not park an
# alert for that long.
RETRY_AFTER_MAX_SECONDS = 900


@contextmanager
def cut_short_as_transient(channel: str):
    """A send that the soft time limit ended fails like one that timed out: transiently (the message may
    or may not have gone). The caller then lets its row go at once, to be sent again after the usual
    wait, where the exception would have left it claimed for CLAIM_LEASE and stopped a run of pushes."""
    try:
        yield
    except SoftTimeLimitExceeded as exc:
        raise ChannelError(f"{channel}: no answer before the task's soft time limit", transient=True) from exc

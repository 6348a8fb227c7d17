"""How long a notification task may run, and how long a task's claim on a row lasts (a delivery, a
back-in-stock push): spelled once, because a claim counts as abandoned only once it has outlived any
task that could still hold it. A lease shorter than the hard time limit would let the sweep send again
what a live task is still sending (notifications/tests/test_tasks.py holds the order)."""

from datetime import timedelta

# The notifications worker runs prefork, which enforces both: the soft limit raises SoftTimeLimitExceeded
# in the task, the hard limit kills its process.
TASK_SOFT_TIME_LIMIT = 10
TASK_TIME_LIMIT = 12

# Longer than TASK_TIME_LIMIT: a claim older than this belongs to a task that died.
CLAIM_LEASE = timedelta(seconds=60)

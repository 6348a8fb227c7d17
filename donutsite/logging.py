"""Log records carry the current request id; production writes them as JSON lines.

Wired up in settings.LOGGING (the `request_id` filter on the console handler, the `json` and `plain`
formatters); Celery workers and beat use the same configuration (donutsite/celery.py).
"""

import json
import logging
from datetime import UTC, datetime

from django.core.exceptions import PermissionDenied
from kombu.exceptions import OperationalError

from donutsite.context import request_id


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every record: the current request's or task's, "-" outside both. Put it on
    handlers, not loggers, so that records propagated from every logger pass through it.

    Django logs a 4xx/5xx answer ("Not Found: /x") after the middleware has returned, when the id is no
    longer current; such records carry the request itself, which RequestIdMiddleware labelled."""

    def filter(self, record):
        if not getattr(record, "request_id", None):
            labelled = getattr(getattr(record, "request", None), "request_id", None)
            record.request_id = request_id.get() or labelled or "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: timestamp (UTC, ISO 8601), level, logger, message, request_id, and
    exc_info (the formatted traceback) when the record has one."""

    def format(self, record):
        entry = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or request_id.get() or "-",
        }
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack_info"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


# Celery's loggers whose INFO lines about a beat-scheduled task are routine: beat's "Sending due task",
# the worker's "received" and "succeeded". Six such lines every 5 s buried what the log is for.
_ROUTINE_LOGGERS = {"celery.beat", "celery.worker.strategy", "celery.app.trace"}


def _task_name(record) -> str:
    if isinstance(record.args, dict):  # the worker's lines: %(name)s from a context dict
        return str(record.args.get("name", ""))
    if isinstance(record.args, tuple) and len(record.args) == 2:  # beat: (entry name, task name)
        return str(record.args[1])
    return ""


def _demote(record) -> bool:
    """Turn the record into a DEBUG one; keep it only when the root logger shows DEBUG."""
    record.levelno, record.levelname = logging.DEBUG, "DEBUG"
    return logging.getLogger().isEnabledFor(logging.DEBUG)


class QuietRoutineFilter(logging.Filter):
    """On the console handler: the routine sweeps' task lines go to DEBUG, and an expected dead letter
    stays one line.

    A task whose class sets `logs_own_failure` (factory.retries.RetryingTask) records and logs its own
    final failure as one "DEAD LETTER" line; Celery's "raised unexpected: ..." record with its traceback
    says the same again, so it goes to DEBUG (the traceback is on the dead letter row)."""

    def filter(self, record):
        if record.name not in _ROUTINE_LOGGERS or record.levelno > logging.ERROR:
            return True
        name = _task_name(record)
        if not name:
            return True
        if record.levelno <= logging.INFO and name in _routine_tasks():
            return _demote(record)
        if record.name == "celery.app.trace" and record.exc_info and _logs_own_failure(name):
            return _demote(record)
        return True


def _routine_tasks() -> set[str]:
    from django.conf import settings

    return {entry["task"] for entry in getattr(settings, "CELERY_BEAT_SCHEDULE", {}).values()}


def _logs_own_failure(task_name: str) -> bool:
    from celery import current_app

    task = current_app.tasks.get(task_name)
    return bool(getattr(task, "logs_own_failure", False))


class SuspiciousRequestFilter(logging.Filter):
    """On the loggers of Django's refusals of a request it finds suspicious (settings.SUSPICIOUS_REQUEST_LOGGERS),
    each answered 400: an ERROR with a traceback let anyone fill the log and, with Sentry on (it sends ERROR
    records as events), alert ops once per request, for a probe and not an outage. It is one warning line
    instead, with Django's message. On the loggers themselves, not a handler: Sentry reads a record
    before the handlers' filters run."""

    def filter(self, record):
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info = record.exc_text = None
        return True


class PermissionDeniedFilter(logging.Filter):
    """On django.request: a page refused to a signed-in staff user without its permission (a 403 in the
    admin) is logged by Django with the PermissionDenied and its traceback, some 40 lines per click, read in
    make run's output as a crash. The warning line naming the path is what ops need; other records pass."""

    def filter(self, record):
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, PermissionDenied):
            record.exc_info = record.exc_text = None
        return True


class BeatBrokerAwayFilter(logging.Filter):
    """On celery.beat: a scheduled task beat could not send because the broker is away (Redis stopped or
    unreachable) is one warning line. Celery logs it as an ERROR with the traceback and the whole stack,
    about 100 lines for each sweep at each tick (517 for 8 s of make run's Redis stopped), and with Sentry on
    an event each. Nothing is lost: beat sends the sweep again at its next run. Any other failure to send
    keeps its ERROR and traceback."""

    def filter(self, record):
        exc = record.exc_info[1] if record.exc_info else None
        if record.levelno == logging.ERROR and _broker_away(exc):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args = "%s (broker unavailable: sent again at its next run)", (exc,)
            record.exc_info = record.exc_text = None
        return True


def _broker_away(exc: BaseException | None) -> bool:
    """Whether kombu's error for a broker it could not reach is in the chain (beat wraps it in SchedulingError)."""
    while exc is not None:
        if isinstance(exc, OperationalError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False

"""Log records carry the current request id; production writes them as JSON lines.

Wired up in settings.LOGGING (the `request_id` filter on the console handler, the `json` and `plain`
formatters); Celery workers and beat use the same configuration (donutsite/celery.py).
"""

import json
import logging
from datetime import UTC, datetime

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

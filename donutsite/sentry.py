"""Error tracking with Sentry, as cookiecutter-django sets it up: off unless SENTRY_DSN is set; then
Django and Celery errors (and ERROR log records) go to Sentry, each tagged with the request id that
ties it to our log lines, the restock, the dead letter and the alert.

Called once from settings, so web, workers and beat all report."""

import logging

from donutsite.context import request_id


def sentry_init(*, dsn: str, environment: str, release: str, traces_sample_rate: float) -> bool:
    """Start the SDK if a DSN is given; return whether it did."""
    if not dsn:
        return False
    import sentry_sdk
    from sentry_sdk.integrations.celery import CeleryIntegration
    from sentry_sdk.integrations.django import DjangoIntegration
    from sentry_sdk.integrations.logging import LoggingIntegration
    from sentry_sdk.integrations.redis import RedisIntegration

    sentry_sdk.init(
        dsn=dsn,
        environment=environment or None,
        release=release or None,
        integrations=[
            LoggingIntegration(level=logging.INFO, event_level=logging.ERROR),
            DjangoIntegration(),
            CeleryIntegration(monitor_beat_tasks=False),
            RedisIntegration(),
        ],
        traces_sample_rate=traces_sample_rate,  # no personal data: the SDK leaves it out unless told
        # No frame's local variables: the SDK scrubs only names on its list, and a database outage's frames
        # held the client's API key (`key`, `header`) and the database password (the driver's `conn_params`).
        include_local_variables=False,
        before_send=_with_request_id,
    )
    return True


def _with_request_id(event, hint):
    """The request or task id current where the error happened (donutsite.context), as a tag one can
    search on."""
    current = request_id.get()
    if current:
        event.setdefault("tags", {})["request_id"] = current
    return event

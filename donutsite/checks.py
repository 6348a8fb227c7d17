"""Start-up checks: the timing settings must nest, or a slow task runs twice."""

from django.conf import settings
from django.core import checks


def timing_problems() -> list[str]:
    http = settings.FACTORY_CONNECT_TIMEOUT_SECONDS + settings.FACTORY_TIMEOUT_SECONDS
    soft, hard = settings.CELERY_TASK_SOFT_TIME_LIMIT, settings.CELERY_TASK_TIME_LIMIT
    visibility = settings.CELERY_VISIBILITY_TIMEOUT
    longest_wait = max(settings.FACTORY_RETRY_BACKOFF_MAX_SECONDS, settings.NOTIFICATIONS_RETRY_BACKOFF_MAX_SECONDS)
    problems = []
    if not http < soft < hard < visibility:
        problems.append(
            f"need factory HTTP timeout ({http:g} s, connect + read) < soft time limit ({soft} s) "
            f"< hard time limit ({hard} s) < visibility timeout ({visibility} s)"
        )
    if longest_wait + hard >= visibility:
        problems.append(
            f"a retry countdown ({longest_wait:g} s) plus the hard time limit ({hard} s) must stay under the "
            f"visibility timeout ({visibility} s), or Redis redelivers the waiting task to a second worker"
        )
    return problems


@checks.register()
def check_timing(app_configs=None, **kwargs):
    return [checks.Error(problem, id="donutsite.E001") for problem in timing_problems()]

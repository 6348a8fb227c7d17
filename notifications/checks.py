"""Start-up checks: a send to Slack or FCM ends before the notification tasks' soft time limit.

The limit ending a send is handled (notifications.limits.cut_short_as_transient), but the message may then
go out twice, and a channel that never answers (a black-holed address) would be cut off at every attempt
instead of failing like any other outage. So the channels' timeouts are held under the limit here, counting
one timeout per call: the timeout bounds the connection and each read apart, so a call slow at both, or an FCM
token refresh inside a send, can still outlast it (then the cut above applies).

And ALERTS_DISABLED_KINDS names only kinds alert_raise is called with: a misspelt one switches nothing off.
"""

from django.conf import settings
from django.core import checks

from donutsite.checks import TIMING_TAG
from notifications.alerts import KINDS
from notifications.channels.slack import send_bound
from notifications.limits import RUN_SECONDS, TASK_SOFT_TIME_LIMIT


def timing_problems() -> list[str]:
    problems = []
    slack = send_bound(settings.SLACK_TIMEOUT_SECONDS)
    if slack >= TASK_SOFT_TIME_LIMIT:
        problems.append(
            f"SLACK_TIMEOUT_SECONDS ({settings.SLACK_TIMEOUT_SECONDS:g}) is too long: a Slack send with its one retry "
            f"can take {slack:g} s, not under the notification tasks' soft time limit ({TASK_SOFT_TIME_LIMIT} s)"
        )
    if RUN_SECONDS + settings.FCM_TIMEOUT_SECONDS >= TASK_SOFT_TIME_LIMIT:
        problems.append(
            f"FCM_TIMEOUT_SECONDS ({settings.FCM_TIMEOUT_SECONDS:g}) is too long: a push started at the end of a "
            f"run of back-in-stock pushes ({RUN_SECONDS} s) must end before the soft time limit "
            f"({TASK_SOFT_TIME_LIMIT} s)"
        )
    return problems


@checks.register(TIMING_TAG)
def check_timing(app_configs=None, **kwargs):
    return [checks.Error(problem, id="notifications.E001") for problem in timing_problems()]


def disabled_kinds_problems() -> list[str]:
    unknown = [kind for kind in settings.ALERTS_DISABLED_KINDS if kind not in KINDS]
    if not unknown:
        return []
    return [
        f"ALERTS_DISABLED_KINDS names no alert kind: {', '.join(unknown)}; it switches nothing off. "
        f"The kinds it takes: {', '.join(KINDS)}"
    ]


@checks.register()
def check_disabled_kinds(app_configs=None, **kwargs):
    return [checks.Error(problem, id="notifications.E002") for problem in disabled_kinds_problems()]

"""`python -m donutsite.flower [flower options]`: Celery's Flower, showing every declared queue.

Flower lists only the queues some worker consumes, and no worker consumes `dead_letter` (it holds copies
of dead-lettered messages for ops to count; the database row is the record). This entry point widens
Flower's list to every queue in CELERY_TASK_QUEUES_NAMES, so the dead-letter queue and its length show
on the Broker page and in /api/queues/length.

It is also always read-only (Flower's `--read_only`: its API refuses to send, revoke or abort tasks and
to control workers, 403) and refuses to start without a login (FLOWER_BASIC_AUTH, `--basic_auth` or
`--auth`; each basic login user:password, none empty), also on its Prometheus page /metrics, which
Flower itself leaves open: whoever reaches it may watch the queues, never act on them. Redrives go
through the admin or `manage.py redrive`, which record who did what.

It never asks a worker for its configuration (Celery's `conf` inspection), which Flower shows on each
worker's Config tab and in /api/workers: the answer is every Django setting, and Celery masks only names
with KEY, SECRET, PASS, TOKEN and the like in them, so the broker and Redis URLs (with REDIS_PASSWORD in
them under compose: the broker runs any task it is given) and the Slack webhook were shown whole.

Its login locks out an address as the admin's does (donutsite/login_throttle.py): ADMIN_LOGIN_MAX_FAILURES
wrong logins from one client address within ADMIN_LOGIN_WINDOW_SECONDS, then 429 with Retry-After for that
address, right password included, until the window passes or ops run `manage.py admin_login_unlock --flower`.
Counted in Redis by donutsite.ratelimit, so it fails open like the rest: with Redis down nothing is counted and
the password alone decides. Its pages send a Content-Security-Policy, X-Frame-Options and Referrer-Policy
(SECURITY_HEADERS).
"""

import logging
import os
import sys

from tornado.web import Finish

# By name, not __name__: Flower runs as `python -m donutsite.flower`, where __name__ is "__main__", and
# the lockout warning went out under that name instead of the one docs/production.md tells ops to look for.
logger = logging.getLogger("donutsite.flower")


def widen_queue_list() -> None:
    from flower.views import BaseHandler

    consumed = BaseHandler.get_active_queue_names

    def get_active_queue_names(self):
        declared = {queue.name for queue in self.capp.conf.task_queues or []}
        return sorted(set(consumed(self)) | declared)

    BaseHandler.get_active_queue_names = get_active_queue_names


def hide_worker_settings() -> None:
    """Flower's inspection leaves out `conf`; the worker's stats, queues and tasks are still shown."""
    from flower.inspector import Inspector

    Inspector.inspect_methods = tuple(method for method in Inspector.inspect_methods if method != "conf")


def guard_metrics() -> None:
    """Flower serves its Prometheus page (task names, worker names, counts) without the login that guards
    every other page; ours asks for it there too. Its /healthcheck ("OK", nothing more) stays open."""
    from flower.views.monitor import Metrics
    from tornado.web import authenticated

    Metrics.get = authenticated(Metrics.get)


def login_counter(address: str) -> str:
    return f"flower-login:{address}"


def limit_failed_logins() -> None:
    """Flower checks its basic login in BaseHandler.get_current_user, which every page and API call behind
    the login asks (and only those: /healthcheck and the static files never do). Ours asks Redis first
    whether the client's address is locked out, then lets Flower check the password, counting a wrong one.
    A request that sends no login is a browser's first, before it asks for one: not a failure.

    The address is the connection's peer (Flower is never behind our proxy, so DJANGO_TRUSTED_PROXY_COUNT
    does not apply). The Redis calls are synchronous in Flower's event loop, which ratelimit bounds as on
    the web: one try within WEB_DEPENDENCY_TIMEOUT_SECONDS, then the breaker skips Redis for its pause."""
    from django.conf import settings
    from flower.views import BaseHandler
    from tornado.web import HTTPError

    from donutsite import ratelimit

    check_login = BaseHandler.get_current_user

    def get_current_user(self):
        address = ratelimit.address_counted(self.request.remote_ip or ratelimit.UNKNOWN_ADDRESS)
        name = login_counter(address)
        failures, wait = ratelimit.count(name)
        if failures >= settings.ADMIN_LOGIN_MAX_FAILURES:
            refuse_locked_out(self, wait)
        try:
            user = check_login(self)
        except HTTPError as error:
            if error.status_code == 401 and self.request.headers.get("Authorization"):
                failures, _ = ratelimit.hit(name, settings.ADMIN_LOGIN_WINDOW_SECONDS)
                if failures == settings.ADMIN_LOGIN_MAX_FAILURES:  # the one that locks: a line per window
                    logger.warning("%s failed Flower logins from %s; locked", failures, address)
            raise
        if failures:
            ratelimit.forget(name)
        return user

    BaseHandler.get_current_user = get_current_user


def refuse_locked_out(handler, wait: int) -> None:
    """429 with Retry-After. Raised as tornado's Finish, which sends the answer as it stands: an HTTPError
    would go through Flower's write_error, which clears the headers (Retry-After among them)."""
    handler.set_status(429)
    handler.set_header("Retry-After", str(wait))
    handler.set_header("Content-Type", "text/plain; charset=UTF-8")
    raise Finish(
        f"Too many failed logins from your address. Try again in {max(1, -(-wait // 60))} minute(s), or ask an "
        "operator to run `manage.py admin_login_unlock --flower`.\n"
    )


# Flower's workers page (its start page) has one inline script, `var autorefresh = 1;` (0 with
# --auto_refresh=false), allowed by its two hashes. They change when Flower's workers.html does: the
# security-headers test in test_flower then names the refused script.
AUTOREFRESH_SCRIPTS = (
    "'sha256-A0YIP5A+DKoseGAUTHRoMPDkKPK5cKzfYH3mjcCKtj8='",
    "'sha256-Plc72SJ5jJr8U3f1AUIRpRT60gipUj+EwCvnh1JkE68='",
)
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self' " + " ".join(AUTOREFRESH_SCRIPTS),
        # Flower's worker page has style="" attributes, and its libraries (DataTables, Bootstrap) write
        # more; refused, they lay the tables out wrong. An injected style cannot run script.
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",  # Bootstrap's stylesheet draws its icons as data: URIs
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers without CSP
    # Flower's pages link to its docs and GitHub: those need not learn the task ids in our URLs.
    "Referrer-Policy": "same-origin",
}


def send_security_headers() -> None:
    """Flower sends X-Content-Type-Options alone. Ours adds the rest to everything its handlers answer,
    error pages included (Tornado sets default headers again when it clears an answer for an error).
    Its static files, served by Tornado's own StaticFileHandler, are no pages and get none."""
    from flower.views import BaseHandler

    flowers_own = BaseHandler.set_default_headers

    def set_default_headers(self):
        flowers_own(self)
        for name, value in SECURITY_HEADERS.items():
            self.set_header(name, value)

    BaseHandler.set_default_headers = set_default_headers


def flower_argv(args: list[str], environ: dict) -> list[str]:
    """`celery flower` with our options: read-only last, so nothing before it can switch it off."""
    logins = ("--basic_auth", "--basic-auth", "--auth")
    if not ({"--help", "-h"} & set(args) or environ.get("FLOWER_BASIC_AUTH") or environ.get("FLOWER_AUTH")):
        if not any(arg.split("=", 1)[0] in logins for arg in args):
            raise SystemExit("Flower needs a login: set FLOWER_BASIC_AUTH=user:password (or pass --basic_auth).")
    # Flower splits the login at commas and lets in whoever sends any one entry: an empty one (a trailing
    # comma, `--basic_auth=`) is matched by the header `Basic ====`, which decodes to nothing. The command
    # line's login replaces the environment's.
    given = [arg.split("=", 1)[1] for arg in args if "=" in arg and arg.split("=", 1)[0] in logins[:2]]
    for value in given or ([environ["FLOWER_BASIC_AUTH"]] if environ.get("FLOWER_BASIC_AUTH") else []):
        for number, login in enumerate(value.split(","), start=1):
            user, colon, password = login.partition(":")
            if not (user and colon and password):
                raise SystemExit(f"Flower's login {number} is not user:password (logins are comma-separated).")
    return ["celery", "-A", "donutsite", "flower", *args, "--read_only=true"]


def main() -> None:
    import django
    from celery.bin.celery import main as celery_main

    # The login's counters are donutsite.ratelimit's, which read Django's settings.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "donutsite.settings")
    django.setup()
    widen_queue_list()
    hide_worker_settings()
    guard_metrics()
    limit_failed_logins()
    send_security_headers()
    sys.argv = flower_argv(sys.argv[1:], os.environ)
    celery_main()


if __name__ == "__main__":
    main()

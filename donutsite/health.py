"""Probes for an orchestrator or load balancer.

/healthz: the process answers (touches nothing else, so a database outage never gets web processes
restarted). /readyz: this process can do its work now: the database answers `SELECT 1` and has every
migration this code knows (503 naming the check otherwise: new code started on the old schema, before
`migrate` ran, would answer 500s), and 503 "shutting_down" from the moment the process got SIGTERM, so
traffic drains away while gunicorn finishes the requests in flight. The broker's Redis PING is reported
too, but a broker that fails it leaves the process ready ("degraded"): the web sells without it
(hand-overs wait for the sweep), and a probe that took every web process out of rotation would close
the shop instead.

Plain Django views, not DRF: no authentication, no throttling. SecurityMiddleware leaves both on plain
HTTP (SECURE_REDIRECT_EXEMPT in settings). The Host header is still checked against ALLOWED_HOSTS.
"""

import logging
import signal
import threading

import redis
from django.conf import settings
from django.db import connections
from django.db.migrations.executor import MigrationExecutor
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe

logger = logging.getLogger(__name__)

BROKER_TIMEOUT_SECONDS = 1.0
_shutting_down = threading.Event()
_schema_current = threading.Event()  # once it is, it stays: migrations are not undone under a running release


# csrf_exempt: these change nothing and read no cookie; without it a POST is refused by the CSRF check
# with Django's HTML 403 page before require_safe can answer 405.
@csrf_exempt
@never_cache
@require_safe
def healthz(request):
    return JsonResponse({"status": "ok"})


@csrf_exempt
@never_cache
@require_safe
def readyz(request):
    if _shutting_down.is_set():
        return _not_ready({"status": "shutting_down"})
    checks = {"database": _check("database", database_ping), "broker": _check("broker", broker_ping)}
    if checks["database"] == "ok":
        checks["schema"] = _schema_check()
    if checks["database"] != "ok" or checks["schema"] != "ok":
        return _not_ready({"status": "unavailable", "checks": checks})
    return JsonResponse({"status": "ok" if checks["broker"] == "ok" else "degraded", "checks": checks})


def _not_ready(body: dict) -> JsonResponse:
    response = JsonResponse(body, status=503)
    # The check's own warning is the record; Django's "Service Unavailable" error line would make every
    # probe during an outage an error event of its own (Sentry).
    response._has_been_logged = True
    return response


def _check(name, probe) -> str:
    try:
        probe()
    except Exception as exc:  # any failure means "not ready"; the details go to the log, not to the caller
        logger.warning("readyz: %s check failed: %r", name, exc)
        return "failed"
    return "ok"


def _schema_check() -> str:
    """ "ok" once the database has every migration this code knows; "behind" while some are not applied."""
    if _schema_current.is_set():
        return "ok"
    try:
        executor = MigrationExecutor(connections["default"])
        pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except Exception as exc:  # as _check: the details go to the log
        logger.warning("readyz: schema check failed: %r", exc)
        return "failed"
    if pending:
        migration, _ = pending[0]
        logger.warning(
            "readyz: the database lacks %d migration(s) of this code, the first %s.%s: run manage.py migrate",
            len(pending),
            migration.app_label,
            migration.name,
        )
        return "behind"
    _schema_current.set()
    return "ok"


def database_ping() -> None:
    """`SELECT 1` on this thread's own connection, the one requests use. An unreachable server fails
    within the connect_timeout in settings.DATABASES."""
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT 1")


def broker_ping() -> None:
    client = redis.Redis.from_url(
        settings.CELERY_BROKER_URL,
        socket_connect_timeout=BROKER_TIMEOUT_SECONDS,
        socket_timeout=BROKER_TIMEOUT_SECONDS,
    )
    try:
        client.ping()
    finally:
        client.close()


def shutting_down() -> bool:
    return _shutting_down.is_set()


def shutdown_hook_install() -> None:
    """Make SIGTERM mark this process as shutting down, then hand the signal to the handler that was
    there before (in a gunicorn worker: the one that starts its graceful stop). Idempotent; call it
    from the main thread (Python only sets signal handlers there)."""
    previous = signal.getsignal(signal.SIGTERM)
    if getattr(previous, "marks_shutdown", False):
        return

    def on_sigterm(signum, frame):
        _shutting_down.set()
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:  # nobody handled it before us: die as SIGTERM would have
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)

    on_sigterm.marks_shutdown = True
    signal.signal(signal.SIGTERM, on_sigterm)
    # gunicorn's worker asks for system calls to be restarted, not interrupted, on SIGTERM (requests in
    # flight must not see EINTR); setting a handler resets that flag, so ask again.
    signal.siginterrupt(signal.SIGTERM, False)


def shutdown_hook_install_in_gunicorn_worker() -> bool:
    """Install the hook only where SIGTERM already belongs to a gunicorn worker: gunicorn loads the WSGI
    app (and so Django's ready()) in each worker after setting its signal handlers. Elsewhere (manage.py,
    Celery, tests, gunicorn's master with preload_app) leave signals alone."""
    if threading.current_thread() is not threading.main_thread():
        return False
    owner = getattr(signal.getsignal(signal.SIGTERM), "__self__", None)
    if not type(owner).__module__.startswith("gunicorn.workers."):
        return False
    shutdown_hook_install()
    return True

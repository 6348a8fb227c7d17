"""Probes as an orchestrator sees them: /healthz and /readyz answer JSON without credentials or HTTPS,
/readyz names the dependency that failed and turns traffic away once the process got SIGTERM, and
`manage.py worker_alive` tells a live Celery worker from a missing one."""

import http.client
import json
import logging
import os
import re
import signal
import threading
import time

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connections
from django.test import Client, override_settings

from donutsite import health
from testsupport.processes import BIN, Process, System, wait_until

DEAD_PORT_BROKER = "redis://127.0.0.1:9/0"  # the discard port: nothing listens there


def test_healthz_answers_without_credentials_and_without_the_database(client):
    # No django_db mark: any database access would fail this test.
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"status": "ok"}
    assert "no-store" in response["Cache-Control"]


@pytest.mark.django_db
def test_readyz_is_ok_when_the_database_and_the_broker_answer(client):
    response = client.get("/readyz")

    assert response.status_code == 200, response.content
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "broker": "ok", "schema": "ok"}}


@pytest.mark.django_db
def test_readyz_stays_ready_naming_the_broker_when_it_is_down(client, caplog):
    # Without the broker the web still sells (hand-overs wait for the sweep): a probe that took every web
    # process out of rotation would close the shop over what it is built to ride out.
    started = time.monotonic()
    with override_settings(CELERY_BROKER_URL=DEAD_PORT_BROKER):
        response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "degraded", "checks": {"database": "ok", "broker": "failed", "schema": "ok"}}
    assert time.monotonic() - started < 3
    assert [r.name for r in caplog.records if r.levelno >= logging.WARNING] == ["donutsite.health"]


@pytest.mark.django_db
def test_readyz_is_503_while_the_database_lacks_a_migration_of_this_code(client, monkeypatch, caplog):
    # New code started on the old schema (`docker compose up --no-deps web` before `migrate`) answered 500s
    # on every request that read a new column, while its probe said ready.
    monkeypatch.setattr(health, "_schema_current", threading.Event())
    with connections["default"].cursor() as cursor:
        cursor.execute("DELETE FROM django_migrations WHERE app = 'notifications' ORDER BY id DESC LIMIT 1")

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "checks": {"database": "ok", "broker": "ok", "schema": "behind"},
    }
    [warning] = [r.getMessage() for r in caplog.records if r.name == "donutsite.health"]
    assert "lacks 1 migration(s)" in warning and "run manage.py migrate" in warning


@pytest.fixture
def unreachable_database(monkeypatch):
    """The probe's connection points at a port where no database listens."""
    default = connections["default"]
    dead = type(default)({**default.settings_dict, "HOST": "127.0.0.1", "PORT": 9}, alias="default")
    monkeypatch.setattr(health, "connections", {"default": dead})
    yield
    dead.close()


@pytest.mark.django_db
def test_readyz_is_503_naming_the_database_when_it_is_unreachable(client, unreachable_database, caplog):
    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "checks": {"database": "failed", "broker": "ok"}}
    # A real connection failure, kept in the log rather than shown to whoever asks.
    [failure] = [r for r in caplog.records if r.name == "donutsite.health"]
    assert "OperationalError" in failure.getMessage() and "OperationalError" not in response.content.decode()
    # That warning is the record: Django's "Service Unavailable" error line would make each probe during an
    # outage an error event (Sentry) of its own.
    assert [r.name for r in caplog.records if r.levelno >= logging.WARNING] == ["donutsite.health"]


def test_the_probes_and_the_metrics_scrape_are_exempt_from_the_https_redirect(db):
    # The regexes in settings (SecurityMiddleware matches them against the path without its leading "/").
    # A scrape allowed by address (METRICS_ALLOWED_IPS) is necessarily direct, in plain HTTP.
    with override_settings(
        SECURE_SSL_REDIRECT=True,
        SECURE_REDIRECT_EXEMPT=settings.SECURE_REDIRECT_EXEMPT,
        METRICS_ALLOWED_IPS=["127.0.0.1"],
    ):
        plain_http = Client()  # a new client: SecurityMiddleware reads its settings when first loaded
        assert plain_http.get("/healthz").status_code == 200
        assert plain_http.get("/readyz").status_code == 200
        assert plain_http.get("/metrics").status_code == 200
        assert plain_http.get("/api/v1/products/").status_code == 301


@pytest.mark.django_db
def test_the_probes_answer_get_and_head_only(client):
    assert client.head("/readyz").status_code == 200
    assert client.post("/healthz").status_code == 405


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
@pytest.mark.parametrize("method", ["post", "put", "delete"])
def test_another_method_on_a_probe_is_405_as_a_real_client_gets_it_not_a_csrf_page(path, method):
    # Django's test client skips the CSRF check that every real request goes through.
    client = Client(enforce_csrf_checks=True)

    response = getattr(client, method)(path)

    assert response.status_code == 405
    assert response["Allow"] == "GET, HEAD"


@pytest.fixture
def sigterm_handler():
    """A SIGTERM handler standing in for gunicorn's worker (which starts its graceful stop); restored after."""
    received = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: received.append(signum))
    yield received
    signal.signal(signal.SIGTERM, previous)
    health._shutting_down.clear()


@pytest.mark.django_db
def test_after_sigterm_readyz_turns_traffic_away_and_the_previous_handler_still_runs(client, sigterm_handler):
    health.shutdown_hook_install()
    health.shutdown_hook_install()  # idempotent: the handler is chained once
    assert client.get("/readyz").status_code == 200

    os.kill(os.getpid(), signal.SIGTERM)

    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json() == {"status": "shutting_down"}
    assert sigterm_handler == [signal.SIGTERM]
    assert client.get("/healthz").status_code == 200  # alive, only not ready


def test_outside_a_gunicorn_worker_signals_are_left_alone():
    before = signal.getsignal(signal.SIGTERM)
    assert health.shutdown_hook_install_in_gunicorn_worker() is False
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.django_db
def test_worker_alive_fails_when_no_worker_answers():
    with pytest.raises(CommandError, match="no answer from nobody@"):
        call_command("worker_alive", "--destination", "nobody@%h", "--timeout", "0.5")


@pytest.mark.parametrize("timeout", ["-1", "0", "nan", "soon"])
def test_worker_alive_refuses_a_timeout_that_is_no_positive_number(timeout):
    # A timeout of -1 waited for nothing and reported every live worker silent.
    with pytest.raises(CommandError, match="--timeout"):
        call_command("worker_alive", "--timeout", timeout)


def test_worker_alive_fails_fast_when_the_broker_is_down(broker_down):
    started = time.monotonic()
    with pytest.raises(CommandError, match="cannot ping"):
        call_command("worker_alive", "--timeout", "1")
    assert time.monotonic() - started < 5


# --- with real processes --------------------------------------------------------------------------------


@pytest.fixture
def system(django_db_setup, django_db_blocker):
    from celery import current_app

    running = System(broker_url=current_app.conf.broker_url)
    running.flush_broker()
    try:
        yield running
    finally:
        running.stop()


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_worker_alive_passes_for_a_running_worker(system):
    system.start_worker()

    call_command("worker_alive", "--destination", "worker1@%h", "--timeout", "5")

    with pytest.raises(CommandError):
        call_command("worker_alive", "--destination", "worker2@%h", "--timeout", "1")


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_worker_alive_without_arguments_needs_every_named_worker(system, capsys):
    # The names make run and docker-compose.yml give the workers (the last -n wins).
    system.start_worker("-n", "factory@%h")
    system.start_worker("-n", "urgent@%h")
    with pytest.raises(CommandError, match="no answer from notifications@"):
        call_command("worker_alive", "--timeout", "2")

    system.start_worker("-n", "notifications@%h")
    call_command("worker_alive", "--timeout", "5")
    out = capsys.readouterr().out
    assert "factory@" in out and "urgent@" in out and "notifications@" in out


def _readyz(connection: http.client.HTTPConnection) -> tuple[int, dict]:
    connection.request("GET", "/readyz")
    response = connection.getresponse()
    return response.status, json.loads(response.read())


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_gunicorn_worker_that_got_sigterm_answers_readyz_with_503_then_stops(system):
    web = Process(
        "web-sigterm",
        [str(BIN / "gunicorn"), "donutsite.wsgi", "-b", f"127.0.0.1:{system.web_port}", "-w", "1", "--threads", "2"],
        system.env,
        ready="Booting worker",
    )
    try:
        [worker] = [int(pid) for pid in re.findall(r"Booting worker with pid: (\d+)", web.output())]
        connection = http.client.HTTPConnection("127.0.0.1", system.web_port, timeout=5)
        status, body = _readyz(connection)
        assert (status, body["status"]) == (200, "ok")

        os.kill(worker, signal.SIGTERM)  # what the master sends each worker on a graceful stop
        # The kept-alive connection still reaches the stopping worker (gunicorn lets it linger 2 s), which
        # answers otherwise than 200 once it has handled the signal: a moment after kill() returns.
        second = wait_until(
            lambda: (answer := _readyz(connection))[0] != 200 and answer, timeout=10, what="/readyz not to answer 200"
        )
        assert second == (503, {"status": "shutting_down"})
        connection.close()

        # gunicorn's own handling went on: that worker exits and the master boots a fresh one.
        wait_until(lambda: f"Worker exiting (pid: {worker})" in web.output(), timeout=10, what="the worker to exit")
        wait_until(lambda: web.output().count("Booting worker") == 2, timeout=10, what="a fresh worker")
    finally:
        web.stop()

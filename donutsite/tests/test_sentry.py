"""Error tracking: with SENTRY_DSN set, an unhandled error in a request reaches Sentry (a real local
HTTP server standing in for it) tagged with the request's X-Request-ID; without it, no SDK runs."""

import gzip
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import sentry_sdk
from django.conf import settings
from django.db import connections
from django.test import Client

from donutsite.sentry import sentry_init
from inventory import selectors
from testsupport.data import make_api_client, make_product

ROOT = Path(__file__).resolve().parents[2]


class SentryStandIn(ThreadingHTTPServer):
    """Takes envelopes at /api/<project>/envelope/ as Sentry does and keeps their items."""

    def __init__(self):
        self.items: list[dict] = []
        self.auth: list[str] = []
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def dsn(self) -> str:
        return f"http://public-key@127.0.0.1:{self.server_address[1]}/42"


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if self.path == "/api/42/envelope/":
            self.server.auth.append(self.headers.get("X-Sentry-Auth", ""))
            lines = body.split(b"\n")
            # An envelope: a header line, then (item header, payload) pairs.
            for header, payload in zip(lines[1::2], lines[2::2], strict=False):
                if json.loads(header).get("type") == "event":
                    self.server.items.append(json.loads(payload))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args):
        pass


@pytest.fixture
def sentry():
    server = SentryStandIn()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    sentry_sdk.init(dsn=None)  # a client with no DSN sends nothing: the rest of the run is untouched
    server.shutdown()
    server.server_close()


@pytest.mark.django_db
def test_an_unhandled_error_reaches_sentry_with_its_request_id(sentry, monkeypatch):
    assert sentry_init(dsn=sentry.dsn, environment="test", release="", traces_sample_rate=0.0)

    def broken():
        raise RuntimeError("the catalogue query broke")

    monkeypatch.setattr(selectors, "product_list", broken)

    response = Client(raise_request_exception=False).get("/api/v1/products/", HTTP_X_REQUEST_ID="req-sentry-1")
    sentry_sdk.flush(timeout=10)

    assert response.status_code == 500
    errors = [event for event in sentry.items if event.get("exception")]
    assert len(errors) == 1, sentry.items
    event = errors[0]
    assert event["exception"]["values"][-1]["type"] == "RuntimeError"
    assert event["exception"]["values"][-1]["value"] == "the catalogue query broke"
    assert event["tags"]["request_id"] == "req-sentry-1"
    assert event["transaction"] == "/api/v1/products/"
    assert event["environment"] == "test"
    assert "sentry_key=public-key" in sentry.auth[0]


@pytest.mark.django_db(transaction=True)
def test_a_database_outage_reaches_sentry_without_the_api_key_or_the_database_password(sentry):
    """A sale whose key lookup finds the database refusing: the 503's error log line reaches Sentry, but
    neither the client's key (the view's and the ORM's local variables) nor the database password (the
    driver's connection arguments) goes with it to the third party."""
    assert sentry_init(dsn=sentry.dsn, environment="test", release="", traces_sample_rate=0.0)
    make_product(sku="GLAZED", on_hand=5)
    _, key = make_api_client()
    password = "db-password-from-the-environment"  # noqa: S105 - a test value
    default = connections["default"]
    saved = {name: default.settings_dict[name] for name in ("HOST", "PORT", "PASSWORD")}
    default.close()
    default.settings_dict.update(HOST="127.0.0.1", PORT=9, PASSWORD=password)  # nothing listens: refused at once
    try:
        response = Client().post(
            "/api/v1/sales/",
            {"items": [{"sku": "GLAZED", "quantity": 1}]},
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Api-Key {key}",
        )
    finally:
        default.close()
        default.settings_dict.update(saved)
    sentry_sdk.flush(timeout=10)

    assert response.status_code == 503
    errors = [event for event in sentry.items if event.get("exception")]
    assert len(errors) == 1, sentry.items
    assert errors[0]["exception"]["values"][-1]["type"] == "OperationalError"
    sent = json.dumps(sentry.items)
    assert key not in sent
    assert password not in sent


@pytest.mark.django_db
def test_a_tampered_admin_url_or_an_oversized_login_form_sends_no_event(sentry, admin_client):
    """Django logs these 400s at ERROR, which the SDK sends as events: ops alerted by someone's probe. They
    are warning lines (donutsite.logging.SuspiciousRequestFilter); a real error still reaches Sentry (above)."""
    assert sentry_init(dsn=sentry.dsn, environment="test", release="", traces_sample_rate=0.0)

    tampered = admin_client.get("/admin/inventory/restock/?_to_field=password")
    oversized = Client().post("/admin/login/", {f"field{i}": "x" for i in range(1500)})
    sentry_sdk.flush(timeout=10)

    assert tampered.status_code == oversized.status_code == 400
    assert sentry.items == []


def _initialised(**env) -> str:
    environment = {key: value for key, value in os.environ.items() if key != "SENTRY_DSN"}
    environment.update(DJANGO_SETTINGS_MODULE="donutsite.settings", **env)
    script = "import django, sentry_sdk; django.setup(); print(sentry_sdk.is_initialized())"
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_without_a_dsn_no_sdk_is_started():
    assert not settings.SENTRY_DSN and not settings.SENTRY_ENABLED
    assert _initialised() == "False"


def test_with_a_dsn_settings_start_it():
    assert _initialised(SENTRY_DSN="http://public-key@127.0.0.1:9/42") == "True"

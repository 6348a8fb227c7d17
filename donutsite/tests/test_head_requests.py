"""HEAD requests (uptime probes send them) under gunicorn, as in production: Django's WSGI handler sends the
GET's body for a HEAD, and gunicorn drops it with a warning per request; only Django's test client and
runserver strip it, so this runs against a real gunicorn."""

import http.client
import uuid

import pytest
from celery import current_app

from testsupport.data import make_api_client, make_product
from testsupport.processes import System

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def _ask(port: int, method: str, path: str, headers: dict) -> tuple[int, dict, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(method, path, headers=headers)
        response = connection.getresponse()
        body = response.read()  # for a HEAD, http.client reads nothing whatever Content-Length says
        return response.status, {name: value for name, value in response.getheaders() if name != "Date"}, body
    finally:
        connection.close()


def test_a_head_answers_as_the_get_would_without_a_body_or_a_warning_in_the_log(tmp_path):
    make_product("HEADED", on_hand=5)
    _, key = make_api_client()
    system = System(broker_url=current_app.conf.broker_url, log_dir=tmp_path)
    try:
        web = system.start_web()
        for path, headers in [("/api/v1/products/HEADED/", {"Authorization": f"Api-Key {key}"})]:
            # One request id for both, so every header the two answers carry can be compared.
            headers = {**headers, "X-Request-ID": f"head-{uuid.uuid4().hex[:12]}"}
            get_status, get_headers, get_body = _ask(system.web_port, "GET", path, headers)
            head_status, head_headers, head_body = _ask(system.web_port, "HEAD", path, headers)

            assert get_status == 200 and get_body, (path, get_status, get_body[:300])
            assert get_headers["Content-Length"] == str(len(get_body)), path
            assert (head_status, head_headers, head_body) == (get_status, get_headers, b""), path
    finally:
        system.stop()  # gunicorn logs its warning after the answer has gone: read the log once it has exited
    assert "no-body response" not in web.output(), web.output()[-3000:]

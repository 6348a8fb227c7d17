"""Flower as ops run it: behind basic auth, listing every queue with its length, dead_letter included."""

import base64
import http.client
import json
import os
import re
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest
import redis
from celery import current_app

from donutsite.tests.test_csp import _Page, policy_of, refused
from testsupport.processes import BIN, Process, System, free_port, wait_until

pytestmark = pytest.mark.e2e


def get(url, auth=None):
    headers = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as response:  # noqa: S310
            body = response.read()
            return response.status, json.loads(
                body
            ) if response.headers.get_content_type() == "application/json" else body
    except urllib.error.HTTPError as error:
        return error.code, None
    except urllib.error.URLError:
        return 0, None  # not listening yet


def post(url, auth) -> int:
    headers = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode(), "Content-Type": "application/json"}
    request = urllib.request.Request(url, data=b"{}", headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_flower_will_not_start_without_a_login():
    from donutsite.flower import flower_argv

    with pytest.raises(SystemExit, match="FLOWER_BASIC_AUTH"):
        flower_argv(["--port=5555"], {})
    assert flower_argv(["--read_only=false"], {"FLOWER_BASIC_AUTH": "ops:x"})[-1] == "--read_only=true"
    assert flower_argv(["--basic_auth=ops:x"], {})[-1] == "--read_only=true"


@pytest.mark.parametrize(
    ("args", "environ"),
    [
        ([], {"FLOWER_BASIC_AUTH": "ops:s3cret,"}),
        ([], {"FLOWER_BASIC_AUTH": ",ops:s3cret"}),
        ([], {"FLOWER_BASIC_AUTH": "ops"}),
        ([], {"FLOWER_BASIC_AUTH": "ops:"}),
        (["--basic_auth="], {}),
        (["--basic-auth=ops:s3cret,"], {"FLOWER_BASIC_AUTH": "ops:s3cret"}),
    ],
)
def test_flower_will_not_start_with_an_empty_login_among_its_logins(args, environ):
    # Flower lets in whoever matches any entry, and `Authorization: Basic ====` decodes to the empty one.
    from donutsite.flower import flower_argv

    with pytest.raises(SystemExit, match="not user:password"):
        flower_argv(args, environ)


def test_flower_takes_several_logins_and_passwords_with_colons():
    from donutsite.flower import flower_argv

    assert flower_argv([], {"FLOWER_BASIC_AUTH": "ops:s3cret,oncall:a:b"})[-1] == "--read_only=true"
    assert flower_argv(["--basic_auth=ops:s3cret"], {"FLOWER_BASIC_AUTH": ""})[-1] == "--read_only=true"


def test_flower_needs_its_login_and_counts_the_dead_letter_queue():
    broker = redis.Redis.from_url(current_app.conf.broker_url)
    broker.delete("dead_letter")
    current_app.send_task("factory.restock_place", args=[1], queue="dead_letter")
    current_app.send_task("factory.restock_place", args=[2], queue="dead_letter")
    port = free_port()
    env = {**os.environ, "FLOWER_BASIC_AUTH": "ops:s3cret", "PYTHONUNBUFFERED": "1"}
    flower = Process(
        "flower", [str(BIN / "python"), "-m", "donutsite.flower", f"--port={port}", "--address=127.0.0.1"], env
    )
    try:
        url = f"http://127.0.0.1:{port}/api/queues/length"
        wait_until(lambda: get(url, "ops:s3cret")[0] == 200, timeout=60, what="Flower to answer")

        assert get(url)[0] == 401
        assert get(url, "ops:wrong")[0] == 401
        metrics = f"http://127.0.0.1:{port}/metrics"
        assert get(metrics)[0] == 401, "Flower's Prometheus page (task and worker names) needs the login too"
        assert get(metrics, "ops:s3cret")[0] == 200
        queues = {q["name"]: q["messages"] for q in get(url, "ops:s3cret")[1]["active_queues"]}
        sent = post(f"http://127.0.0.1:{port}/api/task/async-apply/factory.restock_place", "ops:s3cret")
        assert sent == 403, "read-only: the API sends no task"
        assert post(f"http://127.0.0.1:{port}/api/worker/shutdown/worker1@h", "ops:s3cret") == 403
        assert queues["dead_letter"] == 2
        assert {"default", "factory_urgent", "factory", "notifications", "maintenance"} <= set(queues)
    finally:
        flower.stop()
        broker.delete("dead_letter")


def test_with_workers_online_flower_still_lists_the_queues_none_of_them_consume():
    """Flower lists only consumed queues once workers report theirs; ours adds every declared one."""
    from flower.views import BaseHandler

    from donutsite.flower import widen_queue_list

    online = SimpleNamespace(
        application=SimpleNamespace(workers={"factory@h": {"active_queues": [{"name": "factory"}]}}),
        capp=current_app,
    )
    assert BaseHandler.get_active_queue_names(online) == ["factory"], "Flower's own behaviour"

    widen_queue_list()

    assert BaseHandler.get_active_queue_names(online) == sorted(current_app.conf.task_queues_names)


@pytest.mark.django_db(transaction=True)
def test_flower_shows_no_worker_settings_so_a_viewer_gets_no_secret_from_them(django_db_blocker):
    """A worker answers Celery's `conf` inspection with every Django setting. Celery masks only names
    with KEY, SECRET, PASS, TOKEN... in them: the broker and Redis URLs (compose puts REDIS_PASSWORD in
    them, and the broker runs any task it is given) and the Slack webhook went out whole, and Flower
    showed them on each worker's Config tab and in /api/workers to anyone with its read-only login."""
    webhook = "https://hooks.slack.com/services/T0000/B0000/webhook-secret-4f2a"
    system = System(broker_url=current_app.conf.broker_url)
    system.env["SLACK_WEBHOOK_URL"] = webhook
    port = free_port()
    env = {**system.env, "FLOWER_BASIC_AUTH": "ops:s3cret"}
    flower = None
    try:
        system.start_worker()
        flower = Process(
            "flower", [str(BIN / "python"), "-m", "donutsite.flower", f"--port={port}", "--address=127.0.0.1"], env
        )
        base = f"http://127.0.0.1:{port}"
        wait_until(
            lambda: "worker1@" in str(get(f"{base}/api/workers?refresh=1", "ops:s3cret")[1]),
            timeout=60,
            what="Flower to see the worker",
        )
        status, workers = get(f"{base}/api/workers?refresh=1", "ops:s3cret")
        name = next(name for name in workers if name.startswith("worker1@"))
        page_status, page = get(f"{base}/worker/{name}", "ops:s3cret")

        assert status == 200 and page_status == 200
        assert workers[name]["stats"], "Flower still shows what the worker does"
        for shown in (json.dumps(workers), page.decode()):
            assert "webhook-secret-4f2a" not in shown
            assert current_app.conf.broker_url not in shown
    finally:
        if flower is not None:
            flower.stop()
        system.stop()


def start_flower(port, *args, **environ):
    env = {**os.environ, "FLOWER_BASIC_AUTH": "ops:s3cret", "PYTHONUNBUFFERED": "1", **environ}
    argv = [str(BIN / "python"), "-m", "donutsite.flower", f"--port={port}", "--address=127.0.0.1", *args]
    flower = Process("flower", argv, env)
    wait_until(lambda: get(f"http://127.0.0.1:{port}/healthcheck")[0] == 200, timeout=60, what="Flower to answer")
    return flower


def ask(port, path, auth=None, source="127.0.0.1"):
    """GET `path` from Flower as a client at `source` (any 127.0.0.0/8 address is this machine):
    (status, headers, body)."""
    headers = {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, response.headers, response.read()
    finally:
        connection.close()


def test_flower_locks_out_an_address_after_failed_logins_until_the_window_passes():
    """Flower's basic auth took any number of wrong passwords. Now, as the admin's login: after
    ADMIN_LOGIN_MAX_FAILURES failures from one address within ADMIN_LOGIN_WINDOW_SECONDS, that address
    gets 429 with Retry-After, the right password included, until the window passes; others still log in."""
    from donutsite import ratelimit
    from donutsite.flower import login_counter

    window = 10
    port = free_port()
    for address in ("127.0.0.1", "127.0.0.2"):
        ratelimit.forget(login_counter(address))
    flower = start_flower(port, ADMIN_LOGIN_MAX_FAILURES="3", ADMIN_LOGIN_WINDOW_SECONDS=str(window))
    try:
        path = "/api/queues/length"
        assert ask(port, path)[0] == 401, "no login sent: the browser's first request, not a failure"
        assert [ask(port, path, "ops:wrong")[0] for _ in range(3)] == [401, 401, 401]

        locked = [ask(port, path, login) for login in ("ops:wrong", "ops:s3cret", "ops:s3cret")]
        assert [status for status, _, _ in locked] == [429, 429, 429], "even the right password, while locked"
        assert all(0 < int(headers["Retry-After"]) <= window for _, headers, _ in locked)
        assert b"Too many failed logins" in locked[0][2]
        assert b"`manage.py admin_login_unlock --flower`" in locked[0][2], "names the way out, as the admin's does"
        assert ask(port, path, "ops:s3cret", source="127.0.0.2")[0] == 200, "another address still logs in"
        warnings = [line for line in flower.output().splitlines() if "failed Flower logins" in line]
        assert len(warnings) == 1 and "127.0.0.1" in warnings[0], "one warning per address and window"
        # Flower runs as `python -m donutsite.flower`; its lines must still carry the name ops filter on.
        assert json.loads(warnings[0])["logger"] == "donutsite.flower"

        wait_until(lambda: ask(port, path, "ops:s3cret")[0] == 200, timeout=window + 30, what="the window to pass")
    finally:
        flower.stop()
        for address in ("127.0.0.1", "127.0.0.2"):
            ratelimit.forget(login_counter(address))


def test_flower_logs_in_and_counts_nothing_while_redis_is_down():
    """The per-address counters fail open, as everywhere (docs/reliability.md): with Redis refused,
    wrong passwords are 401s and the right one still gets in."""
    port = free_port()
    flower = start_flower(port, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", ADMIN_LOGIN_MAX_FAILURES="1")
    try:
        path = "/api/queues/length"
        assert [ask(port, path, "ops:wrong")[0] for _ in range(3)] == [401, 401, 401]
        assert ask(port, path, "ops:s3cret")[0] == 200
    finally:
        flower.stop()


@pytest.mark.parametrize("auto_refresh", ["true", "false"])
def test_flowers_pages_send_security_headers_that_allow_everything_they_load(auto_refresh):
    """Flower's pages are not to be framed (clickjacking its tabs), nor to run a script or load anything
    from elsewhere; the policy must still allow every script, stylesheet and image the pages load (the
    start page's inline script differs with --auto_refresh)."""
    port = free_port()
    flower = start_flower(port, f"--auto_refresh={auto_refresh}")
    try:
        for path in ("/", "/workers", "/tasks", "/broker"):
            status, headers, body = ask(port, path, "ops:s3cret")
            assert status == 200, path
            assert headers["X-Frame-Options"] == "DENY"
            assert headers["X-Content-Type-Options"] == "nosniff"
            assert headers["Referrer-Policy"] == "same-origin"
            policy = policy_of({"Content-Security-Policy": headers["Content-Security-Policy"]})
            assert policy["frame-ancestors"] == ["'none'"] and policy["object-src"] == ["'none'"]
            assert "'unsafe-inline'" not in policy["script-src"], "no injected script may run"
            page = _Page()
            page.feed(body.decode())
            page.close()
            assert page.loads, "the page was parsed"
            assert [(d, what) for d, what in page.loads if refused(policy, d, what)] == [], path
            for _, (kind, url) in page.loads:
                if kind == "url" and url.startswith("/static/"):
                    assert ask(port, url)[0] == 200, url
                    if url.split("?")[0].endswith(".css"):  # what a stylesheet loads in turn
                        css = ask(port, url)[2].decode()
                        for source in re.findall(r"url\(['\"]?([a-z]+):", css):
                            assert f"{source}:" in policy["img-src"], (url, source)
        assert "Content-Security-Policy" in ask(port, "/", "ops:wrong")[1], "error pages too"
    finally:
        flower.stop()

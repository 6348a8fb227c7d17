"""Flower as ops run it: behind basic auth, listing every queue with its length, dead_letter included."""

import base64
import json
import os
import urllib.error
import urllib.request
from types import SimpleNamespace

import pytest
import redis
from celery import current_app

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

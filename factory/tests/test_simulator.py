"""The legacy factory simulator against its contract (v1, as the factory's contract defines it), over real HTTP.

No database: the simulator keeps its state in memory (and in a state file where a test gives one), and
callbacks go to a tiny local receiver.
"""

import collections
import http.client
import itertools
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.core.management import CommandError, call_command

from factory.signatures import check
from factory.simulator import FaultConfig, LegacyFactory
from testsupport import processes

KEY = "test-factory-key"
SECRET = "test-callback-secret"
ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
_refs = itertools.count(1)


class Receiver:
    """A callback endpoint that records every request and answers the queued statuses, then 200."""

    def __init__(self):
        self.requests = []
        self.statuses = collections.deque()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver.lock:
                    receiver.requests.append({"path": self.path, "headers": self.headers, "body": body})
                    status = receiver.statuses.popleft() if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/factory/callback"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def received(self):
        with self.lock:
            return list(self.requests)


@pytest.fixture
def receiver():
    r = Receiver()
    r.thread.start()
    yield r
    r.server.shutdown()
    r.server.server_close()


def fast_config(**overrides):
    settings = {
        "production_seconds": 0.2,
        "callback_retry_base_seconds": 0.05,
        "callback_retry_max_seconds": 0.2,
        "callback_timeout_seconds": 5.0,
    }
    settings.update(overrides)
    return FaultConfig(**settings)


@pytest.fixture
def make_sim():
    started = []

    def make(state_file=None, **overrides):
        sim = LegacyFactory(
            fast_config(**overrides), api_key=KEY, callback_secret=SECRET, seed=1234, state_file=state_file
        )
        sim.start()
        started.append(sim)
        return sim

    yield make
    for sim in started:
        sim.stop()


@pytest.fixture
def sim(make_sim):
    return make_sim()


def call(sim, method, path, body=None, *, key=KEY, timeout=10, raw=None):
    """One request on a fresh connection: (status, headers, parsed JSON or raw bytes when not JSON)."""
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["X-Factory-Key"] = key
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        payload = response.read()
        try:
            parsed = json.loads(payload)
        except ValueError:
            parsed = payload
        return response.status, response.headers, parsed
    finally:
        conn.close()


def order_body(receiver, **overrides):
    body = {"reference": f"restock-{next(_refs)}", "sku": "GLAZED", "quantity": 12, "callback_url": receiver.url}
    body.update(overrides)
    return body


# The simulator calls back within milliseconds: testsupport's wait, polled at that pace.
wait_until = partial(processes.wait_until, timeout=15, interval=0.02)


def sim_order(sim, order_id):
    return next(o for o in sim.orders() if o["order_id"] == order_id)


def delivered(sim, order_id):
    return sim_order(sim, order_id)["callback"]["state"] == "delivered"


# --- POST /v1/orders: every row of the responses table -------------------------------------------------


def test_new_order_is_accepted_with_an_order_object(sim, receiver):
    body = order_body(receiver, quantity=120)

    status, headers, order = call(sim, "POST", "/v1/orders", body)

    assert status == 202
    assert headers["Content-Type"] == "application/json"
    assert re.fullmatch(r"F-\d{6}", order["order_id"])
    assert order["reference"] == body["reference"]
    assert (order["sku"], order["quantity"]) == ("GLAZED", 120)
    assert order["status"] == "accepted"
    assert order["quantity_produced"] is None
    assert order["completed_at"] is None
    assert ISO_Z.fullmatch(order["created_at"]) and ISO_Z.fullmatch(order["estimated_ready_at"])
    assert order["estimated_ready_at"] >= order["created_at"]
    assert set(order) == {
        "order_id",
        "reference",
        "sku",
        "quantity",
        "status",
        "quantity_produced",
        "created_at",
        "estimated_ready_at",
        "completed_at",
    }


def test_same_reference_with_same_sku_and_quantity_replays_the_existing_order(sim, receiver):
    body = order_body(receiver)
    _, _, first = call(sim, "POST", "/v1/orders", body)

    status, _, again = call(sim, "POST", "/v1/orders", {**body, "callback_url": "http://other.example/cb"})

    assert status == 200
    assert again["order_id"] == first["order_id"]
    assert sim.stats()["orders_created"] == 1


@pytest.mark.parametrize("change", [{"sku": "CRULLER"}, {"quantity": 13}])
def test_same_reference_with_different_sku_or_quantity_conflicts(sim, receiver, change):
    body = order_body(receiver)
    call(sim, "POST", "/v1/orders", body)

    status, _, answer = call(sim, "POST", "/v1/orders", {**body, **change})

    assert status == 409
    assert isinstance(answer["error"], str) and answer["error"]
    assert sim.stats()["orders_created"] == 1


INVALID = {
    "reference missing": {"reference": None},
    "reference empty": {"reference": ""},
    "reference 65 chars": {"reference": "r" * 65},
    "reference with a space": {"reference": "restock 1"},
    "reference with a slash": {"reference": "restock/1"},
    "reference non-ascii": {"reference": "réstock"},
    "reference not a string": {"reference": 42},
    "reference trailing newline": {"reference": "restock-1\n"},
    "sku missing": {"sku": None},
    "sku empty": {"sku": ""},
    "sku 65 chars": {"sku": "S" * 65},
    "sku not a string": {"sku": 7},
    "quantity missing": {"quantity": None},
    "quantity zero": {"quantity": 0},
    "quantity negative": {"quantity": -1},
    "quantity 10001": {"quantity": 10_001},
    "quantity true": {"quantity": True},
    "quantity float": {"quantity": 12.0},
    "quantity string": {"quantity": "12"},
    "callback_url missing": {"callback_url": None},
    "callback_url relative": {"callback_url": "/factory/callback"},
    "callback_url ftp": {"callback_url": "ftp://donuts.example/cb"},
    "callback_url no host": {"callback_url": "http:///cb"},
    "callback_url bad port": {"callback_url": "http://donuts.example:99999/cb"},
    "callback_url not a string": {"callback_url": ["http://donuts.example/cb"]},
}


@pytest.mark.parametrize("change", INVALID.values(), ids=INVALID.keys())
def test_invalid_field_is_rejected_with_400(sim, receiver, change):
    body = order_body(receiver)
    body.update(change)
    body = {k: v for k, v in body.items() if v is not None}

    status, _, answer = call(sim, "POST", "/v1/orders", body)

    assert status == 400
    assert isinstance(answer["error"], str) and answer["error"]
    assert sim.stats()["orders_created"] == 0


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"", b"\xff\xfe"], ids=["broken", "array", "empty", "bytes"])
def test_body_that_is_not_a_json_object_is_rejected_with_400(sim, raw):
    status, _, answer = call(sim, "POST", "/v1/orders", raw=raw)

    assert status == 400
    assert answer["error"]


VALID_EDGES = {
    "reference 64 chars of every allowed kind": {"reference": ("Az09._:-" * 8)},
    "quantity 1": {"quantity": 1},
    "quantity 10000": {"quantity": 10_000},
    "sku 64 chars": {"sku": "S" * 64},
    "https callback": {"callback_url": "https://donuts.example:8443/factory/callback?x=1"},
}


@pytest.mark.parametrize("change", VALID_EDGES.values(), ids=VALID_EDGES.keys())
def test_values_at_the_edges_of_the_rules_are_accepted(make_sim, receiver, change):
    sim = make_sim(production_seconds=60)  # the https callback would go nowhere

    status, _, order = call(sim, "POST", "/v1/orders", order_body(receiver, **change))

    assert status == 202
    assert order["status"] == "accepted"


@pytest.mark.parametrize("key", [None, "", "wrong-key"], ids=["missing", "empty", "wrong"])
@pytest.mark.parametrize(
    "method,path", [("POST", "/v1/orders"), ("GET", "/v1/orders/F-000001"), ("GET", "/v1/orders?reference=x")]
)
def test_missing_or_wrong_key_is_401(sim, receiver, key, method, path):
    status, _, answer = call(sim, method, path, order_body(receiver) if method == "POST" else None, key=key)

    assert status == 401
    assert answer["error"]
    assert sim.stats()["orders_created"] == 0


def test_rate_limited_request_is_429_with_retry_after(make_sim, receiver):
    sim = make_sim(rate_limit_rate=1.0)
    body = order_body(receiver)

    status, headers, answer = call(sim, "POST", "/v1/orders", body)

    assert status == 429
    assert headers["Retry-After"] == "1"
    assert answer["error"]
    assert sim.stats()["orders_created"] == 0
    sim.configure(rate_limit_rate=0.0)
    assert call(sim, "POST", "/v1/orders", body)[0] == 202


def test_errors_are_500_502_503_sometimes_not_json_and_create_nothing(make_sim, receiver):
    sim = make_sim(error_rate=1.0)

    answers = [call(sim, "POST", "/v1/orders", order_body(receiver)) for _ in range(30)]

    assert {status for status, _, _ in answers} <= {500, 502, 503}
    not_json = [(status, body) for status, _, body in answers if isinstance(body, bytes)]
    assert not_json, "some 5xx bodies should not be JSON"
    assert all(status in (502, 503) and body.startswith(b"<html>") for status, body in not_json)
    assert sim.stats()["orders_created"] == 0
    assert sum(sim.stats()["post_orders"].values()) == 30


def test_error_after_create_then_a_retry_with_the_same_reference_gets_the_order(make_sim, receiver):
    sim = make_sim(error_rate=1.0, error_after_create_rate=1.0)
    body = order_body(receiver)

    status, _, _ = call(sim, "POST", "/v1/orders", body)
    assert status in (500, 502, 503)

    sim.configure(error_rate=0.0)
    status, _, order = call(sim, "POST", "/v1/orders", body)
    assert status == 200
    assert order["reference"] == body["reference"]
    assert sim.stats()["orders_created"] == 1


def test_hang_holds_the_request_past_the_client_timeout_while_other_requests_are_served(make_sim, receiver):
    sim = make_sim(hang_rate=1.0, production_seconds=60)
    body = order_body(receiver)
    hung = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=1)
    hung.request("POST", "/v1/orders", json.dumps(body).encode(), {"X-Factory-Key": KEY})
    try:
        # Served while the hanging request is still open on its own thread.
        assert call(sim, "GET", f"/v1/orders?reference={body['reference']}")[0] == 200
        assert call(sim, "GET", "/_sim/stats")[0] == 200

        with pytest.raises(TimeoutError):
            hung.getresponse()

        # The hang happened after the order was created, so a retry with the same reference is a replay.
        sim.configure(hang_rate=0.0)
        wait_until(lambda: call(sim, "GET", f"/v1/orders?reference={body['reference']}")[2]["results"], what="order")
        status, _, order = call(sim, "POST", "/v1/orders", body)
        assert status == 200
        assert order["reference"] == body["reference"]
        assert sim.stats()["post_orders"]["hang"] == 1
    finally:
        hung.close()


def test_latency_delays_but_still_answers(make_sim, receiver):
    sim = make_sim(latency_ms="5-20")

    assert call(sim, "POST", "/v1/orders", order_body(receiver))[0] == 202


# --- reading orders ------------------------------------------------------------------------------------


def test_get_order_by_id_by_reference_and_404(make_sim, receiver):
    sim = make_sim(production_seconds=60)
    body = order_body(receiver)
    _, _, created = call(sim, "POST", "/v1/orders", body)

    status, _, by_id = call(sim, "GET", f"/v1/orders/{created['order_id']}")
    assert status == 200
    assert by_id == created

    status, _, listed = call(sim, "GET", f"/v1/orders?reference={body['reference']}")
    assert status == 200
    assert listed == {"results": [created]}

    status, _, listed = call(sim, "GET", "/v1/orders?reference=never-used")
    assert (status, listed) == (200, {"results": []})
    status, _, answer = call(sim, "GET", "/v1/orders/F-999999")
    assert status == 404
    assert answer["error"]


def test_list_without_reference_and_unknown_paths(sim):
    assert call(sim, "GET", "/v1/orders")[0] == 400
    assert call(sim, "GET", "/v2/orders")[0] == 404
    assert call(sim, "DELETE", "/v1/orders/F-000001")[0] == 405


# --- production and the completion callback ------------------------------------------------------------


def test_order_moves_through_production_to_completed(make_sim, receiver):
    sim = make_sim(production_seconds=1.0)
    _, _, order = call(sim, "POST", "/v1/orders", order_body(receiver))
    seen = []

    def completed():
        status = call(sim, "GET", f"/v1/orders/{order['order_id']}")[2]["status"]
        if not seen or seen[-1] != status:
            seen.append(status)
        return status == "completed"

    wait_until(completed, what="completion")

    assert seen == ["accepted", "in_production", "completed"]


def test_completed_order_sends_a_signed_callback(sim, receiver):
    body = order_body(receiver, quantity=120)
    _, _, order = call(sim, "POST", "/v1/orders", body)

    wait_until(lambda: receiver.received(), what="the callback")
    [request] = receiver.received()

    headers, raw = request["headers"], request["body"]
    assert urlsplit(receiver.url).path == request["path"]
    assert headers["Content-Type"] == "application/json"
    assert check(SECRET, headers["X-Factory-Timestamp"], headers["X-Factory-Signature"], raw) == ""
    assert check("another-secret", headers["X-Factory-Timestamp"], headers["X-Factory-Signature"], raw) != ""
    assert headers["X-Factory-Signature"].startswith("sha256=")
    payload = json.loads(raw)
    _, _, now = call(sim, "GET", f"/v1/orders/{order['order_id']}")
    assert now["status"] == "completed"
    assert payload == {
        "event": "order.completed",
        "order_id": order["order_id"],
        "reference": body["reference"],
        "sku": "GLAZED",
        "quantity": 120,
        "quantity_produced": 120,
        "completed_at": now["completed_at"],
    }
    assert now["quantity_produced"] == 120
    wait_until(lambda: delivered(sim, order["order_id"]), what="delivery recorded")
    assert sim.stats()["callbacks"]["sent"] == 1


def test_partial_rate_produces_less_than_ordered(make_sim, receiver):
    sim = make_sim(partial_rate=1.0)
    _, _, order = call(sim, "POST", "/v1/orders", order_body(receiver, quantity=50))

    wait_until(lambda: receiver.received(), what="the callback")
    payload = json.loads(receiver.received()[0]["body"])

    assert 1 <= payload["quantity_produced"] < 50
    assert call(sim, "GET", f"/v1/orders/{order['order_id']}")[2]["quantity_produced"] == payload["quantity_produced"]


def test_duplicate_rate_sends_the_same_callback_twice(make_sim, receiver):
    sim = make_sim(duplicate_callback_rate=1.0)
    _, _, order = call(sim, "POST", "/v1/orders", order_body(receiver))

    wait_until(lambda: len(receiver.received()) == 2, what="two callbacks")
    first, second = receiver.received()

    assert first["body"] == second["body"]
    for request in (first, second):
        h = request["headers"]
        assert check(SECRET, h["X-Factory-Timestamp"], h["X-Factory-Signature"], request["body"]) == ""
    wait_until(lambda: delivered(sim, order["order_id"]), what="both deliveries recorded")
    assert sim_order(sim, order["order_id"])["callback"]["copies"] == 2
    assert sim.stats()["callbacks"]["duplicated"] == 1


def test_lost_callback_is_never_sent_but_the_order_completes(make_sim, receiver):
    sim = make_sim(callback_loss_rate=1.0)
    _, _, order = call(sim, "POST", "/v1/orders", order_body(receiver))

    wait_until(
        lambda: call(sim, "GET", f"/v1/orders/{order['order_id']}")[2]["status"] == "completed", what="completion"
    )

    assert sim_order(sim, order["order_id"])["callback"] == {"state": "lost", "copies": 0, "attempts": []}
    assert receiver.received() == []
    assert sim.stats()["callbacks"]["lost"] == 1


def test_callback_is_retried_after_the_receiver_answers_500(sim, receiver):
    receiver.statuses.append(500)
    _, _, order = call(sim, "POST", "/v1/orders", order_body(receiver))

    wait_until(lambda: delivered(sim, order["order_id"]), what="redelivery")

    first, second = receiver.received()
    assert first["body"] == second["body"]
    h = second["headers"]
    assert check(SECRET, h["X-Factory-Timestamp"], h["X-Factory-Signature"], second["body"]) == ""
    attempts = sim_order(sim, order["order_id"])["callback"]["attempts"]
    assert [(a["attempt"], a["status"]) for a in attempts] == [(1, 500), (2, 200)]
    assert sim.stats()["callbacks"] == {"sent": 1, "failed": 1, "abandoned": 0, "lost": 0, "duplicated": 0}


def test_callback_is_abandoned_after_max_attempts(make_sim, receiver):
    sim = make_sim(callback_max_attempts=3)
    receiver.statuses.extend([503, 500, 502])
    _, _, order = call(sim, "POST", "/v1/orders", order_body(receiver))

    wait_until(lambda: sim_order(sim, order["order_id"])["callback"]["state"] == "abandoned", what="giving up")

    assert len(receiver.received()) == 3
    assert sim.stats()["callbacks"]["abandoned"] == 1


def test_unreachable_callback_url_is_retried_as_a_connection_error(sim, receiver):
    probe = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    dead_url = f"http://127.0.0.1:{probe.server_address[1]}/cb"
    probe.server_close()  # nothing listens there any more
    _, _, order = call(sim, "POST", "/v1/orders", order_body(receiver, callback_url=dead_url))

    wait_until(lambda: len(sim_order(sim, order["order_id"])["callback"]["attempts"]) >= 2, what="a retry")

    first = sim_order(sim, order["order_id"])["callback"]["attempts"][0]
    assert first["status"] is None and first["error"]


# --- control endpoints ---------------------------------------------------------------------------------


def test_sim_complete_and_cancel_finish_production_now(make_sim, receiver):
    sim = make_sim(production_seconds=3600)
    _, _, a = call(sim, "POST", "/v1/orders", order_body(receiver, quantity=10))
    _, _, b = call(sim, "POST", "/v1/orders", order_body(receiver, quantity=10))

    status, _, done = call(sim, "POST", f"/_sim/orders/{a['order_id']}/complete", {"quantity_produced": 7})
    assert status == 200
    assert (done["status"], done["quantity_produced"]) == ("completed", 7)
    status, _, cancelled = call(sim, "POST", f"/_sim/orders/{b['order_id']}/cancel", key=None)
    assert status == 200
    assert (cancelled["status"], cancelled["quantity_produced"]) == ("cancelled", 0)

    wait_until(lambda: len(receiver.received()) == 2, what="both callbacks")
    events = {json.loads(r["body"])["order_id"]: json.loads(r["body"]) for r in receiver.received()}
    assert (events[a["order_id"]]["event"], events[a["order_id"]]["quantity_produced"]) == ("order.completed", 7)
    assert (events[b["order_id"]]["event"], events[b["order_id"]]["quantity_produced"]) == ("order.cancelled", 0)
    assert call(sim, "POST", f"/_sim/orders/{a['order_id']}/complete")[0] == 409
    assert call(sim, "POST", f"/_sim/orders/{a['order_id']}/complete", {"quantity_produced": 11})[0] == 409
    assert call(sim, "POST", "/_sim/orders/F-999999/complete")[0] == 404


def test_sim_complete_rejects_a_bad_quantity_and_can_force_a_lost_callback(make_sim, receiver):
    sim = make_sim(production_seconds=3600)
    _, _, order = call(sim, "POST", "/v1/orders", order_body(receiver, quantity=10))
    path = f"/_sim/orders/{order['order_id']}/complete"

    assert call(sim, "POST", path, {"quantity_produced": 11})[0] == 400
    assert call(sim, "POST", path, {"callback": "sometimes"})[0] == 400
    status, _, done = call(sim, "POST", path, {"callback": "lose"})

    assert status == 200
    assert done["callback"]["state"] == "lost"
    assert receiver.received() == []


def test_sim_callback_resends_a_finished_orders_callback(make_sim, receiver):
    sim = make_sim(production_seconds=3600)
    _, _, order = call(sim, "POST", "/v1/orders", order_body(receiver))
    path = f"/_sim/orders/{order['order_id']}/callback"
    assert call(sim, "POST", path)[0] == 409  # not finished yet

    call(sim, "POST", f"/_sim/orders/{order['order_id']}/complete", {"callback": "send"})
    assert call(sim, "POST", path)[0] == 200

    wait_until(lambda: len(receiver.received()) == 2, what="the resent callback")


def test_sim_config_changes_faults_at_runtime_and_rejects_bad_values(sim, receiver):
    status, _, config = call(sim, "POST", "/_sim/config", {"error_rate": 1.0, "latency_ms": "0-5"})
    assert status == 200
    assert (config["error_rate"], config["latency_ms"]) == (1.0, [0.0, 5.0])
    assert call(sim, "GET", "/_sim/config")[2] == config
    assert call(sim, "POST", "/v1/orders", order_body(receiver))[0] in (500, 502, 503)

    assert call(sim, "POST", "/_sim/config", {"error_rate": 2})[0] == 400
    assert call(sim, "POST", "/_sim/config", {"error_rate": True})[0] == 400
    assert call(sim, "POST", "/_sim/config", {"no_such_setting": 1})[0] == 400
    assert call(sim, "POST", "/_sim/config", raw=b"[]")[0] == 400
    assert call(sim, "GET", "/_sim/config")[2]["error_rate"] == 1.0


def test_sim_orders_and_stats_shapes(sim, receiver):
    call(sim, "POST", "/v1/orders", order_body(receiver))
    call(sim, "POST", "/v1/orders", order_body(receiver, quantity=0))
    call(sim, "POST", "/v1/orders", order_body(receiver), key="wrong")

    status, _, listing = call(sim, "GET", "/_sim/orders")
    assert status == 200
    [entry] = listing["results"]
    assert entry["callback_url"] == receiver.url
    assert set(entry["callback"]) == {"state", "copies", "attempts"}
    status, _, stats = call(sim, "GET", "/_sim/stats")
    assert status == 200
    assert stats["orders_created"] == 1
    assert stats["post_orders"] == {"202": 1, "400": 1, "401": 1}
    assert set(stats["callbacks"]) == {"sent", "failed", "abandoned", "lost", "duplicated"}


def test_control_endpoints_refuse_clients_that_are_not_local(sim):
    assert sim.handle("GET", "/_sim/stats", {}, b"", "10.1.2.3").status == 403
    assert sim.handle("GET", "/_sim/stats", {}, b"", "::1").status == 200


# --- restarts with a state file -------------------------------------------------------------------------


def test_a_restart_with_a_state_file_keeps_the_orders_their_references_and_the_numbering(make_sim, receiver, tmp_path):
    # As the real factory: an order id answered before a restart names the same order after it, and is
    # never given to another one (the app's rows keep the ids across make run's restarts).
    state = tmp_path / "factory.json"
    before = make_sim(state_file=state, production_seconds=3600)
    _, _, first = call(before, "POST", "/v1/orders", order_body(receiver, quantity=10))
    body = order_body(receiver)
    _, _, second = call(before, "POST", "/v1/orders", body)
    call(before, "POST", f"/_sim/orders/{first['order_id']}/complete", {"quantity_produced": 7, "callback": "send"})
    wait_until(lambda: delivered(before, first["order_id"]), what="the first order's callback")
    _, _, first = call(before, "GET", f"/v1/orders/{first['order_id']}")
    before.stop()

    after = make_sim(state_file=state, production_seconds=3600)

    assert call(after, "GET", f"/v1/orders/{first['order_id']}")[::2] == (200, first)
    assert call(after, "GET", f"/v1/orders?reference={body['reference']}")[::2] == (200, {"results": [second]})
    assert call(after, "POST", "/v1/orders", body)[::2] == (200, second), "the same reference is the same order"
    _, _, third = call(after, "POST", "/v1/orders", order_body(receiver))
    assert [first["order_id"], second["order_id"], third["order_id"]] == ["F-000001", "F-000002", "F-000003"]
    assert len(receiver.received()) == 1, "a delivered callback is not sent again"
    assert after.stats()["orders_created"] == 3


def test_production_under_way_at_a_restart_finishes_on_time_with_its_callback(make_sim, receiver, tmp_path):
    state = tmp_path / "factory.json"
    before = make_sim(state_file=state, production_seconds=1.0)
    _, _, order = call(before, "POST", "/v1/orders", order_body(receiver))
    before.stop()

    after = make_sim(state_file=state, production_seconds=3600)  # the order keeps the time it was given

    wait_until(lambda: delivered(after, order["order_id"]), what="the callback after the restart")
    [request] = receiver.received()
    assert json.loads(request["body"])["order_id"] == order["order_id"]
    assert call(after, "GET", f"/v1/orders/{order['order_id']}")[2]["status"] == "completed"


def test_a_callback_still_owed_at_a_restart_is_delivered_after_it(make_sim, receiver, tmp_path):
    state = tmp_path / "factory.json"
    receiver.statuses.append(500)
    before = make_sim(state_file=state, production_seconds=3600, callback_retry_base_seconds=3600)
    _, _, order = call(before, "POST", "/v1/orders", order_body(receiver))
    call(before, "POST", f"/_sim/orders/{order['order_id']}/complete", {"callback": "send"})
    wait_until(lambda: sim_order(before, order["order_id"])["callback"]["attempts"], what="the failed first attempt")
    before.stop()

    after = make_sim(state_file=state, production_seconds=3600, callback_retry_base_seconds=3600)

    wait_until(lambda: delivered(after, order["order_id"]), what="the callback after the restart")
    attempts = sim_order(after, order["order_id"])["callback"]["attempts"]
    assert [(a["attempt"], a["status"]) for a in attempts] == [(1, 500), (2, 200)]
    assert len(receiver.received()) == 2


ANOTHER_VERSIONS_STATE = {
    "last_order_number": 1,
    "orders": [{"order_id": "F-000001", "reference": "restock-1", "colour": "red"}],
    "post_orders": {},
    "callbacks": {},
}


@pytest.mark.parametrize(
    "content",
    ["{not json", '{"orders": 3}', json.dumps(ANOTHER_VERSIONS_STATE)],
    ids=["broken", "not-a-state", "another-version"],
)
def test_a_state_file_that_cannot_be_read_refuses_to_start_rather_than_forget(tmp_path, content):
    # The one who runs it is told what to do: the file is left as it is, for them to keep or delete.
    state = tmp_path / "factory.json"
    state.write_text(content)

    with pytest.raises(ValueError, match=r"factory\.json.*delete it to start with no orders"):
        LegacyFactory(state_file=state)

    assert state.read_text() == content


# --- the management command ----------------------------------------------------------------------------


@pytest.mark.e2e
def test_command_serves_with_settings_from_the_environment_and_stops_on_sigterm(receiver, tmp_path):
    root = Path(__file__).resolve().parents[2]
    state = tmp_path / "factory.json"
    env = {
        **os.environ,
        "FACTORY_API_KEY": "key-from-env",
        "FACTORY_CALLBACK_SECRET": "secret-from-env",
        "PYTHONUNBUFFERED": "1",
    }
    process = subprocess.Popen(
        [
            *(sys.executable, "manage.py", "run_legacy_factory", "--port", "0", "--production-seconds", "0.1"),
            *("--state-file", str(state)),
        ],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True)
    reader.start()
    try:
        first = lines.get(timeout=60)
        match = re.search(r"listening on (http://\S+)", first)
        assert match, first
        remote = LegacyFactory(port=urlsplit(match.group(1)).port)  # never started: call() only needs .port

        assert call(remote, "POST", "/v1/orders", order_body(receiver))[0] == 401
        assert call(remote, "POST", "/v1/orders", order_body(receiver), key="key-from-env")[0] == 202
        [request] = wait_until(lambda: receiver.received(), what="the callback from the process")
        h = request["headers"]
        assert check("secret-from-env", h["X-Factory-Timestamp"], h["X-Factory-Signature"], request["body"]) == ""

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(timeout=10)
    logged = list(lines.queue)
    assert any("POST /v1/orders -> 202" in line for line in logged)
    assert any("callback F-000001 copy 1 attempt 1" in line for line in logged)
    # The callback thread may log its delivery after the SIGTERM handler logged the stop: any order.
    assert any(line.startswith("legacy factory simulator stopping") for line in logged)
    [order] = json.loads(state.read_text())["orders"]
    assert (order["order_id"], order["status"]) == ("F-000001", "completed")


def test_command_refuses_a_state_file_it_cannot_read(tmp_path):
    state = tmp_path / "factory.json"
    state.write_text("{not json")

    with pytest.raises(CommandError, match="cannot read the state file"):
        call_command("run_legacy_factory", "--port", "0", "--state-file", str(state))

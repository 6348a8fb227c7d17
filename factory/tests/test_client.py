"""The factory client against a real local HTTP server: every row of the contract's response table."""

import json
import socket
import threading

import pytest

from factory.client import (
    ORDER_REFUSED,
    FactoryClient,
    FactoryRateLimited,
    FactoryRejected,
    FactoryUnavailable,
    _Deadline,
)
from testsupport.scripted_factory import ORDER, Scripted


@pytest.fixture
def factory_server():
    with Scripted() as server:
        yield server


def place(server, timeout=2.0):
    client = FactoryClient(base_url=server.url, api_key="k-123", timeout=timeout)
    return client.place_order(reference="restock-42", sku="GLAZED", quantity=120, callback_url="http://us/cb")


def test_202_is_a_new_order_and_the_request_follows_the_contract(factory_server):
    factory_server.answer(202, ORDER)

    result = place(factory_server)

    assert (result.order.order_id, result.replayed, result.status_code) == ("F-000123", False, 202)
    assert result.order.estimated_ready_at.isoformat() == "2026-11-22T03:05:00+00:00"
    sent = factory_server.requests[0]
    assert (sent["method"], sent["path"]) == ("POST", "/v1/orders")
    assert sent["headers"]["X-Factory-Key"] == "k-123"
    assert sent["headers"]["Content-Type"] == "application/json"
    assert json.loads(sent["body"]) == {
        "reference": "restock-42",
        "sku": "GLAZED",
        "quantity": 120,
        "callback_url": "http://us/cb",
    }


def test_200_is_the_same_order_replayed(factory_server):
    factory_server.answer(200, ORDER)

    result = place(factory_server)

    assert (result.order.order_id, result.replayed) == ("F-000123", True)


@pytest.mark.parametrize("status", [400, 401, 409, 404, 422])
def test_4xx_is_permanent_with_the_factory_message(factory_server, status):
    factory_server.answer(status, {"error": "reference already used with another sku"})

    with pytest.raises(FactoryRejected) as caught:
        place(factory_server)

    assert caught.value.status_code == status
    assert "reference already used" in str(caught.value)


@pytest.mark.parametrize("status", ORDER_REFUSED)
def test_a_refusal_of_the_order_itself_is_permanent(factory_server, status):
    # redrive.restock_order_refused looks for these among the permanent failures only: one the client took as
    # transient would be retried, and never keep a failed restock from being reopened under its reference.
    factory_server.answer(status, {"error": "refused"})

    with pytest.raises(FactoryRejected) as caught:
        place(factory_server)

    assert caught.value.status_code == status


def test_429_waits_at_least_retry_after(factory_server):
    factory_server.answer(429, {"error": "slow down"}, {"Retry-After": "7"})

    with pytest.raises(FactoryRateLimited) as caught:
        place(factory_server)

    assert caught.value.retry_after == 7.0 and caught.value.status_code == 429
    assert isinstance(caught.value, FactoryUnavailable), "rate limiting is transient"


@pytest.mark.parametrize(
    "status, body", [(500, {"error": "boom"}), (502, b"<html>Bad Gateway</html>"), (503, b"Service Unavailable")]
)
def test_5xx_is_transient_even_without_json(factory_server, status, body):
    factory_server.answer(status, body)

    with pytest.raises(FactoryUnavailable) as caught:
        place(factory_server)

    assert caught.value.status_code == status
    assert not isinstance(caught.value, FactoryRateLimited)


def test_a_hanging_factory_times_out_as_transient(factory_server):
    factory_server.answer(202, ORDER, delay=2.0)

    with pytest.raises(FactoryUnavailable, match="timed out") as caught:
        place(factory_server, timeout=0.3)

    assert caught.value.status_code is None


@pytest.mark.parametrize("trickle_from", ["status", "body"])
def test_a_factory_trickling_its_answer_is_cut_off_at_the_deadline_as_transient(factory_server, trickle_from):
    # A byte every 0.2 s keeps every socket read under the 0.3 s read timeout; the answer would take a minute.
    # The call ends at the deadline (connect + read timeout) instead of holding its worker thread.
    factory_server.answer(202, ORDER, trickle=0.2, trickle_from=trickle_from)
    outcome = []
    call = threading.Thread(target=lambda: outcome.append(_failure(lambda: place(factory_server, timeout=0.3))))
    call.start()
    call.join(timeout=30)  # a hang detector, not a timing threshold: without the deadline it runs a minute

    assert not call.is_alive(), "the call was still reading the trickle"
    (caught,) = outcome
    assert isinstance(caught, FactoryUnavailable)
    assert "no complete answer within 0.6 s" in str(caught)


def test_the_deadline_holds_through_an_http_proxy_too(monkeypatch):
    client = FactoryClient(base_url="http://factory.example", api_key="k-123", timeout=0.3)
    outcome = []
    call = threading.Thread(
        target=lambda: outcome.append(
            _failure(lambda: client.place_order(reference="r-1", sku="GLAZED", quantity=1, callback_url="http://us/cb"))
        )
    )
    with Scripted() as proxy:  # requests sends the whole call to the proxy named in HTTP_PROXY
        proxy.answer(202, ORDER, trickle=0.2, trickle_from="body")
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "")
        call.start()
        call.join(timeout=30)  # a hang detector, as above

    assert not call.is_alive(), "the call through the proxy was still reading the trickle"
    assert proxy.requests[0]["path"] == "http://factory.example/v1/orders"  # it did go through the proxy
    assert "no complete answer within 0.6 s" in str(outcome[0])


def test_a_deadline_that_fires_after_its_call_ended_touches_nothing():
    # Timer.cancel() cannot stop a timer thread already running: the socket, back in the pool, may be
    # the next call's by then.
    ours, theirs = socket.socketpair()
    deadline = _Deadline(60)
    with deadline:
        _Deadline.watch(ours)
    deadline._expire()  # what a timer thread that started just before the call ended would do

    ours.sendall(b"still open")
    assert theirs.recv(64) == b"still open"
    assert not deadline.expired
    ours.close()
    theirs.close()


def _failure(call):
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the test inspects it
        return exc
    return None


def test_nobody_listening_is_transient():
    server = Scripted()
    server.stop()

    with pytest.raises(FactoryUnavailable, match="connection failed"):
        place(server)


def test_a_garbled_success_is_transient_not_a_crash(factory_server):
    factory_server.answer(202, b"<html>oops</html>")

    with pytest.raises(FactoryUnavailable, match="garbled"):
        place(factory_server)


@pytest.mark.parametrize(
    "answer", [{"results": [{"order_id": "F-1"}]}, {"results": ["F-1"]}, {"results": {"0": 1}}], ids=repr
)
def test_a_garbled_search_answer_is_transient_not_a_crash(factory_server, answer):
    factory_server.answer(200, answer)
    client = FactoryClient(base_url=factory_server.url, api_key="k", timeout=2)

    with pytest.raises(FactoryUnavailable, match="garbled search answer"):
        client.find_order("restock-1")


def test_a_search_answer_naming_other_references_is_not_taken_for_ours(factory_server):
    # The search answers a list: an order in it under another reference (restock-420 for restock-42) is
    # someone else's, and taking it had the poll receive, or wait for, the wrong order.
    factory_server.answer(200, {"results": [{**ORDER, "order_id": "F-000420", "reference": "restock-420"}, ORDER]})
    factory_server.answer(200, {"results": [{**ORDER, "order_id": "F-000420", "reference": "restock-420"}]})
    client = FactoryClient(base_url=factory_server.url, api_key="k", timeout=2)

    assert client.find_order("restock-42").order_id == "F-000123"
    assert client.find_order("restock-42") is None


def test_a_garbled_order_under_another_reference_does_not_hide_ours(factory_server):
    factory_server.answer(200, {"results": [{"reference": "restock-420", "quantity": "many"}, ORDER]})
    client = FactoryClient(base_url=factory_server.url, api_key="k", timeout=2)

    assert client.find_order("restock-42").order_id == "F-000123"


def test_reads_an_order_by_id_and_by_reference(factory_server):
    factory_server.answer(200, {**ORDER, "status": "completed", "quantity_produced": 118})
    factory_server.answer(404, {"error": "no such order"})
    factory_server.answer(200, {"results": [ORDER]})
    factory_server.answer(200, {"results": []})
    client = FactoryClient(base_url=factory_server.url, api_key="k", timeout=2)

    found = client.get_order("F-000123")
    missing = client.get_order("F-999")
    by_reference = client.find_order("restock-42")
    nothing = client.find_order("restock-43")

    assert (found.status, found.quantity_produced) == ("completed", 118)
    assert missing is None and nothing is None
    assert by_reference.order_id == "F-000123"
    assert [r["path"] for r in factory_server.requests] == [
        "/v1/orders/F-000123",
        "/v1/orders/F-999",
        "/v1/orders?reference=restock-42",
        "/v1/orders?reference=restock-43",
    ]

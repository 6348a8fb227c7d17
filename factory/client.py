"""HTTP client for the factory's legacy order API, v1, as the factory's contract defines it. No ORM here.

Every answer in the contract maps to a result or a typed error: 202/200 are success, 400/401/409 (and
any other 4xx) are permanent, 429 carries Retry-After, 5xx/timeouts/connection errors are transient. Of
the permanent ones, ORDER_REFUSED are the refusals of the order itself.
"""

import socket
import threading
import time
from dataclasses import dataclass
from datetime import datetime

import requests
from django.conf import settings
from django.utils.dateparse import parse_datetime
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import ProxyManager


class FactoryError(Exception):
    """A failed call. `status_code` is None when no HTTP answer came back; `latency_ms` is always set."""

    def __init__(self, message: str, *, status_code: int | None = None, latency_ms: int = 0):
        super().__init__(message)
        self.status_code = status_code
        self.latency_ms = latency_ms


class FactoryUnavailable(FactoryError):
    """Transient: 5xx, timeout, connection refused, or a garbled answer. Retry with backoff."""


class FactoryRateLimited(FactoryUnavailable):
    """429: retry no sooner than `retry_after` seconds."""

    def __init__(self, message: str, *, retry_after: float, **kwargs):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class FactoryRejected(FactoryError):
    """Permanent: the factory refused the request itself (400, 401, 409, other 4xx). Do not retry."""


# The factory's refusals of the order itself: its body (400) or its reference, another order's (409). No order
# of ours is under that reference, and the same call would be refused again (redrive.restock_order_refused);
# a 401 or another 4xx says nothing of the order an earlier call may have made.
ORDER_REFUSED = (400, 409)


@dataclass(frozen=True)
class RemoteOrder:
    """An order as the factory's API describes it (its source of truth); our row about it is models.FactoryOrder."""

    # The statuses an order ends in; the factory's callback for it is the event "order.<status>".
    FINISHED = ("completed", "cancelled")

    order_id: str
    reference: str
    sku: str
    quantity: int
    status: str
    quantity_produced: int | None
    estimated_ready_at: datetime | None
    completed_at: datetime | None

    @classmethod
    def from_json(cls, data: dict) -> "RemoteOrder":
        return cls(
            order_id=str(data["order_id"]),
            reference=str(data["reference"]),
            sku=str(data["sku"]),
            quantity=int(data["quantity"]),
            status=str(data["status"]),
            quantity_produced=None if data.get("quantity_produced") is None else int(data["quantity_produced"]),
            estimated_ready_at=parse_datetime(data["estimated_ready_at"]) if data.get("estimated_ready_at") else None,
            completed_at=parse_datetime(data["completed_at"]) if data.get("completed_at") else None,
        )


def _other(result, reference: str) -> bool:
    return isinstance(result, dict) and "reference" in result and result["reference"] != reference


@dataclass(frozen=True)
class PlaceResult:
    order: RemoteOrder
    replayed: bool  # 200: the factory already had this reference
    status_code: int
    latency_ms: int


class FactoryClient:
    """One factory call takes at most connect + read timeout in all (`deadline`), however the factory
    answers: requests' read timeout bounds each socket read, so an answer trickling in a byte at a time
    would otherwise hold a worker thread for ever (the threads pool enforces no task time limit)."""

    def __init__(self, base_url: str | None = None, api_key: str | None = None, timeout: float | None = None):
        self.base_url = (base_url or settings.FACTORY_API_URL).rstrip("/")
        read_timeout = timeout if timeout is not None else settings.FACTORY_TIMEOUT_SECONDS
        self.timeout = (min(settings.FACTORY_CONNECT_TIMEOUT_SECONDS, read_timeout), read_timeout)
        self.deadline = sum(self.timeout)
        self.session = requests.Session()
        adapter = _DeadlineAdapter()
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.session.headers.update(
            {"X-Factory-Key": api_key or settings.FACTORY_API_KEY, "Content-Type": "application/json"}
        )

    def place_order(
        self, *, reference: str, sku: str, quantity: int, callback_url: str, request_id: str = ""
    ) -> PlaceResult:
        body = {"reference": reference, "sku": sku, "quantity": quantity, "callback_url": callback_url}
        headers = {"X-Request-ID": request_id} if request_id else {}
        response, latency_ms = self._send("POST", "/v1/orders", json=body, headers=headers)
        if response.status_code in (200, 202):
            return PlaceResult(
                order=self._order(response, latency_ms),
                replayed=response.status_code == 200,
                status_code=response.status_code,
                latency_ms=latency_ms,
            )
        raise self._error(response, latency_ms)

    def get_order(self, order_id: str) -> RemoteOrder | None:
        response, latency_ms = self._send("GET", f"/v1/orders/{order_id}")
        if response.status_code == 404:
            return None
        if response.status_code == 200:
            return self._order(response, latency_ms)
        raise self._error(response, latency_ms)

    def find_order(self, reference: str) -> RemoteOrder | None:
        """The order with exactly this reference. The answer is a list: an order in it under another reference
        is not ours, and is not read (however garbled, it must not make our own order unreadable)."""
        response, latency_ms = self._send("GET", "/v1/orders", params={"reference": reference})
        if response.status_code != 200:
            raise self._error(response, latency_ms)
        try:
            orders = [
                RemoteOrder.from_json(result) for result in response.json()["results"] if not _other(result, reference)
            ]
        except (ValueError, KeyError, TypeError) as exc:
            raise FactoryUnavailable(f"garbled search answer: {exc}", status_code=200, latency_ms=latency_ms) from exc
        return orders[0] if orders else None

    def _send(self, method, path, **kwargs) -> tuple[requests.Response, int]:
        started = time.monotonic()
        try:
            with _Deadline(self.deadline) as deadline:
                response = self.session.request(method, self.base_url + path, timeout=self.timeout, **kwargs)
        except requests.Timeout as exc:
            raise FactoryUnavailable(f"timed out: {exc}", latency_ms=_ms_since(started)) from exc
        except requests.RequestException as exc:
            if deadline.expired:
                message = f"timed out: no complete answer within {self.deadline:g} s"
                raise FactoryUnavailable(message, latency_ms=_ms_since(started)) from exc
            raise FactoryUnavailable(f"connection failed: {exc}", latency_ms=_ms_since(started)) from exc
        return response, _ms_since(started)

    @staticmethod
    def _order(response, latency_ms) -> RemoteOrder:
        try:
            return RemoteOrder.from_json(response.json())
        except (ValueError, KeyError, TypeError) as exc:
            raise FactoryUnavailable(
                f"garbled order in a {response.status_code} answer: {exc}",
                status_code=response.status_code,
                latency_ms=latency_ms,
            ) from exc

    @staticmethod
    def _error(response, latency_ms) -> FactoryError:
        status = response.status_code
        try:
            message = str(response.json().get("error", ""))
        except (ValueError, AttributeError):
            message = response.text[:200]
        message = f"{status}: {message}".strip()
        if status == 429:
            return FactoryRateLimited(
                message, retry_after=_retry_after(response), status_code=status, latency_ms=latency_ms
            )
        if 400 <= status < 500:
            return FactoryRejected(message, status_code=status, latency_ms=latency_ms)
        return FactoryUnavailable(message, status_code=status, latency_ms=latency_ms)


def _retry_after(response) -> float:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "1")))
    except ValueError:
        return 1.0  # an HTTP-date or garbage: wait a little rather than not at all


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


class _Deadline:
    """While a call runs, the sockets it uses; when `seconds` pass, they are shut down, which ends the
    read or write the call is blocked in (requests then raises, and the call fails as a timeout)."""

    _current = threading.local()

    def __init__(self, seconds: float):
        self.expired = False
        self._ended = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self):
        _Deadline._current.value = self
        self._timer.start()
        return self

    def __exit__(self, *exc):
        self._timer.cancel()
        with self._lock:  # a timer already past cancel() must not reach a socket the pool hands to the next call
            self._ended = True
            self._sockets.clear()
        _Deadline._current.value = None

    @classmethod
    def watch(cls, sock) -> None:
        deadline = getattr(cls._current, "value", None)
        if deadline is None or sock is None:
            return
        with deadline._lock:
            deadline._sockets.append(sock)
            if deadline.expired:
                _shut(sock)

    def _expire(self):
        with self._lock:
            if self._ended:
                return
            self.expired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


class _Watched:
    """A urllib3 connection whose socket the current call's _Deadline watches: a new one from the moment
    it is created, a kept-alive one when reused. (A TLS handshake runs on a socket wrap_socket has
    detached; the socket timeout applies to the whole handshake.)"""

    def _new_conn(self):
        sock = super()._new_conn()
        _Deadline.watch(sock)
        return sock

    def request(self, *args, **kwargs):
        _Deadline.watch(self.sock)
        return super().request(*args, **kwargs)


class _HTTPConnection(_Watched, HTTPConnection):
    pass


class _HTTPSConnection(_Watched, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


class _DeadlineAdapter(HTTPAdapter):
    """Every pool it opens makes watched connections: direct, and through an HTTP(S) proxy from
    HTTP_PROXY / HTTPS_PROXY (its own manager). A SOCKS proxy's connections are not watched."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = _WATCHED_POOLS

    def proxy_manager_for(self, proxy, **proxy_kwargs):
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if isinstance(manager, ProxyManager):
            manager.pool_classes_by_scheme = _WATCHED_POOLS
        return manager


_WATCHED_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}

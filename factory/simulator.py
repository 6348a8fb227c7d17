"""A stand-in for the legacy factory's order API (v1, as the factory's contract defines it), faults included.

Stdlib only and no Django, no database: orders live in memory behind one lock, so it can run as its own
process (`manage.py run_legacy_factory`) or in-process from a test:

    with LegacyFactory(FaultConfig(production_seconds=0.2), callback_secret="s") as sim:
        url = sim.url  # e.g. http://127.0.0.1:54321
        ...
        sim.configure(error_rate=1.0)

Besides the contract (`/v1/...`) it serves control endpoints under `/_sim/` (no auth, loopback clients
only unless `control_from_anywhere`): `GET /_sim/orders`, `GET|POST /_sim/config`, `GET /_sim/stats`,
`POST /_sim/orders/{id}/complete`, `POST /_sim/orders/{id}/cancel`, `POST /_sim/orders/{id}/callback`.

With a `state_file` (`--state-file`) it behaves as the real factory across its restarts: the orders, their
references, the numbering and the counters are written there at every change and read back at the next
start, which finishes the production and sends the callbacks that were under way. Without one a restart
forgets every order and numbers from F-000001 again, so an id the app kept names another order, or none.
"""

from __future__ import annotations

import dataclasses
import heapq
import hmac
import http.client
import ipaddress
import itertools
import json
import os
import random
import re
import socket
import socketserver
import sys
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from factory.signatures import sign

DEFAULT_API_KEY = "dev-factory-key"
DEFAULT_CALLBACK_SECRET = "dev-callback-secret"  # noqa: S105 - the documented development default

REFERENCE_RE = re.compile(r"[A-Za-z0-9._:-]{1,64}")
MAX_QUANTITY = 10_000
MAX_BODY_BYTES = 1_000_000
# Share of the production time an order spends `accepted` before it moves to `in_production`.
ACCEPTED_SHARE = 0.25

RATE_FIELDS = (
    "error_rate",
    "error_after_create_rate",
    "rate_limit_rate",
    "hang_rate",
    "partial_rate",
    "cancel_rate",
    "callback_loss_rate",
    "duplicate_callback_rate",
)
CALLBACK_MODES = ("roll", "send", "lose", "duplicate")


@dataclass(frozen=True)
class FaultConfig:
    """How badly the factory behaves. Every rate is a probability in [0, 1], rolled per request/order.

    POST /v1/orders rolls, in this order: rate limit (429), hang, error (500/502/503). A hang always
    creates the order (if the body is valid) before it stops answering; an error does so only for the
    `error_after_create_rate` share of errors. `latency_ms` applies to every /v1 request.
    """

    error_rate: float = 0.0
    error_after_create_rate: float = 0.0
    rate_limit_rate: float = 0.0
    retry_after_seconds: int = 1
    hang_rate: float = 0.0
    hang_seconds: float = 600.0
    latency_ms: tuple[float, float] = (0.0, 0.0)
    production_seconds: float = 3.0
    partial_rate: float = 0.0
    cancel_rate: float = 0.0
    callback_loss_rate: float = 0.0
    duplicate_callback_rate: float = 0.0
    callback_max_attempts: int = 8
    callback_retry_base_seconds: float = 1.0
    callback_retry_max_seconds: float = 300.0
    callback_timeout_seconds: float = 10.0
    # Answer the next N order requests with 503 whatever the rates say, then behave (for exact tests).
    fail_next: int = 0

    def __post_init__(self):
        for name in RATE_FIELDS:
            value = getattr(self, name)
            if not _is_number(value) or not 0 <= value <= 1:
                raise ValueError(f"{name} must be a number from 0 to 1")
        object.__setattr__(self, "latency_ms", parse_latency(self.latency_ms))
        for name in (
            "hang_seconds",
            "production_seconds",
            "callback_retry_base_seconds",
            "callback_retry_max_seconds",
        ):
            if not _is_number(getattr(self, name)) or getattr(self, name) < 0:
                raise ValueError(f"{name} must be a number >= 0")
        if not _is_number(self.callback_timeout_seconds) or self.callback_timeout_seconds <= 0:
            raise ValueError("callback_timeout_seconds must be a number > 0")
        if type(self.fail_next) is not int or self.fail_next < 0:
            raise ValueError("fail_next must be an integer >= 0")
        for name in ("callback_max_attempts", "retry_after_seconds"):
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"{name} must be an integer >= 1")

    def as_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["latency_ms"] = list(self.latency_ms)
        return data


def parse_latency(value: Any) -> tuple[float, float]:
    """`"MIN[-MAX]"`, a number, or a `[min, max]` pair of milliseconds -> `(min, max)`."""
    if isinstance(value, str):
        parts = value.split("-")
        try:
            numbers = [float(p) for p in parts]
        except ValueError:
            raise ValueError("latency_ms must look like MIN or MIN-MAX (milliseconds)") from None
        value = numbers
    elif _is_number(value):
        value = [value]
    if not isinstance(value, list | tuple) or len(value) not in (1, 2) or not all(_is_number(v) for v in value):
        raise ValueError("latency_ms must be MIN, MIN-MAX, or [min, max] (milliseconds)")
    low, high = float(value[0]), float(value[-1])
    if low < 0 or high < low:
        raise ValueError("latency_ms needs 0 <= min <= max")
    return (low, high)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _iso(moment: datetime | None) -> str | None:
    # The contract's examples use whole seconds with a Z, so clients may parse exactly that shape.
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def _now() -> datetime:
    return datetime.now(UTC)


def _stdout_log(line: str) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
    sys.stdout.write(f"{stamp}Z {line}\n")
    sys.stdout.flush()


# --- state --------------------------------------------------------------------------------------------


@dataclass
class _Delivery:
    """One copy of an order's callback (two copies when it is duplicated) and its attempts."""

    copy: int
    state: str = "pending"  # pending | delivered | abandoned
    attempts: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Order:
    order_id: str
    reference: str
    sku: str
    quantity: int
    callback_url: str
    created_at: datetime
    estimated_ready_at: datetime
    status: str = "accepted"
    quantity_produced: int | None = None
    completed_at: datetime | None = None
    callback_body: bytes | None = None
    callback_lost: bool = False
    deliveries: list[_Delivery] = field(default_factory=list)

    _MOMENTS = ("created_at", "estimated_ready_at", "completed_at")

    def state(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for name in self._MOMENTS:
            data[name] = data[name] and data[name].isoformat()
        data["callback_body"] = self.callback_body and self.callback_body.decode()
        return data

    @classmethod
    def from_state(cls, data: dict[str, Any]) -> _Order:
        data = dict(data)
        for name in cls._MOMENTS:
            data[name] = data[name] and datetime.fromisoformat(data[name])
        data["callback_body"] = data["callback_body"] and data["callback_body"].encode()
        data["deliveries"] = [_Delivery(**delivery) for delivery in data["deliveries"]]
        return cls(**data)

    @property
    def finished(self) -> bool:
        return self.status in ("completed", "cancelled")

    def public(self) -> dict[str, Any]:
        return {
            "order_id": self.order_id,
            "reference": self.reference,
            "sku": self.sku,
            "quantity": self.quantity,
            "status": self.status,
            "quantity_produced": self.quantity_produced,
            "created_at": _iso(self.created_at),
            "estimated_ready_at": _iso(self.estimated_ready_at),
            "completed_at": _iso(self.completed_at),
        }

    def callback_state(self) -> str:
        if not self.finished:
            return "none"
        if self.callback_lost:
            return "lost"
        states = {d.state for d in self.deliveries}
        if "pending" in states:
            return "pending"
        return "abandoned" if "abandoned" in states else "delivered"

    def control_view(self) -> dict[str, Any]:
        attempts = [{"copy": d.copy, **a} for d in self.deliveries for a in d.attempts]
        return {
            **self.public(),
            "callback_url": self.callback_url,
            "callback": {
                "state": self.callback_state(),
                "copies": len(self.deliveries),
                "attempts": sorted(attempts, key=lambda a: (a["at"], a["copy"], a["attempt"])),
            },
        }


@dataclass
class _Response:
    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False
    note: str = ""  # extra words for the log line


def _json(status: int, payload: Any, *, note: str = "", headers: dict[str, str] | None = None) -> _Response:
    return _Response(status, json.dumps(payload).encode(), headers=headers or {}, note=note)


def _error(status: int, message: str, **kwargs: Any) -> _Response:
    return _json(status, {"error": message}, **kwargs)


class _BadRequest(Exception):
    pass


# --- timers -------------------------------------------------------------------------------------------


class _Scheduler:
    """One thread running callables at their due time (production steps, callback attempts)."""

    def __init__(self, on_error: Callable[[str], None]):
        self._heap: list[tuple[float, int, Callable[[], None]]] = []
        self._cv = threading.Condition()
        self._seq = itertools.count()
        self._stopped = False
        self._on_error = on_error
        self._thread = threading.Thread(target=self._run, name="factory-scheduler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def call_later(self, delay: float, fn: Callable[[], None]) -> None:
        with self._cv:
            if self._stopped:
                return
            heapq.heappush(self._heap, (time.monotonic() + max(0.0, delay), next(self._seq), fn))
            self._cv.notify()

    def stop(self) -> None:
        with self._cv:
            self._stopped = True
            self._heap.clear()
            self._cv.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    self._cv.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                if self._stopped:
                    return
                _, _, fn = heapq.heappop(self._heap)
            try:
                fn()
            except Exception:
                self._on_error(f"scheduler error: {traceback.format_exc()}")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A 3xx is "an answer other than 2xx": retry later, never follow (urllib would turn POST into GET)."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


# --- the factory --------------------------------------------------------------------------------------


class LegacyFactory:
    """The legacy factory's order API in memory, and in `state_file` if given. `start()` binds (port 0 picks
    a free port) and returns the base URL; `stop()` shuts it down and wakes hanging handlers. Safe to use as
    a context manager."""

    def __init__(
        self,
        config: FaultConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str = DEFAULT_API_KEY,
        callback_secret: str = DEFAULT_CALLBACK_SECRET,
        seed: int | None = None,
        control_from_anywhere: bool = False,
        log: Callable[[str], None] | None = _stdout_log,
        state_file: str | os.PathLike | None = None,
    ):
        self.config = config or FaultConfig()
        self.host = host
        self.port = port
        self.api_key = api_key
        self.callback_secret = callback_secret
        self.control_from_anywhere = control_from_anywhere
        self._log_fn = log
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._orders: dict[str, _Order] = {}
        self._by_reference: dict[str, _Order] = {}
        self._last_order_number = 0
        self._post_statuses: Counter[str] = Counter()
        self._callback_counts: Counter[str] = Counter()
        self._stopping = threading.Event()
        self.state_file = Path(state_file) if state_file is not None else None
        if self.state_file is not None:
            self._load()
            with self._lock:
                self._save()  # a state file that cannot be written stops the start, not the first order
        self._scheduler = _Scheduler(self._log)
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())
        self._server: ThreadingHTTPServer | None = None
        self._server_thread: threading.Thread | None = None
        self.url: str | None = None

    # lifecycle

    def start(self) -> str:
        if self._server is not None:
            raise RuntimeError("already started")
        server_class = _IPv6Server if ":" in self.host else _Server
        self._server = server_class((self.host, self.port), _Handler)
        self._server.factory = self
        self.port = self._server.server_address[1]
        shown_host = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(self.host)  # noqa: S104
        if shown_host is None:
            shown_host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{shown_host}:{self.port}"
        self._scheduler.start()
        self._resume()
        self._server_thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="factory-http", daemon=True
        )
        self._server_thread.start()
        return self.url

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers sleeping in a hang or a latency
        self._scheduler.stop()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> LegacyFactory:
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    # control API (also served under /_sim/)

    def configure(self, **changes: Any) -> FaultConfig:
        """Change fault settings at runtime; raises ValueError/TypeError for unknown names or bad values."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(FaultConfig)}
        if unknown:
            raise ValueError(f"unknown setting(s): {', '.join(sorted(unknown))}")
        with self._lock:
            self.config = dataclasses.replace(self.config, **changes)
            return self.config

    def orders(self) -> list[dict[str, Any]]:
        with self._lock:
            return [o.control_view() for o in self._orders.values()]

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "orders_created": len(self._orders),
                "post_orders": dict(self._post_statuses),
                "callbacks": {
                    name: self._callback_counts[name] for name in ("sent", "failed", "abandoned", "lost", "duplicated")
                },
            }

    def complete(
        self, order_id: str, *, quantity_produced: int | None = None, callback: str = "roll"
    ) -> dict[str, Any]:
        """Finish production now. `callback`: roll (use the rates), send, lose, or duplicate."""
        return self._finish(order_id, cancelled=False, quantity_produced=quantity_produced, callback=callback)

    def cancel(self, order_id: str, *, callback: str = "roll") -> dict[str, Any]:
        return self._finish(order_id, cancelled=True, callback=callback)

    def resend_callback(self, order_id: str) -> dict[str, Any]:
        """Deliver a finished order's callback once more, as a new copy with its own retries."""
        with self._lock:
            order = self._get(order_id)
            if not order.finished:
                raise _Conflict(f"order {order_id} is {order.status}, it has no callback yet")
            copy = self._add_delivery(order)
            view = order.control_view()
            self._save()
        self._scheduler.call_later(0, lambda: self._send_async(order_id, copy, 1))
        return view

    # HTTP entry point

    def handle(self, method: str, target: str, headers: Any, body: bytes, client_ip: str) -> _Response:
        parts = urlsplit(target)
        path = parts.path
        if path.startswith("/_sim/"):
            if not self.control_from_anywhere and not _is_loopback(client_ip):
                return _error(403, "control endpoints answer only to localhost")
            return self._handle_control(method, path, body)
        if path == "/v1/orders" or path.startswith("/v1/orders/"):
            self._sleep_latency()
            if not hmac.compare_digest((headers.get("X-Factory-Key") or "").encode(), self.api_key.encode()):
                response = _error(401, "missing or invalid X-Factory-Key")
            elif path == "/v1/orders" and method == "POST":
                response = self._post_order(body)
            elif path == "/v1/orders" and method == "GET":
                response = self._list_orders(parts.query)
            elif path.count("/") == 3 and method == "GET":
                response = self._get_order(path.rsplit("/", 1)[1])
            elif path.count("/") == 3 or path == "/v1/orders":
                response = _error(405, "method not allowed")
            else:
                response = _error(404, "not found")
            if path == "/v1/orders" and method == "POST":
                with self._lock:
                    self._post_statuses["hang" if response.hang else str(response.status)] += 1
                    self._save()  # with the order the POST created, if it did: before its answer leaves
            return response
        return _error(404, "not found")

    # contract

    def _post_order(self, body: bytes) -> _Response:
        with self._lock:
            config = self.config
            if config.fail_next:
                self.config = dataclasses.replace(config, fail_next=config.fail_next - 1)
                return _error(503, "failing on purpose (fail_next)", note="(nothing created)")
            roll = self._random.random
            if roll() < config.rate_limit_rate:
                return _error(
                    429,
                    "rate limited, slow down",
                    headers={"Retry-After": str(config.retry_after_seconds)},
                )
            hang = roll() < config.hang_rate
            error = not hang and roll() < config.error_rate
            create_first = hang or (error and roll() < config.error_after_create_rate)
            if error:
                error_status = self._random.choice((500, 502, 503))
                # What a proxy in front of an overloaded legacy box says: HTML, not JSON.
                html = error_status == 502 or (error_status == 503 and roll() < 0.5)
        if not (hang or error) or create_first:
            response = self._create_order(body)
        if hang:
            return _Response(0, hang=True, note=f"(after {response.status} {response.note})")
        if error:
            note = f"(after {response.status} {response.note})" if create_first else "(nothing created)"
            if html:
                reason = http.client.responses[error_status]
                return _Response(error_status, f"<html>{reason}</html>".encode(), "text/html", note=note)
            return _error(error_status, "internal error, try again later", note=note)
        return response

    def _create_order(self, body: bytes) -> _Response:
        try:
            fields = _validate_order(body)
        except _BadRequest as exc:
            return _error(400, str(exc))
        with self._lock:
            existing = self._by_reference.get(fields["reference"])
            if existing is not None:
                if existing.sku == fields["sku"] and existing.quantity == fields["quantity"]:
                    return _json(200, existing.public(), note=f"replay {existing.order_id}")
                return _error(
                    409,
                    f"reference {fields['reference']} is already used by order {existing.order_id} "
                    f"with sku {existing.sku} and quantity {existing.quantity}",
                )
            created = _now()
            self._last_order_number += 1
            order = _Order(
                order_id=f"F-{self._last_order_number:06d}",
                created_at=created,
                estimated_ready_at=created + timedelta(seconds=self.config.production_seconds),
                **fields,
            )
            self._orders[order.order_id] = order
            self._by_reference[order.reference] = order
            public = order.public()
        self._schedule_production(order)
        return _json(202, public, note=f"created {order.order_id} ref={order.reference}")

    def _list_orders(self, query: str) -> _Response:
        params = parse_qs(query, keep_blank_values=True)
        if "reference" not in params:
            return _error(400, "query parameter reference is required")
        with self._lock:
            order = self._by_reference.get(params["reference"][0])
            return _json(200, {"results": [order.public()] if order else []})

    def _get_order(self, order_id: str) -> _Response:
        with self._lock:
            order = self._orders.get(order_id)
            if order is None:
                return _error(404, f"order {order_id} not found")
            return _json(200, order.public())

    def _sleep_latency(self) -> None:
        low, high = self.config.latency_ms
        if high > 0:
            with self._lock:
                delay = self._random.uniform(low, high) / 1000
            self._stopping.wait(delay)

    # production and callbacks

    def _schedule_production(self, order: _Order) -> None:
        """Its steps at the times it was given, from now: an order read back after a restart has less time
        left, or none, and the production setting of the new start does not change it."""
        production = (order.estimated_ready_at - order.created_at).total_seconds()
        left = (order.estimated_ready_at - _now()).total_seconds()
        order_id = order.order_id
        self._scheduler.call_later(left - production * (1 - ACCEPTED_SHARE), lambda: self._start_production(order_id))
        self._scheduler.call_later(left, lambda: self._production_done(order_id))

    def _start_production(self, order_id: str) -> None:
        with self._lock:
            order = self._orders[order_id]
            if order.status == "accepted":
                order.status = "in_production"
                self._save()

    def _production_done(self, order_id: str) -> None:
        with self._lock:
            if self._orders[order_id].finished:
                return  # finished early through /_sim/
            cancelled = self._random.random() < self.config.cancel_rate
        try:
            self._finish(order_id, cancelled=cancelled)
        except _Conflict:
            pass  # raced with a /_sim/ finish

    def _finish(
        self, order_id: str, *, cancelled: bool, quantity_produced: int | None = None, callback: str = "roll"
    ) -> dict[str, Any]:
        if callback not in CALLBACK_MODES:
            raise ValueError(f"callback must be one of {', '.join(CALLBACK_MODES)}")
        with self._lock:
            order = self._get(order_id)
            if order.finished:
                raise _Conflict(f"order {order_id} is already {order.status}")
            if cancelled:
                produced = 0
            elif quantity_produced is not None:
                if type(quantity_produced) is not int or not 1 <= quantity_produced <= order.quantity:
                    raise ValueError(f"quantity_produced must be an integer from 1 to {order.quantity}")
                produced = quantity_produced
            elif order.quantity > 1 and self._random.random() < self.config.partial_rate:
                produced = self._random.randint(1, order.quantity - 1)
            else:
                produced = order.quantity
            order.status = "cancelled" if cancelled else "completed"
            order.quantity_produced = produced
            order.completed_at = _now()
            payload = {
                "event": "order.cancelled" if cancelled else "order.completed",
                "order_id": order.order_id,
                "reference": order.reference,
                "sku": order.sku,
                "quantity": order.quantity,
                "quantity_produced": produced,
                "completed_at": _iso(order.completed_at),
            }
            order.callback_body = json.dumps(payload).encode()
            if callback == "roll":
                if self._random.random() < self.config.callback_loss_rate:
                    callback = "lose"
                elif self._random.random() < self.config.duplicate_callback_rate:
                    callback = "duplicate"
                else:
                    callback = "send"
            copies = []
            if callback == "lose":
                order.callback_lost = True
                self._callback_counts["lost"] += 1
            else:
                copies.append(self._add_delivery(order))
                if callback == "duplicate":
                    copies.append(self._add_delivery(order))
                    self._callback_counts["duplicated"] += 1
            view = order.control_view()
            self._save()
        self._log(f"order {order_id} {view['status']} quantity_produced={produced} callback={callback}")
        if callback == "lose":
            self._log(f"callback {order_id} lost (never sent)")
        for copy in copies:
            self._scheduler.call_later(0, lambda copy=copy: self._send_async(order_id, copy, 1))
        return view

    def _add_delivery(self, order: _Order) -> int:
        """Caller holds the lock."""
        delivery = _Delivery(copy=len(order.deliveries) + 1)
        order.deliveries.append(delivery)
        return delivery.copy

    def _send_async(self, order_id: str, copy: int, attempt: int) -> None:
        # A slow receiver must not hold up the scheduler (and so every other order's timers).
        threading.Thread(
            target=self._send, args=(order_id, copy, attempt), name=f"callback-{order_id}-{copy}", daemon=True
        ).start()

    def _send(self, order_id: str, copy: int, attempt: int) -> None:
        if self._stopping.is_set():
            return
        with self._lock:
            order = self._orders[order_id]
            body, url, config = order.callback_body, order.callback_url, self.config
        assert body is not None
        timestamp = str(int(time.time()))
        request = urllib.request.Request(  # noqa: S310 - callback_url was validated as http(s)
            url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": "factory-states-legacy/1.0 (simulator)",
                "X-Factory-Timestamp": timestamp,
                "X-Factory-Signature": sign(self.callback_secret, timestamp, body),
            },
        )
        status, error = None, None
        try:
            with self._opener.open(request, timeout=config.callback_timeout_seconds) as answer:
                status = answer.status
                answer.read()
        except urllib.error.HTTPError as exc:
            status = exc.code
            exc.close()
        except urllib.error.URLError as exc:
            reason = exc.reason
            error = f"{type(reason).__name__}: {reason}" if isinstance(reason, BaseException) else str(reason)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        delivered = status is not None and 200 <= status < 300
        retry_in = None
        with self._lock:
            delivery = order.deliveries[copy - 1]
            delivery.attempts.append({"attempt": attempt, "at": _iso_ms(_now()), "status": status, "error": error})
            if delivered:
                delivery.state = "delivered"
                self._callback_counts["sent"] += 1
            else:
                self._callback_counts["failed"] += 1
                if attempt >= config.callback_max_attempts:
                    delivery.state = "abandoned"
                    self._callback_counts["abandoned"] += 1
                else:
                    retry_in = min(
                        config.callback_retry_base_seconds * 2 ** (attempt - 1), config.callback_retry_max_seconds
                    )
            self._save()
        outcome = status if status is not None else error
        if delivered:
            then = "delivered"
        elif retry_in is None:
            then = "giving up"
        else:
            then = f"retry in {retry_in:g}s"
        self._log(f"callback {order_id} copy {copy} attempt {attempt} POST {url} -> {outcome}, {then}")
        if retry_in is not None:
            self._scheduler.call_later(retry_in, lambda: self._send_async(order_id, copy, attempt + 1))

    # the state file

    def _load(self) -> None:
        """Read what an earlier start wrote. A file that is there but cannot be read (cut short, or written by
        another version of the simulator) stops this start, and the message says how to go on: starting empty
        would give out again the ids of orders the app still holds."""
        try:
            state = json.loads(self.state_file.read_text())
            orders = [_Order.from_state(data) for data in state["orders"]]
            last_order_number = int(state["last_order_number"])
            post_statuses, callback_counts = Counter(state["post_orders"]), Counter(state["callbacks"])
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(
                f"cannot read the state file {self.state_file} ({type(exc).__name__}: {exc}): delete it to start with "
                "no orders (the order ids the app holds then name none, or new ones)"
            ) from None
        self._orders = {order.order_id: order for order in orders}
        self._by_reference = {order.reference: order for order in orders}
        self._last_order_number = last_order_number
        self._post_statuses, self._callback_counts = post_statuses, callback_counts

    def _save(self) -> None:
        """Caller holds the lock. The whole state goes to a temporary file renamed over the state file, so a
        start reads it as it was before or after a change, never halfway. A stopped simulator writes
        nothing: the file is the next start's."""
        if self.state_file is None or self._stopping.is_set():
            return
        state = {
            "last_order_number": self._last_order_number,
            "orders": [order.state() for order in self._orders.values()],
            "post_orders": dict(self._post_statuses),
            "callbacks": dict(self._callback_counts),
        }
        partial = self.state_file.with_name(f"{self.state_file.name}.partial")
        partial.write_text(json.dumps(state))
        os.replace(partial, self.state_file)

    def _resume(self) -> None:
        """The production and callback deliveries an earlier start left under way go on (a callback at its
        next attempt, now: the retry it waited for was that start's)."""
        with self._lock:
            orders = list(self._orders.values())
            owed = [
                (order.order_id, delivery.copy, len(delivery.attempts) + 1)
                for order in orders
                for delivery in order.deliveries
                if delivery.state == "pending"
            ]
        for order in orders:
            if not order.finished:
                self._schedule_production(order)
        for order_id, copy, attempt in owed:
            self._scheduler.call_later(0, lambda o=order_id, c=copy, a=attempt: self._send_async(o, c, a))

    # control endpoints

    def _handle_control(self, method: str, path: str, body: bytes) -> _Response:
        try:
            if path == "/_sim/orders" and method == "GET":
                return _json(200, {"results": self.orders()})
            if path == "/_sim/stats" and method == "GET":
                return _json(200, self.stats())
            if path == "/_sim/config" and method == "GET":
                return _json(200, self.config.as_dict())
            if path == "/_sim/config" and method == "POST":
                changes = _json_object(body)
                return _json(200, self.configure(**changes).as_dict(), note=json.dumps(changes))
            match = re.fullmatch(r"/_sim/orders/([^/]+)/(complete|cancel|callback)", path)
            if match and method == "POST":
                order_id, action = match.groups()
                options = _json_object(body) if body.strip() else {}
                allowed = {"complete": {"quantity_produced", "callback"}, "cancel": {"callback"}}.get(action, set())
                unknown = set(options) - allowed
                if unknown:
                    raise ValueError(f"unknown field(s) for {action}: {', '.join(sorted(unknown))}")
                if action == "complete":
                    return _json(200, self.complete(order_id, **options))
                if action == "cancel":
                    return _json(200, self.cancel(order_id, **options))
                return _json(200, self.resend_callback(order_id))
            if path in ("/_sim/orders", "/_sim/stats", "/_sim/config") or match:
                return _error(405, "method not allowed")
            return _error(404, "not found")
        except _NotFound as exc:
            return _error(404, str(exc))
        except _Conflict as exc:
            return _error(409, str(exc))
        except (ValueError, TypeError) as exc:
            return _error(400, str(exc))

    def _get(self, order_id: str) -> _Order:
        """Caller holds the lock."""
        order = self._orders.get(order_id)
        if order is None:
            raise _NotFound(f"order {order_id} not found")
        return order

    def _log(self, line: str) -> None:
        if self._log_fn is not None:
            self._log_fn(line)


class _NotFound(Exception):
    pass


class _Conflict(Exception):
    pass


def _iso_ms(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _is_loopback(ip: str) -> bool:
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise ValueError("body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    return data


def _validate_order(body: bytes) -> dict[str, Any]:
    """The contract's request rules, checked field by field; the first broken rule is the 400's error."""
    try:
        data = _json_object(body)
    except ValueError as exc:
        raise _BadRequest(str(exc)) from None
    reference = data.get("reference")
    if not isinstance(reference, str) or not REFERENCE_RE.fullmatch(reference):
        raise _BadRequest("reference must be 1-64 characters of A-Z a-z 0-9 . _ : -")
    sku = data.get("sku")
    if not isinstance(sku, str) or not 1 <= len(sku) <= 64:
        raise _BadRequest("sku must be a string of 1-64 characters")
    quantity = data.get("quantity")
    if type(quantity) is not int or not 1 <= quantity <= MAX_QUANTITY:
        raise _BadRequest(f"quantity must be an integer from 1 to {MAX_QUANTITY}")
    callback_url = data.get("callback_url")
    if not isinstance(callback_url, str) or not _is_absolute_http_url(callback_url):
        raise _BadRequest("callback_url must be an absolute http or https URL")
    return {"reference": reference, "sku": sku, "quantity": quantity, "callback_url": callback_url}


def _is_absolute_http_url(value: str) -> bool:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number or out of range
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not any(c.isspace() for c in value)


# --- HTTP plumbing ------------------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    factory: LegacyFactory

    def server_bind(self):
        # HTTPServer.server_bind resolves the host's FQDN, which can stall for seconds without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            return  # the client went away (often: it timed out on a hang); nothing to answer
        self.factory._log(f"error serving {client_address}: {traceback.format_exc()}")


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FactoryStates/1.0"
    sys_version = ""
    timeout = 120  # idle keep-alive connections give their thread back eventually
    server: _Server

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_PATCH(self):
        self._dispatch("PATCH")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def log_message(self, format, *args):
        pass  # LegacyFactory logs one line per request itself

    def _dispatch(self, method: str) -> None:
        factory = self.server.factory
        started = time.monotonic()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY_BYTES:
            response = _error(400, "Content-Length missing, invalid, or too large")
            self.close_connection = True
        else:
            body = self.rfile.read(length) if length else b""
            response = factory.handle(method, self.path, self.headers, body, self.client_address[0])
        elapsed_ms = (time.monotonic() - started) * 1000
        client = self.client_address[0]
        if response.hang:
            factory._log(f"{client} {method} {self.path} -> HANG {response.note}, holding the connection")
            factory._stopping.wait(factory.config.hang_seconds)
            self.close_connection = True
            return
        note = f" {response.note}" if response.note else ""
        factory._log(f"{client} {method} {self.path} -> {response.status}{note} {elapsed_ms:.0f}ms")
        try:
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(response.body)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(response.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up waiting; the order (if any) still exists

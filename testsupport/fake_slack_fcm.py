"""Local stand-ins for Slack's incoming webhooks and FCM HTTP v1, for tests and for `make run`.

Standard library only (no Django), so they run in-process from tests or as a process of their own:

    python -m testsupport.fake_slack_fcm --slack-port 8091 --fcm-port 8092 [--fcm-token T]

Each stand-in records every request it receives in `.received` (dicts with method, path, lower-cased
headers, parsed JSON body, raw body, `time.time()` on arrival and the status it answered) and takes a
queue of scripted answers: `fail_next(429, headers={"Retry-After": "1"})`, `fail_next(500)`,
`fail_next(404)` (FCM: the UNREGISTERED error shape), or `hang_next()` to hold a request unanswered.
`latency_seconds` makes every answer wait that long, as a remote service's would.
"""

import argparse
import base64
import itertools
import json
import re
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs


@dataclass
class Scripted:
    """One answer to give instead of the normal one."""

    status: int = 200
    body: dict | list | str | bytes | None = None  # None: the stand-in's usual error body for `status`
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # keep the connection open without answering until stop()


@dataclass
class Answer:
    status: int
    body: bytes
    content_type: str
    headers: dict[str, str] = field(default_factory=dict)


class _Server(ThreadingHTTPServer):
    """Serves each request in a thread of its own, and takes a sender that hung up for what it is.

    A sender whose timeout passed while the stand-in was slow on purpose (`latency_seconds`) has closed
    the connection: writing the answer to it raises BrokenPipeError or ConnectionResetError. That is the
    case the stand-in exists to play, not a fault of its own, so it says so in one line instead of
    socketserver's traceback, which read like a crash in make run's output."""

    daemon_threads = True

    def __init__(self, address, handler, channel: str):
        self.channel = channel
        super().__init__(address, handler)

    def handle_error(self, request, client_address) -> None:
        error = sys.exc_info()[1]
        if not isinstance(error, ConnectionError):
            super().handle_error(request, client_address)
            return
        host, port = client_address[:2]
        print(
            f"{self.channel} stand-in: the sender at {host}:{port} hung up ({type(error).__name__}), "
            "as one that gave up waiting does; not an error",
            file=sys.stderr,
            flush=True,
        )


class StandIn:
    """A ThreadingHTTPServer on 127.0.0.1 that records requests and answers from a scripted queue first."""

    channel = "standin"
    max_hang_seconds = 60.0

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.latency_seconds = 0.0  # every answer waits this long (the requests are served in parallel)
        self.host = host
        self.port = port
        self.received: list[dict] = []
        self.on_receive: Callable[[dict], None] | None = None  # called for every recorded request
        self._script: deque[Scripted] = deque()
        self._lock = threading.Condition()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle -----------------------------------------------------------------------------------

    def start(self) -> str:
        """Listen (port 0 picks a free one) and return the base URL, e.g. http://127.0.0.1:49152."""
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # The headers and the body leave in two writes; with Nagle on, the body waited for the
            # client's delayed ACK of the headers (40 ms a request on a kept-alive connection).
            disable_nagle_algorithm = True

            def do_POST(self):  # noqa: N802 - http.server's naming
                standin._handle(self)

            do_GET = do_PUT = do_DELETE = do_POST  # noqa: N815

            def log_message(self, format, *args):  # noqa: A002 - quiet; `received` is the log
                pass

        self._stopping.clear()
        self._server = _Server((self.host, self.port), Handler, self.channel)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"{self.channel}-standin",
            daemon=True,
        )
        self._thread.start()
        return self.url

    def stop(self) -> None:
        self._stopping.set()  # releases hung requests
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    # scripting and inspection --------------------------------------------------------------------

    def fail_next(
        self, status: int, body: dict | list | str | bytes | None = None, headers: dict | None = None, *, times: int = 1
    ) -> None:
        """Answer the next `times` requests with this status (and body/headers) instead of the normal answer."""
        with self._lock:
            for _ in range(times):
                self._script.append(Scripted(status=status, body=body, headers=dict(headers or {})))

    def hang_next(self, times: int = 1) -> None:
        """Hold the next `times` requests without answering (until stop() or max_hang_seconds)."""
        with self._lock:
            for _ in range(times):
                self._script.append(Scripted(hang=True))

    def wait_for(self, n: int, timeout: float = 5.0) -> list[dict]:
        """Block until at least `n` requests arrived; return a copy of them. Raises TimeoutError otherwise."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.received) < n:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{self.channel} stand-in: {len(self.received)} requests arrived, wanted {n}")
                self._lock.wait(remaining)
            return list(self.received)

    def clear(self) -> None:
        with self._lock:
            self.received.clear()
            self._script.clear()

    # request handling ----------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        arrived = time.time()
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        text = raw.decode("utf-8", errors="replace")
        try:
            body = json.loads(text) if text else None
        except ValueError:
            body = None
        record = {
            "channel": self.channel,
            "method": handler.command,
            "path": handler.path,
            "headers": {key.lower(): value for key, value in handler.headers.items()},
            "body": body,
            "raw": text,
            "time": arrived,
        }
        with self._lock:
            scripted = self._script.popleft() if self._script else None
        if self.latency_seconds:
            time.sleep(self.latency_seconds)
        if scripted is not None and scripted.hang:
            record["status"] = None
            self._record(record)
            self._stopping.wait(self.max_hang_seconds)
            handler.close_connection = True
            return
        if scripted is not None:
            answer = self._scripted_answer(scripted)
        else:
            answer = self.answer(record)
        record["status"] = answer.status
        self._record(record)  # before answering, so a caller that got its answer finds the record
        handler.send_response(answer.status)
        handler.send_header("Content-Type", answer.content_type)
        handler.send_header("Content-Length", str(len(answer.body)))
        for key, value in answer.headers.items():
            handler.send_header(key, str(value))
        handler.end_headers()
        handler.wfile.write(answer.body)

    def _record(self, record: dict) -> None:
        with self._lock:
            self.received.append(record)
            self._lock.notify_all()
        if self.on_receive is not None:
            self.on_receive(record)

    def _scripted_answer(self, scripted: Scripted) -> Answer:
        body = scripted.body if scripted.body is not None else self.error_body(scripted.status)
        if isinstance(body, dict | list):
            answer = Answer(scripted.status, json.dumps(body).encode(), "application/json; charset=UTF-8")
        elif isinstance(body, bytes):
            answer = Answer(scripted.status, body, "text/plain; charset=utf-8")
        else:
            answer = Answer(scripted.status, str(body).encode(), "text/plain; charset=utf-8")
        answer.headers.update(scripted.headers)
        return answer

    # what subclasses define
    def answer(self, record: dict) -> Answer:
        raise NotImplementedError

    def error_body(self, status: int) -> dict | str:
        return HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "error"


# Slack -------------------------------------------------------------------------------------------

SLACK_ERROR_BODIES = {
    400: "invalid_payload",
    403: "action_prohibited",
    404: "no_service",
    410: "channel_is_archived",
    429: "rate_limited",
    500: "rollup_error",
}


def _slack_blocks_problem(blocks) -> str | None:
    """A subset of Block Kit's rules, enough to catch an adapter that overruns Slack's limits."""
    if not isinstance(blocks, list) or len(blocks) > 50:
        return "blocks must be a list of at most 50"
    for i, block in enumerate(blocks):
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "header":
            text = block.get("text") or {}
            if text.get("type") != "plain_text" or not 0 < len(text.get("text") or "") <= 150:
                return f"blocks[{i}]: header needs plain_text of 1-150 characters"
        elif kind == "section":
            text, fields = block.get("text"), block.get("fields")
            if text is None and not fields:
                return f"blocks[{i}]: section needs text or fields"
            if text is not None and not 0 < len(text.get("text") or "") <= 3000:
                return f"blocks[{i}]: section text must be 1-3000 characters"
            if fields is not None and (
                len(fields) > 10 or any(not 0 < len(f.get("text") or "") <= 2000 for f in fields)
            ):
                return f"blocks[{i}]: at most 10 fields of 1-2000 characters"
        elif kind == "context":
            if not 0 < len(block.get("elements") or []) <= 10:
                return f"blocks[{i}]: context needs 1-10 elements"
        elif kind == "actions":
            if not 0 < len(block.get("elements") or []) <= 25:
                return f"blocks[{i}]: actions needs 1-25 elements"
        elif kind not in ("divider", "image", "rich_text", "markdown", "video", "file", "input"):
            return f"blocks[{i}]: unknown block type {kind!r}"
    return None


class SlackStandIn(StandIn):
    """Answers 200 "ok" at any path, like an incoming webhook; 400 invalid_payload / invalid_blocks like Slack."""

    channel = "slack"

    def answer(self, record: dict) -> Answer:
        body = record["body"]
        if not isinstance(body, dict):
            return Answer(400, b"invalid_payload", "text/html")
        if not body.get("text") and not body.get("blocks"):
            return Answer(400, b"no_text", "text/html")
        if "blocks" in body and _slack_blocks_problem(body["blocks"]):
            record["problem"] = _slack_blocks_problem(body["blocks"])
            return Answer(400, b"invalid_blocks", "text/html")
        return Answer(200, b"ok", "text/html")

    def error_body(self, status: int) -> str:
        return SLACK_ERROR_BODIES.get(status, "internal_error" if status >= 500 else "invalid_payload")

    @staticmethod
    def title_of(record: dict) -> str:
        body = record.get("body") or {}
        for block in body.get("blocks") or []:
            if isinstance(block, dict) and block.get("type") == "header":
                return str((block.get("text") or {}).get("text", ""))
        return str(body.get("text", ""))


# FCM ---------------------------------------------------------------------------------------------

_FCM_STATUS = {
    400: ("INVALID_ARGUMENT", "INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", None, "Request had invalid authentication credentials."),
    403: ("PERMISSION_DENIED", "SENDER_ID_MISMATCH", "SenderId mismatch"),
    404: ("NOT_FOUND", "UNREGISTERED", "Requested entity was not found."),
    429: ("RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", "Quota exceeded for quota metric 'Send requests'."),
    500: ("INTERNAL", "INTERNAL", "Internal error encountered."),
    503: ("UNAVAILABLE", "UNAVAILABLE", "The service is currently unavailable."),
}
_SEND_PATH = re.compile(r"^/v1/projects/(?P<project>[^/]+)/messages:send$")


def fcm_error(code: int, status: str, message: str, error_code: str | None = None, detail: dict | None = None) -> dict:
    """A Google API error body as FCM HTTP v1 sends it (an FcmError detail carries `errorCode`)."""
    details = []
    if error_code:
        details.append({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": error_code})
    if detail:
        details.append(detail)
    error = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return {"error": error}


def _jwt_claims(assertion: str) -> dict:
    """The payload of a JWT, unverified (the stand-in only shows what google-auth asked for)."""
    try:
        payload = assertion.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return {}


class FcmStandIn(StandIn):
    """`POST /v1/projects/{p}/messages:send` -> {"name": "projects/{p}/messages/<n>"}; `POST /token` -> OAuth token.

    With `token` set, sends must carry `Authorization: Bearer <token>` or the token `/token` hands out
    (`oauth_token`), else 401. With `project_id` set, other projects get 404 NOT_FOUND. Tokens passed to
    `mark_unregistered` answer 404 UNREGISTERED every time, as a device that uninstalled the app.
    """

    channel = "fcm"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        token: str | None = None,
        project_id: str | None = None,
        oauth_token: str = "sa-token",  # noqa: S107 - a stand-in's fake token, not a secret
    ):
        super().__init__(host, port)
        self.token = token
        self.project_id = project_id
        self.oauth_token = oauth_token
        self.token_requests: list[dict] = []  # calls to /token: form fields plus the JWT's claims
        self.unregistered: set[str] = set()
        self._ids = itertools.count(1)

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    def mark_unregistered(self, *tokens: str) -> None:
        self.unregistered.update(tokens)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        if handler.command == "POST" and handler.path == "/token":
            self._handle_token(handler)
        else:
            super()._handle(handler)

    def _handle_token(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        form = {k: v[0] for k, v in parse_qs(handler.rfile.read(length).decode()).items()}
        with self._lock:
            self.token_requests.append(
                {"form": form, "claims": _jwt_claims(form.get("assertion", "")), "time": time.time()}
            )
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer" or not form.get("assertion"):
            status, body = 400, {"error": "invalid_grant", "error_description": "expected a JWT bearer assertion"}
        else:
            status, body = 200, {"access_token": self.oauth_token, "expires_in": 3600, "token_type": "Bearer"}
        data = json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def answer(self, record: dict) -> Answer:
        match = _SEND_PATH.match(record["path"])
        if record["method"] != "POST" or not match:
            return self._json(404, fcm_error(404, "NOT_FOUND", "Requested entity was not found."))
        project = match["project"]
        if self.project_id is not None and project != self.project_id:
            return self._json(404, fcm_error(404, "NOT_FOUND", "Requested entity was not found."))
        if self.token is not None:
            accepted = {f"Bearer {self.token}", f"Bearer {self.oauth_token}"}
            if record["headers"].get("authorization") not in accepted:
                return self._json(401, self.error_body(401))
        message = (record["body"] or {}).get("message") if isinstance(record["body"], dict) else None
        if not isinstance(message, dict):
            return self._json(400, fcm_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received."))
        targets = [key for key in ("token", "topic", "condition") if message.get(key)]
        if len(targets) != 1:
            return self._json(400, fcm_error(400, "INVALID_ARGUMENT", "Exactly one of token, topic or condition."))
        for i, value in enumerate((message.get("data") or {}).values()):
            if not isinstance(value, str):
                text = f"Invalid value at 'message.data[{i}].value' (TYPE_STRING), {json.dumps(value)}"
                bad_request = {
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [{"field": f"message.data[{i}].value", "description": text}],
                }
                return self._json(400, fcm_error(400, "INVALID_ARGUMENT", text, detail=bad_request))
        if message.get("token") in self.unregistered:
            return self._json(404, self.error_body(404))
        return self._json(200, {"name": f"projects/{project}/messages/{next(self._ids)}"})

    def error_body(self, status: int) -> dict:
        status_name, error_code, text = _FCM_STATUS.get(
            status, ("INTERNAL" if status >= 500 else "INVALID_ARGUMENT", None, HTTPStatus(status).phrase)
        )
        return fcm_error(status, status_name, text, error_code)

    @staticmethod
    def _json(status: int, body: dict) -> Answer:
        return Answer(status, json.dumps(body).encode(), "application/json; charset=UTF-8")

    @staticmethod
    def title_of(record: dict) -> str:
        message = (record.get("body") or {}).get("message") or {}
        return str((message.get("notification") or {}).get("title", ""))


# `python -m testsupport.fake_slack_fcm` --------------------------------------------------------------


def describe(record: dict) -> str:
    when = datetime.fromtimestamp(record["time"]).strftime("%H:%M:%S")
    if record["channel"] == "slack":
        title = SlackStandIn.title_of(record)
        target = record["path"]
    else:
        title = FcmStandIn.title_of(record)
        message = (record.get("body") or {}).get("message") or {}
        target = f"topic:{message['topic']}" if message.get("topic") else f"token:{str(message.get('token'))[:12]}…"
        if sku := (message.get("data") or {}).get("sku"):
            title = f"{title}: {sku}"  # a customer's push: which donut is back
    status = "held, no answer" if record.get("status") is None else record["status"]
    return f"{when} {record['channel']:<5} {title!s} [{target} -> {status}]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Stand-in Slack webhook and FCM endpoints that print what arrives.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--slack-port", type=int, default=8091)
    parser.add_argument("--fcm-port", type=int, default=8092)
    parser.add_argument("--fcm-token", default=None, help="require this bearer token on FCM sends (else 401)")
    parser.add_argument("--fcm-project", default=None, help="accept only this project id (default: any)")
    args = parser.parse_args(argv)

    def show(record: dict) -> None:
        print(describe(record), flush=True)

    slack = SlackStandIn(args.host, args.slack_port)
    fcm = FcmStandIn(args.host, args.fcm_port, token=args.fcm_token, project_id=args.fcm_project)
    slack.on_receive = fcm.on_receive = show
    slack.start()
    fcm.start()
    print(
        f"stand-ins listening: Slack webhook {slack.url}/services/dev  FCM {fcm.url}\n"
        f"  SLACK_WEBHOOK_URL={slack.url}/services/dev FCM_ENDPOINT={fcm.url} "
        f"FCM_PROJECT_ID={args.fcm_project or 'donut-dev'} FCM_ACCESS_TOKEN={args.fcm_token or 'dev-token'}",
        flush=True,
    )
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    while not done.wait(1.0):
        pass
    slack.stop()
    fcm.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

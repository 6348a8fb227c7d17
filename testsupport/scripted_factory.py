"""A local HTTP server that answers as the legacy factory would, from a script, and a sample order."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ORDER = {
    "order_id": "F-000123",
    "reference": "restock-42",
    "sku": "GLAZED",
    "quantity": 120,
    "status": "accepted",
    "quantity_produced": None,
    "created_at": "2026-11-22T03:00:00Z",
    "estimated_ready_at": "2026-11-22T03:05:00Z",
    "completed_at": None,
}


class Scripted:
    """A local server that answers each request with the next scripted (status, body, headers, delay);
    it serves from the start, and stops at the end of a `with` block or on `stop()`.

    `trickle` (seconds per byte) sends the answer a byte at a time from `trickle_from` on ("status": the
    whole answer; "body": the status line and headers at once), as a crawling server would."""

    def __init__(self):
        self.answers = []
        self.requests = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                outer.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": dict(self.headers),
                        "body": self.rfile.read(length),
                    }
                )
                status, body, headers, delay, trickle, trickle_from = outer.answers.pop(0)
                time.sleep(delay)
                raw = body if isinstance(body, bytes) else json.dumps(body).encode()
                if trickle:
                    self._trickle(status, headers, raw, trickle, trickle_from)
                    return
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _trickle(self, status, headers, raw, seconds, trickle_from):
                head = f"HTTP/1.1 {status} Trickling\r\nContent-Type: application/json\r\n"
                head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
                head = (head + f"Content-Length: {len(raw)}\r\n\r\n").encode()
                if trickle_from == "body":
                    self.wfile.write(head)
                    head = b""
                self.close_connection = True
                try:
                    for i in range(len(head + raw)):
                        self.wfile.write((head + raw)[i : i + 1])
                        time.sleep(seconds)
                except OSError:
                    pass  # the client gave up and closed the connection

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        """Stop serving and close the port: nobody listens at `url` after this."""
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()

    def answer(self, status, body=None, headers=None, delay=0.0, trickle=0.0, trickle_from="status"):
        self.answers.append((status, {} if body is None else body, headers or {}, delay, trickle, trickle_from))

"""Production gunicorn settings (`gunicorn -c gunicorn.conf.py`); the sales bench starts the server with it too.

Every knob reads the environment so one image serves any machine:

  GUNICORN_BIND          address to listen on                    (default 0.0.0.0:8000)
  GUNICORN_WORKERS       worker processes                        (default: see below)
  GUNICORN_THREADS       threads per worker (gthread when > 1)   (default: see below)
  GUNICORN_WORKER_CLASS  override the worker class (sync, gthread)
  GUNICORN_ACCESS_LOG    "-" for stdout or a file path           (default: off)
  GUNICORN_TIMEOUT       seconds before a silent worker is killed (default 30)

The defaults come from docs/benchmarks.md (measured on 2 cores against MariaDB on the same machine).
"""

import json
import os

from gunicorn import util


def _cpus() -> int:
    # The CPUs this process may run on (a container's limit), not the host's count.
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


wsgi_app = "donutsite.wsgi:application"
bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")

# Sync workers, two per CPU (docs/benchmarks.md, "Sales throughput", has the figures). A sale is
# CPU-bound Python (6-7x a bare view's CPU in process on the bench machines) around a row lock, and a
# thread holding a hot product's lock must win the GIL back after each SQL round trip: gthread had the
# worst p99 on one SKU (425-515 ms against 199-284 ms for sync 4). One worker per CPU sold 14-23% more
# of one hot SKU where MariaDB shares the two cores, but 6-17% less spread over many; two per CPU also
# keep half the capacity free when one request waits out a slow database or a big admin page. Sync
# workers need a buffering proxy in front (a slow client holds a worker); production has the TLS proxy.
workers = int(os.environ.get("GUNICORN_WORKERS", 2 * _cpus()))
threads = int(os.environ.get("GUNICORN_THREADS", 1))
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread" if threads > 1 else "sync")

timeout = int(os.environ.get("GUNICORN_TIMEOUT", 30))
# On SIGTERM (a deploy), requests in flight get this long to finish; a sale holds its row locks for
# milliseconds, so 20 s is generous and still well inside a typical orchestrator's kill grace period.
graceful_timeout = 20
keepalive = 5  # gthread only (sync workers close after each response); below a proxy's upstream idle timeout
# No gunicornc control socket (gunicorn 25+): nothing here uses it (the orchestrator starts and stops the
# server; the worker count comes from the environment), and it is one more way into a running server. It
# also defaults to one path per user, so each gunicorn on a machine replaced the last one's.
control_socket_disable = True

accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
# gunicorn's default line, then the request id the app answered with (X-Request-ID): a sale that sells logs
# no line of the app's, so this is the line `grep <request id>` finds for it ("-" when gunicorn answered
# on its own, as for a malformed request line).
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" request_id=%({x-request-id}o)s'
errorlog = "-"


# A request gunicorn itself refuses (a malformed request line or header, an oversized URI or header
# block) never reaches Django; answer it in the API's JSON error shape too, not gunicorn's HTML page.
def _write_json_error(sock, status_int, reason, mesg):
    code = {414: "uri_too_long", 431: "header_too_large", 501: "not_implemented", 500: "server_error"}
    body = json.dumps(
        {"code": code.get(status_int, "bad_request"), "message": f"{reason}: {mesg}"[:300] if mesg else reason}
    ).encode()
    head = f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
    util.write_nonblock(sock, f"{head}Content-Length: {len(body)}\r\n\r\n".encode("latin-1") + body)


util.write_error = _write_json_error

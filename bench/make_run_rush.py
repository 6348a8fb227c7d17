"""A rush against the running `make run`: many buyers, each opening a new connection per request, as a crowd of
phones would. It prints, for the web server `make run` started, how many answers came back, their statuses,
the connections it refused or reset, and latency percentiles.

Baseline, in the same run against the same server and the same number of buyers: GET /healthz (no database,
no authentication), what the server answers when the app does nothing. The sales phase's answers per second
are printed as a ratio of it.

Needs `make run` running in this checkout (it reads the demo key from var/demo-api-key). The demo client's
rate limit (API_THROTTLE_RATE, 200/second) answers most of a long rush with 429, which is part of it.

    .venv/bin/python -m bench.make_run_rush --seconds 10 --buyers 50
"""

import argparse
import collections
import http.client
import json
import threading
import time
from pathlib import Path

from bench.common import percentile

SKUS = ["BOSTON", "CHOCOLATE", "CINNAMON", "CRULLER", "GLAZED", "JELLY", "LEMON", "MAPLE", "MATCHA", "VIRAL"]


def rush(port: int, seconds: float, buyers: int, request) -> dict:
    """`buyers` threads sending `request(n, i)` -> (method, path, body, headers) on a new connection each time."""
    latencies, statuses, errors = [], collections.Counter(), collections.Counter()
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def buyer(n: int) -> None:
        i = 0
        while time.monotonic() < stop:
            i += 1
            method, path, body, headers = request(n, i)
            started = time.monotonic()
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
                connection.request(method, path, body=body, headers=headers)
                response = connection.getresponse()
                response.read()
                connection.close()
            except OSError as exc:  # refused, reset, timed out
                with lock:
                    errors[type(exc).__name__] += 1
                continue
            with lock:
                statuses[response.status] += 1
                latencies.append((time.monotonic() - started) * 1000)

    threads = [threading.Thread(target=buyer, args=(n,)) for n in range(buyers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return {"per_second": len(latencies) / seconds, "statuses": dict(statuses), "errors": dict(errors), "ms": latencies}


def _line(name: str, result: dict) -> str:
    ms = sorted(result["ms"])
    p = {q: percentile(ms, q) if ms else 0.0 for q in (50, 90, 99)}
    return (
        f"  {name:8} {result['per_second']:7.0f} answers/s  p50 {p[50]:6.0f} ms  p90 {p[90]:6.0f} ms  "
        f"p99 {p[99]:6.0f} ms  max {max(ms, default=0):6.0f} ms  statuses {result['statuses']}  "
        f"refused or reset {sum(result['errors'].values())} {result['errors'] or ''}"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8000, help="make run's web port (default 8000)")
    parser.add_argument("--seconds", type=float, default=10, help="seconds per phase (default 10)")
    parser.add_argument("--buyers", type=int, default=50, help="concurrent buyers (default 50)")
    args = parser.parse_args(argv)
    key = Path("var/demo-api-key").read_text().strip()
    headers = {"Authorization": f"Api-Key {key}", "Content-Type": "application/json"}

    def sale(n, i):
        body = json.dumps({"items": [{"sku": SKUS[(n + i) % len(SKUS)], "quantity": 1}]})
        return "POST", "/api/v1/sales/", body, headers

    print(f"{args.buyers} buyers, a new connection per request, {args.seconds:g} s per phase, port {args.port}:")
    base = rush(args.port, args.seconds, args.buyers, lambda n, i: ("GET", "/healthz", None, {}))
    print(_line("healthz", base))
    sales = rush(args.port, args.seconds, args.buyers, sale)
    print(_line("sales", sales))
    print(f"  sales answered at {sales['per_second'] / base['per_second']:.0%} of healthz's rate")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

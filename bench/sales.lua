-- wrk script for bench/sales.py. BENCH_MODE picks the request:
--   bare    GET /bench/bare/                                  (baseline a)
--   hot     POST /api/v1/sales/ selling 1 of SKU "HOT"         (workload b)
--   spread  POST /api/v1/sales/ selling 1 of a random S0000..  (workload c; BENCH_SKUS of them)
--   soldout POST /api/v1/sales/ buying 1 of SKU "SOLDOUT" (at 0, restock open): every answer 409 (e)
--   soldout-keys  the same with a fresh Idempotency-Key per request                              (f)
-- BENCH_PATH, when set, sends the same requests to another path (the --floors views, bench/floors.py).
-- done() prints one line, "BENCH_JSON {...}", that bench/sales.py reads. wrk's latencies are microseconds.

local mode = os.getenv("BENCH_MODE") or "hot"
local api_key = os.getenv("BENCH_API_KEY") or ""
local skus = tonumber(os.getenv("BENCH_SKUS") or "1000")
local path = os.getenv("BENCH_PATH")
local threads = {}

if mode == "bare" then
  wrk.method = "GET"
  wrk.path = path or "/bench/bare/"
else
  wrk.method = "POST"
  wrk.path = path or "/api/v1/sales/"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Api-Key " .. api_key
  if mode == "soldout" or mode == "soldout-keys" then
    wrk.body = '{"items":[{"sku":"SOLDOUT","quantity":1}]}'
  else
    wrk.body = '{"items":[{"sku":"HOT","quantity":1}]}'
  end
end

function setup(thread)
  thread:set("thread_no", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  statuses = {}  -- per thread (each has its own Lua state); summed in done()
  math.randomseed(os.time() * 1000 + thread_no)
  key_prefix = string.format("bench-%d-%d-%d-", os.time(), thread_no, math.random(0, 1000000000))
  sent = 0
end

-- Only the spread and soldout-keys modes build each request; the others let wrk send its pre-built one (cheaper).
if mode == "spread" then
  function request()
    local sku = string.format("S%04d", math.random(0, skus - 1))
    return wrk.format(nil, nil, nil, '{"items":[{"sku":"' .. sku .. '","quantity":1}]}')
  end
elseif mode == "soldout-keys" then
  function request()
    sent = sent + 1
    wrk.headers["Idempotency-Key"] = key_prefix .. sent
    return wrk.format()
  end
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local by_status = {}
  local non2xx = 0
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      by_status[status] = (by_status[status] or 0) + n
      if status < 200 or status > 299 then
        non2xx = non2xx + n
      end
    end
  end
  local parts = {}
  for status, n in pairs(by_status) do
    table.insert(parts, string.format('"%d": %d', status, n))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "non2xx": %d, "statuses": {%s}, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, ' ..
    '"latency_us": {"mean": %.1f, "p50": %d, "p90": %d, "p95": %d, "p99": %d, "max": %d}}\n',
    summary.requests, summary.duration, non2xx, table.concat(parts, ", "),
    e.connect, e.read, e.write, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(95),
    latency:percentile(99), latency.max))
end

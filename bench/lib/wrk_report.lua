-- wrk script used by bench/run.sh for every wrk run.
-- Request shape comes from the environment (wrk's Lua has os.getenv):
--   BENCH_METHOD     GET (default) or POST
--   BENCH_BODY_FILE  file whose content is sent as the body (POST)
--   BENCH_CTYPE      Content-Type of the body (default application/json)
--   BENCH_UNIQUE     1: a different body per request (see below)
--   BENCH_AUTH       Authorization header value (none when empty)
-- done() prints one line "BENCH_JSON {...}" with throughput, latency
-- percentiles (microseconds) and error counts; run.sh greps for it.
-- No response() callback: it would run Lua on every response and slow
-- wrk down; wrk already counts status > 399 in summary.errors.status.

-- luacheck: globals wrk request done
local method = os.getenv("BENCH_METHOD") or "GET"
local body_file = os.getenv("BENCH_BODY_FILE")

wrk.method = method
wrk.headers["Connection"] = "keep-alive"
local auth = os.getenv("BENCH_AUTH")
if auth and auth ~= "" then
  wrk.headers["Authorization"] = auth
end
if body_file and body_file ~= "" then
  local f = assert(io.open(body_file, "rb"))
  wrk.body = f:read("*a")
  f:close()
  wrk.headers["Content-Type"] = os.getenv("BENCH_CTYPE") or "application/json"
end

-- BENCH_UNIQUE=1: every request's body differs (a counter in front of its first '"content":"'), so a response
-- cache never hits (the ai-cache miss cases). Costs wrk a Lua call per request, as it does every case using it.
if os.getenv("BENCH_UNIQUE") == "1" and wrk.body then
  local at = wrk.body:find('"content":"', 1, true)
  assert(at, 'BENCH_UNIQUE needs a body with a "content" string')
  local head, tail = wrk.body:sub(1, at + 10), wrk.body:sub(at + 11)
  local n = 0
  local id = tostring(os.time()) .. "-" .. tostring(math.random(1, 1e9))
  function request()
    n = n + 1
    return wrk.format(nil, nil, nil, head .. id .. "-" .. n .. " " .. tail)
  end
end

function done(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  local parts = {
    string.format('"requests":%d', summary.requests),
    string.format('"duration_s":%.3f', secs),
    string.format('"rps":%.1f', secs > 0 and summary.requests / secs or 0),
    string.format('"bytes":%d', summary.bytes),
    string.format('"lat_mean_us":%.1f', latency.mean),
    string.format('"lat_max_us":%d', latency.max),
    string.format('"p50_us":%d', latency:percentile(50)),
    string.format('"p90_us":%d', latency:percentile(90)),
    string.format('"p99_us":%d', latency:percentile(99)),
    string.format('"p999_us":%d', latency:percentile(99.9)),
    string.format('"non2xx":%d', e.status),
    string.format('"err_connect":%d', e.connect),
    string.format('"err_read":%d', e.read),
    string.format('"err_write":%d', e.write),
    string.format('"err_timeout":%d', e.timeout),
    string.format('"socket_errors":%d', e.connect + e.read + e.write + e.timeout),
  }
  io.write("BENCH_JSON {" .. table.concat(parts, ",") .. "}\n")
end

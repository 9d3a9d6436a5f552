-- wrk script used by bench/run.sh for every wrk run.
-- Request shape comes from the environment (wrk's Lua has os.getenv):
--   BENCH_METHOD     GET (default) or POST
--   BENCH_BODY_FILE  file whose content is sent as the body (POST)
--   BENCH_CTYPE      Content-Type of the body (default application/json)
--   BENCH_AUTH       Authorization header value (none when empty)
-- done() prints one line "BENCH_JSON {...}" with throughput, latency
-- percentiles (microseconds) and error counts; run.sh greps for it.
-- No response() callback: it would run Lua on every response and slow
-- wrk down; wrk already counts status > 399 in summary.errors.status.

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

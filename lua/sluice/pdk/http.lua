-- sluice.http: an HTTP/1.1 client that yields the running coroutine instead of blocking the worker
-- (core/upstream/client.c: keep-alive pools per scheme/host/port/TLS settings, DNS cache, HTTPS verified
-- against the system CA bundle, HTTP_PROXY/HTTPS_PROXY/NO_PROXY).
-- Phases: rewrite, access, header_filter, body_filter, log, and timers (not init/init_worker's main chunk).
--
--   local http = require("sluice").http
--   local res, err, detail = http.request{ method = "POST", url = "https://api.example.com/v1/x",
--       headers = { authorization = "Bearer ..." }, body = { input = "hi" }, timeout = 5 }
--   if not res then return 502, { error = { message = "moderation: " .. err } } end
--   -- res.status, res.headers (lower-case names; repeated ones as arrays), res.body
--   http.request{ url = u, stream = function(chunk) ... end }   -- body handed over as it arrives
--   local results, errs = http.multi{ { url = a }, { url = b } } -- concurrently, results in order
--
-- err names the failure class: "connect", "dns", "tls", "timeout", "reset", "bad_response" (not HTTP/1.x, a
-- status outside 100-599, headers over 64 KiB, more than 16 interim responses...), "client_gone" (worker
-- stopping), "nomem", "invalid_url", "stream_aborted"; detail says more (for logs). A header name that is not a
-- token or a value with CR, LF or NUL raises an error (nothing is sent).
local ffi = require("ffi")
local base = require("sluice.pdk.base")
local timer = require("sluice.pdk.timer")

local C = base.C
local type, pairs, ipairs, tostring, error, pcall, concat = type, pairs, ipairs, tostring, error, pcall, table.concat
local lower, find, upper = string.lower, string.find, string.upper
local ffi_string, ffi_gc = ffi.string, ffi.gc
local yield = coroutine.yield

ffi.cdef [[
enum { SL_HTTP_STREAM = 1, SL_HTTP_NO_VERIFY = 2, SL_HTTP_NO_PROXY = 4, SL_HTTP_HAS_HOST = 8 };
typedef struct sl_httpres {
    sl_header_t *headers; const char *body;
    uint32_t nheaders, body_len;
    int32_t status, error, wake_id;
    uint8_t headers_done, done, reused, waiting;
    char errmsg[200];
} sl_httpres_t;
int sl_http_check_url(const char *url, size_t len);
typedef struct sl_http_opts {
    const char *method, *url, *headers, *body, *ca_file;
    size_t mlen, ulen, hlen, blen;
    uint32_t nfields;
    int32_t flags, pool_size;
    double connect_timeout, send_timeout, read_timeout, deadline, max_body, idle_timeout;
    const char *cert_file, *key_file;
} sl_http_opts_t;
sl_httpres_t *sl_http_start(sl_req_t *req, const sl_http_opts_t *o);
int sl_http_take(sl_httpres_t *res);
void sl_http_close(sl_httpres_t *res);
const char *sl_version(void);
]]

local STREAM, NO_VERIFY, NO_PROXY, HAS_HOST = C.SL_HTTP_STREAM, C.SL_HTTP_NO_VERIFY, C.SL_HTTP_NO_PROXY,
    C.SL_HTTP_HAS_HOST
local BAD_REQUEST = C.SL_UPERR_BAD_REQUEST -- a header C refused to send (core/http/field.c)
local uperr_name = base.uperr_name
-- never taken from the caller: the client frames the message itself
local SKIP = { ["content-length"] = true, ["transfer-encoding"] = true }

local UA
local sopts = ffi.new("sl_http_opts_t") -- sl_http_start's options, filled per call (C copies what it keeps)

local _M = {}

-- The caller's headers as "Name: value\r\n" lines, and how many. Names and values are checked in C
-- (sl_http_start), where the head is written: a name that is not a token or a value with CR, LF or NUL is never
-- sent (a value with CR LF makes more lines than counted here).
local function header_block(headers, body_is_json)
    local out, n, nlines, has_host, has_ua, has_ct = {}, 0, 0, false, false, false
    for name, v in pairs(headers or {}) do
        name = tostring(name)
        local l = lower(name)
        if not SKIP[l] then
            has_host = has_host or l == "host"
            has_ua = has_ua or l == "user-agent"
            has_ct = has_ct or l == "content-type"
            local vals = type(v) == "table" and v or { v }
            for _, x in ipairs(vals) do
                out[n + 1], out[n + 2], out[n + 3], out[n + 4] = name, ": ", tostring(x), "\r\n"
                n, nlines = n + 4, nlines + 1
            end
        end
    end
    if not has_ua then
        UA = UA or ("User-Agent: sluice/" .. ffi_string(C.sl_version()) .. "\r\n")
        n, nlines = n + 1, nlines + 1
        out[n] = UA
    end
    if body_is_json and not has_ct then
        n, nlines = n + 1, nlines + 1
        out[n] = "Content-Type: application/json\r\n"
    end
    return concat(out, "", 1, n), has_host, nlines
end

local function resp_headers(h)
    local out = {}
    for i = 0, h.nheaders - 1 do
        local hd = h.headers[i]
        local name = lower(ffi_string(hd.name, hd.name_len))
        local v = ffi_string(hd.value, hd.value_len)
        local old = out[name]
        if old == nil then
            out[name] = v
        elseif type(old) == "table" then
            old[#old + 1] = v
        else
            out[name] = { old, v }
        end
    end
    return out
end

local function close(h)
    ffi_gc(h, nil)
    C.sl_http_close(h)
end

-- Starts one request; returns the handle, or nil, err, detail.
local function start(req, o)
    if type(o) ~= "table" then
        error("request options must be a table", 3)
    end
    local url = o.url
    if type(url) ~= "string" then
        error("url must be a string", 3)
    end
    if C.sl_http_check_url(url, #url) ~= 0 then
        return nil, "invalid_url", "not an absolute http(s) URL: " .. url
    end
    local method = upper(o.method or (o.body and "POST" or "GET"))
    if not find(method, "^%u+$") then
        error("bad method " .. tostring(o.method), 3)
    end
    local body = o.body
    local json = false
    if type(body) == "table" then
        body = require("cjson.safe").encode(body)
        json = true
    elseif body ~= nil and type(body) ~= "string" then
        error("body must be a string or a table", 3)
    end
    body = body or ""
    local headers, has_host, nlines = header_block(o.headers, json)
    local flags = 0
    if o.stream then
        if type(o.stream) ~= "function" then
            error("stream must be a function", 3)
        end
        flags = flags + STREAM
    end
    if o.ca_file ~= nil and (type(o.ca_file) ~= "string" or #o.ca_file > 512) then
        error("ca_file must be a path of at most 512 bytes", 3)
    end
    for _, f in ipairs({ "cert_file", "key_file" }) do
        if o[f] ~= nil and (type(o[f]) ~= "string" or #o[f] > 512) then
            error(f .. " must be a path of at most 512 bytes", 3)
        end
    end
    if (o.cert_file == nil) ~= (o.key_file == nil) then
        error("a client certificate needs both cert_file and key_file", 3)
    end
    if o.ssl_verify == false then flags = flags + NO_VERIFY end
    if o.proxy == false then flags = flags + NO_PROXY end
    if has_host then flags = flags + HAS_HOST end
    local timeout = o.timeout or 60
    local t = o.timeouts or {}
    local ka = o.keepalive or {}
    local so = sopts
    so.method, so.mlen, so.url, so.ulen, so.headers, so.hlen, so.nfields = method, #method, url, #url, headers,
        #headers, nlines
    so.body, so.blen, so.flags, so.ca_file, so.max_body = body, #body, flags, o.ca_file, o.max_body or 0
    so.connect_timeout, so.send_timeout, so.read_timeout = t.connect or (timeout < 5 and timeout or 5),
        t.send or timeout, t.read or timeout
    so.deadline, so.pool_size, so.idle_timeout = timeout, ka.size or 16, ka.idle_timeout or 30
    so.cert_file, so.key_file = o.cert_file, o.key_file
    local h = C.sl_http_start(req, so)
    if h == nil then
        return nil, "nomem", "cannot start the request (out of memory or worker stopping)"
    end
    if h.error == BAD_REQUEST then -- refused before anything was sent: the caller's mistake
        local why = ffi_string(h.errmsg)
        C.sl_http_close(h)
        error("invalid request " .. why, 3)
    end
    return ffi_gc(h, C.sl_http_close)
end

-- Waits until every handle is done, feeding stream callbacks; fills results/errs, closes every handle.
local function wait_all(hs, opts, results, errs, details)
    local left = 0
    for i = 1, #opts do
        if hs[i] then left = left + 1 end
    end
    while left > 0 do
        for i = 1, #opts do
            local h = hs[i]
            if h then
                local o = opts[i]
                local finished = false
                if o.stream and h.body_len > 0 and h.error == 0 then
                    local chunk = ffi_string(h.body, h.body_len)
                    C.sl_http_take(h)
                    local ok, ret = pcall(o.stream, chunk)
                    if not ok or ret == false then
                        errs[i], details[i] = "stream_aborted", ok and "stream callback returned false" or tostring(ret)
                        finished = true
                    end
                elseif h.done ~= 0 then
                    if h.error ~= 0 then
                        errs[i], details[i] = uperr_name(h.error), ffi_string(h.errmsg)
                    else
                        results[i] = { status = h.status, headers = resp_headers(h), reused = h.reused ~= 0,
                                       body = not o.stream and ffi_string(h.body, h.body_len) or nil }
                    end
                    finished = true
                end
                if finished then
                    close(h)
                    hs[i] = nil
                    left = left - 1
                end
            end
        end
        if left > 0 then
            local ok, r_or_err, id = pcall(timer.waiter)
            if not ok then
                for i = 1, #opts do
                    if hs[i] then close(hs[i]) end
                end
                error(r_or_err, 3)
            end
            for i = 1, #opts do
                local h = hs[i]
                if h then
                    h.waiting = 1
                    h.wake_id = id
                end
            end
            yield()
        end
    end
end

local function current_req()
    local ctx = base.current_ctx()
    return ctx and ctx.req or nil
end

--- Sends one request and waits for the response (the coroutine yields meanwhile).
-- opts: url (required), method (GET, or POST with a body), headers {name = value | {values}},
--   body (string, or table sent as JSON), timeout (total deadline, seconds, default 60),
--   timeouts {connect (5), send, read (default: timeout)}, stream = function(chunk) (return false to stop),
--   max_body (bytes buffered when not streaming, default 16 MiB), ssl_verify (true), ca_file, cert_file +
--   key_file (a client certificate),
--   proxy (false: ignore HTTP(S)_PROXY), keepalive {size (16), idle_timeout (30)}.
-- Returns res {status, headers, body, reused} or nil, err, detail.
local function request(opts)
    local h, err, detail = start(current_req(), opts)
    if not h then
        return nil, err, detail
    end
    local results, errs, details = {}, {}, {}
    wait_all({ h }, { opts }, results, errs, details)
    if errs[1] then
        return nil, errs[1], details[1]
    end
    return results[1]
end

-- A request's observer (ctx.http_observer = {start = fn(ctx, opts) -> opts, token; finish = fn(ctx, token,
-- res, err)}), set by a tracing plugin: sees each call of the request's plugins (a span per call) and may
-- return a copy of opts with headers added (traceparent).
function _M.request(opts)
    local ctx = base.current_ctx()
    local ob = ctx and ctx.http_observer
    if not ob or type(opts) ~= "table" then
        return request(opts)
    end
    local o2, token = ob.start(ctx, opts)
    local res, err, detail = request(o2 or opts)
    ob.finish(ctx, token, res, err, detail)
    return res, err, detail
end

--- Sends several requests at once and waits for all of them.
-- Returns results, errs, details: results[i] is the response of reqs[i] or false; errs[i] its error or nil.
function _M.multi(reqs)
    if type(reqs) ~= "table" then
        error("multi takes a list of request options", 2)
    end
    local req = current_req()
    local hs, results, errs, details = {}, {}, {}, {}
    for i = 1, #reqs do
        local h, err, detail = start(req, reqs[i])
        hs[i] = h or false
        if not h then
            errs[i], details[i] = err, detail
        end
    end
    for i = 1, #reqs do
        if hs[i] == false then hs[i] = nil end
    end
    wait_all(hs, reqs, results, errs, details)
    for i = 1, #reqs do
        if results[i] == nil then results[i] = false end
    end
    return results, errs, details
end

return _M

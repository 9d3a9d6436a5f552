-- sluice.ai.upstream: explicit upstream calls for the AI layer, through the C proxy (core/upstream/proxy.c) in
-- FILTER mode. The caller builds the whole request, reads the body chunk by chunk and answers the client itself
-- with sluice.response.send / stream_start / stream_write / stream_finish, so the route's header_filter and
-- body_filter plugins run on what it sends.
--
--   local p, status, err = upstream.open(ctx, {scheme = "https", host = "api.openai.com", path = "/v1/...",
--                                              headers = {...}, body = json}, {timeout = {read = 60}})
--   local body = upstream.read_all(ctx, p, limit)           -- or upstream.read(ctx, p) chunk by chunk
--
-- Upstream error codes (p.error) are the C enum SL_UPERR_* (cdef in sluice.pdk.base); their names come from C.
local ffi = require("ffi")
local base = require("sluice.pdk.base")
local timer = require("sluice.pdk.timer")
local proxy = require("sluice.proxy")
local buffer = require("string.buffer")

local C = base.C
local ffi_string, lower, pairs, type, concat = ffi.string, string.lower, pairs, type, table.concat
local yield = coroutine.yield
local uperr_text = base.uperr_text

local HOP, resp_headers = proxy.HOP, proxy.resp_headers
local FILTER = C.SL_PROXY_FILTER
local UPERR_TIMEOUT, UPERR_CLIENT_GONE = C.SL_UPERR_TIMEOUT, C.SL_UPERR_CLIENT_GONE
local PROXY_TLS, PROXY_NO_VERIFY, PROXY_ENV = C.SL_PROXY_TLS, C.SL_PROXY_NO_VERIFY, C.SL_PROXY_ENV_PROXY
-- sl_proxy_start's options, filled for each call (C copies what it keeps before returning)
local popts = ffi.new("sl_proxy_opts_t")

local _M = {}

-- Hop-by-hop verdicts by header name as given (HOP has lower-case names): the names are the few the drivers and
-- plugins use, so lower() (a new string) is paid once per name. Bounded: emptied when it fills up.
local hop_of, hop_n = {}, 0
local function is_hop(name)
    local h = hop_of[name]
    if h == nil then
        h = HOP[lower(name)] == true
        if hop_n >= 256 then
            hop_of, hop_n = {}, 0
        end
        hop_of[name], hop_n = h, hop_n + 1
    end
    return h
end

-- The head is built in one reused buffer and handed to C by pointer (sl_proxy_start copies it before returning):
-- no table of pieces, no string made per request.
local head_buf = buffer.new(512)

-- The header lines of a headers table into b; returns their number. A function of its own: a loop in put_head
-- would keep the traces through it (the AI route's run) from compiling.
local function put_fields(b, headers)
    local n = 0
    for name, v in pairs(headers) do
        if v and not is_hop(name) then
            b:put(name, ": ", v, "\r\n")
            n = n + 1
        end
    end
    return n
end

-- The header lines of a request whose headers table is never changed (req.fixed_headers: the AI lean path's
-- shared requests), made once per table: {lines, count}.
local fixed_lines = setmetatable({}, { __mode = "k" })
local fields_buf = buffer.new(256)

local function lines_of(headers)
    local f = fixed_lines[headers]
    if not f then
        fields_buf:reset()
        local n = put_fields(fields_buf, headers)
        f = { fields_buf:tostring(), n }
        fixed_lines[headers] = f
    end
    return f
end

-- Writes the whole head of an explicit request into head_buf; returns its number of header lines (checked in C:
-- core/http/field.c).
local function put_head(req, body_len)
    local port, default = req.port, req.scheme == "https" and 443 or 80
    local b = head_buf
    b:reset()
    b:put(req.method or "POST", " ", req.path or "/", " HTTP/1.1\r\nHost: ", req.host)
    if port ~= nil and port ~= default then
        b:put(":", port)
    end
    b:put("\r\n")
    local n = 0
    local headers = req.headers
    if headers then
        if req.fixed_headers then
            local f = lines_of(headers)
            b:put(f[1])
            n = f[2]
        else
            n = put_fields(b, headers)
        end
    end
    b:put("Content-Length: ", body_len, "\r\n\r\n")
    return 2 + n
end

--- The whole head of an explicit request (string) and its number of header lines.
local function explicit_head(req, body_len)
    local nfields = put_head(req, body_len)
    return head_buf:tostring(), nfields
end
_M.explicit_head = explicit_head

local EMPTY = {}

-- What popts' fields other than the head and body were last filled from: an AI route calls one provider with
-- the same options table again and again (sluice.ai.proxy caches them per config; they are never changed once
-- made), and a cdata field stored from interpreted code is a call into the VM each. The references keep the
-- strings popts points at (host, tls.ca_file, tls.sni) alive.
local last = { opts = nil, host = nil, port = nil, flags = nil, addr = nil }

-- open()'s end, once the response head came (or the call failed). A function of its own: the code after a
-- yield runs in a trace that starts there, and this call lets it end by linking to this function's trace; run
-- on, it reached the upstream stage's pcall and was thrown away (NYI: return to lower frame).
local function head_arrived(ctx, p)
    if p.headers_done == 0 then
        local err = p.error
        if err == UPERR_CLIENT_GONE or ctx.req.client_gone ~= 0 then
            return nil, nil, "client gone"
        end
        ctx.upstream_error = "upstream " .. uperr_text(err)
        return nil, err == UPERR_TIMEOUT and 504 or 502, ctx.upstream_error
    end
    ctx.upstream_status = p.status
    return p
end

--- Sends req = {scheme, host, port, method, path, headers = {name = value}, body = string} upstream and waits for
--- the response head. opts: timeout = {connect, send, read, header} (seconds; header: the whole response head within
--- this once the request is sent, default read), keepalive = {size, idle_timeout},
--- tls = {verify = false?, ca_file?} for https, proxy = false to ignore HTTP(S)_PROXY (honoured otherwise, with
--- NO_PROXY: provider calls are the gateway's egress).
--- body, when given, is sent instead of req.body (a shared req: sluice.ai.drivers.openai lean_request).
--- req.fixed_headers: req.headers is never changed (its lines are made once).
--- Returns p (status, headers via _M.headers(p)) | nil, status for the client (502/504, or nil when the client
--- went away), error text. The body is then read with _M.read(ctx, p). Phases: the proxy stage only.
function _M.open(ctx, req, opts, body)
    opts = opts or EMPTY
    local flags, tls = 0, opts.tls
    if req.scheme == "https" then
        flags = (tls and tls.verify == false) and (PROXY_TLS + PROXY_NO_VERIFY) or PROXY_TLS
    end
    if opts.proxy ~= false then
        flags = flags + PROXY_ENV
    end
    body = body or req.body or ""
    local nfields = put_head(req, #body)
    local host = req.host
    local port = req.port or (flags ~= 0 and 443 or 80)
    local o = popts
    if opts ~= last.opts or host ~= last.host or port ~= last.port or flags ~= last.flags then
        local t, ka = opts.timeout or EMPTY, opts.keepalive or EMPTY
        o.host, o.hostlen, o.port, o.flags, o.ca_file, o.sni = host, #host, port, flags, tls and tls.ca_file,
            tls and tls.sni
        o.skip, o.skiplen = nil, 0
        o.mode, o.connect_timeout, o.send_timeout, o.read_timeout = FILTER, t.connect or 5, t.send or 30, t.read or 60
        o.header_timeout, o.pool_size, o.idle_timeout = t.header or t.read or 60, ka.size or 64, ka.idle_timeout or 60
        last.opts, last.host, last.port, last.flags, last.addr = opts, host, port, flags, host .. ":" .. port
    end
    ctx.upstream_addr = last.addr
    local head, headlen = head_buf:ref()
    o.head, o.headlen, o.nfields, o.body, o.bodylen = head, headlen, nfields, body, #body
    local p = C.sl_proxy_start(ctx.req, o)
    if p == nil then -- out of memory, or a head that must not reach the wire (logged with the request's id)
        return nil, 500, "cannot start the upstream request (id " .. ctx.request_id .. ")"
    end
    ctx.upstream = p
    ctx._up_taken = false
    yield()
    return head_arrived(ctx, p)
end

--- Response headers of an opened upstream call (lower-case names).
function _M.headers(p)
    if type(p) == "table" then
        return p.headers
    end
    return resp_headers(p)
end

--- A response made in Lua instead of an upstream call (the mock provider): waits latency_ms, then reads like
--- one opened with open() — the body, or each of chunks with chunk_delay_ms between them.
--- lr = {status, headers (lower-case names), body | chunks, latency_ms, chunk_delay_ms}.
function _M.local_open(ctx, lr)
    if (lr.latency_ms or 0) > 0 then
        timer.sleep(lr.latency_ms / 1000)
    end
    if ctx.req.client_gone ~= 0 then
        return nil, nil, "client gone"
    end
    ctx.upstream_status = lr.status or 200
    return { status = lr.status or 200, error = 0, headers = lr.headers or {}, i = 0,
             chunks = lr.chunks or { lr.body or "" }, delay = (lr.chunk_delay_ms or 0) / 1000 }
end

--- The next body chunk of an opened call, or nil at the end: then p.error is 0 for a complete body, else the
--- failure (ctx.req.client_gone ~= 0 when the client went away; the C side has cancelled the upstream call).
function _M.read(ctx, p)
    if type(p) == "table" then -- made in Lua (local_open)
        local i = p.i + 1
        p.i = i
        if i > 1 and p.delay > 0 and p.chunks[i] then
            timer.sleep(p.delay)
        end
        return p.chunks[i]
    end
    if rawget(ctx, "_up_taken") then -- unset before the first read: no call of the context's __index
        ctx._up_taken = false
        if p.done ~= 0 then
            return nil
        end
        C.sl_proxy_read(p)
        yield()
    end
    while p.chunk_len == 0 do
        if p.done ~= 0 or ctx.req.client_gone ~= 0 then
            return nil
        end
        C.sl_proxy_read(p)
        yield()
    end
    ctx._up_taken = true
    return ffi_string(p.chunk, p.chunk_len)
end

-- The chunks after the first two, appended to parts; n, or nil and an error past limit. A loop of its own: the
-- usual answer is one chunk, and a loop in read_all kept the traces through it from compiling.
local function read_rest(ctx, p, limit, parts, n, size)
    while true do
        local c = _M.read(ctx, p)
        if not c then
            return n
        end
        n, size = n + 1, size + #c
        parts[n] = c
        if limit and size > limit then
            return nil, "response larger than " .. limit .. " bytes"
        end
    end
end

--- The whole remaining body (string), or nil, error text when the call failed or is larger than limit bytes.
function _M.read_all(ctx, p, limit)
    local first = _M.read(ctx, p)
    local body = first or ""
    if limit and #body > limit then
        return nil, "response larger than " .. limit .. " bytes"
    end
    local c = first and _M.read(ctx, p)
    if c then
        if limit and #body + #c > limit then
            return nil, "response larger than " .. limit .. " bytes"
        end
        local parts = { body, c }
        local n, err = read_rest(ctx, p, limit, parts, 2, #body + #c)
        if not n then
            return nil, err
        end
        body = concat(parts, "", 1, n)
    end
    if p.error ~= 0 then
        return nil, uperr_text(p.error)
    end
    return body
end

--- What an upstream error code (p.error) means ("connect failed", "timed out", ...), from C's one table.
_M.error_text = uperr_text

return _M

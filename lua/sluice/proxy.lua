-- Sending a request to a route's upstream and the response back, through the C proxy
-- (core/upstream/proxy.c). Without header_filter/body_filter plugins the response streams through C
-- untouched (PASS); otherwise Lua sees the head and each chunk (FILTER).
local ffi = require("ffi")
local base = require("sluice.pdk.base")
local response = require("sluice.pdk.response")
local request = require("sluice.pdk.request")
local log = require("sluice.pdk.log")
local timer = require("sluice.pdk.timer")
local wrr = require("sluice.wrr")
local cjson = require("cjson.safe")

local C = base.C
local ffi_string, lower, pairs, type, pcall, concat = ffi.string, string.lower, pairs, type, pcall, table.concat
local yield, sub, find, tostring, gmatch = coroutine.yield, string.sub, string.find, tostring, string.gmatch
local header_lines = response.header_lines

local PASS, FILTER = 0, 1
local UPERR_TIMEOUT, UPERR_CLIENT_GONE = 3, 6
local ERRNAMES = { "connect failed", "DNS resolution failed", "timed out", "connection reset",
                   "invalid response", "client gone", "out of memory", "TLS handshake failed", "invalid request" }
local PROXY_TLS, PROXY_NO_VERIFY, PROXY_FORWARD, PROXY_LENGTH, PROXY_STREAM, PROXY_ENV = 1, 2, 4, 8, 16, 32 -- sl_proxy_start flags
-- sl_proxy_start's options, filled for each call (C copies what it keeps before returning)
local popts = ffi.new("sl_proxy_opts_t")

local _M = {}

-- Headers that describe one hop, not the message: never forwarded.
local HOP = { connection = true, ["keep-alive"] = true, ["proxy-connection"] = true, te = true, trailer = true,
              ["transfer-encoding"] = true, upgrade = true, ["content-length"] = true, host = true,
              expect = true }

local function weighted(n)
    return n.weight > 0
end

-- The node for this request (smooth weighted round-robin; state on the upstream table of this worker's config).
local function pick_node(up)
    local nodes = up.nodes
    if #nodes == 1 then
        return nodes[1]
    end
    return wrr.pick(nodes, weighted)
end
_M.pick_node = pick_node

local function upstream_path(ctx)
    local path = ctx.upstream_path or ctx.path
    local route = ctx.route
    if route and route.strip_prefix and not ctx.upstream_path then
        for _, p in ipairs(route.paths) do
            if sub(p, -2) == "/*" then
                local pre = sub(p, 1, -3)
                if sub(path, 1, #pre) == pre then
                    path = sub(path, #pre + 1)
                    if path == "" or sub(path, 1, 1) ~= "/" then
                        path = "/" .. path
                    end
                    break
                end
            end
        end
    end
    local r = ctx.req
    if ctx.upstream_query then
        return path .. "?" .. ctx.upstream_query
    elseif r.query_len > 0 then
        return path .. "?" .. ffi_string(r.query, r.query_len)
    end
    return path
end

-- The request line, Host and the headers plugins set, and the number of header lines in it (C checks the head:
-- core/http/field.c); the client's own headers are appended in C (core/upstream/forward.c), which leaves out
-- hop-by-hop ones and those named in the returned skip list.
local function build_head(ctx, up, node)
    local set = ctx.set_headers
    local host
    if up.pass_host == "node" then
        host = node.port == (up.scheme == "https" and 443 or 80) and node.host or (node.host .. ":" .. node.port)
    elseif up.pass_host == "rewrite" then
        host = up.host
    else
        host = request.get_header("host", ctx) or node.host
    end
    local head = (ctx.upstream_method or ctx.method) .. " " .. upstream_path(ctx) .. " HTTP/1.1\r\nHost: " .. host
        .. "\r\n"
    if not set then
        return head, nil, 1
    end
    local out, n, skip, k = { head }, 1, {}, 0
    for name, v in pairs(set) do
        k = k + 1
        skip[k] = name
        if v and not HOP[name] then
            out[n + 1], out[n + 2], out[n + 3], out[n + 4] = name, ": ", v, "\r\n"
            n = n + 4
        end
    end
    return concat(out, "", 1, n), concat(skip, "\n", 1, k), 1 + (n - 1) / 4
end

local function resp_headers(up)
    local h = base.headers_table(up.headers, up.nheaders)
    local conn = h.connection
    if conn then -- hop-by-hop: the Connection header and what it names
        for tok in gmatch(lower(type(conn) == "table" and concat(conn, ",") or conn), "[^%s,]+") do
            h[tok] = nil
        end
        h.connection = nil
    end
    return h
end

local function fail_response(ctx, up)
    local err = up.error
    if err == UPERR_CLIENT_GONE or ctx.req.resp_started ~= 0 then
        return
    end
    local status = err == UPERR_TIMEOUT and 504 or 502
    local worker = require("sluice.worker")
    ctx.upstream_error = ERRNAMES[err] or ("error " .. tostring(err))
    worker.send(ctx, status, worker.error_body(status, "upstream " .. ctx.upstream_error))
end

-- Writes to the client, then waits while more than 1 MiB is queued for it: a slow client must not make the
-- gateway buffer an unbounded stream (the upstream is not read meanwhile). False when the client is gone.
local function write_client(r, data)
    if C.sl_resp_write(r, data, #data) ~= 0 then
        return false
    end
    if C.sl_resp_wait_drain(r) == 1 then
        yield()
    end
    return r.client_gone == 0
end

-- Errors in the filters. Before the response head is sent, a failing header_filter or body_filter turns the
-- response into a 500 with an error id (the later filters are skipped and no filter runs on the 500; headers
-- plugins set for the client are dropped). Once the head is out, a failing body_filter cuts the stream: the
-- connection closes without the final chunk, so the client never takes a partial body as complete.
local function filter_failed(ctx, item, phase, err)
    log.err("plugin ", item.name, " ", phase, " failed: ", err)
end

-- The 500 for a filter error before the head (the coroutine's end finishes the request; the upstream connection
-- is closed with the unread response).
local function filter_error_response(ctx)
    local worker = require("sluice.worker")
    ctx.resp_headers = nil
    ctx.response = { status = 500, headers = {} }
    worker.send(ctx, 500, worker.error_body(500, "internal error (id " .. ctx.request_id .. ")"))
end

-- The chunk after every body_filter; nil when one failed (logged).
local function filter_chunk(ctx, items, chunk, eof)
    for i = 1, #items do
        local item = items[i]
        local ok, res = pcall(item.plugin.body_filter, item.conf, ctx, chunk, eof)
        if not ok then
            filter_failed(ctx, item, "body_filter", res)
            return nil
        elseif res ~= nil then
            chunk = res
        end
    end
    return chunk
end

-- Runs the header_filter plugins on ctx.response; false when one failed (logged).
local function header_filters(ctx, pipe)
    local items = pipe and pipe.header_filter
    if items then
        for _, item in ipairs(items) do
            local ok, err = pcall(item.plugin.header_filter, item.conf, ctx)
            if not ok then
                filter_failed(ctx, item, "header_filter", err)
                return false
            end
        end
    end
    return true
end

--- Proxies ctx's request to upstream conf `up` with the route pipeline `pipe`; returns when the response is done.
--- A plugin that makes its own upstream call (the AI layer) sets ctx.upstream_override = {run = fn}: fn(ctx, up,
--- pipe) then does the whole exchange with open/read/respond/stream_* below.
function _M.run(ctx, up, pipe)
    if up.run then
        return up.run(ctx, up, pipe)
    end
    local r = ctx.req
    local node = pick_node(up)
    if not node then
        local worker = require("sluice.worker")
        return worker.send(ctx, 503, worker.error_body(503, "upstream has no node with weight > 0"))
    end
    local body, body_ptr, body_len
    if ctx.json_changed then
        body = cjson.encode(ctx.json) or ""
    elseif ctx.body_changed then
        body = ctx.body
    end
    if body then
        body_ptr, body_len = body, #body
    else
        body_ptr, body_len = r.body, r.body_len
    end
    local head, skip, nfields = build_head(ctx, up, node)
    local filter = pipe and (pipe.header_filter or pipe.body_filter) or ctx.want_response
    local t, ka = up.timeout or {}, up.keepalive or {}
    ctx.upstream_addr = node.host .. ":" .. node.port
    local flags, tls = 0, up.tls
    if up.scheme == "https" then
        flags = (tls and tls.verify == false) and (PROXY_TLS + PROXY_NO_VERIFY) or PROXY_TLS
    end
    -- the name the certificate must carry: tls.sni, else the rewritten Host, else the node's host
    local sni = tls and tls.sni or (up.pass_host == "rewrite" and up.host) or nil
    flags = flags + PROXY_FORWARD
    if body_len > 0 or ctx.method == "POST" or ctx.method == "PUT" or ctx.method == "PATCH" then
        flags = flags + PROXY_LENGTH
    end
    if not body and r.body_pending ~= 0 then
        flags = flags + PROXY_STREAM -- nobody read the body: it goes upstream as it arrives
    end
    local o = popts
    o.host, o.hostlen, o.port, o.flags, o.ca_file, o.sni = node.host, #node.host, node.port, flags, tls and tls.ca_file, sni
    o.head, o.headlen, o.nfields, o.skip, o.skiplen, o.body, o.bodylen = head, #head, nfields, skip, skip and #skip or 0,
        body_ptr, body_len
    o.mode, o.connect_timeout, o.send_timeout, o.read_timeout = filter and FILTER or PASS, t.connect or 5, t.send or 30,
        t.read or 60
    o.header_timeout, o.pool_size, o.idle_timeout = t.header or t.read or 60, ka.size or 64, ka.idle_timeout or 60
    local p = C.sl_proxy_start(r, o)
    if p == nil then -- out of memory, or a head that must not reach the wire: the error log has the why and the id
        local worker = require("sluice.worker")
        return worker.send(ctx, 500, worker.error_body(500, "cannot start the upstream request (id "
            .. ctx.request_id .. ")"))
    end
    ctx.upstream = p
    yield()
    if not filter then
        if p.error ~= 0 then
            fail_response(ctx, p)
        end
        ctx.upstream_status = p.status
        return
    end
    if p.headers_done == 0 then
        return fail_response(ctx, p)
    end
    ctx.upstream_status = p.status
    ctx.response = { status = p.status, headers = resp_headers(p) }
    if not header_filters(ctx, pipe) then
        return filter_error_response(ctx)
    end
    local resp = ctx.response
    local bf = pipe.body_filter
    local lines, nlines = header_lines(resp.headers, ctx.resp_headers)
    if C.sl_resp_start(r, resp.status, lines, #lines, nlines, bf and -1 or p.content_length) ~= 0 then
        return -- the client is gone, or a header was refused and a 500 went instead
    end
    if not bf then
        if C.sl_proxy_pass(p) == 0 then -- else the client is gone: nothing would wake us
            yield()
        end
        return
    end
    while true do
        if p.chunk_len == 0 and p.done == 0 then
            C.sl_proxy_read(p)
            yield()
        end
        if r.client_gone ~= 0 then
            return
        end
        if p.chunk_len > 0 then
            local chunk = filter_chunk(ctx, bf, ffi_string(p.chunk, p.chunk_len), false)
            if chunk == nil then
                C.sl_resp_abort(r) -- the head is out: cut the stream
                return
            end
            if #chunk > 0 and not write_client(r, chunk) then
                return
            end
            if p.done == 0 then
                C.sl_proxy_read(p)
                yield()
            else
                C.sl_proxy_read(p) -- marks the chunk taken
            end
        end
        if p.done ~= 0 and p.chunk_len == 0 then
            break
        end
    end
    if p.error ~= 0 then
        -- the upstream cut its body short: so must we, or the client takes a partial body as complete
        ctx.upstream_error = ERRNAMES[p.error] or ("error " .. tostring(p.error))
        C.sl_resp_abort(r)
        return
    end
    local tail = filter_chunk(ctx, bf, "", true)
    if tail == nil then
        C.sl_resp_abort(r)
        return
    end
    if #tail > 0 then
        C.sl_resp_write(r, tail, #tail)
    end
    C.sl_resp_finish(r)
end

---------------------------------------------------------------------------------------------------------------
-- Explicit upstream requests (the AI layer): the caller builds the request, reads the body chunk by chunk and
-- writes the client response itself; header_filter/body_filter plugins of the route still run on what it sends.

-- The whole head of an explicit request and its number of header lines (checked in C: core/http/field.c).
local function explicit_head(req, body_len)
    local port, default = req.port, req.scheme == "https" and 443 or 80
    local host = (port == nil or port == default) and req.host or (req.host .. ":" .. port)
    local out, n = { req.method or "POST", " ", req.path or "/", " HTTP/1.1\r\nHost: ", host, "\r\n" }, 6
    if req.headers then
        for name, v in pairs(req.headers) do
            if v and not HOP[lower(name)] then
                out[n + 1], out[n + 2], out[n + 3], out[n + 4] = name, ": ", v, "\r\n"
                n = n + 4
            end
        end
    end
    out[n + 1] = "Content-Length: " .. body_len .. "\r\n\r\n"
    return concat(out, "", 1, n + 1), 2 + (n - 6) / 4
end
_M.explicit_head = explicit_head

--- Sends req = {scheme, host, port, method, path, headers = {name = value}, body = string} upstream and waits for
--- the response head. opts: timeout = {connect, send, read, header} (seconds; header: the whole response head within
--- this once the request is sent, default read), keepalive = {size, idle_timeout},
--- tls = {verify = false?, ca_file?} for https, proxy = false to ignore HTTP(S)_PROXY (honoured otherwise, with
--- NO_PROXY: provider calls are the gateway's egress).
--- Returns p (status, headers via _M.headers(p)) | nil, status for the client (502/504, or nil when the client
--- went away), error text. The body is then read with _M.read(ctx, p). Phases: the proxy stage only.
function _M.open(ctx, req, opts)
    opts = opts or {}
    local flags, tls = 0, opts.tls
    if req.scheme == "https" then
        flags = (tls and tls.verify == false) and (PROXY_TLS + PROXY_NO_VERIFY) or PROXY_TLS
    end
    if opts.proxy ~= false then
        flags = flags + PROXY_ENV
    end
    local body = req.body or ""
    local head, nfields = explicit_head(req, #body)
    local t, ka = opts.timeout or {}, opts.keepalive or {}
    local port = req.port or (flags ~= 0 and 443 or 80)
    ctx.upstream_addr = req.host .. ":" .. port
    local o = popts
    o.host, o.hostlen, o.port, o.flags, o.ca_file, o.sni = req.host, #req.host, port, flags, tls and tls.ca_file,
        tls and tls.sni
    o.head, o.headlen, o.nfields, o.skip, o.skiplen, o.body, o.bodylen = head, #head, nfields, nil, 0, body, #body
    o.mode, o.connect_timeout, o.send_timeout, o.read_timeout = FILTER, t.connect or 5, t.send or 30, t.read or 60
    o.header_timeout, o.pool_size, o.idle_timeout = t.header or t.read or 60, ka.size or 64, ka.idle_timeout or 60
    local p = C.sl_proxy_start(ctx.req, o)
    if p == nil then -- out of memory, or a head that must not reach the wire (logged with the request's id)
        return nil, 500, "cannot start the upstream request (id " .. ctx.request_id .. ")"
    end
    ctx.upstream = p
    ctx._up_taken = false
    yield()
    if p.headers_done == 0 then
        local err = p.error
        if err == UPERR_CLIENT_GONE or ctx.req.client_gone ~= 0 then
            return nil, nil, "client gone"
        end
        ctx.upstream_error = "upstream " .. (ERRNAMES[err] or ("error " .. tostring(err)))
        return nil, err == UPERR_TIMEOUT and 504 or 502, ctx.upstream_error
    end
    ctx.upstream_status = p.status
    return p
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
    if ctx._up_taken then
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

--- The whole remaining body (string), or nil, error text when the call failed or is larger than limit bytes.
function _M.read_all(ctx, p, limit)
    local parts, n, size = {}, 0, 0
    while true do
        local c = _M.read(ctx, p)
        if not c then
            break
        end
        n, size = n + 1, size + #c
        parts[n] = c
        if limit and size > limit then
            return nil, "response larger than " .. limit .. " bytes"
        end
    end
    if p.error ~= 0 then
        return nil, ERRNAMES[p.error] or ("error " .. tostring(p.error))
    end
    return n == 1 and parts[1] or concat(parts, "", 1, n)
end

--- Name of an upstream error code (p.error).
function _M.error_name(code)
    return ERRNAMES[code] or ("error " .. tostring(code))
end

--- Sends a whole response (status, headers with lower-case names, body string) through the route's filters
--- (a filter that fails makes it a 500 with an error id).
function _M.respond(ctx, pipe, status, headers, body)
    local r = ctx.req
    if r.resp_started ~= 0 or r.client_gone ~= 0 then
        return
    end
    ctx.response = { status = status, headers = headers }
    if not header_filters(ctx, pipe) then
        return filter_error_response(ctx)
    end
    local resp = ctx.response
    local bf = pipe and pipe.body_filter
    if bf then
        local a = filter_chunk(ctx, bf, body, false)
        local b = a and filter_chunk(ctx, bf, "", true)
        if not b then
            return filter_error_response(ctx)
        end
        body = a .. b
    end
    local lines, n = header_lines(resp.headers, ctx.resp_headers)
    C.sl_resp_send(r, resp.status, lines, #lines, n, body, #body)
end

--- Starts a streamed response (length unknown: chunked) through the route's header filters. False when the
--- client is gone or a header_filter failed (the client then got a 500): the caller stops.
function _M.stream_start(ctx, pipe, status, headers)
    local r = ctx.req
    if r.resp_started ~= 0 or r.client_gone ~= 0 then
        return false
    end
    ctx.response = { status = status, headers = headers }
    if not header_filters(ctx, pipe) then
        filter_error_response(ctx)
        return false
    end
    local resp = ctx.response
    local lines, n = header_lines(resp.headers, ctx.resp_headers)
    return C.sl_resp_start(r, resp.status, lines, #lines, n, -1) == 0
end

--- Writes a piece of a streamed response (through body_filter plugins); false when the client is gone or a
--- body_filter failed (the stream is then cut).
function _M.stream_write(ctx, pipe, data)
    local r = ctx.req
    if r.client_gone ~= 0 then
        return false
    end
    local bf = pipe and pipe.body_filter
    if bf then
        data = filter_chunk(ctx, bf, data, false)
        if data == nil then
            C.sl_resp_abort(r)
            return false
        end
    end
    if #data > 0 then
        return write_client(r, data)
    end
    return true
end

--- Ends a streamed response (body_filter plugins get eof and may add a last piece; one that fails cuts it).
function _M.stream_finish(ctx, pipe)
    local r = ctx.req
    if r.client_gone ~= 0 or r.resp_done ~= 0 then
        return
    end
    local bf = pipe and pipe.body_filter
    if bf then
        local tail = filter_chunk(ctx, bf, "", true)
        if tail == nil then
            C.sl_resp_abort(r)
            return
        end
        if #tail > 0 then
            C.sl_resp_write(r, tail, #tail)
        end
    end
    C.sl_resp_finish(r)
end

return _M

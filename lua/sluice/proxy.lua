-- The proxy stage of a route: the request to the route's upstream and the response back, through the C proxy
-- (core/upstream/proxy.c). Without header_filter/body_filter plugins the response streams through C
-- untouched (PASS); otherwise Lua sees the head and each chunk (FILTER) and runs the filters with the
-- runners of sluice.response (the same semantics as every other response: docs/plugins.md, "Phases").
-- Explicit upstream calls made by the AI layer live in sluice.ai.upstream.
local ffi = require("ffi")
local base = require("sluice.pdk.base")
local response = require("sluice.pdk.response")
local request = require("sluice.pdk.request")
local log = require("sluice.pdk.log")
local wrr = require("sluice.wrr")
local cjson = require("cjson.safe")

local C = base.C
local ffi_string, lower, pairs, type, concat = ffi.string, string.lower, pairs, type, table.concat
local yield, sub, gmatch = coroutine.yield, string.sub, string.gmatch
local header_lines, run_header_filter, run_body_filter = response.header_lines, response.run_header_filter,
    response.run_body_filter
local write_client, send_error, uperr_text = response.write_client, response.send_error, base.uperr_text

local PASS, FILTER = C.SL_PROXY_PASS, C.SL_PROXY_FILTER
local UPERR_TIMEOUT, UPERR_CLIENT_GONE = C.SL_UPERR_TIMEOUT, C.SL_UPERR_CLIENT_GONE
local PROXY_TLS, PROXY_NO_VERIFY, PROXY_FORWARD, PROXY_LENGTH, PROXY_STREAM = C.SL_PROXY_TLS, C.SL_PROXY_NO_VERIFY,
    C.SL_PROXY_FORWARD, C.SL_PROXY_LENGTH, C.SL_PROXY_STREAM
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
    if #nodes == 1 then -- a node of weight 0 is never chosen, alone or not
        local n = nodes[1]
        return n.weight > 0 and n or nil
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

--- Response headers of an upstream response (lower-case names), without the hop-by-hop ones.
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

_M.HOP, _M.resp_headers = HOP, resp_headers

local function fail_response(ctx, up)
    local err = up.error
    if err == UPERR_CLIENT_GONE or ctx.req.resp_started ~= 0 then
        return
    end
    ctx.upstream_error = uperr_text(err)
    send_error(ctx, err == UPERR_TIMEOUT and 504 or 502, "upstream " .. ctx.upstream_error)
end

--- Proxies ctx's request to upstream conf `up` through the route's filters (ctx.pipeline); returns when the
--- response is done.
function _M.run(ctx, up)
    local r = ctx.req
    local node = pick_node(up)
    if not node then
        return send_error(ctx, 503, "upstream has no node with weight > 0")
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
    local pipe = ctx.pipeline
    -- the head passes through Lua when plugins filter it or set response headers (sluice.response.set_header
    -- before the upstream call); the body then streams in C unless a body_filter wants it
    local filter = pipe.header_filter or pipe.body_filter or ctx.resp_headers
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
    o.host, o.hostlen, o.port, o.flags = node.host, #node.host, node.port, flags
    o.ca_file, o.sni = tls and tls.ca_file, sni
    o.head, o.headlen, o.nfields, o.skip, o.skiplen, o.body, o.bodylen =
        head, #head, nfields, skip, skip and #skip or 0,
        body_ptr, body_len
    o.mode, o.connect_timeout, o.send_timeout, o.read_timeout = filter and FILTER or PASS, t.connect or 5, t.send or 30,
        t.read or 60
    o.header_timeout, o.pool_size, o.idle_timeout = t.header or t.read or 60, ka.size or 64, ka.idle_timeout or 60
    local p = C.sl_proxy_start(r, o)
    if p == nil then -- out of memory, or a head that must not reach the wire: the error log has the why and the id
        return send_error(ctx, 500, "cannot start the upstream request (id " .. ctx.request_id .. ")")
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
    local hf = pipe.header_filter
    if hf then
        local item, err = run_header_filter(ctx, hf)
        if item then -- the head is not out: a 500 instead (the upstream call is dropped with the request)
            log.err("plugin ", item.name, " header_filter failed (id ", ctx.request_id, "): ", err)
            return response.send_filter_error(ctx)
        end
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
    local chunk, item, err
    while true do
        if p.chunk_len == 0 and p.done == 0 then
            C.sl_proxy_read(p)
            yield()
        end
        if r.client_gone ~= 0 then
            return
        end
        if p.chunk_len > 0 then
            chunk, item, err = run_body_filter(ctx, bf, ffi_string(p.chunk, p.chunk_len), false)
            if not chunk then
                return response.cut(ctx, item, err)
            end
            if #chunk > 0 and not write_client(r, chunk) then
                return
            end
            if ctx._ended then -- a filter ended the response (sluice.response.end_stream): the rest is not read
                break
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
    if p.error ~= 0 and not ctx._ended then
        -- the upstream cut its body short: so must we, or the client takes a partial body as complete
        ctx.upstream_error = uperr_text(p.error)
        C.sl_resp_abort(r)
        return
    end
    chunk, item, err = run_body_filter(ctx, bf, "", true)
    if not chunk then
        return response.cut(ctx, item, err)
    end
    if #chunk > 0 then
        C.sl_resp_write(r, chunk, #chunk)
    end
    C.sl_resp_finish(r)
end

return _M

-- sluice.response: what the client gets. Phases: rewrite, access (exit), header_filter (status/headers), and
-- the upstream stage of a plugin that took it over (send, stream_start/stream_write/stream_finish).
--
--   return sluice.response.exit(403, {error = {message = "forbidden"}})   -- table body -> JSON
--   sluice.response.set_header("x-served-by", "sluice")                    -- added to the client response
--
-- A phase function may also simply `return status, body` to end the request the same way.
--
-- Every response goes through the route's header_filter and body_filter plugins (ctx.pipeline): a body made in
-- memory as one chunk plus eof (send), a stream piece by piece (stream_*); the proxy stage of a route's upstream
-- (sluice.proxy) uses the same runners. A filter that fails:
--   - before the head is sent: the response becomes a 500 with the request id (filters do not run on it again),
--     or, when the response is already the gateway's answer to a failure, goes out as it was given;
--   - after the head is out: the stream is cut (the connection closes: never a truncated body that looks whole).
-- Either way the failure is logged with the plugin's name and the request id.
local base = require("sluice.pdk.base")
local log = require("sluice.pdk.log")
local cjson = require("cjson.safe")
local buffer = require("string.buffer")

local C = base.C
local get_ctx = base.get_ctx
local type, tostring, next, lower, error, pcall = type, tostring, next, string.lower, error, pcall
local tnew = require("table.new")
local yield = coroutine.yield

local _M = {}

--- Ends the request with status and body (string, or table sent as JSON); returns status, body so that
--- `return sluice.response.exit(...)` works in a phase function.
function _M.exit(status, body, headers, ctx)
    ctx = ctx or get_ctx()
    if type(status) ~= "number" or status < 100 or status > 599 then
        error("status must be a number between 100 and 599", 2)
    end
    ctx.exit = { status = status, body = body, headers = headers }
    return status, body
end

--- Response status: the one going out (from header_filter on), else the one set by exit.
function _M.get_status(ctx)
    ctx = ctx or get_ctx()
    return ctx.response and ctx.response.status or (ctx.exit and ctx.exit.status) or nil
end

--- Changes the status sent to the client (header_filter; also body_filter while the head is not out: a body made
--- in memory, see head_sent).
function _M.set_status(status, ctx)
    ctx = ctx or get_ctx()
    if not ctx.response then
        error("set_status is for header_filter", 2)
    end
    if ctx.req.resp_started ~= 0 then
        error("set_status: the response head is already sent", 2)
    end
    if type(status) ~= "number" or status < 100 or status > 599 or status % 1 ~= 0 then
        error("status must be an integer between 100 and 599", 2)
    end
    ctx.response.status = status
end

--- A response header (from the upstream, or set by a plugin).
function _M.get_header(name, ctx)
    ctx = ctx or get_ctx()
    local lname = lower(name)
    local add = ctx.resp_headers
    if add and add[lname] ~= nil then
        return add[lname] or nil
    end
    return ctx.response and ctx.response.headers[lname] or nil
end

-- Lower-case forms of the names plugins set (the same few on every request; bounded like base's name cache).
local lower_names, nlower = {}, 0
local function lower_name(name)
    local l = lower_names[name]
    if not l then
        l = lower(name)
        if nlower >= 1024 then
            lower_names, nlower = {}, 0
        end
        lower_names[name], nlower = l, nlower + 1
    end
    return l
end

--- Sets (nil removes) a header on the client response; works in every phase before the head is sent. Raises for
--- a name that is not a token or a value with CR, LF or NUL.
function _M.set_header(name, value, ctx)
    ctx = ctx or get_ctx()
    if value == nil then
        base.check_header(name, "", 2)
    else
        value = base.check_header(name, value, 2)
    end
    local rh = ctx.resp_headers
    if not rh then
        rh = tnew(0, 4) -- a plugin sets one or two as a rule: no rehash for them
        ctx.resp_headers = rh
    end
    rh[lower_name(name)] = value ~= nil and value or false
end

--- True once the response head went out. In body_filter it is false for a body made in memory (an exit, an answer
--- sent whole, an AI answer that is not streamed): the filter sees the whole body in one chunk and may still change
--- the status and headers (set_status, set_header); it is true for streamed and proxied bodies.
function _M.head_sent(ctx)
    ctx = ctx or get_ctx()
    return ctx.req.resp_started ~= 0
end

--- Ends a streamed response early (body_filter): the chunk this round of filters returns is the last one the client
--- gets, then the response ends as a complete one (body_filter plugins get their eof call as usual, and what they
--- return then still goes out). Whoever produces the stream stops: the upstream is closed without reading the
--- rest, and an AI call's usage record says cut = "filter". For a plugin that ends a stream with a well-formed last
--- event of its own (a moderation refusal); a body made in memory is whole already, so nothing changes for it.
function _M.end_stream(ctx)
    ctx = ctx or get_ctx()
    if not ctx._filtering then
        error("end_stream is for body_filter", 2)
    end
    ctx._ended = true
end

--- True once a body_filter ended the stream (end_stream); for producers of a stream, to stop.
function _M.stream_ended(ctx)
    ctx = ctx or get_ctx()
    return ctx._ended == true
end

--- Encodes a header table into "Name: value\r\n" lines, merging plugin-set headers (skips framing ones); returns
--- the lines and their number. Names and values go as they are: what header_filter plugins put in
--- ctx.response.headers is checked in C when the head is written (sl_resp_send / sl_resp_start, given the
--- number: a value with CR LF in it would make more lines), and a bad one gets the client a 500 with an error
--- id, never onto the wire.
local framing = { ["content-length"] = true, ["transfer-encoding"] = true, connection = true,
                  ["keep-alive"] = true, date = true, server = true }
-- The lines are written into one reused buffer: no string per line, no table of them. C copies what it is given
-- before returning (sl_resp_send, sl_resp_start), so send_raw hands it the buffer itself.
local lines_buf = buffer.new(256)

-- Calls fn(k, v, a) for every entry of t; returns the sum of what it returns. The first two entries are taken
-- without a loop (next twice): a loop here aborts the trace of every caller (inner loop in root trace), and a
-- response has one or two headers of each kind as a rule.
local function each(t, fn, a)
    local k, v = next(t)
    if k == nil then
        return 0
    end
    local n = fn(k, v, a)
    k, v = next(t, k)
    if k == nil then
        return n
    end
    n = n + fn(k, v, a)
    k, v = next(t, k)
    while k ~= nil do
        n = n + fn(k, v, a)
        k, v = next(t, k)
    end
    return n
end

-- a header of ctx.response.headers (header_filter plugins may have put anything there); extra: the plugin-set ones
local function put_header(k, v, extra)
    if framing[k] or (extra and extra[k] ~= nil) then
        return 0
    end
    local b = lines_buf
    if type(v) == "table" then
        for i = 1, #v do
            b:put(k, ": ", tostring(v[i]), "\r\n")
        end
        return #v
    end
    b:put(k, ": ", tostring(v), "\r\n")
    return 1
end

local function put_extra(k, v)
    if v and not framing[k] then
        lines_buf:put(k, ": ", v, "\r\n")
        return 1
    end
    return 0
end

local function put_lines(headers, extra)
    lines_buf:reset()
    local n = headers and each(headers, put_header, extra) or 0
    if extra then
        n = n + each(extra, put_extra)
    end
    return n
end

function _M.header_lines(headers, extra)
    local n = put_lines(headers, extra)
    return lines_buf:tostring(), n
end

--- Turns an exit body into bytes and a content type.
function _M.encode_body(body)
    if body == nil then
        return "", nil
    end
    if type(body) == "table" then
        return cjson.encode(body) or "{}", "application/json"
    end
    return tostring(body), nil
end

--- The body of the gateway's own error answers: {error = {message, type, code}}.
local function error_body(status, message, code)
    return { error = { message = message, type = status >= 500 and "server_error" or "invalid_request_error",
                       code = code or status } }
end
_M.error_body = error_body

---------------------------------------------------------------------------------------------------------------
-- The filter runners (also used by the proxy stage, sluice.proxy).

local function filter_failed(ctx, item, phase, err)
    log.err("plugin ", item.name, " ", phase, " failed (id ", ctx.request_id, "): ", err)
end

-- The runners take the first two plugins outside a loop (as the request phases do, sluice.worker): LuaJIT does not
-- compile a loop of one or two rounds nor a trace through it, and a route has one or two filters as a rule.

local function header_filter_item(ctx, item)
    ctx.plugin_name = item.name
    return pcall(item.plugin.header_filter, item.conf, ctx)
end

--- Runs the header_filter plugins `items` on ctx.response; nil, or the item that raised and its error (the
--- plugins after it do not run). Sending a response from a filter is refused (ctx._filtering).
local function run_header_filter(ctx, items)
    ctx._filtering = true
    local n, item, ok, err = #items, nil, true, nil
    if n >= 1 then
        item = items[1]
        ok, err = header_filter_item(ctx, item)
        if ok and n >= 2 then
            item = items[2]
            ok, err = header_filter_item(ctx, item)
            for i = 3, ok and n or 0 do
                item = items[i]
                ok, err = header_filter_item(ctx, item)
                if not ok then break end
            end
        end
    end
    ctx._filtering = false
    if not ok then
        return item, err
    end
    return nil
end
_M.run_header_filter = run_header_filter

-- One body_filter plugin on chunk: the chunk it leaves (a string it returns replaces it), or nil and its error.
local function body_filter_item(ctx, item, chunk, eof)
    ctx.plugin_name = item.name
    local ok, res = pcall(item.plugin.body_filter, item.conf, ctx, chunk, eof)
    if not ok then
        return nil, res
    end
    if type(res) == "string" then
        return res
    end
    return chunk
end

--- Runs one chunk through the body_filter plugins `items` (a plugin returning a string replaces the chunk);
--- the chunk, or nil, the item that raised and its error.
local function run_body_filter(ctx, items, chunk, eof)
    ctx._filtering = true
    local n, item, err = #items, nil, nil
    if n >= 1 then
        item = items[1]
        chunk, err = body_filter_item(ctx, item, chunk, eof)
        if chunk and n >= 2 then
            item = items[2]
            chunk, err = body_filter_item(ctx, item, chunk, eof)
            for i = 3, chunk and n or 0 do
                item = items[i]
                chunk, err = body_filter_item(ctx, item, chunk, eof)
                if not chunk then break end
            end
        end
    end
    ctx._filtering = false
    if not chunk then
        return nil, item, err
    end
    return chunk
end
_M.run_body_filter = run_body_filter

local function put_lower(k, v, out)
    out[lower_name(k)] = v
    return 0
end

local function lower_keys(headers)
    local out = tnew(0, 4)
    if headers then
        each(headers, put_lower, out)
    end
    return out
end

-- The head and body as they are, without filters.
local function send_raw(ctx, status, headers, bytes, extra)
    local n = put_lines(headers, extra)
    local lines, len = lines_buf:ref()
    C.sl_resp_send(ctx.req, status, lines, len, n, bytes, #bytes)
end

--- The 500 a failed filter turns a response into (before its head went out): no filter runs on it.
local function send_filter_error(ctx)
    local bytes = cjson.encode(error_body(500, "internal error (id " .. ctx.request_id .. ")"))
    local h = { ["content-type"] = "application/json" }
    ctx.response = { status = 500, headers = h }
    send_raw(ctx, 500, h, bytes, nil)
end
_M.send_filter_error = send_filter_error

--- Sends a whole response made in memory through the route's filters (ctx.pipeline): header_filter, then
--- body_filter over the body as one chunk and eof, then the head and body. failure: the response is the
--- gateway's answer to a failure (upstream unreachable, a plugin that raised): a filter that fails on it sends it
--- as it was given instead of a 500. Nothing happens once a head went out or the client is gone.
local function deliver(ctx, status, body, headers, failure)
    local r = ctx.req
    if r.resp_started ~= 0 or r.client_gone ~= 0 then
        return
    end
    local bytes, ctype = _M.encode_body(body)
    local h = lower_keys(headers)
    if ctype and not h["content-type"] then
        h["content-type"] = ctype
    end
    local pipe = ctx.pipeline
    local hf, bf = pipe and pipe.header_filter, pipe and pipe.body_filter
    ctx.response = { status = status, headers = h }
    if not (hf or bf) then
        return send_raw(ctx, status, h, bytes, rawget(ctx, "resp_headers"))
    end
    -- what goes out when a filter fails on a failure response: as given, with the headers set before the filters
    local h0, extra0, bytes0
    if failure then
        h0, extra0, bytes0 = lower_keys(h), ctx.resp_headers and lower_keys(ctx.resp_headers), bytes
    end
    local item, err, phase
    if hf then
        item, err = run_header_filter(ctx, hf)
        phase = "header_filter"
    end
    if not item and bf then
        local a, b
        a, item, err = run_body_filter(ctx, bf, bytes, false)
        if a then
            b, item, err = run_body_filter(ctx, bf, "", true)
            bytes = b and (b == "" and a or a .. b) -- no copy of the body for the usual empty tail
        end
        phase = "body_filter"
    end
    if item then
        filter_failed(ctx, item, phase, err)
        if failure then
            ctx.response = { status = status, headers = h0 }
            return send_raw(ctx, status, h0, bytes0, extra0)
        end
        return send_filter_error(ctx)
    end
    local resp = ctx.response
    send_raw(ctx, resp.status, resp.headers, bytes, ctx.resp_headers)
end
_M.deliver = deliver

--- Sends the gateway's own error answer ({error = {message, type, code}}) through the filters (see deliver).
function _M.send_error(ctx, status, message, code)
    return deliver(ctx, status, error_body(status, message, code), nil, true)
end

local function check_status(status, level)
    if type(status) ~= "number" or status < 100 or status > 599 or status % 1 ~= 0 then
        error("status must be an integer between 100 and 599", level + 1)
    end
end

--- Sends a whole response (body: string, or table sent as JSON; headers: {name = value}) through the route's
--- header_filter and body_filter plugins. For the upstream stage of a plugin that took it over
--- (sluice.upstream.take_over); does nothing once a head went out. Raises inside header_filter/body_filter.
function _M.send(status, body, headers, ctx)
    ctx = ctx or get_ctx()
    check_status(status, 2)
    if ctx._filtering then
        error("sluice.response.send: not from header_filter or body_filter", 2)
    end
    return deliver(ctx, status, body, headers, false)
end

--- Starts a streamed response (length unknown: chunked) through the route's header_filter plugins; false when
--- it cannot go out (a head was already sent, the client is gone, or a filter failed: a 500 went instead).
function _M.stream_start(status, headers, ctx)
    ctx = ctx or get_ctx()
    check_status(status, 2)
    if ctx._filtering then
        error("sluice.response.stream_start: not from header_filter or body_filter", 2)
    end
    local r = ctx.req
    if r.resp_started ~= 0 or r.client_gone ~= 0 then
        return false
    end
    local h = lower_keys(headers)
    ctx.response = { status = status, headers = h }
    local pipe = ctx.pipeline
    local hf = pipe and pipe.header_filter
    if hf then
        local item, err = run_header_filter(ctx, hf)
        if item then
            filter_failed(ctx, item, "header_filter", err)
            send_filter_error(ctx)
            return false
        end
    end
    local resp = ctx.response
    local n = put_lines(resp.headers, ctx.resp_headers)
    local lines, len = lines_buf:ref()
    return C.sl_resp_start(r, resp.status, lines, len, n, -1) == 0
end

-- A body_filter failed after the head went out: the response is cut, the connection closes.
local function cut(ctx, item, err)
    filter_failed(ctx, item, "body_filter", err)
    ctx._cut = true
    C.sl_resp_abort(ctx.req)
end
_M.cut = cut

--- Writes to the client, then waits while more than 1 MiB is queued for it: a slow client must not make the
--- gateway buffer an unbounded stream. False when the client is gone.
local function write_client(r, data)
    if C.sl_resp_write(r, data, #data) ~= 0 then
        return false
    end
    if C.sl_resp_wait_drain(r) == 1 then
        yield()
    end
    return r.client_gone == 0
end
_M.write_client = write_client

--- Writes a piece of a streamed response through the body_filter plugins; false when the client is gone or
--- the stream was cut (a filter failed).
function _M.stream_write(data, ctx)
    ctx = ctx or get_ctx()
    local r = ctx.req
    if r.client_gone ~= 0 or ctx._cut or ctx._finished then
        return false
    end
    local pipe = ctx.pipeline
    local bf = pipe and pipe.body_filter
    if bf then
        local item, err
        data, item, err = run_body_filter(ctx, bf, data, false)
        if not data then
            cut(ctx, item, err)
            return false
        end
    end
    if #data > 0 and not write_client(r, data) then
        return false
    end
    if ctx._ended then -- a filter ended the stream: finish it now; the producer stops on false
        _M.stream_finish(ctx)
        return false
    end
    return true
end

--- Ends a streamed response (body_filter plugins get eof and may add a last piece).
function _M.stream_finish(ctx)
    ctx = ctx or get_ctx()
    local r = ctx.req
    if r.client_gone ~= 0 or ctx._cut or ctx._finished then
        return
    end
    ctx._finished = true
    local pipe = ctx.pipeline
    local bf = pipe and pipe.body_filter
    if bf then
        local tail, item, err = run_body_filter(ctx, bf, "", true)
        if not tail then
            return cut(ctx, item, err)
        end
        if #tail > 0 then
            C.sl_resp_write(r, tail, #tail)
        end
    end
    C.sl_resp_finish(r)
end

return _M

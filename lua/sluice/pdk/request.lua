-- sluice.request: the client's request. Phases: rewrite, access (reads work in every phase).
--
--   local sluice = require("sluice")
--   sluice.request.get_method()            --> "POST"
--   sluice.request.get_path()              --> "/v1/chat/completions"
--   sluice.request.get_header("x-api-key") --> value or nil (case-insensitive; first value)
--   sluice.request.get_json()              --> decoded body table, or nil, err (cached per request)
--   sluice.request.peek_json()             --> the same, for reading only (the client's bytes may still go upstream)
--   sluice.request.set_header("x-user", "alice")   -- changes what the upstream receives
--
-- The C request (core/http/request.h) is read through FFI; strings are copied out once and cached in ctx.
local ffi = require("ffi")
local base = require("sluice.pdk.base")

local ffi_string, lower, type, pairs, tostring, rawget = ffi.string, string.lower, type, pairs, tostring, rawget
local gsub, char, tonumber, find, sub = string.gsub, string.char, tonumber, string.find, string.sub
local cjson = require("cjson.safe")
local get_ctx = base.get_ctx
local C, yield = base.C, coroutine.yield

local _M = {}

local function headers_of(ctx)
    local h = ctx._headers
    if not h then
        h = base.headers_table(ctx.req.headers, ctx.req.nheaders)
        ctx._headers = h
    end
    return h
end
_M.headers_of = headers_of

--- Method, upper case ("GET").
function _M.get_method(ctx)
    ctx = ctx or get_ctx()
    return ctx.method
end

--- Path without query string, normalised before routing (docs/request-normalisation.md), or as set by set_path.
function _M.get_path(ctx)
    ctx = ctx or get_ctx()
    return ctx.upstream_path or ctx.path
end

--- Raw query string without "?", or "".
function _M.get_raw_query(ctx)
    ctx = ctx or get_ctx()
    local r = ctx.req
    return ffi_string(r.query, r.query_len)
end

local function unescape(s)
    s = gsub(s, "+", " ")
    return (gsub(s, "%%(%x%x)", function(h) return char(tonumber(h, 16)) end))
end

--- Query arguments as a table (repeated names become arrays).
function _M.get_query(ctx)
    ctx = ctx or get_ctx()
    if ctx._query then
        return ctx._query
    end
    local q = {}
    for pair in string.gmatch(_M.get_raw_query(ctx), "[^&]+") do
        local eq = find(pair, "=", 1, true)
        local k = unescape(eq and sub(pair, 1, eq - 1) or pair)
        local v = eq and unescape(sub(pair, eq + 1)) or true
        base.add_multi(q, k, v)
    end
    ctx._query = q
    return q
end

--- One query argument.
function _M.get_query_arg(name, ctx)
    return _M.get_query(ctx)[name]
end

-- The first value of a client header straight from the C request, without building the header table: one call
-- (core/http/request.c: sl_req_header, names compared without case), no loop here to abort the caller's trace.
local function scan_header(r, lname)
    local h = C.sl_req_header(r, lname, #lname)
    if h == nil then
        return nil
    end
    return ffi_string(h.value, h.value_len)
end

--- Header value (first one when repeated) or nil; name is case-insensitive.
function _M.get_header(name, ctx)
    ctx = ctx or get_ctx()
    local lname = lower(name)
    local set = ctx.set_headers
    if set then
        local v = set[lname]
        if v ~= nil then
            return v or nil
        end
    end
    if not ctx._headers then
        return scan_header(ctx.req, lname)
    end
    local v = ctx._headers[lname]
    if type(v) == "table" then
        return v[1]
    end
    return v
end

--- All headers: lower-case name -> value (or array of values).
function _M.get_headers(ctx)
    ctx = ctx or get_ctx()
    local h = headers_of(ctx)
    local set = ctx.set_headers
    if not set then
        return h
    end
    local out = {}
    for k, v in pairs(h) do
        out[k] = v
    end
    for k, v in pairs(set) do
        out[k] = v or nil
    end
    return out
end

--- Sets (or with nil removes) a header sent upstream. Raises for a name that is not a token or a value with CR,
--- LF or NUL.
function _M.set_header(name, value, ctx)
    ctx = ctx or get_ctx()
    if value == nil then
        base.check_header(name, "", 2)
    else
        value = base.check_header(name, value, 2)
    end
    ctx.set_headers = ctx.set_headers or {}
    ctx.set_headers[lower(name)] = value ~= nil and value or false
end

--- Removes a header before the request goes upstream.
function _M.clear_header(name, ctx)
    _M.set_header(name, nil, ctx)
end

--- Changes the path sent upstream (with any query; no spaces or control characters).
function _M.set_path(path, ctx)
    ctx = ctx or get_ctx()
    if type(path) ~= "string" or sub(path, 1, 1) ~= "/" or find(path, "[%z\1-\32\127]") then
        error("path must be a string starting with / without spaces or control characters", 2)
    end
    ctx.upstream_path = path
end

--- Raw body (string, "" when empty). A body larger than node.limits.body_buffer_size is still arriving when
--- the request is handled: this waits for all of it (yields). nil, err when it cannot be had: the client went
--- away or sent a bad or too large body, or the body already streamed to the upstream.
function _M.get_body(ctx)
    ctx = ctx or get_ctx()
    local b = rawget(ctx, "body")
    if b ~= nil then
        return b
    end
    local r = ctx.req
    while r.body_pending ~= 0 do
        if C.sl_req_read_body(r) ~= 1 then
            return nil, "request body not available (client gone, body invalid or already sent upstream)"
        end
        yield()
    end
    ctx.body = r.body_len > 0 and ffi_string(r.body, r.body_len) or ""
    return ctx.body
end

-- The decoded body (cached in ctx.json); nil, err when it is not JSON.
local function decoded(ctx)
    local j = rawget(ctx, "json") -- unset on first use: no call of the context's __index
    if j ~= nil then
        return j
    end
    local body, err = _M.get_body(ctx)
    if body == nil then
        return nil, err
    elseif body == "" then
        return nil, "empty body"
    end
    local ai = rawget(ctx, "ai")
    if ai and rawget(ai, "lean_body") == body and rawget(ai, "request") == nil then
        -- the AI route read these bytes without decoding them (sluice.ai.proxy, lean path): its table is made
        -- now, once, and is this one too (ctx.json)
        return ai.request
    end
    local t, jerr = cjson.decode(body)
    if t == nil then
        return nil, "invalid JSON: " .. tostring(jerr)
    end
    ctx.json = t
    return t
end

--- Body decoded as JSON (cached); nil, err when it is not JSON. The caller may change the table in place (it is
--- then what goes upstream, re-encoded).
function _M.get_json(ctx)
    ctx = ctx or get_ctx()
    ctx._json_out = true -- the table may be changed in place by whoever gets it (sluice.ai.proxy checks)
    return decoded(ctx)
end

--- Body decoded as JSON (cached) for reading only: the caller never changes the table, so a request nobody
--- changed still goes upstream as the client's own bytes (sluice.ai.proxy); to change it, use set_json after.
function _M.peek_json(ctx)
    return decoded(ctx or get_ctx())
end

--- Replaces the body sent upstream (string).
function _M.set_body(body, ctx)
    ctx = ctx or get_ctx()
    if type(body) ~= "string" then
        error("body must be a string", 2)
    end
    ctx.body = body
    ctx.json = nil
    ctx.body_changed = true
end

--- Replaces the body with a table encoded as JSON when the request goes upstream.
function _M.set_json(t, ctx)
    ctx = ctx or get_ctx()
    if type(t) ~= "table" then
        error("json body must be a table", 2)
    end
    ctx.json = t
    ctx.json_changed = true
end

--- The body's bytes while they are what the request says: nobody was handed the decoded table to change it
--- (get_json) or set another (set_json); else nil (also nil, err when the body cannot be read). For reading the
--- JSON without decoding it, or editing a few values in the bytes themselves (set_body or set_body_json after),
--- in place of re-encoding the whole table.
function _M.json_bytes(ctx)
    ctx = ctx or get_ctx()
    if rawget(ctx, "_json_out") or rawget(ctx, "json_changed") then
        return nil
    end
    return _M.get_body(ctx)
end

--- Replaces the body with the JSON text raw, whose decoded value is t (the caller made sure: e.g. the same strings
--- changed in both): the bytes go upstream as they are, and readers after get t without decoding them again.
function _M.set_body_json(raw, t, ctx)
    ctx = ctx or get_ctx()
    if type(raw) ~= "string" or type(t) ~= "table" then
        error("set_body_json takes a string and a table", 2)
    end
    ctx.body = raw
    ctx.json = t
    ctx.json_changed = nil -- raw says what t says: no encoding needed
    ctx.body_changed = true
end

--- Client IP address.
function _M.get_client_ip(ctx)
    ctx = ctx or get_ctx()
    local r = ctx.req
    return ffi_string(r.client_ip, r.client_ip_len)
end

--- True once the client has gone away (closed or reset its connection): nobody will read an answer, so work
--- meant for it (retries, waits, a long upstream call) can stop.
function _M.client_gone(ctx)
    ctx = ctx or get_ctx()
    return ctx.req.client_gone ~= 0
end

--- Request id as 16 hex digits (also in the access log).
function _M.get_id(ctx)
    ctx = ctx or get_ctx()
    return ctx.request_id
end

return _M

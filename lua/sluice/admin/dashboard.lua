-- The live dashboard on the Admin API listener (docs/observability.md, "Dashboard"):
--
--   GET  /dashboard                 the page (static, no data in it: it shows a login form first)
--   GET  /dashboard/<asset>         app.js, app.css, vendor/uplot/* (files of <prefix>/dashboard, read once)
--   POST /dashboard/login           {"key": ADMIN_KEY} -> {"token", "expires_in"}: a session token the page keeps
--                                   in memory and sends as Authorization: Bearer (no cookie, never in a URL)
--   POST /dashboard/logout          ends the session
--   GET  /dashboard/data            the numbers, once a second (Authorization: Bearer TOKEN)
--
-- Sessions live in the shared dict `sluice` (hash of the token -> hash of the admin key, 8 hours): changing the
-- admin key a session was opened with (any of node.admin.keys) ends that session.
local metrics = require("sluice.pdk.metrics")
local shared = require("sluice.pdk.shared")
local request = require("sluice.pdk.request")
local crypto = require("sluice.crypto")
local cjson = require("cjson.safe")

local type, pairs, ipairs, pcall, next = type, pairs, ipairs, pcall, next
local sub, gsub = string.sub, string.gsub

local _M = {}

local SESSION_TTL = 8 * 3600
local JSON = { ["content-type"] = "application/json", ["cache-control"] = "no-store" }
local SECURITY = {
    ["content-security-policy"] = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        .. "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ["x-frame-options"] = "DENY", ["x-content-type-options"] = "nosniff", ["referrer-policy"] = "no-referrer",
}
local ASSETS = {
    ["/dashboard"] = { "index.html", "text/html; charset=utf-8" },
    ["/dashboard/"] = { "index.html", "text/html; charset=utf-8" },
    ["/dashboard/app.js"] = { "app.js", "application/javascript; charset=utf-8" },
    ["/dashboard/app.css"] = { "app.css", "text/css; charset=utf-8" },
    ["/dashboard/vendor/uplot/uPlot.iife.min.js"] = { "vendor/uplot/uPlot.iife.min.js",
                                                     "application/javascript; charset=utf-8" },
    ["/dashboard/vendor/uplot/uPlot.min.css"] = { "vendor/uplot/uPlot.min.css", "text/css; charset=utf-8" },
}
local RECENT = 20 -- audit records sent with each update

local cache = {}

local function headers(extra)
    local h = {}
    for k, v in pairs(SECURITY) do h[k] = v end
    for k, v in pairs(extra or {}) do h[k] = v end
    return h
end

local function reply(status, body)
    return status, cjson.encode(body), headers(JSON)
end

local function asset(path)
    local a = ASSETS[path]
    if not a then return nil end
    local body = cache[a[1]]
    if not body then
        local f = io.open((SLUICE_HOME or ".") .. "/dashboard/" .. a[1], "rb")
        if not f then
            return reply(500, { error = { message = "dashboard file " .. a[1] .. " is missing" } })
        end
        body = f:read("*a")
        f:close()
        cache[a[1]] = body
    end
    return 200, body, headers({ ["content-type"] = a[2], ["cache-control"] = "no-cache" })
end

local function random_token()
    local f = io.open("/dev/urandom", "rb")
    local raw = f and f:read(32)
    if f then f:close() end
    if not raw or #raw ~= 32 then return nil end
    return crypto.to_hex(raw)
end

local function dict()
    return shared.get("sluice")
end

-- A session is good while the admin key it was opened with is still one of the configured keys.
local function session_ok(ctx, keys)
    local auth = request.get_header("authorization", ctx)
    local tok = type(auth) == "string" and auth:match("^[Bb]earer%s+(%x+)%s*$")
    if not tok or #tok ~= 64 then return false end
    local d = dict()
    local v = d and d:get("D|sess|" .. crypto.sha256_hex(tok))
    if v == nil then return false end
    for _, k in ipairs(keys) do
        if v == crypto.sha256_hex(k) then return true end
    end
    return false
end

---------------------------------------------------------------------------------------------------------------
-- the numbers

-- '{a="x",b="y\"z"}' -> {a = "x", b = 'y"z'}
local function parse_labels(s)
    local out = {}
    local i, n = 2, #s
    while i < n do
        local name, e = s:match("^([%w_]+)=\"()", i)
        if not name then break end
        local buf, j = {}, e
        while j <= n do
            local c = sub(s, j, j)
            if c == "\\" then
                local nx = sub(s, j + 1, j + 1)
                buf[#buf + 1] = nx == "n" and "\n" or nx
                j = j + 2
            elseif c == '"' then
                break
            else
                buf[#buf + 1] = c
                j = j + 1
            end
        end
        out[name] = table.concat(buf)
        i = j + 2 -- past '",'
    end
    return out
end
_M.parse_labels = parse_labels

local DIMS = { "provider", "model", "consumer", "route" }

local function bump(t, k, field, v)
    local row = t[k]
    if not row then
        row = { requests = 0, errors = 0, input_tokens = 0, output_tokens = 0, cost = 0 }
        t[k] = row
    end
    row[field] = row[field] + v
end

local function add_hist(h, s)
    h.bounds = h.bounds or s.buckets
    h.counts = h.counts or {}
    h.counts[s.idx] = (h.counts[s.idx] or 0) + s.value
end

--- The dashboard's data: totals, per-dimension rows, cumulative histograms, breaker states, queue depths, the
--- cluster's nodes (as GET /admin/status lists them), the last audit records.
function _M.data()
    metrics.flush()
    local out = {
        time = os.time(), totals = { http_requests = 0, http_errors = 0, ai_requests = 0, ai_errors = 0,
                                     input_tokens = 0, output_tokens = 0, cached_tokens = 0, cost = 0 },
        by = { provider = {}, model = {}, consumer = {}, route = {} },
        hist = { http_latency = {}, ai_latency = {}, ttft = {} },
        breakers = {}, queues = {}, inflight = {}, nodes = require("sluice.config.nodes").list(),
    }
    local t = out.totals
    for _, s in ipairs(metrics.collect()) do
        local name, v = s.name, s.value
        if name == "sluice_http_requests_total" then
            t.http_requests = t.http_requests + v
            local l = parse_labels(s.labels)
            if l.status_class == "5xx" then t.http_errors = t.http_errors + v end
        elseif name == "sluice_ai_requests_total" then
            local l = parse_labels(s.labels)
            local err = l.status_class == "4xx" or l.status_class == "5xx"
            t.ai_requests = t.ai_requests + v
            if err then t.ai_errors = t.ai_errors + v end
            for _, d in ipairs(DIMS) do
                bump(out.by[d], l[d] or "", "requests", v)
                if err then bump(out.by[d], l[d] or "", "errors", v) end
            end
        elseif name == "sluice_gen_ai_client_token_usage_total" then
            local l = parse_labels(s.labels)
            local field = l.token_type == "input" and "input_tokens" or l.token_type == "output" and "output_tokens"
            if field then
                t[field] = t[field] + v
                for _, d in ipairs(DIMS) do bump(out.by[d], l[d] or "", field, v) end
            elseif l.token_type == "cached" then
                t.cached_tokens = t.cached_tokens + v
            end
        elseif name == "sluice_ai_cost_usd_total" then
            local l = parse_labels(s.labels)
            t.cost = t.cost + v
            for _, d in ipairs(DIMS) do bump(out.by[d], l[d] or "", "cost", v) end
        elseif name == "sluice_http_request_duration_seconds_bucket" then
            add_hist(out.hist.http_latency, s)
        elseif name == "sluice_gen_ai_client_operation_duration_seconds_bucket" then
            add_hist(out.hist.ai_latency, s)
        elseif name == "sluice_gen_ai_server_time_to_first_token_seconds_bucket" then
            add_hist(out.hist.ttft, s)
        elseif name == "sluice_ai_breaker_state" and v == 1 then
            local l = parse_labels(s.labels)
            out.breakers[#out.breakers + 1] = { target = l.target, state = l.state }
        elseif name == "sluice_ai_qos_queue_depth" then
            local l = parse_labels(s.labels)
            out.queues[l.target or ""] = (out.queues[l.target or ""] or 0) + v
        elseif name == "sluice_ai_target_inflight" then
            local l = parse_labels(s.labels)
            out.inflight[l.target or ""] = v
        end
    end
    -- histograms: cumulative counts per bound (+Inf last), as the exposition has them
    for _, h in pairs(out.hist) do
        if h.bounds then
            local list = {}
            for i = 1, #h.bounds + 1 do list[i] = h.counts[i] or 0 end
            h.counts = list
        end
    end
    local ok, audit = pcall(require, "sluice.obs.audit")
    local recent = ok and audit.recent(RECENT) or {}
    return out, recent
end

local function encode_data()
    local out, recent = _M.data()
    -- empty maps and lists as {} / []: cjson 2.1 cannot tell them apart, so they are patched in
    local function map(t) return next(t) and t or "\0map\0" end
    for d, rows in pairs(out.by) do out.by[d] = map(rows) end
    out.queues, out.inflight = map(out.queues), map(out.inflight)
    if #out.breakers == 0 then out.breakers = "\0list\0" end
    for k, h in pairs(out.hist) do if not h.bounds then out.hist[k] = "\0map\0" end end
    out.recent = "\0recent\0"
    local s = cjson.encode(out)
    s = gsub(s, '"\\u0000map\\u0000"', "{}")
    s = gsub(s, '"\\u0000list\\u0000"', "[]")
    local parts = {}
    for i, r in ipairs(recent) do parts[i] = r end
    return (gsub(s, '"\\u0000recent\\u0000"', function() return "[" .. table.concat(parts, ",") .. "]" end))
end

---------------------------------------------------------------------------------------------------------------

--- Handles a /dashboard path. keys: every configured admin key (a login may use any of them).
function _M.handle(ctx, path, keys, secure_equal)
    local method = ctx.method
    if ASSETS[path] then
        if method ~= "GET" and method ~= "HEAD" then return reply(405, { error = { message = "use GET" } }) end
        return asset(path)
    elseif path == "/dashboard/login" then
        if method ~= "POST" then return reply(405, { error = { message = "use POST" } }) end
        local body = request.get_body(ctx)
        local j = type(body) == "string" and cjson.decode(body)
        local given = type(j) == "table" and j.key
        local key
        for _, k in ipairs(keys) do
            if secure_equal(given, k) then key = k end
        end
        if not key then
            return reply(401, { error = { message = "wrong admin key" } })
        end
        local tok = random_token()
        local d = dict()
        if not tok or not d then return reply(500, { error = { message = "cannot make a session" } }) end
        local okset = d:set("D|sess|" .. crypto.sha256_hex(tok), crypto.sha256_hex(key), SESSION_TTL)
        if not okset then return reply(500, { error = { message = "cannot store the session" } }) end
        return reply(200, { token = tok, expires_in = SESSION_TTL })
    elseif path == "/dashboard/logout" then
        if method ~= "POST" then return reply(405, { error = { message = "use POST" } }) end
        local auth = request.get_header("authorization", ctx)
        local tok = type(auth) == "string" and auth:match("^[Bb]earer%s+(%x+)%s*$")
        local d = dict()
        if tok and d then d:delete("D|sess|" .. crypto.sha256_hex(tok)) end
        return reply(200, { ok = true })
    elseif path == "/dashboard/data" then
        if method ~= "GET" then return reply(405, { error = { message = "use GET" } }) end
        if not session_ok(ctx, keys) then
            return reply(401, { error = { message = "no valid session: log in again" } })
        end
        return 200, encode_data(), headers(JSON)
    end
    return reply(404, { error = { message = "not found: " .. path } })
end

return _M

-- sluice.limits: what the limit plugins share (ai-rate-limit, ai-budget, limit-req, limit-conn): counter keys
-- from the request ("by"), fixed and sliding windows with atomic reservations, the leaky bucket, the
-- X-RateLimit-* headers and the errors in the client's API shape. Counters live in sluice.limits.store.
--
-- Reservations, the rule every counter follows: a request adds its amounts first (atomic increments, shared dict
-- or memcached, every limit of the request in one round trip) and is admitted only if each count after it is
-- within its limit and the window was not exhausted before it; otherwise it takes every amount back at once and
-- is refused. So concurrent requests, on any number of
-- workers and nodes sharing the store, are never admitted past the limit: with requests of one unit each exactly
-- `limit` go through. (While a refused request's amount is being taken back, a request that would just have
-- fitted may be refused too: never more than the limit, at worst fewer.) What a request really used is charged
-- after it (sluice.limits.adjust).
local store_mod = require("sluice.limits.store")
local response = require("sluice.pdk.response")
local request = require("sluice.pdk.request")
local consumer = require("sluice.pdk.consumer")
local crypto = require("sluice.crypto")
local base = require("sluice.pdk.base")

local C = base.C
local type, ipairs, tostring, setmetatable = type, ipairs, tostring, setmetatable
local floor, ceil, max, min = math.floor, math.ceil, math.max, math.min
local find, sub, format, upper = string.find, string.sub, string.format, string.upper
local json_null = require("sluice.pdk.json").null
-- the refusals of every limiter, in the metric the prometheus plugin declares (docs/observability.md)
local refusals = require("sluice.pdk.metrics").counter("sluice_ai_refusals_total",
    "Requests refused by rate-limit, budget and guard plugins", { "route", "plugin", "reason" })

local _M = { store = store_mod.get, stats = store_mod.stats, count = store_mod.count }

---------------------------------------------------------------------------------------------------------------
-- schema pieces

local KEY_KINDS = { "consumer", "consumer_group", "route", "provider", "model", "ip", "global" }
_M.KEY_KINDS = KEY_KINDS

-- One key source: a kind, "header:NAME" or "var:NAME".
local key_source = { anyOf = {
    { enum = KEY_KINDS },
    { type = "string", pattern = "^header:[%w!#%$%%&'%*%+%-%.%^_`|~]+$", maxLength = 200 },
    { type = "string", pattern = "^var:[%w_]+$", maxLength = 200 },
} }

--- Schema of `by`: one key source or a list of them (a composite key).
_M.by_schema = { anyOf = { key_source, { type = "array", minItems = 1, maxItems = 8, items = key_source } },
                 default = "consumer" }

--- Schema fields every limit plugin has: where counters live and what a memcached outage does.
function _M.store_schema(props)
    props.policy = { enum = { "local", "memcached" }, default = "local" }
    props.dict = { type = "string", minLength = 1, default = "sluice", ref = "shared_dicts" }
    props.fail_mode = { enum = { "open", "closed" }, default = "open" }
    return props
end

---------------------------------------------------------------------------------------------------------------
-- keys

-- A key part safe for memcached (no spaces or control bytes, bounded): kept as is when short and plain, else a
-- digest.
local function safe(v)
    if #v <= 64 and not find(v, "[^%w%-%._:@/]") then
        return v
    end
    return "#" .. sub(crypto.sha256_hex(v), 1, 32)
end
_M.safe = safe

local compiled_by = setmetatable({}, { __mode = "k" })

--- `by` as a list of {kind, arg} (cached per table).
function _M.compile_by(by)
    local list = type(by) == "table" and by or { by or "consumer" }
    local c = compiled_by[list]
    if c then
        return c
    end
    c = {}
    for i, s in ipairs(list) do
        local kind, arg = s:match("^(%a+):(.+)$")
        if kind then
            c[i] = { kind, kind == "header" and s:sub(8):lower() or arg }
        else
            c[i] = { s }
        end
    end
    compiled_by[list] = c
    return c
end

local MISSING = "-"

-- The value of one source for the request: a string, or a list (a consumer may be in several groups).
local function values(src, ctx, attrs)
    local kind = src[1]
    if kind == "consumer" then
        local c = ctx.consumer
        return type(c) == "table" and c.name or MISSING
    elseif kind == "consumer_group" then
        local g = consumer.groups(ctx)
        return #g > 1 and g or g[1] or MISSING
    elseif kind == "route" then
        return ctx.route and ctx.route.id or MISSING
    elseif kind == "provider" then
        return attrs and attrs.provider or MISSING
    elseif kind == "model" then
        return attrs and attrs.model or MISSING
    elseif kind == "ip" then
        return request.get_client_ip(ctx) or MISSING
    elseif kind == "global" then
        return "*"
    elseif kind == "header" then
        local v = request.get_header(src[2], ctx)
        return v and v ~= "" and v or MISSING
    elseif kind == "var" then
        local name, v = src[2]
        if name == "remote_addr" then
            v = request.get_client_ip(ctx)
        elseif name == "host" then
            v = ctx.host
        elseif name == "path" or name == "uri" then
            v = ctx.path
        elseif name == "method" then
            v = ctx.method
        else
            v = ctx.var[name]
        end
        return v ~= nil and tostring(v) or MISSING
    end
    return MISSING
end

-- Per compiled `by` of one source: value -> the one-key list (made once per value; bounded).
local single = setmetatable({}, { __mode = "k" })

--- The counter keys of a request for compiled `by` (several when a source has several values), each
--- {safe for memcached, readable for messages}. The lists are shared: read them, do not change them.
function _M.keys(by, ctx, attrs)
    if #by == 1 then
        local v = values(by[1], ctx, attrs)
        if type(v) == "string" then
            local c = single[by]
            if not c then
                c = { n = 0 }
                single[by] = c
            end
            local r = c[v]
            if not r then
                if c.n >= 10000 then
                    c = { n = 0 }
                    single[by] = c
                end
                r = { { safe(v), v } }
                c[v], c.n = r, c.n + 1
            end
            return r
        end
    end
    local parts = { { "", "" } }
    for _, src in ipairs(by) do
        local vs = values(src, ctx, attrs)
        if type(vs) == "string" then
            vs = { vs }
        end
        local nxt = {}
        for _, p in ipairs(parts) do
            for _, v in ipairs(vs) do
                local sep = p[1] == "" and "" or "|"
                nxt[#nxt + 1] = { p[1] .. sep .. safe(v), p[2] .. sep .. v }
            end
        end
        parts = nxt
    end
    return parts
end

--- A counter key prefix for a plugin conf: plugin short name, the scope (route id by default), the limit id.
function _M.prefix(short, scope, ctx, id)
    local sc = scope
    if sc == nil or sc == "route" then
        sc = ctx.route and ctx.route.id or "-"
    end
    return short .. ":" .. safe(sc) .. ":" .. id .. ":"
end

--- The counter key prefix of one key of one limit (prefix() .. key .. ":"), kept in `cache` (a table per limit
--- and conf: the strings are made once, not per request).
function _M.key_prefix(cache, short, scope, ctx, id, key)
    local sc = (scope == nil or scope == "route") and (ctx.route and ctx.route.id or "-") or scope
    local per = cache[sc]
    if not per then
        per = { n = 0 }
        cache[sc] = per
    end
    local p = per[key]
    if not p then
        if per.n >= 10000 then -- keys from headers are the client's choice: bounded
            per = { n = 0 }
            cache[sc] = per
        end
        p = _M.prefix(short, sc, ctx, id) .. key .. ":"
        per[key], per.n = p, per.n + 1
    end
    return p
end

---------------------------------------------------------------------------------------------------------------
-- windows

--- A duration in the natural spelling: 60 -> "1m", 86400 -> "1d", 90 -> "90s".
function _M.span(s)
    if s % 86400 == 0 then
        return (s / 86400) .. "d"
    elseif s % 3600 == 0 then
        return (s / 3600) .. "h"
    elseif s % 60 == 0 then
        return (s / 60) .. "m"
    end
    return format("%gs", s)
end

-- Per worker: the previous window's counts of sliding windows, re-read after a few seconds.
local prev_cache, nprev = {}, 0

local function prev_count(st, key, now, window)
    local e = prev_cache[key]
    if e and now < e[2] then
        return e[1]
    end
    local v, err = st:get(key)
    if err then
        return nil, err
    end
    if not e then
        nprev = nprev + 1
        if nprev > 10000 then
            prev_cache, nprev = {}, 1
        end
    end
    prev_cache[key] = { v or 0, now + min(5, max(0.5, window / 20)) }
    return v or 0
end

-- Seconds until a sliding window would take `need` more (count cur in this window, prev before, e into it).
local function sliding_wait(limit, need, cur, prev, e, w)
    if cur + need <= limit then
        if prev <= 0 then
            return 1
        end
        return max(1, w * (1 - (limit - cur - need) / prev) - e)
    end
    if cur <= 0 then
        return w - e
    end
    return (w - e) + max(0, w * (1 - (limit - need) / cur))
end

local window_keys = setmetatable({}, { __mode = "k" }) -- spec -> prefix -> {idx, key}: one string per window

local function window_key(spec, key_prefix, idx)
    local per = window_keys[spec]
    if not per then
        per = { n = 0 }
        window_keys[spec] = per
    end
    local e = per[key_prefix]
    if e and e[1] == idx then
        return e[2]
    end
    local key = key_prefix .. idx
    if not e then
        if per.n >= 10000 then -- prefixes from client-chosen keys: bounded
            per = { n = 0 }
            window_keys[spec] = per
        end
        per.n = per.n + 1
    end
    per[key_prefix] = { idx, key }
    return key
end

-- The result of one reservation once its count is known (count: the window's count with the amount in it).
-- The per-item work of reserve_all, in functions without loops: LuaJIT compiles them whatever the number of
-- limits, where a loop of one or two rounds per request is never compiled (its trace leaves the loop).
local function settle(st, x, key, where, ttl, count, now)
    local spec, amount = x.spec, x.amount
    local w = spec.window
    local idx = floor(now / w)
    local e = now - idx * w
    local prev = 0
    if spec.sliding then
        prev = (prev_count(st, x.prefix .. (idx - 1), now, w) or 0) * (1 - e / w)
    end
    local limit = spec.limit
    local used = prev + count
    local r = { key = key, where = where, amount = amount, reset = ceil(w - e), limit = limit, ttl = ttl }
    if used <= limit and used - amount < limit then
        r.ok = true
        r.remaining = max(0, floor(limit - used))
    else
        r.ok = false
        r.remaining = max(0, floor(limit - (used - amount)))
        if amount > limit then
            r.never = true
        elseif spec.sliding then
            local unweighted = prev / max(1e-9, 1 - e / w)
            r.retry_after = max(1, ceil(sliding_wait(limit, amount, count - amount, unweighted, e, w) - 1e-6))
        else
            r.retry_after = max(1, ceil(w - e))
        end
    end
    return r
end

-- The window key, amount and ttl of list[i]. Lists of one or two are the rule, and LuaJIT never compiles a loop
-- of one or two rounds (its trace leaves the loop) nor a trace through it: callers do the first two outside
-- their loops.
local function prepare(list, i, keys, amounts, ttls, now)
    local x = list[i]
    local spec = x.spec
    local w = spec.window
    keys[i], amounts[i], ttls[i] = window_key(spec, x.prefix, floor(now / w)), x.amount,
        spec.sliding and 2 * w + 1 or w + 1
end

--- Reserves amounts under several limits at once, all or nothing (one round trip to the store): list[i] =
--- {prefix, spec = {limit, window (s), sliding}, amount}. Returns the results (result[i] = {ok, key, where,
--- amount, remaining, reset, limit, retry_after, never}) and the index of the first refusal (nil when every
--- one fits: then every amount stays counted; else none does), or nil, err (the store is unavailable).
function _M.reserve_all(st, list, now)
    local n = #list
    local keys, amounts, ttls = {}, {}, {}
    -- (one or two limits as a rule: the first two outside the loops, see prepare)
    if n >= 1 then prepare(list, 1, keys, amounts, ttls, now) end
    if n >= 2 then prepare(list, 2, keys, amounts, ttls, now) end
    for i = 3, n do
        prepare(list, i, keys, amounts, ttls, now)
    end
    local counts, wheres = st:incr_many(keys, amounts, ttls)
    if not counts then
        return nil, wheres
    end
    local results = {}
    if n >= 1 then results[1] = settle(st, list[1], keys[1], wheres[1], ttls[1], counts[1], now) end
    if n >= 2 then results[2] = settle(st, list[2], keys[2], wheres[2], ttls[2], counts[2], now) end
    for i = 3, n do
        results[i] = settle(st, list[i], keys[i], wheres[i], ttls[i], counts[i], now)
    end
    local refused
    if n >= 1 and not results[1].ok then
        refused = 1
    elseif n >= 2 and not results[2].ok then
        refused = 2
    else
        for i = 3, n do
            if not results[i].ok then
                refused = i
                break
            end
        end
    end
    if refused then -- all or nothing: every amount of this request goes back
        local back = {}
        for i = 1, n do
            back[i] = { keys[i], -list[i].amount, ttls[i], wheres[i] }
        end
        st:adjust_many(back)
        for i = 1, n do
            if results[i].ok then -- what it would have left had the request gone
                results[i].remaining = results[i].remaining + list[i].amount
            end
        end
    end
    return results, refused
end

--- Reserves `amount` under one limit for one key (reserve_all of one): a result as there, or nil, err. A refused
--- request has taken nothing.
function _M.reserve(st, key_prefix, spec, amount, now)
    local rs, refused = _M.reserve_all(st, { { prefix = key_prefix, spec = spec, amount = amount } }, now)
    if not rs then
        return nil, refused
    end
    return rs[1]
end

--- What a request used, charged after the fact where its reservation was: delta = used - reserved (refunds when
--- negative). No check: an overshoot (a completion longer than reserved) is counted, and refuses later requests.
function _M.adjust(st, r, delta, window)
    if delta > 0 then
        st:add(r.key, delta, 2 * window + 1, r.where)
    elseif delta < 0 then
        st:decr(r.key, -delta, r.where)
    end
end

--- Reads the state of one limit without reserving (for the headers of responses the limiter did not check).
function _M.peek(st, key_prefix, spec, now)
    local w = spec.window
    local idx = floor(now / w)
    local e = now - idx * w
    local count = st:get(key_prefix .. idx) or 0
    local prev = 0
    if spec.sliding then
        prev = (prev_count(st, key_prefix .. (idx - 1), now, w) or 0) * (1 - e / w)
    end
    return { ok = true, limit = spec.limit, remaining = max(0, floor(spec.limit - prev - count)), reset = ceil(w - e) }
end

---------------------------------------------------------------------------------------------------------------
-- the leaky bucket (lua/sluice/limits/leaky.lua)

local leaky = require("sluice.limits.leaky")
_M.leaky, _M.leaky_peek = leaky.leaky, leaky.leaky_peek

---------------------------------------------------------------------------------------------------------------
-- headers and errors

local names_of = {}

--- The three header names of a suffix: x-ratelimit-limit-<name>, -remaining-<name>, -reset-<name> (made once).
function _M.header_names(name)
    local t = names_of[name]
    if not t then
        t = { "x-ratelimit-limit-" .. name, "x-ratelimit-remaining-" .. name, "x-ratelimit-reset-" .. name }
        names_of[name] = t
    end
    return t[1], t[2], t[3]
end

--- Sets X-RateLimit-Limit-<name>, -Remaining-<name>, -Reset-<name> (reset left out when nil) on the response.
function _M.set_headers(ctx, name, limit, remaining, reset)
    local hl, hr, hs = _M.header_names(name)
    response.set_header(hl, limit, ctx)
    response.set_header(hr, remaining, ctx)
    if reset then
        response.set_header(hs, reset, ctx)
    end
end

--- "Tokens" -> "Tokens"; "prompt tokens" -> "Prompt-Tokens": a header-name suffix.
function _M.header_name(s)
    s = s:gsub("[^%w]+", "-"):gsub("^%-+", ""):gsub("%-+$", "")
    return (s:gsub("(%w)(%w*)", function(a, b) return upper(a) .. b end))
end

--- The client's API for error shapes: "anthropic" on /messages, else "openai" (sluice.ai's when known).
function _M.api_of(ctx)
    local ai = ctx.ai
    if ai and ai.api then
        return ai.api
    end
    local p = ctx.path or ""
    if sub(p, -9) == "/messages" then
        return "anthropic"
    end
    return "openai"
end

--- An error body in the client's API shape.
function _M.error_body(ctx, status, message, typ, code)
    if _M.api_of(ctx) == "anthropic" then
        local at = status == 429 and "rate_limit_error" or status == 403 and "permission_error"
            or status == 503 and "overloaded_error" or (typ or "api_error")
        return { type = "error", error = { type = at, message = message } }
    end
    return { error = { message = message, type = typ or (status == 429 and "rate_limit_error"
        or status == 403 and "permission_error" or status >= 500 and "server_error" or "invalid_request_error"),
        param = json_null, code = code or json_null } }
end

--- Refuses the request: status with an error body in the client's shape; Retry-After when given, and
--- x-should-retry: false when waiting cannot help (the official SDKs then do not retry).
function _M.refuse(ctx, status, message, retry_after, code, never, typ)
    local route = ctx.route
    refusals:inc(1, route and route.id or "", ctx.plugin_name or "", code or (status == 503 and "unavailable")
        or tostring(status))
    local h = { ["content-type"] = "application/json" }
    if retry_after then
        h["retry-after"] = tostring(ceil(retry_after))
    end
    if never then
        h["x-should-retry"] = "false"
    end
    return response.exit(status, _M.error_body(ctx, status, message, typ, code), h, ctx)
end

--- Now in wall-clock seconds (counters of several nodes must agree on windows).
function _M.now()
    return C.sl_time()
end

return _M

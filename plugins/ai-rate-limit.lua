-- ai-rate-limit: token, cost and request limits for AI routes, per consumer, group, route, provider, model or a
-- key from a header or a variable; several at once (100k tokens a minute and 2M a day).
--
--   ai-rate-limit:
--     policy: memcached            # local (this node's shared dict, the default) | memcached (a cluster)
--     fail_mode: open              # memcached down: open (serve, count on this node, log) | closed (503)
--     limits:
--       - {by: consumer, metric: total_tokens, limit: 100000, window: 1m}
--       - {by: consumer, metric: total_tokens, limit: 2000000, window: 1d, type: sliding}
--       - {by: [consumer, model], metric: cost, limit: 5, window: 1d, models: ["gpt-4o*"]}   # USD
--       - {by: "header:x-tenant", metric: requests, limit: 600, window: 1m}
--
-- Before the call (access, after ai-proxy: the model, provider and canonical request are known) each limit
-- reserves the request's estimate: prompt tokens counted locally (sluice.ai.tokens) plus max_tokens when the
-- client set it, the cost of that at the provider's price, or 1 request. A request whose reservation does not
-- fit is refused with 429 in the client's API shape and Retry-After (one that can never fit, larger than the
-- limit itself, gets x-should-retry: false). After the response (log) the reservation is replaced by what the
-- provider reported, streams included (the usage chunk; a stream cut by the client or the upstream counts what
-- was delivered); a call that never happened gives its tokens back; without an AI call the estimate stays.
-- X-RateLimit-Limit-<Name>, -Remaining-<Name>, -Reset-<Name> (seconds) go on every response of the route.
-- docs/limits.md has the semantics and worked examples.
local sluice = require("sluice")
local limits = require("sluice.limits")
local call = require("sluice.limits.call")
local counters = require("sluice.limits.counters")

local ipairs, tostring, setmetatable = ipairs, tostring, setmetatable
local tnew = require("table.new")
local floor = math.floor
local find, format, gsub = string.find, string.format, string.gsub
local consumer, response = sluice.consumer, sluice.response

local METRICS = { "total_tokens", "prompt_tokens", "completion_tokens", "cost", "requests" }
local WORD = { total_tokens = "Tokens", prompt_tokens = "Prompt-Tokens", completion_tokens = "Completion-Tokens",
               cost = "Cost", requests = "Requests" }
local NANO = call.NANO -- cost counters count nano-USD

local globs = { type = "array", minItems = 1, items = { type = "string", minLength = 1, maxLength = 256 } }

local _M = {
    name = "ai-rate-limit", version = "1.0",
    priority = 1030, -- access, after ai-proxy / ai-proxy-multi (1040): the provider and model are known
    schema = {
        type = "object",
        required = { "limits" },
        additionalProperties = false,
        properties = limits.store_schema({
            limits = { type = "array", minItems = 1, maxItems = 16, items = {
                type = "object", required = { "limit", "window" }, additionalProperties = false,
                properties = {
                    name = { type = "string", pattern = "^[%w%-]+$", maxLength = 64 }, -- header suffix
                    by = limits.by_schema,
                    metric = { enum = METRICS, default = "total_tokens" },
                    limit = { type = "number", exclusiveMinimum = 0, maximum = 1e15 }, -- USD for cost
                    window = { type = "duration", minimum = 1, maximum = 31 * 86400 },
                    type = { enum = { "fixed", "sliding" }, default = "fixed" },
                    models = globs, providers = globs, -- only calls to these (names or globs)
                },
            } },
            scope = { type = "string", minLength = 1, maxLength = 200, default = "route" }, -- counters shared by
            headers = { type = "boolean", default = true },                                  -- confs of one scope
        }),
    },
}

-- The header name of each limit: its `name`, else the metric's word (Tokens, Requests, ...), with the window
-- added when several limits count the same metric (Tokens-1m, Tokens-1d).
local function header_names(list)
    local count, out = {}, {}
    for _, l in ipairs(list) do
        local w = WORD[l.metric]
        count[w] = (count[w] or 0) + 1
    end
    for i, l in ipairs(list) do
        local w = WORD[l.metric]
        out[i] = l.name or (count[w] > 1 and (w .. "-" .. limits.span(l.window)) or w)
    end
    return out
end

--- Config checks: whole numbers of tokens and requests, header names that do not collide.
function _M.check(conf)
    local seen = {}
    local hnames = header_names(conf.limits)
    for i, l in ipairs(conf.limits) do
        if l.metric ~= "cost" and l.limit % 1 ~= 0 then
            return nil, "limits[" .. i .. "].limit: a whole number of " .. (l.metric == "requests" and "requests"
                or "tokens") .. " (only cost limits take fractions, in USD)"
        end
        local n = hnames[i]:lower()
        if seen[n] then
            return nil, "limits[" .. i .. "]" .. (l.name and ".name" or "") .. ": " .. hnames[i] .. " is used twice"
                .. " (it names the X-RateLimit-* headers" .. (l.name and "" or "; set `name`") .. ")"
        end
        seen[n] = true
    end
    return true
end

local function glob_list(list)
    if not list then
        return nil
    end
    local out = {}
    for i, g in ipairs(list) do
        out[i] = consumer._glob_pattern(g)
    end
    return out
end

local function header_value(l, v)
    if l.metric == "cost" then
        return (gsub(gsub(format("%.6f", v / NANO), "0+$", ""), "%.$", ""))
    end
    return tostring(v)
end

-- The one-key shape of a conf whose counters can go through sluice.limits.counters (one FFI call per phase):
-- every limit keyed by the same sources, each with one value per request (no consumer groups), none naming the
-- provider or the model (a fallback to another one moves those counters after the call), no model or provider
-- filters, and in memcached fixed windows only. Returns the compiled `by` they share, or nil (the general path).
local function fast_plan(conf, list)
    if #list > counters.MAX then
        return nil
    end
    local sig
    for _, l in ipairs(list) do
        if l.models or l.providers or (conf.policy == "memcached" and l.spec.sliding) then
            return nil
        end
        local parts = {}
        for i, src in ipairs(l.by) do
            if src[1] == "consumer_group" or src[1] == "provider" or src[1] == "model" then
                return nil
            end
            parts[i] = src[1] .. ":" .. (src[2] or "")
        end
        local this = table.concat(parts, "|")
        if sig and this ~= sig then
            return nil
        end
        sig = this
    end
    return list[1].by
end

-- Per conf: the limits with their window spec, key prefix id, header name, filters (weak cache).
local compiled = setmetatable({}, { __mode = "k" })
local function compile(conf)
    local c = compiled[conf]
    if c then
        return c
    end
    c = { list = {}, prompt = false, completion = false, cost = false }
    local hnames = header_names(conf.limits)
    for i, l in ipairs(conf.limits) do
        local hname = hnames[i]
        local lim = l.metric == "cost" and floor(l.limit * NANO + 0.5) or l.limit
        c.list[i] = {
            metric = l.metric, by = limits.compile_by(l.by), header = hname:lower(),
            spec = { limit = lim, window = l.window, sliding = l.type == "sliding" },
            id = i .. l.metric:sub(1, 1) .. l.window .. (l.type == "sliding" and "s" or "f"), pcache = {},
            models = glob_list(l.models), providers = glob_list(l.providers), conf = l,
        }
        local cl = c.list[i]
        cl.limit_text = header_value(cl, lim)
        cl.h_limit, cl.h_remaining, cl.h_reset = limits.header_names(cl.header)
        if l.metric ~= "requests" then
            c.prompt = c.prompt or l.metric ~= "completion_tokens"
            c.completion = c.completion or l.metric ~= "prompt_tokens"
            c.cost = c.cost or l.metric == "cost"
        end
    end
    c.fast = fast_plan(conf, c.list)
    c.n, c.slots = #c.list, {}
    compiled[conf] = c
    return c
end

local function any_match(pats, names)
    for _, p in ipairs(pats) do
        for _, n in ipairs(names) do
            if n and find(n, p) then
                return true
            end
        end
    end
    return false
end

local function applies(l, attrs)
    if l.models and not any_match(l.models, { attrs.model, attrs.served }) then
        return false
    end
    if l.providers and not any_match(l.providers, { attrs.provider }) then
        return false
    end
    return true
end

local function amount(metric, p, c, cost)
    if metric == "requests" then
        return 1
    elseif metric == "prompt_tokens" then
        return p
    elseif metric == "completion_tokens" then
        return c
    elseif metric == "total_tokens" then
        return p + c
    end
    return cost
end

---------------------------------------------------------------------------------------------------------------
-- access: reserve

local function show(metric, v)
    if metric == "cost" then
        return "$" .. (gsub(gsub(format("%.6f", v / NANO), "0+$", ""), "%.$", ""))
    end
    return tostring(v)
end

-- The three headers of one result.
-- (values given as strings: set_header's check then takes one path for all three, where a mix of strings and
-- numbers made its trace exit on every other call, into a side trace that cannot compile)
local function set_headers(ctx, l, rem, reset)
    local set = response.set_header
    set(l.h_limit, l.limit_text, ctx)
    set(l.h_remaining, l.metric == "cost" and header_value(l, rem) or tostring(rem), ctx)
    set(l.h_reset, tostring(reset), ctx)
end

-- Whether result i is the one whose headers go out for its limit: the lowest remaining over the limit's keys
-- (a consumer in several groups has one key per group), the first of equals.
local function lowest_of_limit(res, i)
    local r = res[i]
    local l, rem = r.limit_ref, r.remaining
    for k = 1, #res do
        local o = res[k]
        if k ~= i and o.limit_ref == l and (o.remaining < rem or (o.remaining == rem and k < i)) then
            return false
        end
    end
    return true
end

-- The X-RateLimit-* headers of a request's results (res[i].limit_ref: its limit): per limit, the lowest
-- remaining over its keys. res.single: one result per limit (no comparison needed; loop-free per result, so
-- it compiles).
local function apply_one(ctx, res, i, single)
    local r = res[i]
    if single or lowest_of_limit(res, i) then
        set_headers(ctx, r.limit_ref, r.remaining, r.reset)
    end
end

local function apply_headers(ctx, res)
    local single, n = res.single, #res
    if n >= 1 then apply_one(ctx, res, 1, single) end
    if n >= 2 then apply_one(ctx, res, 2, single) end
    for i = 3, n do
        apply_one(ctx, res, i, single)
    end
end

local function add_key(list, keys, l, ctx, scope, need, k, ki)
    local n = #list + 1
    list[n] = { prefix = limits.key_prefix(l.pcache, "airl", scope, ctx, l.id, k[1]), spec = l.spec, amount = need,
                l = l, kidx = ki }
    keys[n] = k[2]
end

-- Adds the reservations of limit l for the request to list/keys (one per key) when it applies; false when l has
-- several keys. Lists here have one or two items as a rule: loops over them start at 2 or 3 with the first
-- items done outside (a loop of one or two rounds never compiles in LuaJIT, and keeps the trace around it from
-- compiling too; measured: key-auth's one-digest loop cost 19k instructions per request).
local function plan(list, keys, l, ctx, cl, scope, p, comp, cost)
    if not applies(l, cl) then
        return true
    end
    local need = amount(l.metric, p, comp, cost)
    local ks = limits.keys(l.by, ctx, cl)
    local nk = #ks
    add_key(list, keys, l, ctx, scope, need, ks[1], 1)
    for ki = 2, nk do
        add_key(list, keys, l, ctx, scope, need, ks[ki], ki)
    end
    return nk == 1
end

local function link(res, list, i)
    res[i].limit_ref, res[i].kidx = list[i].l, list[i].kidx
end

-- The 429 of a request that limit l refused for key `who` (readable), with remaining and the amount asked.
local function refuse_over(ctx, l, who, remaining, need, never, retry_after)
    local what = l.metric == "requests" and "requests" or (l.metric == "cost" and "cost (USD)")
        or gsub(l.metric, "_", " ")
    local msg = format("Rate limit reached for %s on %s per %s: limit %s, remaining %s, requested %s.",
        who == "-" and "anonymous callers" or who, what, limits.span(l.spec.window), show(l.metric, l.spec.limit),
        show(l.metric, remaining), show(l.metric, need))
    if never then
        msg = msg .. " The request is larger than the limit itself and can never be served."
    else
        msg = msg .. format(" Please try again in %ds.", retry_after)
    end
    local u = sluice.ai.get_usage(ctx) -- the AI call's record says why it was not made
    if u then
        u.status, u.error = 429, msg
    end
    return limits.refuse(ctx, 429, msg, retry_after, "rate_limit_exceeded", never,
        l.metric == "requests" and "requests" or "tokens")
end

---------------------------------------------------------------------------------------------------------------
-- the one-key path (fast_plan): every limit of the request in one sluice.limits.counters call per phase

-- Per conf, scope and key: the counters' items (prefix, window, limit set once) and the readable key.
local function slot_of(c, conf, ctx, key)
    local scope = conf.scope
    local sc = scope == "route" and (ctx.route and ctx.route.id or "-") or scope
    local per = c.slots[sc]
    if not per then
        per = { n = 0 }
        c.slots[sc] = per
    end
    local slot = per[key[1]]
    if slot then
        return slot
    end
    if per.n >= 10000 then -- keys from headers are the client's choice: bounded
        per = { n = 0 }
        c.slots[sc] = per
    end
    local items, prefixes = counters.items(c.n), {}
    for i, l in ipairs(c.list) do
        prefixes[i] = limits.key_prefix(l.pcache, "airl", scope, ctx, l.id, key[1])
        counters.set(items, i - 1, prefixes[i], l.spec.window, l.spec.limit, l.spec.sliding)
    end
    slot = { items = items, prefixes = prefixes, who = key[2], seen = {} }
    per[key[1]], per.n = slot, per.n + 1
    return slot
end

-- Item i's amount for the request, and what the reservation found copied out (the items are shared by the
-- requests on the key): vals[3i-2] remaining, [3i-1] reset, [3i] window index. Loop-free per item (compiles).
local function put_amount(items, list, i, p, comp, cost)
    items[i - 1].amount = amount(list[i].metric, p, comp, cost)
end

local function get_result(vals, items, i, seen)
    local it = items[i - 1]
    vals[3 * i - 2], vals[3 * i - 1], vals[3 * i] = it.remaining, it.reset, it.idx
    seen[2 * i - 1], seen[2 * i] = it.idx, it.count
end

-- The last counts memcached gave for the slot's current windows, handed to the store (Store:remember): its
-- fail-open counters go on from them.
local function seed(st, slot, list, now)
    local seen = slot.seen
    for i, l in ipairs(list) do
        local idx = floor(now / l.spec.window)
        if seen[2 * i - 1] == idx then
            st:remember(slot.prefixes[i] .. idx, seen[2 * i])
        end
    end
end

-- The rest of fast_access once the counts are in (a function of its own: on memcached it runs after a resume,
-- in the interpreter but for functions with traces of their own). Returns true, and the 429 when refused.
local function fast_settle(conf, ctx, c, slot, refused, cl, p, comp, cost)
    local items, list, n = slot.items, c.list, c.n
    local vals, seen = tnew(3 * n, 0), slot.seen -- made at its size: no resize (a trace exit) as it fills
    get_result(vals, items, 1, seen)
    if n >= 2 then get_result(vals, items, 2, seen) end
    for i = 3, n do
        get_result(vals, items, i, seen)
    end
    if refused > 0 then
        ctx._ai_rl = { slot = slot, vals = vals, cc = c, headers = conf.headers } -- no charge in log
        local it = items[refused - 1]
        local never = it.ok == 2
        return true, refuse_over(ctx, list[refused], slot.who, it.remaining, it.amount, never,
            not never and it.retry_after or nil)
    end
    -- (p, c, cost: what call.used falls back to without an AI call)
    ctx._ai_rl = { slot = slot, vals = vals, cc = c, headers = conf.headers, charge = true, p = p, c = comp,
                   cost = cost, call = cl }
    return true
end

local function fast_access(conf, ctx, c, st, cl, p, comp, cost)
    local ks = limits.keys(c.fast, ctx, cl)
    if #ks ~= 1 then
        return false
    end
    local slot = slot_of(c, conf, ctx, ks[1])
    local items, list, n = slot.items, c.list, c.n
    put_amount(items, list, 1, p, comp, cost)
    if n >= 2 then put_amount(items, list, 2, p, comp, cost) end
    for i = 3, n do
        put_amount(items, list, i, p, comp, cost)
    end
    local now = limits.now()
    local refused, err
    if st.remote then
        refused = counters.reserve_mc(items, n, now)
        if not refused then
            -- memcached failed (nothing stays counted): the general path decides what the outage means (fail_mode),
            -- its local counters seeded with the last counts memcached gave here
            seed(st, slot, list, now)
            return false
        end
    else
        refused, err = counters.reserve(st.d, items, n, now)
        if not refused then
            return true, limits.refuse(ctx, 503, "rate limit store unavailable: shared dict: " .. tostring(err))
        end
    end
    return fast_settle(conf, ctx, c, slot, refused, cl, p, comp, cost)
end

-- header_filter: the headers of limit i from the copied results.
local function fast_header(ctx, list, vals, i)
    set_headers(ctx, list[i], vals[3 * i - 2], vals[3 * i - 1])
end

local function fast_headers(ctx, rl)
    local list, vals = rl.cc.list, rl.vals
    local n = #list
    fast_header(ctx, list, vals, 1)
    if n >= 2 then fast_header(ctx, list, vals, 2) end
    for i = 3, n do
        fast_header(ctx, list, vals, i)
    end
end

-- log: item i's delta (used - reserved) and the window its reservation counted in; whether it is not 0.
local deltas = counters.deltas
local function put_delta(rl, items, list, i, p, comp, cost)
    local m = list[i].metric
    local d = amount(m, p, comp, cost) - amount(m, rl.p, rl.c, rl.cost)
    deltas[i - 1] = d
    items[i - 1].idx = rl.vals[3 * i]
    return d ~= 0
end

local function fast_log(ctx, rl, st)
    rl.charge = nil
    local p, comp, cost = call.used(rl, ctx)
    local items, list = rl.slot.items, rl.cc.list
    local n = #list
    local any = put_delta(rl, items, list, 1, p, comp, cost)
    if n >= 2 then any = put_delta(rl, items, list, 2, p, comp, cost) or any end
    for i = 3, n do
        any = put_delta(rl, items, list, i, p, comp, cost) or any
    end
    if not any then
        return
    end
    if st.remote then
        counters.adjust_mc(items, n)
    else
        counters.adjust(st.d, items, n)
    end
end

-- The phase runs in a function of its own, called (not tail-called) from the entry point: run_phase calls
-- plugins through pcall, and a LuaJIT trace cannot return through a pcall it did not start in, so a phase
-- function's own body never compiles; this one does.
local function access_phase(conf, ctx)
    local c = compile(conf)
    local st, serr = limits.store(conf, _M.name)
    if not st then
        return limits.refuse(ctx, 503, "ai-rate-limit: " .. tostring(serr))
    end
    local cl = call.call_of(ctx)
    local p, comp = call.estimate(cl, c.prompt, c.completion)
    local cost = c.cost and call.cost_nano(cl.price, p, comp) or 0
    if c.fast then
        local done, status, body = fast_access(conf, ctx, c, st, cl, p, comp, cost)
        if done then
            return status, body
        end
    end
    -- every limit and key of the request, reserved together (one round trip), all or nothing
    local list, keys = {}, {}
    local cls, scope = c.list, conf.scope
    local ncl = #cls
    local single = plan(list, keys, cls[1], ctx, cl, scope, p, comp, cost)
    if ncl >= 2 then single = plan(list, keys, cls[2], ctx, cl, scope, p, comp, cost) and single end
    for i = 3, ncl do
        single = plan(list, keys, cls[i], ctx, cl, scope, p, comp, cost) and single
    end
    local res, refused = limits.reserve_all(st, list, limits.now())
    if not res then
        return limits.refuse(ctx, 503, "rate limit store unavailable: " .. tostring(refused))
    end
    local nres = #res
    if nres >= 1 then link(res, list, 1) end
    if nres >= 2 then link(res, list, 2) end
    for i = 3, nres do
        link(res, list, i)
    end
    res.single = single
    if refused then
        ctx._ai_rl = { headers = conf.headers and res } -- header_filter (every response) sends X-RateLimit-*
        local r = res[refused]
        return refuse_over(ctx, list[refused].l, keys[refused], r.remaining, list[refused].amount, r.never,
            r.retry_after)
    end
    -- the X-RateLimit-* headers go out from header_filter, which runs on every response of the route
    ctx._ai_rl = { res = res, st = st, p = p, c = comp, cost = cost, call = cl, headers = conf.headers and res }
end

function _M.access(conf, ctx)
    local a, b = access_phase(conf, ctx)
    return a, b
end

---------------------------------------------------------------------------------------------------------------
-- header_filter: the headers on every response of the route

local function header_filter_phase(conf, ctx)
    if not conf.headers then
        return
    end
    local rl = ctx._ai_rl
    if rl then
        if rl.slot then
            if rl.headers then
                fast_headers(ctx, rl)
            end
        elseif rl.headers then
            apply_headers(ctx, rl.headers)
        end
        return
    end
    -- the limiter did not run for this response (a plugin before it answered): the counters as they are
    local c = compile(conf)
    local st = limits.store(conf, _M.name)
    if not st then
        return
    end
    local cl = { provider = ctx.ai and ctx.ai.provider_name, model = ctx.ai and ctx.ai.requested_model }
    local now = limits.now()
    local res = {}
    for _, l in ipairs(c.list) do
        if applies(l, cl) then
            for _, k in ipairs(limits.keys(l.by, ctx, cl)) do
                local prefix = limits.key_prefix(l.pcache, "airl", conf.scope, ctx, l.id, k[1])
                local r = limits.peek(st, prefix, l.spec, now)
                r.limit_ref = l
                res[#res + 1] = r
            end
        end
    end
    apply_headers(ctx, res)
end

function _M.header_filter(conf, ctx)
    local a, b = header_filter_phase(conf, ctx)
    return a, b
end

---------------------------------------------------------------------------------------------------------------
-- log: what the call really used replaces the reservation

-- What one reservation becomes after the call: appended to changes (nothing when it was right).
local function charge(changes, r, used, u, rl, conf, ctx, now)
    local l = r.limit_ref
    local moved = false
    if u and (u.provider ~= rl.call.provider or u.requested_model ~= rl.call.model) then
        -- another provider or model served it (ai-proxy-multi fallback): the keys that name them move
        for _, src in ipairs(l.by) do
            if src[1] == "provider" or src[1] == "model" then moved = true end
        end
    end
    if moved then
        changes[#changes + 1] = { r.key, -r.amount, r.ttl, r.where }
        local k = limits.keys(l.by, ctx, { provider = u.provider, model = u.requested_model })[r.kidx]
        if k then
            local prefix = limits.key_prefix(l.pcache, "airl", conf.scope, ctx, l.id, k[1])
            changes[#changes + 1] = { prefix .. floor(now / l.spec.window), used, 2 * l.spec.window + 1, r.where }
        end
    elseif used ~= r.amount then
        changes[#changes + 1] = { r.key, used - r.amount, r.ttl, r.where }
    end
end

local function log_phase(conf, ctx)
    local rl = ctx._ai_rl
    if rl and rl.charge then
        return fast_log(ctx, rl, limits.store(conf, _M.name))
    end
    if not rl or not rl.res then
        return
    end
    local p, c, cost, real = call.used(rl, ctx)
    local u = real and sluice.ai.get_usage(ctx) or nil
    local now = limits.now()
    local changes = {}
    local res = rl.res
    local n = #res
    if n >= 1 then charge(changes, res[1], amount(res[1].limit_ref.metric, p, c, cost), u, rl, conf, ctx, now) end
    if n >= 2 then charge(changes, res[2], amount(res[2].limit_ref.metric, p, c, cost), u, rl, conf, ctx, now) end
    for i = 3, n do
        local r = res[i]
        charge(changes, r, amount(r.limit_ref.metric, p, c, cost), u, rl, conf, ctx, now)
    end
    rl.res = nil
    if #changes > 0 then
        rl.st:adjust_many(changes) -- one round trip for every limit of the request
    end
end

function _M.log(conf, ctx)
    local a, b = log_phase(conf, ctx)
    return a, b
end

return _M

-- sluice.cache.stats: ai-cache's counters on this node (every worker), per namespace, in the cache's shared dict:
-- requests by cache status and what the hits saved (tokens, and USD from the providers' price tables). GET
-- /admin/cache reports them per route (sluice.admin.cache), so what the cache is worth is visible without adding
-- up access log lines.
--
--   stats.count(d, ns, status, rec)   -- log phase: status "HIT" | "MISS" | "BYPASS" | "REFRESH"; rec: the usage
--                                     -- record (its saved_* fields on a hit)
--   local t = stats.read(d, ns)       -- {hits, misses, bypasses, refreshes, saved_prompt_tokens,
--                                     --  saved_completion_tokens, saved_cost}
--
-- The same goes to sluice.metrics (the prometheus plugin's /metrics, docs/observability.md), by route:
--   sluice_ai_cache_total{route, result}              result: hit | miss | bypass | refresh
--   sluice_ai_cache_saved_tokens_total{route}          tokens the hits did not pay for (prompt + completion)
--   sluice_ai_cache_saved_cost_usd_total{route}        USD the hits did not pay for (the providers' price tables)
--
-- Items "m:NS:FIELD" (no TTL; counted since the node started, or since a sync that found this node too far behind
-- the purge log emptied the dict: sluice.cache.store). Recently used, so the dict's LRU keeps them.
local metrics = require("sluice.pdk.metrics")

local type, tonumber, pairs, ipairs = type, tonumber, pairs, ipairs
local add = metrics.add

local _M = {}

local STATUS = { HIT = "hits", MISS = "misses", BYPASS = "bypasses", REFRESH = "refreshes" }
local RESULT = { HIT = "hit", MISS = "miss", BYPASS = "bypass", REFRESH = "refresh" }

-- declared by the prometheus plugin too (same name and labels: the same metric)
local m_cache = metrics.counter("sluice_ai_cache_total", "AI response cache lookups by result (hit, miss)",
    { "route", "result" })
local m_tokens = metrics.counter("sluice_ai_cache_saved_tokens_total",
    "Tokens AI response cache hits did not pay for (prompt and completion)", { "route" })
local m_cost = metrics.counter("sluice_ai_cache_saved_cost_usd_total",
    "USD AI response cache hits did not pay for, from the providers' price tables", { "route" })
local SAVED = { "saved_prompt_tokens", "saved_completion_tokens", "saved_cost" }

-- item names per namespace, made once (no string building per request); namespaces come from the config
local names = {}
local function names_of(ns)
    local t = names[ns]
    if not t then
        t = {}
        for status, field in pairs(STATUS) do t[status] = "m:" .. ns .. ":" .. field end
        for _, field in ipairs(SAVED) do t[field] = "m:" .. ns .. ":" .. field end
        names[ns] = t
    end
    return t
end

-- The series of a route (metrics handles: no label lookup per request), made on first use; route ids come from
-- the config, so there are as many as routes with ai-cache.
local handles = {}
local function handles_of(route)
    local h = handles[route]
    if not h then
        h = { tokens = m_tokens:handle(route), cost = m_cost:handle(route) }
        for status, result in pairs(RESULT) do h[status] = m_cache:handle(route, result) end
        handles[route] = h
    end
    return h
end

--- Counts one request of namespace ns on route (its id) with cache status status (rec: its usage record, or nil).
function _M.count(d, ns, route, status, rec)
    local t = names_of(ns)
    local item = t[status]
    if not item then
        return
    end
    local h = handles_of(route)
    d:incr(item, 1, 0)
    add(h[status], 1)
    if status == "HIT" and type(rec) == "table" then
        -- field by field, not a loop over SAVED: a loop of three rounds aborts the caller's trace (inner loop in
        -- root trace) and this runs in the log phase of every hit
        local p, c = tonumber(rec.saved_prompt_tokens), tonumber(rec.saved_completion_tokens)
        local cost = tonumber(rec.saved_cost)
        if p and p > 0 then d:incr(t.saved_prompt_tokens, p, 0) end
        if c and c > 0 then d:incr(t.saved_completion_tokens, c, 0) end
        if cost and cost > 0 then d:incr(t.saved_cost, cost, 0) end
        local tokens = (p or 0) + (c or 0)
        if tokens > 0 then add(h.tokens, tokens) end
        if cost and cost > 0 then add(h.cost, cost) end
    end
end

--- The counters of namespace ns (zeros for what was never counted).
function _M.read(d, ns)
    local t = names_of(ns)
    local out = {}
    for status, field in pairs(STATUS) do out[field] = tonumber(d:get(t[status])) or 0 end
    for _, field in ipairs(SAVED) do out[field] = tonumber(d:get(t[field])) or 0 end
    return out
end

return _M

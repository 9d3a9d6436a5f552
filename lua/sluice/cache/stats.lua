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

--- Counts one request of namespace ns on route (its id) with cache status status (rec: its usage record, or nil).
function _M.count(d, ns, route, status, rec)
    local t = names_of(ns)
    local item = t[status]
    if not item then
        return
    end
    d:incr(item, 1, 0)
    m_cache:inc(1, route, RESULT[status])
    if status == "HIT" and type(rec) == "table" then
        for i = 1, #SAVED do
            local f = SAVED[i]
            local v = tonumber(rec[f])
            if v and v > 0 then
                d:incr(t[f], v, 0)
            end
        end
        local tokens = (tonumber(rec.saved_prompt_tokens) or 0) + (tonumber(rec.saved_completion_tokens) or 0)
        if tokens > 0 then m_tokens:inc(tokens, route) end
        local cost = tonumber(rec.saved_cost) or 0
        if cost > 0 then m_cost:inc(cost, route) end
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

-- sluice.limits.budget: spending budgets of consumers and consumer groups (USD per UTC day and per calendar month,
-- UTC), kept as counters of nano-USD in the store that plugin_metadata.ai-budget names ({policy, dict, fail_mode};
-- default: this node's shared dict `sluice`). Used by the ai-budget plugin (reserve before the call, charge after)
-- and by the Admin API (GET /admin/consumers/{name}/usage).
local limits = require("sluice.limits")

local type, ipairs, tonumber, floor, max = type, ipairs, tonumber, math.floor, math.max
local format, date = string.format, os.date

local _M = {}

local NANO = 1e9
_M.NANO = NANO

local DEFAULT_STORE = { policy = "local", dict = "sluice", fail_mode = "open" }

--- The store settings of budgets in a config (plugin_metadata.ai-budget, or the defaults).
function _M.store_conf(cfg)
    local m = type(cfg) == "table" and type(cfg.plugin_metadata) == "table" and cfg.plugin_metadata["ai-budget"]
    return type(m) == "table" and m or DEFAULT_STORE
end

-- Days since 1970-01-01 of a civil date (proleptic Gregorian), and back: H. Hinnant's algorithms.
local function days_from_civil(y, m, d)
    y = m <= 2 and y - 1 or y
    local era = floor(y / 400)
    local yoe = y - era * 400
    local doy = floor((153 * (m + (m > 2 and -3 or 9)) + 2) / 5) + d - 1
    local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
    return era * 146097 + doe - 719468
end

--- The period a budget counts in at time now: id (part of the counter key), label, seconds until it resets, and
--- its length (the counter's ttl).
function _M.period(kind, now)
    if kind == "daily" then
        local day = floor(now / 86400)
        return "d" .. day, date("!%Y-%m-%d", day * 86400), (day + 1) * 86400 - now, 86400
    end
    local y, m = tonumber(date("!%Y", now)), tonumber(date("!%m", now))
    local ny, nm = m == 12 and y + 1 or y, m == 12 and 1 or m + 1
    local start, nxt = days_from_civil(y, m, 1) * 86400, days_from_civil(ny, nm, 1) * 86400
    return format("m%04d%02d", y, m), format("%04d-%02d", y, m), nxt - now, nxt - start
end

--- The budgets that apply to a consumer: {{owner = "consumer alice" | "group staff", kind = "consumer" |
--- "group", name, period = "daily" | "monthly", limit (nano-USD), usd}}, from the consumer and its groups.
function _M.budgets_of(cfg, c, groups)
    local out = {}
    local function add(kind, name, b)
        if type(b) ~= "table" then
            return
        end
        for _, period in ipairs({ "daily", "monthly" }) do
            local usd = b[period]
            if type(usd) == "number" then
                out[#out + 1] = { owner = kind .. " " .. name, kind = kind, name = name, period = period, usd = usd,
                                  limit = floor(usd * NANO + 0.5) }
            end
        end
    end
    if type(c) ~= "table" then
        return out
    end
    add("consumer", c.name, c.budget)
    local gs = type(cfg) == "table" and cfg.consumer_groups or {}
    for _, g in ipairs(groups or c.groups or {}) do
        add("group", g, type(gs[g]) == "table" and gs[g].budget or nil)
    end
    return out
end

--- The counter key of a budget in the period at now.
function _M.key(b, now)
    local id = _M.period(b.period, now)
    return "budget:" .. (b.kind == "group" and "g:" or "c:") .. limits.safe(b.name) .. ":" .. id
end

--- USD text of a nano-USD count: "$1.25".
function _M.usd(n)
    local s = format("%.6f", max(0, n) / NANO):gsub("0+$", ""):gsub("%.$", "")
    return s
end

--- What each budget of a consumer stands at (the usage endpoint): a list of {owner, period, period_label,
--- limit_usd, spent_usd, remaining_usd, resets_in}; nil, err when the store cannot be read.
function _M.usage(cfg, c, now)
    local st, err = limits.store(_M.store_conf(cfg), "ai-budget")
    if not st then
        return nil, err
    end
    local out = {}
    for _, b in ipairs(_M.budgets_of(cfg, c)) do
        local spent, gerr = st:get(_M.key(b, now))
        if gerr then
            return nil, gerr
        end
        spent = spent or 0
        local _, label, reset = _M.period(b.period, now)
        out[#out + 1] = { owner = b.owner, period = b.period, period_label = label, limit_usd = b.usd,
                          spent_usd = spent / NANO, remaining_usd = max(0, b.limit - spent) / NANO,
                          resets_in = floor(reset) }
    end
    return out
end

return _M

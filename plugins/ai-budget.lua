-- ai-budget: spending budgets of consumers and consumer groups, in USD at the providers' prices.
--
--   consumers:
--     - {name: alice, keys: ["${ALICE_KEY}"], groups: [research], budget: {daily: 5, monthly: 100}}
--   consumer_groups:
--     research: {budget: {monthly: 2000}}        # one budget shared by every member
--   plugin_metadata:
--     ai-budget: {policy: memcached, fail_mode: closed}   # where spend is counted (default: local, open)
--   routes:
--     - id: chat
--       plugins: {key-auth: {}, ai-proxy: {provider: openai-main}, ai-budget: {}}     # status: 429 | 403
--
-- Before the call (access, after ai-proxy) the call's cost is estimated (the prompt counted locally and the
-- client's max_tokens, at the provider's `price`) and reserved in every budget of the consumer and its groups:
-- a budget already spent, or one the estimate does not fit in, refuses the call (429 by default, or 403) in the
-- client's API shape, saying which budget, how much is spent and when it resets. After the response (log) the
-- reservation is replaced by the call's real cost (usage record: provider-reported tokens, streams included, cut
-- streams count what was delivered). Days are UTC days, months calendar months in UTC.
-- GET /admin/consumers/{name}/usage shows spend and what remains.
local sluice = require("sluice")
local limits = require("sluice.limits")
local budget = require("sluice.limits.budget")
local call = require("sluice.limits.call")

local type, ipairs, tostring, ceil = type, ipairs, tostring, math.ceil
local format = string.format

local _M = {
    name = "ai-budget", version = "1.0",
    priority = 1035, -- access, after ai-proxy (1040), before ai-rate-limit (1030)
    schema = {
        type = "object",
        additionalProperties = false,
        properties = { status = { type = "status", enum = { 429, 403 }, default = 429 } },
    },
    metadata_schema = {
        type = "object",
        additionalProperties = false,
        properties = limits.store_schema({}),
    },
}

function _M.access(conf, ctx)
    local c = ctx.consumer
    if type(c) ~= "table" then
        return
    end
    local list = budget.budgets_of(ctx.config, c, sluice.consumer.groups(ctx))
    if #list == 0 then
        return
    end
    local st, serr = limits.store(budget.store_conf(ctx.config), _M.name)
    if not st then
        return limits.refuse(ctx, 503, "ai-budget: " .. tostring(serr))
    end
    local cl = call.call_of(ctx)
    local p, comp = call.estimate(cl, true, true)
    local est = call.cost_nano(cl.price, p, comp)
    local now = limits.now()
    -- the estimate reserved in every budget at once (one round trip), all or nothing
    local items, periods, keys, amounts, ttls = {}, {}, {}, {}, {}
    for i, b in ipairs(list) do
        local _, label, reset, len = budget.period(b.period, now)
        items[i] = { budget.key(b, now), est, len + 86400 }
        keys[i], amounts[i], ttls[i] = items[i][1], est, items[i][3]
        periods[i] = { label, reset }
    end
    local counts, wheres = st:incr_many(keys, amounts, ttls)
    if not counts then
        return limits.refuse(ctx, 503, "budget store unavailable: " .. tostring(wheres))
    end
    for i, b in ipairs(list) do
        local n = counts[i]
        local before = n - est
        if before >= b.limit or n > b.limit then
            local back = {}
            for k = 1, #items do back[k] = { items[k][1], -est, items[k][3], wheres[k] } end
            st:adjust_many(back)
            local label, reset = periods[i][1], periods[i][2]
            local msg
            if before >= b.limit then
                msg = format("Budget exceeded: %s has spent $%s of its %s budget of $%s for %s; it resets in %ds.",
                    b.owner, budget.usd(before), b.period, budget.usd(b.limit), label, ceil(reset))
            else
                msg = format("Budget exceeded: this call may cost up to $%s, and %s has $%s left of its %s budget "
                    .. "of $%s for %s; it resets in %ds.", budget.usd(est), b.owner, budget.usd(b.limit - before),
                    b.period, budget.usd(b.limit), label, ceil(reset))
            end
            local u = sluice.ai.get_usage(ctx) -- the AI call's record says why it was not made
            if u then
                u.status, u.error = conf.status, msg
            end
            return limits.refuse(ctx, conf.status, msg, nil, "insufficient_quota", true,
                conf.status == 429 and "insufficient_quota" or "permission_error")
        end
    end
    ctx._ai_budget = { st = st, items = items, wheres = wheres, p = p, c = comp, cost = est }
end

function _M.log(conf, ctx)
    local b = ctx._ai_budget
    if not b or not b.items then
        return
    end
    local _, _, used = call.used(b, ctx)
    if used ~= b.cost then
        local changes = {}
        for i, it in ipairs(b.items) do
            changes[i] = { it[1], used - b.cost, it[3], b.wheres[i] }
        end
        b.st:adjust_many(changes)
    end
    b.items = nil
end

return _M

-- sluice.limits.call: what an AI call is about to cost and what it did cost, for ai-rate-limit and ai-budget.
--
--   local cl = call.call_of(ctx)                   -- {op, request, provider, model, served, price}
--   local p, c = call.estimate(cl, true, true)     -- prompt tokens (local count), completion reserve (max_tokens)
--   local nano = call.cost_nano(cl.price, p, c)    -- USD * 1e9, rounded up
--   local p, c, nano, real = call.used(rec, ctx)   -- after the response: the usage record's, or the estimate
local ai = require("sluice.pdk.ai")
local request = require("sluice.pdk.request")
local tokens = require("sluice.ai.tokens")

local type, ipairs, tonumber, pcall = type, ipairs, tonumber, pcall
local floor, ceil, huge = math.floor, math.ceil, math.huge

local _M = {}

local NANO = 1e9 -- cost counters count nano-USD: integers, exact in memcached and in doubles up to $9M
_M.NANO = NANO

local function num(v)
    return type(v) == "number" and v >= 0 and v < huge and floor(v) or nil
end

--- The request's call: {op, request (canonical), provider, model (as asked), served, price} from sluice.ai, or
--- read from the JSON body when the route makes no AI call.
function _M.call_of(ctx)
    local a = ctx.ai
    if a and a.request then
        local pname, prov = ai.get_provider(ctx)
        local requested, served = ai.get_model(ctx)
        local price = type(prov) == "table" and type(prov.price) == "table" and (prov.price[requested or ""]
            or prov.price[served or ""]) or nil
        local _, op = ai.get_api(ctx)
        return { op = op, request = a.request, provider = pname, model = requested, served = served, price = price }
    end
    local body = ctx.method == "POST" and request.get_json(ctx) or nil
    if type(body) ~= "table" then
        return { op = "chat", provider = a and a.provider_name or nil }
    end
    local canon = body
    if body.system ~= nil and type(body.messages) == "table" then -- Anthropic: system is top level
        canon = { messages = { { role = "system", content = body.system } }, max_tokens = body.max_tokens }
        for _, m in ipairs(body.messages) do canon.messages[#canon.messages + 1] = m end
    end
    local op = body.input ~= nil and "embeddings" or (body.prompt ~= nil and "completions") or "chat"
    return { op = op, request = canon, provider = a and a.provider_name or nil,
             model = type(body.model) == "string" and body.model or nil }
end

--- Estimated (prompt tokens, completion tokens reserved) of a call: the local count of the prompt
--- (sluice.ai.tokens), and the client's max_tokens (or max_completion_tokens) for the completion, 0 when unset.
function _M.estimate(cl, need_prompt, need_completion)
    local req = cl.request
    local p, c = 0, 0
    if need_prompt and type(req) == "table" then
        local ok, n = pcall(tokens.count_request, cl.op, req)
        p = ok and tonumber(n) or 0
    end
    if need_completion and type(req) == "table" and cl.op ~= "embeddings" then
        c = num(req.max_completion_tokens) or num(req.max_tokens) or 0
    end
    return p, c
end

--- Cost of p prompt and c completion tokens at price ({input, output} USD per million), in nano-USD.
function _M.cost_nano(price, p, c)
    if type(price) ~= "table" then
        return 0
    end
    return ceil((p * (tonumber(price.input) or 0) + c * (tonumber(price.output) or 0)) * (NANO / 1e6))
end

--- What a finished request used: prompt, completion, cost (nano-USD), and whether an AI call's usage record
--- says so. Without an AI call the estimates kept in rec ({p, c, cost}) stand; a call that never went out
--- (another plugin answered first) used nothing.
function _M.used(rec, ctx)
    local u = ai.get_usage(ctx)
    if not u then
        return rec.p, rec.c, rec.cost, false
    end
    if u.status == nil then
        return 0, 0, 0, true
    end
    return u.prompt_tokens or 0, u.completion_tokens or 0, floor((u.cost or 0) * NANO + 0.5), true
end

return _M

-- sluice.limits.call: what an AI call is about to cost and what it did cost, for ai-rate-limit and ai-budget.
--
--   local cl = call.call_of(ctx)                   -- {op, request, provider, model, served, price}
--   local p, c = call.estimate(cl, true, true)     -- prompt tokens (bytes / 4), completion reserve (max_tokens)
--   local nano = call.cost_nano(cl.price, p, c)    -- USD * 1e9, rounded up
--   local p, c, nano, real = call.used(rec, ctx)   -- after the response: the usage record's, or the estimate
local ai = require("sluice.pdk.ai")
local request = require("sluice.pdk.request")

local type, ipairs, tonumber = type, ipairs, tonumber
local floor, ceil, huge = math.floor, math.ceil, math.huge

local json_encode = require("sluice.pdk.json").encode

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

local IMAGE = 85 -- tokens of an image part: OpenAI's base cost of a low-detail tile (as sluice.ai.tokens counts it)

-- (bytes of text, tokens counted as such) of a message's content: a string, or parts with text or images.
local function content_len(content)
    if type(content) == "string" then
        return #content, 0
    end
    local n, t = 0, 0
    if type(content) == "table" then
        for _, part in ipairs(content) do
            if type(part) == "table" then
                if type(part.text) == "string" then
                    n = n + #part.text
                elseif part.type == "image_url" or part.type == "image" then
                    t = t + IMAGE
                end
            end
        end
    end
    return n, t
end

-- (bytes of text, tokens counted as such) of a prompt or an input: a string, or a list of strings and token ids.
local function input_len(v)
    if type(v) == "string" then
        return #v, 0
    end
    local n, t = 0, 0
    if type(v) == "table" then
        for _, x in ipairs(v) do
            if type(x) == "string" then
                n = n + #x
            elseif type(x) == "number" then
                t = t + 1 -- pre-tokenized input: one token id
            end
        end
    end
    return n, t
end

-- bytes and n (tokens counted as such) with one message added
local function add_message(m, bytes, n)
    if type(m) ~= "table" then
        return bytes, n
    end
    local b, t = content_len(m.content)
    bytes, n = bytes + b, n + 4 + t
    local calls = m.tool_calls
    if type(calls) == "table" then
        for _, tc in ipairs(calls) do
            local f = type(tc) == "table" and tc["function"]
            if type(f) == "table" and type(f.arguments) == "string" then
                bytes = bytes + #f.arguments
            end
        end
    end
    return bytes, n
end

--- Estimated prompt tokens of a canonical request: one per 4 bytes of text (the usual rule of thumb for English),
--- plus 4 per message, 3 for the reply and 85 per image; a function call's arguments and tool definitions count
--- by the bytes of their JSON text, pre-tokenized input one per token id. Cheap by design: it runs on every
--- request of a limited route, before the call (the usage after the call corrects it).
function _M.prompt_tokens(op, req)
    if type(req) ~= "table" then
        return 0
    end
    if op == "embeddings" or op == "completions" then
        local n, t = input_len(op == "embeddings" and req.input or req.prompt)
        return t + ceil(n / 4)
    end
    local bytes, n = 0, 3
    local msgs = req.messages
    if type(msgs) == "table" then
        -- the first two messages outside the loop (a system prompt and a question are the common request; a
        -- loop of one or two rounds never compiles in LuaJIT, nor the trace around it); ipairs' semantics
        local m1, m2 = msgs[1], msgs[2]
        if m1 ~= nil then
            bytes, n = add_message(m1, bytes, n)
            if m2 ~= nil then
                bytes, n = add_message(m2, bytes, n)
                for i = 3, #msgs do
                    local m = msgs[i]
                    if m == nil then break end
                    bytes, n = add_message(m, bytes, n)
                end
            end
        end
    end
    if type(req.tools) == "table" and #req.tools > 0 then
        bytes = bytes + #(json_encode(req.tools) or "")
    end
    return n + ceil(bytes / 4)
end

--- Estimated (prompt tokens, completion tokens reserved) of a call: the prompt as prompt_tokens counts it, and
--- the client's max_tokens (or max_completion_tokens) for the completion, 0 when unset.
function _M.estimate(cl, need_prompt, need_completion)
    local req = cl.request
    local p, c = 0, 0
    if need_prompt then
        p = _M.prompt_tokens(cl.op, req)
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

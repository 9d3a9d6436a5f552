-- sluice.ai.usage: the usage record of one AI call (ctx.ai.usage) and the readers that fill it: the provider's
-- `"usage":{...}` object found by plain search (scan_usage), else a local token estimate over the request and
-- the completion text (completion_text_of). Shared by the non-streaming path (sluice.ai.proxy) and the
-- streaming one (sluice.ai.stream); sluice.ai.proxy re-exports new_usage, finish_usage and scan_usage.
local base = require("sluice.pdk.base")
local common = require("sluice.ai.common")
local json = require("sluice.ai.common.json")
local cjson = require("cjson.safe")

local C = base.C
local type, ipairs, tonumber, pcall, require = type, ipairs, tonumber, pcall, require
local match = string.match
local concat = table.concat
local decode = cjson.decode
local usage_numbers, usage_at = json.usage_numbers, json.usage_at

local _M = {}

local tokens_mod
local function tokens()
    if tokens_mod == nil then
        local ok, m = pcall(require, "sluice.ai.tokens")
        tokens_mod = ok and m or false
    end
    return tokens_mod or nil
end

--- A fresh usage record for ctx.ai (fields filled in as the call goes on).
local function new_usage(ctx, ai)
    local consumer = rawget(ctx, "consumer") -- unset: no call of the context's __index
    return {
        consumer = type(consumer) == "table" and consumer.name or nil,
        route = ctx.route and ctx.route.id or nil,
        provider = ai.provider_name,
        provider_kind = ai.provider and ai.provider.kind or nil,
        api = ai.api,
        op = ai.op,
        stream = ai.stream or false,
        requested_model = ai.requested_model,
        model = ai.model,
        prompt_tokens = 0, completion_tokens = 0, total_tokens = 0,
        cached_tokens = nil, reasoning_tokens = nil,
        cost = 0, estimated = false,
        latency = nil, ttft = nil, status = nil,
        retries = 0, fallbacks = 0, cache = nil,
    }
end
_M.new_usage = new_usage

--- Price entry of a provider for the requested or served model name.
local function price_of(provider, ai)
    local price = provider and provider.price
    if type(price) ~= "table" then
        return nil
    end
    return price[ai.requested_model or ""] or price[ai.model or ""]
end

-- Fills token numbers (u: normalized usage or nil -> local estimate), cost, latency and status. cut: "client" |
-- "upstream" for a stream cut short (then the estimate covers completion_text, what the client got, whatever the
-- status).
local function finish_usage(ctx, ai, u, status, completion_text, cut)
    local rec = ai.usage
    rec.cut = cut
    if u then
        rec.prompt_tokens = u.prompt_tokens or 0
        rec.completion_tokens = u.completion_tokens or 0
        rec.total_tokens = u.total_tokens or (rec.prompt_tokens + rec.completion_tokens)
        rec.cached_tokens = u.cached_tokens
        rec.reasoning_tokens = u.reasoning_tokens
    elseif (cut or (status and status < 400)) and ai.request then
        local t = tokens()
        if t then
            local ok, p = pcall(t.count_request, ai.op, ai.request)
            local okc, c = pcall(t.count_text, completion_text or "")
            rec.prompt_tokens = ok and tonumber(p) or 0
            rec.completion_tokens = okc and tonumber(c) or 0
            rec.total_tokens = rec.prompt_tokens + rec.completion_tokens
            rec.estimated = true
        end
    end
    local price = price_of(ai.provider, ai)
    if price then
        rec.cost = (rec.prompt_tokens * (price.input or 0) + rec.completion_tokens * (price.output or 0)) / 1e6
    end
    rec.status = status
    rec.model = ai.model
    rec.latency = C.sl_time() - ai.t0
end
_M.finish_usage = finish_usage

-- The `"usage":{...}` object of an OpenAI body or chunk, decoded and normalized (nil when absent or null).
-- A plain search, in C (json.usage_at: one FFI call and no loop here, so callers' traces are not aborted by an
-- inner loop): `"usage"` with unescaped quotes can only be a key, since quotes inside JSON strings are escaped.
-- The last one wins (the top-level usage comes last in OpenAI bodies).
local function scan_usage(s, from)
    local at = usage_at(s, from)
    if not at then
        return nil
    end
    -- the usual object (numbers, null, one level of *_details) read in C: no decode, no table but the result
    local p, c, total, cached, reasoning = usage_numbers(s, at)
    if p then
        return { prompt_tokens = p, completion_tokens = c, total_tokens = total or (p + c),
                 cached_tokens = cached, reasoning_tokens = reasoning }
    end
    local obj = match(s, "^%b{}", at)
    if not obj then
        return nil
    end
    return common.normalize_usage(decode(obj))
end
_M.scan_usage = scan_usage

local function completion_text_of(resp)
    local ch = type(resp) == "table" and resp.choices
    if type(ch) ~= "table" then
        return ""
    end
    local out = {}
    for _, c in ipairs(ch) do
        local m = type(c) == "table" and (c.message or c.delta)
        if type(m) == "table" then
            out[#out + 1] = common.content_text(m.content)
            if type(m.tool_calls) == "table" then
                for _, tc in ipairs(m.tool_calls) do
                    local f = type(tc) == "table" and tc["function"]
                    if type(f) == "table" and type(f.arguments) == "string" then
                        out[#out + 1] = f.arguments
                    end
                end
            end
        elseif type(c) == "table" and type(c.text) == "string" then
            out[#out + 1] = c.text
        end
    end
    return concat(out)
end
_M.completion_text_of = completion_text_of

-- The access log's "ai" object of rec, written by C (sl_req_log_ai) from one reused struct: a Lua table for it
-- and its encoding cost about a tenth of an AI request. A field the record does not have is left out.
local ffi = require("ffi")
local NAN = 0 / 0
local line = ffi.new("sl_log_ai_t")

local function num(v)
    return type(v) == "number" and v or NAN
end

local function ms(v)
    return type(v) == "number" and v * 1000 or NAN
end

-- What `line` holds now. line is reused and only the fields that differ from the last request are stored: a cdata
-- field store from interpreted code is a call into the VM (a few hundred instructions), and most fields repeat
-- (provider, model, status, flags). The strings line points at stay referenced here while it does.
local held = { status = 0, prompt_tokens = 0, completion_tokens = 0, cost = 0, ttft_ms = 0, latency_ms = 0,
               saved_tokens = 0, saved_cost = 0, estimated = 0, stream = 0 }

-- x differs from held y: NaN ("absent") equals NaN; 0 and -0 differ (they are written differently)
local function differs(x, y)
    if x == y then
        return x == 0 and 1 / x ~= 1 / y
    end
    return x == x or y == y
end

--- Adds rec's "ai" object to ctx's access log line; true, or nil and an error (the line would be too long).
function _M.log_access(ctx, rec)
    local a, h = line, held
    local s = rec.provider
    if type(s) ~= "string" then s = nil end
    if s ~= h.provider then
        h.provider = s
        if s then a.provider, a.provider_len = s, #s else a.provider = nil end
    end
    s = rec.model
    if type(s) ~= "string" then s = nil end
    if s ~= h.model then
        h.model = s
        if s then a.model, a.model_len = s, #s else a.model = nil end
    end
    s = rec.requested_model
    if type(s) ~= "string" then s = nil end
    if s ~= h.requested_model then
        h.requested_model = s
        if s then a.requested_model, a.requested_model_len = s, #s else a.requested_model = nil end
    end
    s = rec.cut
    if type(s) ~= "string" then s = nil end
    if s ~= h.cut then
        h.cut = s
        if s then a.cut, a.cut_len = s, #s else a.cut = nil end
    end
    s = rec.cache
    if type(s) ~= "string" then s = nil end
    if s ~= h.cache then
        h.cache = s
        if s then a.cache, a.cache_len = s, #s else a.cache = nil end
    end
    local v = num(rec.status)
    if differs(v, h.status) then h.status = v; a.status = v end
    v = num(rec.prompt_tokens)
    if differs(v, h.prompt_tokens) then h.prompt_tokens = v; a.prompt_tokens = v end
    v = num(rec.completion_tokens)
    if differs(v, h.completion_tokens) then h.completion_tokens = v; a.completion_tokens = v end
    v = num(rec.cost)
    if differs(v, h.cost) then h.cost = v; a.cost = v end
    v = ms(rec.ttft)
    if differs(v, h.ttft_ms) then h.ttft_ms = v; a.ttft_ms = v end
    v = ms(rec.latency)
    if differs(v, h.latency_ms) then h.latency_ms = v; a.latency_ms = v end
    v = num(rec.saved_total_tokens)
    if differs(v, h.saved_tokens) then h.saved_tokens = v; a.saved_tokens = v end
    v = num(rec.saved_cost)
    if differs(v, h.saved_cost) then h.saved_cost = v; a.saved_cost = v end
    v = rec.estimated and 1 or 0
    if v ~= h.estimated then h.estimated = v; a.estimated = v end
    v = rec.stream and 1 or 0
    if v ~= h.stream then h.stream = v; a.stream = v end
    if C.sl_req_log_ai(ctx.req, a) ~= 0 then
        return nil, "access log line too long"
    end
    return true
end

return _M

-- sluice.ai: the AI call of the running request (set up by ai-proxy / ai-proxy-multi in access).
--
--   local req = sluice.ai.get_request()     -- canonical (OpenAI Chat Completions) request table; edit in access
--   local name, conf = sluice.ai.get_provider()
--   local requested, served = sluice.ai.get_model()
--   local ok, n, temperature = sluice.ai.get_sampling()  -- read without decoding the request where it can be
--   local u = sluice.ai.get_usage()         -- the usage record (complete in log):
--     {consumer, route, provider, provider_kind, api, op, stream, requested_model, model, prompt_tokens,
--      completion_tokens, total_tokens, cached_tokens, reasoning_tokens, cost (USD), estimated, latency (s),
--      ttft (s), status, retries, fallbacks, error, safety (the content-safety plugins' outcomes: get_safety),
--      cache ("HIT" | "MISS" | "BYPASS" | "REFRESH" when ai-cache runs), and on a hit cache_layer ("l1" | "l2"),
--      cache_match ("exact" | "coalesced" | "semantic"), cache_similarity (semantic), saved_prompt_tokens,
--      saved_completion_tokens, saved_total_tokens, saved_cost (USD: what the provider call would have cost);
--      docs/caching.md}
--   local s = sluice.ai.get_safety()        -- {guard, pii, moderation} outcomes (docs/ai-safety.md)
--
-- Phases: access (after ai-proxy, priority < 1040), header_filter, body_filter, log. Outside an AI route every
-- getter returns nil.
local base = require("sluice.pdk.base")
local get_ctx = base.get_ctx
local type, ipairs, tonumber, rawget = type, ipairs, tonumber, rawget
local concat = table.concat

local _M = {}

--- True when the request is an AI call.
function _M.is_ai(ctx)
    ctx = ctx or get_ctx()
    return ctx.ai ~= nil
end

--- The client's API ("openai" | "anthropic") and operation ("chat" | "completions" | "embeddings" | "models").
function _M.get_api(ctx)
    ctx = ctx or get_ctx()
    local ai = ctx.ai
    if not ai then return nil end
    return ai.api, ai.op
end

--- The parsed request in canonical form (the table sent upstream: changes made in access are sent).
function _M.get_request(ctx)
    ctx = ctx or get_ctx()
    ctx._json_out = true -- it may be changed in place: sluice.ai.proxy then encodes it
    return ctx.ai and ctx.ai.request or nil
end

local function number_of(v)
    return type(v) == "number" and v or type(v) == "string" and tonumber(v) or nil
end

--- true, n, temperature the client asked for (each nil when absent or null); nil when there is no request table.
--- On the lean path (a chat request not decoded: sluice.ai.proxy) they come from its scan, and the request stays
--- undecoded: a plugin that only needs these (ai-cache) costs no JSON decode.
function _M.get_sampling(ctx)
    ctx = ctx or get_ctx()
    local ai = ctx.ai
    if not ai then return nil end
    if ai.lean and rawget(ai, "request") == nil then
        return true, ai.lean_n, ai.lean_temperature
    end
    local req = ai.request
    if type(req) ~= "table" then return nil end
    return true, number_of(req.n), number_of(req.temperature)
end

--- Provider name and its config table.
function _M.get_provider(ctx)
    ctx = ctx or get_ctx()
    local ai = ctx.ai
    if not ai then return nil end
    return ai.provider_name, ai.provider
end

--- Model the client asked for and the name sent upstream.
function _M.get_model(ctx)
    ctx = ctx or get_ctx()
    local ai = ctx.ai
    if not ai then return nil end
    return ai.requested_model, ai.model
end

--- The usage record (see the top of this file); nil outside an AI call.
function _M.get_usage(ctx)
    ctx = ctx or get_ctx()
    return ctx.ai and ctx.ai.usage or nil
end

--- What the content-safety plugins did to this request: {guard = {...}, pii = {...}, moderation = {...}} (each
--- section only when its plugin ran; docs/ai-safety.md), or nil. Works without ai-proxy too (a guard refusal comes
--- before it); on an AI call the usage record carries the same table as usage.safety.
function _M.get_safety(ctx)
    ctx = ctx or get_ctx()
    return ctx.safety
end

--- The text of an OpenAI or Anthropic message content: the string itself, or the text parts / blocks of a list
--- joined by newlines; nil when it has no text (images, tool calls alone, not a content at all).
function _M.text_of(content)
    if type(content) == "string" then return content end
    if type(content) ~= "table" then return nil end
    local parts = {}
    for _, p in ipairs(content) do
        if type(p) == "table" and p.type == "text" and type(p.text) == "string" then parts[#parts + 1] = p.text end
    end
    return #parts > 0 and concat(parts, "\n") or nil
end

--- Adds text to an Anthropic request body's `system` (absent, a string, or a list of blocks), before or after what
--- the client sent there.
function _M.add_anthropic_system(body, text, before)
    local sys = body.system
    if type(sys) == "table" then
        local blocks = {}
        if before then blocks[1] = { type = "text", text = text } end
        for _, b in ipairs(sys) do blocks[#blocks + 1] = b end
        if not before then blocks[#blocks + 1] = { type = "text", text = text } end
        body.system = blocks
    elseif type(sys) == "string" and sys ~= "" then
        body.system = before and (text .. "\n\n" .. sys) or (sys .. "\n\n" .. text)
    else
        body.system = text
    end
end

--- True when the client asked for a stream.
function _M.is_stream(ctx)
    ctx = ctx or get_ctx()
    return ctx.ai and ctx.ai.stream or false
end

return _M

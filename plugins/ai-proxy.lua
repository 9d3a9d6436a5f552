-- ai-proxy: sends a route's AI requests to one provider from the top-level `providers` map.
--
--   providers:
--     openai-main: {kind: openai, api_key: "${OPENAI_API_KEY}", models: {gpt-4o-mini: gpt-4o-mini},
--                   price: {gpt-4o-mini: {input: 0.15, output: 0.60}}}
--   routes:
--     - id: chat
--       paths: ["/v1/chat/completions", "/v1/embeddings", "/v1/models", "/v1/messages"]
--       plugins:
--         ai-proxy: {provider: openai-main, model: gpt-4o-mini, timeout: {connect: 5s, read: 2m},
--                    max_event_size: 1m}
--
-- Clients speak OpenAI (/chat/completions, /completions, /embeddings, GET /models) or Anthropic (/messages),
-- recognized by the path suffix; the provider's driver translates both ways, streams included. `model` forces
-- the model whatever the client asks for. Runs in access (priority 1040: after the prompt plugins, which edit
-- the client's JSON in rewrite, and before plugins that read sluice.ai); the upstream call itself is made in
-- the upstream stage, after every access plugin (sluice.upstream.take_over). See docs/ai-proxy.md.
local sluice = require("sluice")
local ai_proxy = require("sluice.ai.proxy")

local timeout = {
    type = "object",
    additionalProperties = false,
    properties = {
        -- seconds, or "500ms", "30s", "2m": plain seconds after validation
        connect = { type = "duration", exclusiveMinimum = 0, maximum = 3600 },
        send = { type = "duration", exclusiveMinimum = 0, maximum = 3600 },
        read = { type = "duration", exclusiveMinimum = 0, maximum = 3600 },
    },
}

local schema = {
    type = "object",
    required = { "provider" },
    additionalProperties = false,
    properties = {
        provider = { type = "string", minLength = 1, ref = "providers" }, -- must name one of `providers`
        model = { type = "string", minLength = 1 },
        timeout = timeout,
        -- the largest line or event accepted in a provider's stream (bytes); past it the stream ends with an error
        max_event_size = { type = "size", minimum = 1024, maximum = 1073741824, default = 1048576 },
    },
}

local _M = { name = "ai-proxy", version = "1.0", priority = 1040, schema = schema }

function _M.access(conf, ctx)
    local status, body = ai_proxy.prepare(ctx, conf)
    if status then
        return status, body
    end
    sluice.upstream.take_over(ai_proxy.run, ctx)
end

-- One "ai" object per request in the access log: what was asked, what served it, what it cost.
function _M.log(conf, ctx)
    local u = sluice.ai.get_usage(ctx)
    if not u or not sluice.log.access_enabled() then
        return
    end
    -- provider, model, requested_model, status, prompt_tokens, completion_tokens, cost, estimated, stream, cut,
    -- ttft_ms, latency_ms (3 decimals), and from ai-cache (docs/caching.md) cache (HIT | MISS | BYPASS | REFRESH),
    -- saved_tokens, saved_cost: written by C from the record, without a table and its encoding
    ai_proxy.log_usage(ctx, u)
end

return _M

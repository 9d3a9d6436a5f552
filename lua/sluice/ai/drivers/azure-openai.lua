-- sluice.ai.drivers.azure-openai: Azure OpenAI Service.
--   POST {endpoint}/openai/deployments/{deployment}/chat/completions?api-version={api_version}
--   auth: `api-key: <key>` (or `Authorization: Bearer <token>` with options.auth = "bearer", for Entra ID)
-- deployment = provider.deployment, else the (mapped) model name; api_version defaults to 2024-10-21 (GA,
-- supports stream_options). Same wire format as OpenAI; Azure's content-filter-only chunks (choices: [] with
-- prompt_filter_results, no usage) are dropped from streams.
local common = require("sluice.ai.common")
local openai = require("sluice.ai.drivers.openai")
local nn = common.nn

local DEFAULT_API_VERSION = "2024-10-21"

return openai.family({
    kind = "azure-openai",
    endpoint_required = true,
    url = function(provider, op, body, opts, ep)
        local version = "?api-version=" .. common.urlencode(provider.api_version or DEFAULT_API_VERSION)
        if op == "models" then
            return ep.base .. "/openai/models" .. version
        end
        local deployment = provider.deployment or (type(body) == "table" and body.model)
        if type(deployment) ~= "string" or deployment == "" then
            return nil, "azure-openai: provider.deployment (or a model name) is required"
        end
        return ep.base .. "/openai/deployments/" .. common.urlencode(deployment) .. openai.OP_PATH[op] .. version
    end,
    auth = function(provider, h)
        local o = provider.options or {}
        if provider.api_key and provider.api_key ~= "" then
            if o.auth == "bearer" then
                h["Authorization"] = "Bearer " .. provider.api_key
            else
                h["api-key"] = provider.api_key
            end
        end
    end,
    filter_chunk = function(_, chunk)
        local choices = chunk.choices
        if (type(choices) ~= "table" or choices[1] == nil) and nn(chunk.usage) == nil then
            return nil -- prompt_filter_results-only chunk
        end
        return chunk
    end,
})

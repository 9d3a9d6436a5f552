-- sluice.ai.drivers.azure-openai: Azure OpenAI Service.
--   POST {endpoint}/openai/deployments/{deployment}/chat/completions?api-version={api_version}
--   auth: `api-key: <key>` (or `Authorization: Bearer <token>` with options.auth = "bearer", for Entra ID)
-- deployment = provider.deployment, else the (mapped) model name; api_version defaults to 2024-10-21 (GA,
-- supports stream_options). Same wire format as OpenAI, with what the api-version takes (the reference:
-- inference/stable/2024-10-21/inference.json; 2024-12-01-preview and later add the developer role, store,
-- metadata, reasoning_effort, prediction, modalities, audio):
--   * parameters it does not take are dropped (or refused: options.drop_params = false);
--   * `developer` messages become `system` before 2024-12-01-preview;
--   * user content parts other than text and image_url (and input_audio from 2024-12-01-preview) are refused;
--   * stream_options keeps include_usage only.
-- Azure's content-filter-only chunks (choices: [] with prompt_filter_results, no usage) are dropped from
-- streams, for OpenAI clients too (the stream never goes through as raw bytes).
local common = require("sluice.ai.common")
local json = require("sluice.ai.common.json")
local params = require("sluice.ai.common.params")
local openai = require("sluice.ai.drivers.openai")

local type, ipairs, tostring = type, ipairs, tostring
local nn = json.nn

local DEFAULT_API_VERSION = "2024-10-21"
local NEWER = "2024-12-01" -- api-versions from this date on take the later OpenAI parameters

local GA_PARAMS = { "temperature", "top_p", "n", "stop", "max_tokens", "max_completion_tokens", "presence_penalty",
    "frequency_penalty", "logit_bias", "user", "logprobs", "top_logprobs", "parallel_tool_calls", "response_format",
    "seed", "tools", "tool_choice", "functions", "function_call", "data_sources" }
local LATER_PARAMS = { "reasoning_effort", "store", "metadata", "prediction", "modalities", "audio",
    "user_security_context" }
local ACCEPTS = { [false] = params.set(params.BASE, GA_PARAMS),
                  [true] = params.set(params.BASE, GA_PARAMS, LATER_PARAMS) }

local function newer(provider)
    return tostring(provider.api_version or DEFAULT_API_VERSION):sub(1, 10) >= NEWER
end

local USER_PARTS = { [false] = { text = true, image_url = true },
    [true] = { text = true, image_url = true, input_audio = true } }

local function message(provider, m, i)
    local later = newer(provider)
    if m.role == "developer" and not later then
        m = json.shallow_copy(m)
        m.role = "system"
    end
    if m.role == "user" and type(m.content) == "table" then
        for _, p in ipairs(m.content) do
            local t = type(p) == "table" and p.type or nil
            if not USER_PARTS[later][t] then
                return nil, "azure-openai: messages[" .. (i - 1) .. "]: " .. tostring(t) .. " content parts are not "
                    .. "supported by api-version " .. tostring(provider.api_version or DEFAULT_API_VERSION)
            end
        end
    end
    return m
end

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
    accepts = function(provider) return ACCEPTS[newer(provider)] end,
    message = message,
    stream_options = { include_usage = true },
    max_stop = 4,
    stream_passthrough = false,
    filter_chunk = function(_, chunk)
        local choices = chunk.choices
        if (type(choices) ~= "table" or choices[1] == nil) and nn(chunk.usage) == nil then
            return nil -- prompt_filter_results-only chunk
        end
        return chunk
    end,
})

-- sluice.ai.drivers.deepseek: DeepSeek (api.deepseek.com), OpenAI-compatible.
--   POST https://api.deepseek.com/chat/completions, `Authorization: Bearer <key>`;
--   completions -> /beta/completions (FIM); no embeddings.
-- What DeepSeek documents (api-docs.deepseek.com/api/create-chat-completion) and what is done about the rest:
--   * parameters: frequency_penalty, max_tokens, presence_penalty, response_format, stop, stream,
--     stream_options.include_usage, temperature, top_p, tools, tool_choice, logprobs, top_logprobs;
--     max_completion_tokens becomes max_tokens; the others (n, seed, user, logit_bias, parallel_tool_calls,
--     metadata, store, service_tier...) are dropped, or refused with options.drop_params = false;
--   * roles system, user, assistant, tool: `developer` becomes `system`; every content is a string: text parts
--     are joined with "\n", any other part (images, audio, files) is refused; an assistant's refusal, audio and
--     function_call are dropped;
--   * `reasoning_content` (deepseek-reasoner) is kept in responses and stream deltas and removed from input
--     messages (DeepSeek rejects it there); json_schema response_format -> json_object (JSON mode only);
--   * usage prompt_cache_hit_tokens -> cached_tokens.
local json = require("sluice.ai.common.json")
local params = require("sluice.ai.common.params")
local openai = require("sluice.ai.drivers.openai")

local type, ipairs, tostring = type, ipairs, tostring
local nn = json.nn

local ACCEPTS = params.set(params.BASE, { "temperature", "top_p", "stop", "max_tokens", "max_completion_tokens",
    "presence_penalty", "frequency_penalty", "logprobs", "top_logprobs", "response_format", "tools",
    "tool_choice" })
local ROLES = { system = true, user = true, assistant = true, tool = true }
local ASSISTANT_DROPS = { "refusal", "audio", "function_call" }

-- content -> a string (text parts joined with "\n") | nil, the type of the first part that is not text
local function flat(content)
    if type(content) ~= "table" then return content end
    for _, p in ipairs(content) do
        local t = type(p) == "table" and p.type or nil
        if t ~= "text" and t ~= "refusal" then return nil, tostring(t) end
    end
    local out = {}
    for _, p in ipairs(content) do
        local t = p.text or p.refusal
        if type(t) == "string" then out[#out + 1] = t end
    end
    return table.concat(out, "\n")
end

local function message(_, m, i)
    local nm = m
    local function copy() if nm == m then nm = json.shallow_copy(m) end end
    if m.role == "developer" then copy() nm.role = "system" end
    if not ROLES[nm.role] then
        return nil, "deepseek: messages[" .. (i - 1) .. "]: role " .. tostring(m.role) .. " is not supported"
    end
    if type(m.content) == "table" then
        local s, bad = flat(m.content)
        if not s then
            return nil, "deepseek: messages[" .. (i - 1) .. "]: " .. bad .. " content parts are not supported "
                .. "(DeepSeek takes text only)"
        end
        copy()
        nm.content = s
    end
    if m.role == "assistant" then
        for _, k in ipairs(ASSISTANT_DROPS) do
            if m[k] ~= nil then copy() nm[k] = nil end
        end
    end
    return nm
end

return openai.family({
    kind = "deepseek",
    default_endpoint = "https://api.deepseek.com",
    default_base = "",
    paths = { chat = "/chat/completions", completions = "/beta/completions", models = "/models" },
    auth = function(provider, h)
        if provider.api_key and provider.api_key ~= "" then h["Authorization"] = "Bearer " .. provider.api_key end
    end,
    accepts = function() return ACCEPTS end,
    message = message,
    stream_options = { include_usage = true },
    max_stop = 16,
    transform = function(provider, op, body)
        if op ~= "chat" then return body end
        local rf = nn(body.response_format)
        if type(rf) == "table" and rf.type == "json_schema" then
            body.response_format = { type = "json_object" }
        end
        local mct = nn(body.max_completion_tokens)
        body.max_completion_tokens = nil
        if nn(body.max_tokens) == nil and mct ~= nil then body.max_tokens = mct end
        return body
    end,
})

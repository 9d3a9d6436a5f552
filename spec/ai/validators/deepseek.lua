-- Strict validator of DeepSeek API requests, written from the DeepSeek API reference
-- (api-docs.deepseek.com/api/create-chat-completion, /api/create-completion):
--   POST https://api.deepseek.com/chat/completions (also under /v1), POST /beta/completions (FIM), GET /models
--   auth: Authorization: Bearer <key>
-- Messages: roles system, user, assistant, tool only; every content is a string (no parts arrays); the
-- assistant may carry prefix/reasoning_content (beta prefix completion). Parameters: frequency_penalty,
-- max_tokens, presence_penalty, response_format (text | json_object), stop (string or up to 16), stream,
-- stream_options.include_usage, temperature (0-2), top_p (0-1), tools (up to 128), tool_choice, logprobs,
-- top_logprobs (0-20), thinking. No n, seed, user, logit_bias, parallel_tool_calls, max_completion_tokens,
-- metadata, store, service_tier...
local C = require("ai.validators.check")
local O = require("ai.validators.openai")

local str, bool, obj, nullable = C.str, C.bool, C.obj, C.nullable
local add = C.add
local P = O.P

local _M = {}

local chat = O.family({
    roles = { system = true, user = true, assistant = true, tool = true },
    string_only = true,
    assistant_prefix = true,
    params = {
        stream = P.stream, stream_options = nullable(obj({ include_usage = bool() })),
        temperature = P.temperature, top_p = P.top_p, stop = P.stop(16), max_tokens = P.max_tokens,
        presence_penalty = P.penalty, frequency_penalty = P.penalty,
        logprobs = P.logprobs, top_logprobs = P.top_logprobs,
        tools = P.tools(128), tool_choice = P.tool_choice,
        response_format = nullable(P.response_format({ "text", "json_object" })),
        thinking = nullable(obj({ type = str({ enum = { "enabled", "disabled" } }) }, { required = { "type" } })),
    },
})

local fim = obj({
    model = str(), prompt = str(), suffix = nullable(str()), echo = nullable(bool()), max_tokens = P.max_tokens,
    temperature = P.temperature, top_p = P.top_p, stream = P.stream, stream_options = P.stream_options,
    logprobs = nullable(C.int({ min = 0, max = 20 })), stop = P.stop(16), presence_penalty = P.penalty,
    frequency_penalty = P.penalty,
}, { required = { "model", "prompt" } })

function _M.check(req)
    local errs = {}
    local h = C.headers(req.headers)
    local path = C.split_query(req.path)
    O.bearer(h, errs)
    if path == "/models" or path == "/v1/models" then O.head(req, h, errs, "GET") return errs end
    O.head(req, h, errs)
    if path == "/chat/completions" or path == "/v1/chat/completions" then
        chat(req.body, "", errs, {})
        O.structure(req.body, errs)
    elseif path == "/beta/completions" then
        fim(req.body, "", errs, {})
    else
        add(errs, "path", "no such endpoint: " .. tostring(req.path))
    end
    return errs
end

return _M

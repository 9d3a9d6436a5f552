-- Strict validator of Azure OpenAI data-plane requests, written from the Azure OpenAI REST reference
-- (specification/cognitiveservices/data-plane/AzureOpenAI/inference/stable/2024-10-21/inference.json):
--   POST {endpoint}/openai/deployments/{deployment-id}/{chat/completions|completions|embeddings}?api-version=V
--   GET  {endpoint}/openai/models?api-version=V
-- auth: `api-key: <key>` or `Authorization: Bearer <Entra ID token>`. The GA 2024-10-21 request has no
-- developer role, no store/metadata/service_tier/reasoning_effort/prediction/modalities/audio (they arrive with
-- 2024-12-01-preview), user content parts are text and image_url only, `stop` holds at most 4 sequences.
local C = require("ai.validators.check")
local O = require("ai.validators.openai")

local str, bool, arr, obj, nullable = C.str, C.bool, C.arr, C.obj, C.nullable
local add = C.add
local P = O.P

local _M = {}

local NEWER = "2024-12-01" -- api-versions from this date on take the later OpenAI parameters

local function params(newer)
    local p = {
        stream = P.stream, stream_options = nullable(obj({ include_usage = bool() })),
        temperature = P.temperature, top_p = P.top_p, n = P.n, stop = P.stop(4),
        max_tokens = P.max_tokens, max_completion_tokens = P.max_tokens,
        presence_penalty = P.penalty, frequency_penalty = P.penalty, logit_bias = P.logit_bias,
        logprobs = P.logprobs, top_logprobs = P.top_logprobs, user = P.user, seed = P.seed,
        tools = P.tools(128), tool_choice = P.tool_choice, parallel_tool_calls = P.parallel_tool_calls,
        response_format = P.response_format({ "text", "json_object", "json_schema" }),
        functions = P.functions, function_call = P.function_call,
        data_sources = arr(obj({ type = str({ enum = { "azure_search", "azure_cosmos_db" } }),
            parameters = C.any() }, { required = { "type" } })),
    }
    if newer then
        local o = O.OPENAI_PARAMS
        p.store, p.metadata, p.reasoning_effort = o.store, o.metadata, o.reasoning_effort
        p.prediction, p.modalities, p.audio = o.prediction, o.modalities, o.audio
        p.user_security_context = obj({}, { open = true })
    end
    return p
end

local function chat(newer)
    return O.family({
        roles = { system = true, user = true, assistant = true, tool = true, ["function"] = true, developer = newer },
        user_parts = { text = O.text_part, image_url = O.image_part },
        params = params(newer), max_call_id = 40,
    })
end
local CHAT = { [false] = chat(false), [true] = chat(true) }

local completions = obj({
    model = str(), prompt = C.any(), suffix = nullable(str()), max_tokens = P.max_tokens, temperature = P.temperature,
    top_p = P.top_p, n = P.n, stream = P.stream, stream_options = P.stream_options, logprobs = C.any(),
    echo = nullable(bool()), stop = P.stop(4), presence_penalty = P.penalty, frequency_penalty = P.penalty,
    best_of = C.any(), logit_bias = P.logit_bias, user = P.user, seed = P.seed,
}, { required = { "prompt" } })

local embeddings = obj({ model = str(), input = C.any(), user = P.user, input_type = str(),
    encoding_format = str({ enum = { "float", "base64" } }), dimensions = C.int({ min = 1 }) },
    { required = { "input" } })

function _M.check(req)
    local errs = {}
    local h = C.headers(req.headers)
    local path, query = C.split_query(req.path)
    local version = query["api-version"]
    if type(version) ~= "string" or not version:match("^%d%d%d%d%-%d%d%-%d%d") then
        add(errs, "query api-version", "missing or malformed: " .. tostring(version))
        version = "2024-10-21"
    end
    if not (h["api-key"] and h["api-key"] ~= "") then
        local a = h["authorization"]
        if type(a) ~= "string" or not a:match("^Bearer %S+$") then
            add(errs, "header api-key", "either api-key or Authorization: Bearer is required")
        end
    end
    if path == "/openai/models" then O.head(req, h, errs, "GET") return errs end
    local dep, op = path:match("^/openai/deployments/([^/]+)/(.+)$")
    if not dep then
        add(errs, "path", "no such endpoint: " .. tostring(req.path))
        return errs
    end
    O.head(req, h, errs)
    local newer = version:sub(1, 10) >= NEWER
    if op == "chat/completions" then
        CHAT[newer](req.body, "", errs, {})
        O.structure(req.body, errs)
    elseif op == "completions" then
        completions(req.body, "", errs, {})
    elseif op == "embeddings" then
        embeddings(req.body, "", errs, {})
    else
        add(errs, "path", "no such operation: " .. op)
    end
    return errs
end

return _M

-- Strict validator of OpenAI Chat Completions requests (POST /v1/chat/completions, and the legacy
-- /v1/completions, /v1/embeddings, GET /v1/models), written from the OpenAI API reference
-- (platform.openai.com/docs/api-reference/chat/create). `openai.family(o)` builds the variants of the
-- providers that speak a subset of it (azure-openai.lua, deepseek.lua).
local C = require("ai.validators.check")

local str, num, int, bool, arr, obj, map, nullable, alt, union =
    C.str, C.num, C.int, C.bool, C.arr, C.obj, C.map, C.nullable, C.alt, C.union
local add, join = C.add, C.join

local _M = {}

local NAME = "^[a-zA-Z0-9_%-]+$" -- function names: a-z, A-Z, 0-9, _ and -, at most 64

local text_part = obj({ type = C.const("text"), text = str() }, { required = { "type", "text" } })
local image_part = obj({ type = C.const("image_url"), image_url = obj({
    url = str({ min = 1 }), detail = str({ enum = { "auto", "low", "high" } }) }, { required = { "url" } }) },
    { required = { "type", "image_url" } })
local audio_part = obj({ type = C.const("input_audio"), input_audio = obj({ data = str(),
    format = str({ enum = { "wav", "mp3" } }) }, { required = { "data", "format" } }) },
    { required = { "type", "input_audio" } })
local file_part = obj({ type = C.const("file"), file = obj({ file_data = str(), file_id = str(), filename = str() }) },
    { required = { "type", "file" } })
local refusal_part = obj({ type = C.const("refusal"), refusal = str() }, { required = { "type", "refusal" } })

-- content: a string, or a non-empty array of the parts `variants` allows
local function content(variants, allow_string)
    local parts = arr(union("type", variants, "content part type"), { min = 1 })
    if allow_string == false then return str() end
    return alt({ { test = C.is_string, check = str() }, { test = C.is_array, check = parts } },
        "a string or an array of content parts")
end

local function tool_call(o)
    return obj({
        id = str({ min = 1, max = o.max_call_id }), -- OpenAI: "string too long. Expected ... maximum length 40"
        type = C.const("function"),
        ["function"] = obj({ name = str({ min = 1, max = 64, pattern = NAME }), arguments = str() },
            { required = { "name", "arguments" } }),
    }, { required = { "id", "type", "function" } })
end

local function json_schema_obj(v, path, errs)
    if not C.is_object(v) then add(errs, path, "expected a JSON Schema object, got " .. C.describe(v)) end
end

--- The checkers of a family member. o:
---   roles         {role = true} allowed roles
---   string_only   content must be a string (no parts arrays)
---   user_parts    part types allowed in user content (default text, image_url, input_audio, file)
---   params        {name = checker} top-level parameters besides model/messages
function _M.family(o)
    local user_parts = o.user_parts or { text = text_part, image_url = image_part, input_audio = audio_part,
        file = file_part }
    local so = o.string_only and false or nil
    local messages = {
        developer = obj({ role = str(), content = content({ text = text_part }, so), name = str() },
            { required = { "role", "content" } }),
        system = obj({ role = str(), content = content({ text = text_part }, so), name = str() },
            { required = { "role", "content" } }),
        user = obj({ role = str(), content = content(user_parts, so), name = str() },
            { required = { "role", "content" } }),
        assistant = o.assistant_prefix and obj({ -- DeepSeek: content, name, tool_calls, prefix, reasoning_content
            role = str(), content = nullable(str()), name = str(), tool_calls = arr(tool_call(o), { min = 1 }),
            prefix = bool(), reasoning_content = nullable(str()),
        }, { required = { "role" } }) or obj({
            role = str(),
            content = nullable(content({ text = text_part, refusal = refusal_part }, so)),
            name = str(), refusal = nullable(str()),
            tool_calls = arr(tool_call(o), { min = 1 }),
            function_call = nullable(obj({ name = str(), arguments = str() }, { required = { "name", "arguments" } })),
            audio = nullable(obj({ id = str() }, { required = { "id" } })),
        }, { required = { "role" } }),
        tool = obj({ role = str(), content = content({ text = text_part }, so), tool_call_id = str({ min = 1 }) },
            { required = { "role", "content", "tool_call_id" } }),
        ["function"] = obj({ role = str(), content = nullable(str()), name = str() },
            { required = { "role", "content", "name" } }),
    }
    local allowed = {}
    for r in pairs(o.roles) do allowed[r] = messages[r] end
    local message = union("role", allowed, "role")
    local fields = { model = str({ min = 1 }), messages = arr(message, { min = 1 }) }
    for k, v in pairs(o.params) do fields[k] = v end
    return obj(fields, { open = o.open, required = o.require_model == false and { "messages" } or { "model", "messages" } })
end

-- Structural rules OpenAI enforces beyond the schema (the real 400s quoted).
function _M.structure(body, errs, o)
    local msgs = type(body) == "table" and body.messages
    if not C.is_array(msgs) then return end
    local pending, pending_at = nil, nil -- tool_call ids of the last assistant message still unanswered
    for i, m in ipairs(msgs) do
        local path = join("messages", i - 1)
        if type(m) == "table" then
            if m.role == "tool" then
                if not pending or not pending[m.tool_call_id] then
                    add(errs, path, "messages with role 'tool' must be a response to a preceding message with "
                        .. "'tool_calls' (tool_call_id " .. tostring(m.tool_call_id) .. ")")
                else
                    pending[m.tool_call_id] = nil
                end
            else
                if pending and next(pending) then
                    local ids = {}
                    for id in pairs(pending) do ids[#ids + 1] = id end
                    table.sort(ids)
                    add(errs, pending_at, "an assistant message with 'tool_calls' must be followed by tool messages "
                        .. "responding to each 'tool_call_id'; missing: " .. table.concat(ids, ", "))
                end
                pending = nil
                if m.role == "assistant" and C.is_array(m.tool_calls) and #m.tool_calls > 0 then
                    pending, pending_at = {}, path
                    for _, tc in ipairs(m.tool_calls) do
                        if type(tc) == "table" and type(tc.id) == "string" then pending[tc.id] = true end
                    end
                end
            end
        end
    end
    if pending and next(pending) then
        add(errs, pending_at, "an assistant message with 'tool_calls' must be followed by tool messages responding "
            .. "to each 'tool_call_id'")
    end
    local so = body.stream_options
    if so ~= nil and so ~= C.null and body.stream ~= true then
        add(errs, "stream_options", "only allowed when 'stream' is enabled")
    end
    if body.top_logprobs ~= nil and body.top_logprobs ~= C.null and body.logprobs ~= true then
        add(errs, "top_logprobs", "'logprobs' must be true when 'top_logprobs' is set")
    end
    if o and o.extra then o.extra(body, errs) end
end

-- parameters, shared by the family members
local P = {}
_M.P = P
P.temperature = nullable(num({ min = 0, max = 2 }))
P.top_p = nullable(num({ min = 0, max = 1 }))
P.penalty = nullable(num({ min = -2, max = 2 }))
P.max_tokens = nullable(int({ min = 1 }))
P.n = nullable(int({ min = 1, max = 128 }))
P.stream = nullable(bool())
P.stream_options = nullable(obj({ include_usage = bool(), include_obfuscation = bool() }))
P.stop = function(max)
    return nullable(alt({ { test = C.is_string, check = str() },
        { test = C.is_array, check = arr(str(), { min = 1, max = max }) } }, "a string or an array of strings"))
end
P.logit_bias = nullable(map(num({ min = -100, max = 100 }), { key = str({ pattern = "^%d+$" }) }))
P.user = str()
P.seed = nullable(int())
P.logprobs = nullable(bool())
P.top_logprobs = nullable(int({ min = 0, max = 20 }))
P.tools = function(max)
    return arr(union("type", {
        ["function"] = obj({ type = str(), ["function"] = obj({
            name = str({ min = 1, max = 64, pattern = NAME }), description = str(),
            parameters = json_schema_obj, strict = nullable(bool()) }, { required = { "name" } }) },
            { required = { "type", "function" } }),
    }, "tool type"), { max = max })
end
P.tool_choice = alt({
    { test = C.is_string, check = str({ enum = { "none", "auto", "required" } }) },
    { test = C.is_object, check = obj({ type = C.const("function"), ["function"] = obj({ name = str() },
        { required = { "name" } }) }, { required = { "type", "function" } }) },
}, "'none', 'auto', 'required' or a named tool choice")
P.response_format = function(types)
    local variants = {
        text = obj({ type = str() }),
        json_object = obj({ type = str() }),
        json_schema = obj({ type = str(), json_schema = obj({ name = str({ min = 1, max = 64, pattern = NAME }),
            description = str(), schema = json_schema_obj, strict = nullable(bool()) }, { required = { "name" } }) },
            { required = { "type", "json_schema" } }),
    }
    local allowed = {}
    for _, t in ipairs(types) do allowed[t] = variants[t] end
    return union("type", allowed, "response_format type")
end
P.parallel_tool_calls = nullable(bool())
P.metadata = nullable(map(str({ max = 512 }), { max = 16, key = str({ max = 64 }) }))
P.functions = arr(obj({ name = str({ pattern = NAME }), description = str(), parameters = json_schema_obj },
    { required = { "name" } }), { min = 1, max = 128 })
P.function_call = alt({ { test = C.is_string, check = str({ enum = { "none", "auto" } }) },
    { test = C.is_object, check = obj({ name = str() }, { required = { "name" } }) } }, "'none', 'auto' or {name}")

local OPENAI_PARAMS = {
    stream = P.stream, stream_options = P.stream_options,
    temperature = P.temperature, top_p = P.top_p, n = P.n, stop = P.stop(4),
    max_tokens = P.max_tokens, max_completion_tokens = P.max_tokens,
    presence_penalty = P.penalty, frequency_penalty = P.penalty, logit_bias = P.logit_bias,
    logprobs = P.logprobs, top_logprobs = P.top_logprobs, user = P.user, seed = P.seed,
    tools = P.tools(), tool_choice = P.tool_choice, parallel_tool_calls = P.parallel_tool_calls,
    response_format = P.response_format({ "text", "json_object", "json_schema" }),
    functions = P.functions, function_call = P.function_call,
    metadata = P.metadata, store = nullable(bool()),
    service_tier = nullable(str({ enum = { "auto", "default", "flex", "scale", "priority" } })),
    reasoning_effort = nullable(str({ enum = { "none", "minimal", "low", "medium", "high", "xhigh" } })),
    verbosity = nullable(str({ enum = { "low", "medium", "high" } })),
    modalities = nullable(arr(str({ enum = { "text", "audio" } }))),
    audio = nullable(obj({ voice = str(), format = str() }, { required = { "voice", "format" } })),
    prediction = nullable(obj({ type = C.const("content"), content = alt({ { test = C.is_string, check = str() },
        { test = C.is_array, check = arr(text_part) } }, "a string or text parts") }, { required = { "type", "content" } })),
    web_search_options = obj({ search_context_size = str(), user_location = nullable(C.any()) }),
    prompt_cache_key = str(), prompt_cache_retention = nullable(str({ enum = { "in-memory", "24h" } })),
    safety_identifier = str(),
}

local chat = _M.family({
    roles = { developer = true, system = true, user = true, assistant = true, tool = true, ["function"] = true },
    params = OPENAI_PARAMS, max_call_id = 40,
})

local completions = obj({
    model = str({ min = 1 }), prompt = C.any(), suffix = nullable(str()), max_tokens = nullable(int({ min = 0 })),
    temperature = P.temperature, top_p = P.top_p, n = P.n, stream = P.stream, stream_options = P.stream_options,
    logprobs = nullable(int({ min = 0, max = 5 })), echo = nullable(bool()), stop = P.stop(4),
    presence_penalty = P.penalty, frequency_penalty = P.penalty, best_of = nullable(int({ min = 0, max = 20 })),
    logit_bias = P.logit_bias, user = P.user, seed = P.seed,
}, { required = { "model", "prompt" } })

local embeddings = obj({
    model = str({ min = 1 }), input = C.any(), encoding_format = str({ enum = { "float", "base64" } }),
    dimensions = int({ min = 1 }), user = P.user,
}, { required = { "model", "input" } })

--- Checks the auth header: Authorization: Bearer <token>.
function _M.bearer(h, errs)
    local a = h["authorization"]
    if type(a) ~= "string" or not a:match("^Bearer %S+$") then
        add(errs, "header authorization", "expected 'Bearer <key>', got " .. tostring(a))
    end
end

--- Checks the request head common to the JSON APIs: method and content type.
function _M.head(req, h, errs, method)
    if req.method ~= (method or "POST") then add(errs, "method", "expected " .. (method or "POST") .. ", got " .. tostring(req.method)) end
    if (method or "POST") == "POST" then
        local ct = h["content-type"]
        if type(ct) ~= "string" or not ct:lower():find("^application/json") then
            add(errs, "header content-type", "expected application/json, got " .. tostring(ct))
        end
    end
end

local OPS = {
    ["/v1/chat/completions"] = { "chat", chat }, ["/v1/completions"] = { "completions", completions },
    ["/v1/embeddings"] = { "embeddings", embeddings }, ["/v1/models"] = { "models" },
}

local COMPAT_PARAMS = {}
for k, v in pairs(OPENAI_PARAMS) do COMPAT_PARAMS[k] = v end
COMPAT_PARAMS.stop = P.stop() -- vLLM, Ollama, llama.cpp take any number
local compat_chat = _M.family({
    roles = { developer = true, system = true, user = true, assistant = true, tool = true, ["function"] = true },
    params = COMPAT_PARAMS, open = true,
})

--- openai-compatible servers (vLLM, Ollama...): any base path, extra sampling parameters (top_k...), the OpenAI
--- message rules.
function _M.check_compatible(req)
    local errs = {}
    local h = C.headers(req.headers)
    local path = C.split_query(req.path)
    local op = path:match("/(chat/completions)$") or path:match("/(completions)$") or path:match("/(embeddings)$")
        or path:match("/(models)$")
    if not op then
        add(errs, "path", "no such endpoint: " .. tostring(req.path))
        return errs
    end
    if op == "models" then _M.head(req, h, errs, "GET") return errs end
    _M.head(req, h, errs)
    if op == "chat/completions" then
        compat_chat(req.body, "", errs, {})
        _M.structure(req.body, errs)
    end
    return errs
end

--- Checks a request {method, path, headers, body (decoded table)} -> errs.
function _M.check(req)
    local errs = {}
    local h = C.headers(req.headers)
    local path = C.split_query(req.path)
    local op = OPS[path:match("^.-(/v1/[%a/]+)$") or path] -- a base path may come before /v1 (an endpoint override)
    if not op then
        add(errs, "path", "no such endpoint: " .. tostring(req.method) .. " " .. tostring(req.path))
        return errs
    end
    _M.bearer(h, errs)
    if op[1] == "models" then _M.head(req, h, errs, "GET") return errs end
    _M.head(req, h, errs)
    op[2](req.body, "", errs, {})
    if op[1] == "chat" then _M.structure(req.body, errs) end
    return errs
end

_M.chat = chat
_M.text_part, _M.image_part, _M.refusal_part, _M.file_part, _M.audio_part =
    text_part, image_part, refusal_part, file_part, audio_part
_M.OPENAI_PARAMS = OPENAI_PARAMS
return _M

-- sluice.ai.common: helpers shared by the provider drivers and the client-facing API translators.
--
-- Canonical format is the OpenAI Chat Completions request / response / chunk table. Values that are JSON null
-- in upstream bodies are `cjson.null` (a truthy lightuserdata): test them with `common.is_null(v)` / `nn(v)`.
--
-- Empty arrays: the installed lua-cjson (2.1.0) has neither `empty_array` nor `array_mt`, and decodes `[]` to a
-- plain `{}`. `common.json_encode` therefore encodes as `[]`
--   * any table marked with `common.array(t)` (or `common.empty_array`) when empty, and
--   * any empty table under a key that is always an array in the APIs we speak (`choices`, `messages`,
--     `content`, `tool_calls`, `parts`, ... see ARRAY_KEYS), so decoded-then-re-encoded bodies keep their shape.
-- When a newer cjson with `array_mt` is installed, its markers are used as well.
local cjson = require("cjson.safe")

local type, pairs, ipairs, next, tostring, tonumber = type, pairs, ipairs, next, tostring, tonumber
local setmetatable, getmetatable = setmetatable, getmetatable
local concat, insert = table.concat, table.insert
local floor, random = math.floor, math.random
local fmt, byte, char, sub, find, lower, gsub = string.format, string.byte, string.char, string.sub, string.find,
    string.lower, string.gsub

local _M = {}

local null = cjson.null
_M.null = null
_M.cjson = cjson

-- ---------------------------------------------------------------------------------------------------------
-- JSON

local array_mt = cjson.array_mt or { __sluice_array = true }
_M.array_mt = array_mt

--- Marks t (default: a new table) as a JSON array, so it encodes as [] when empty.
function _M.array(t)
    return setmetatable(t or {}, array_mt)
end

-- A shared, never-mutated marker for an empty array.
_M.empty_array = cjson.empty_array or setmetatable({}, {
    __sluice_array = true,
    __newindex = function() error("common.empty_array is read-only", 2) end,
})

local ARRAY_KEYS = {
    choices = true, messages = true, content = true, tool_calls = true, tools = true, stop = true,
    parts = true, contents = true, candidates = true, functionDeclarations = true, stop_sequences = true,
    stopSequences = true, data = true, required = true, enum = true, anyOf = true, oneOf = true, allOf = true,
    safetyRatings = true, system = true, embeddings = true, requests = true, values = true, embedding = true,
    annotations = true,
}
_M.ARRAY_KEYS = ARRAY_KEYS

local SENTINEL = "\1sluice-empty-array\1"
local SENTINEL_PAT = ('"\\u0001sluice-empty-array\\u0001"'):gsub("%p", "%%%0")

local function is_array_marked(t)
    if t == _M.empty_array then return true end
    local mt = getmetatable(t)
    return mt ~= nil and (mt == array_mt or mt.__sluice_array == true)
end

-- Replaces empty arrays by the sentinel string (recording what it changed so it can be restored).
local function mark_empty(t, changed, depth)
    if depth > 64 then return end
    for k, v in pairs(t) do
        if type(v) == "table" then
            if next(v) == nil then
                if is_array_marked(v) or (type(k) == "string" and ARRAY_KEYS[k]) then
                    changed[#changed + 1] = t
                    changed[#changed + 1] = k
                    changed[#changed + 1] = v
                    t[k] = SENTINEL
                end
            else
                mark_empty(v, changed, depth + 1)
            end
        end
    end
end

--- Encodes v as JSON (see the empty-array rules above); returns string | nil, err.
function _M.json_encode(v)
    if type(v) ~= "table" then
        return cjson.encode(v)
    end
    if next(v) == nil then
        return is_array_marked(v) and "[]" or "{}"
    end
    local changed = {}
    mark_empty(v, changed, 0)
    local s, err = cjson.encode(v)
    for i = 1, #changed, 3 do
        changed[i][changed[i + 1]] = changed[i + 2]
    end
    if s and #changed > 0 then
        s = gsub(s, SENTINEL_PAT, "[]")
    end
    return s, err
end

--- Decodes s; returns value | nil, err (never raises).
function _M.json_decode(s)
    if type(s) ~= "string" then return nil, "expected a string" end
    return cjson.decode(s)
end

function _M.is_null(v)
    return v == nil or v == null
end

--- nil for nil / cjson.null, else v.
function _M.nn(v)
    if v == null then return nil end
    return v
end
local nn = _M.nn

-- ---------------------------------------------------------------------------------------------------------
-- small utilities

function _M.shallow_copy(t)
    local r = {}
    for k, v in pairs(t) do r[k] = v end
    return setmetatable(r, getmetatable(t))
end

function _M.deep_copy(t)
    if type(t) ~= "table" then return t end
    local r = {}
    for k, v in pairs(t) do r[k] = _M.deep_copy(v) end
    return setmetatable(r, getmetatable(t))
end

--- Case-insensitive header lookup in a {name = value} table (value may be a list: first entry).
function _M.header(headers, name)
    if not headers then return nil end
    local v = headers[name]
    if v == nil then
        local ln = lower(name)
        v = headers[ln]
        if v == nil then
            for k, val in pairs(headers) do
                if type(k) == "string" and lower(k) == ln then v = val break end
            end
        end
    end
    if type(v) == "table" then v = v[1] end
    return v
end

local ID_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
--- A random id: prefix .. n alphanumerics (default 24).
function _M.new_id(prefix, n)
    local out = {}
    for i = 1, n or 24 do
        local r = random(1, #ID_CHARS)
        out[i] = sub(ID_CHARS, r, r)
    end
    return (prefix or "") .. concat(out)
end

--- Parses "scheme://host[:port][/base]" -> {scheme, host, port, base} | nil, err. base has no trailing "/".
function _M.parse_endpoint(endpoint)
    if type(endpoint) ~= "string" or endpoint == "" then
        return nil, "endpoint is required"
    end
    local scheme, rest = endpoint:match("^(%a[%w+.-]*)://(.+)$")
    if not scheme then
        return nil, "endpoint must look like scheme://host[:port][/path]: " .. endpoint
    end
    scheme = lower(scheme)
    if scheme ~= "http" and scheme ~= "https" then
        return nil, "endpoint scheme must be http or https: " .. endpoint
    end
    local hostport, base = rest:match("^([^/]+)(.*)$")
    if not hostport then return nil, "endpoint has no host: " .. endpoint end
    local host, port = hostport, nil
    if hostport:sub(1, 1) == "[" then -- [v6]:port
        host, port = hostport:match("^(%[.-%])(.*)$")
        port = port and port:match("^:(%d+)$")
    else
        local h, p = hostport:match("^(.-):(%d+)$")
        if h then host, port = h, p end
    end
    port = tonumber(port) or (scheme == "https" and 443 or 80)
    base = (base or ""):gsub("/+$", "")
    return { scheme = scheme, host = host, port = port, base = base }
end

--- Host header value for an endpoint (port only when not the scheme's default).
function _M.host_header(ep)
    if (ep.scheme == "https" and ep.port == 443) or (ep.scheme == "http" and ep.port == 80) then
        return ep.host
    end
    return ep.host .. ":" .. ep.port
end

--- Adds provider.options.headers (extra static headers) to h.
function _M.extra_headers(provider, h)
    local extra = provider.options and provider.options.headers
    if type(extra) == "table" then
        for k, v in pairs(extra) do h[k] = v end
    end
    return h
end

--- Percent-encodes s per RFC 3986 (unreserved characters kept).
function _M.urlencode(s)
    return (gsub(tostring(s), "[^%w%-%._~]", function(c) return fmt("%%%02X", byte(c)) end))
end

--- "data:image/png;base64,AAAA" -> "image/png", "AAAA" (nil when not a base64 data URL).
function _M.parse_data_url(url)
    if type(url) ~= "string" then return nil end
    local mime, data = url:match("^data:([^;,]+);base64,(.*)$")
    return mime, data
end

--- Concatenated text of an OpenAI message content (string | parts array | nil).
function _M.content_text(content)
    if type(content) == "string" then return content end
    if type(content) ~= "table" then return "" end
    local out = {}
    for _, p in ipairs(content) do
        if type(p) == "table" and (p.type == "text" or p.type == "input_text") and type(p.text) == "string" then
            out[#out + 1] = p.text
        elseif type(p) == "string" then
            out[#out + 1] = p
        end
    end
    return concat(out)
end

--- Stop sequences as a list (OpenAI `stop` is a string or an array).
function _M.stop_list(stop)
    if type(stop) == "string" then return { stop } end
    if type(stop) == "table" and #stop > 0 then return stop end
    return nil
end

--- Text to add to a system prompt so providers without native JSON mode honour response_format.
function _M.response_format_instruction(rf)
    if type(rf) ~= "table" then return nil end
    if rf.type == "json_object" then
        return "Respond only with a single valid JSON object, no prose and no code fences."
    elseif rf.type == "json_schema" and type(rf.json_schema) == "table" then
        local schema = rf.json_schema.schema and _M.json_encode(rf.json_schema.schema) or "{}"
        return "Respond only with a single valid JSON value matching this JSON Schema, no prose and no code fences: "
            .. schema
    end
    return nil
end

-- ---------------------------------------------------------------------------------------------------------
-- finish reasons

_M.anthropic_to_finish = {
    end_turn = "stop", stop_sequence = "stop", max_tokens = "length", tool_use = "tool_calls",
    pause_turn = "stop", refusal = "content_filter", model_context_window_exceeded = "length",
}
_M.finish_to_anthropic = {
    stop = "end_turn", length = "max_tokens", tool_calls = "tool_use", function_call = "tool_use",
    content_filter = "refusal",
}
_M.gemini_to_finish = {
    STOP = "stop", MAX_TOKENS = "length", SAFETY = "content_filter", RECITATION = "content_filter",
    BLOCKLIST = "content_filter", PROHIBITED_CONTENT = "content_filter", SPII = "content_filter",
    IMAGE_SAFETY = "content_filter", LANGUAGE = "content_filter", MALFORMED_FUNCTION_CALL = "stop",
    OTHER = "stop", FINISH_REASON_UNSPECIFIED = "stop",
}
_M.bedrock_to_finish = {
    end_turn = "stop", stop_sequence = "stop", max_tokens = "length", tool_use = "tool_calls",
    guardrail_intervened = "content_filter", content_filtered = "content_filter",
    model_context_window_exceeded = "length",
}

-- ---------------------------------------------------------------------------------------------------------
-- usage

--- Normalizes an OpenAI-shape usage table -> {prompt_tokens, completion_tokens, total_tokens, cached_tokens?,
--- reasoning_tokens?} | nil.
function _M.normalize_usage(u)
    u = nn(u)
    if type(u) ~= "table" then return nil end
    local p = tonumber(nn(u.prompt_tokens)) or 0
    local c = tonumber(nn(u.completion_tokens)) or 0
    local r = {
        prompt_tokens = p,
        completion_tokens = c,
        total_tokens = tonumber(nn(u.total_tokens)) or (p + c),
    }
    local pd, cd = nn(u.prompt_tokens_details), nn(u.completion_tokens_details)
    if type(pd) == "table" and tonumber(nn(pd.cached_tokens)) then
        r.cached_tokens = tonumber(pd.cached_tokens)
    elseif tonumber(nn(u.prompt_cache_hit_tokens)) then -- DeepSeek
        r.cached_tokens = tonumber(u.prompt_cache_hit_tokens)
    end
    if type(cd) == "table" and tonumber(nn(cd.reasoning_tokens)) then
        r.reasoning_tokens = tonumber(cd.reasoning_tokens)
    end
    return r
end

--- Builds an OpenAI-shape usage table from normalized numbers.
function _M.openai_usage(prompt, completion, cached, reasoning)
    prompt, completion = prompt or 0, completion or 0
    local u = { prompt_tokens = prompt, completion_tokens = completion, total_tokens = prompt + completion }
    if cached then u.prompt_tokens_details = { cached_tokens = cached } end
    if reasoning then u.completion_tokens_details = { reasoning_tokens = reasoning } end
    return u
end

-- ---------------------------------------------------------------------------------------------------------
-- canonical chunks

--- A chat.completion.chunk with one choice. finish_reason nil -> JSON null.
function _M.chunk(state, delta, finish_reason)
    return {
        id = state.id,
        object = "chat.completion.chunk",
        created = state.created,
        model = state.model,
        choices = { { index = 0, delta = delta or {}, finish_reason = finish_reason or null, logprobs = null } },
    }
end

--- The final usage chunk (choices: []), as OpenAI sends with stream_options.include_usage.
function _M.usage_chunk(state, usage)
    return {
        id = state.id,
        object = "chat.completion.chunk",
        created = state.created,
        model = state.model,
        choices = _M.array(),
        usage = usage,
    }
end

--- "data: {...}\n\n"
function _M.encode_chunk_sse(chunk)
    return "data: " .. (_M.json_encode(chunk) or "{}") .. "\n\n"
end

function _M.done_sse()
    return "data: [DONE]\n\n"
end

-- ---------------------------------------------------------------------------------------------------------
-- errors

local OPENAI_TYPE = {
    [400] = "invalid_request_error", [401] = "authentication_error", [403] = "permission_error",
    [404] = "not_found_error", [408] = "timeout", [409] = "conflict_error", [413] = "invalid_request_error",
    [422] = "invalid_request_error", [429] = "rate_limit_error",
}
local ANTHROPIC_TYPE = {
    [400] = "invalid_request_error", [401] = "authentication_error", [402] = "billing_error",
    [403] = "permission_error", [404] = "not_found_error", [408] = "timeout_error", [413] = "request_too_large",
    [422] = "invalid_request_error", [429] = "rate_limit_error", [503] = "overloaded_error",
    [529] = "overloaded_error", [504] = "timeout_error",
}
local ANTHROPIC_TYPES = {}
for _, v in pairs(ANTHROPIC_TYPE) do ANTHROPIC_TYPES[v] = true end
ANTHROPIC_TYPES.api_error = true

--- Error type for a status in the OpenAI vocabulary.
function _M.openai_error_type(status)
    status = tonumber(status) or 500
    return OPENAI_TYPE[status] or (status >= 500 and "server_error" or "invalid_request_error")
end

--- Error type for a status in the Anthropic vocabulary.
function _M.anthropic_error_type(status)
    status = tonumber(status) or 500
    return ANTHROPIC_TYPE[status] or (status >= 500 and "api_error" or "invalid_request_error")
end

--- Error body in the shape of the client's API.
---   openai:    {error = {message, type, param = null, code}}
---   anthropic: {type = "error", error = {type, message}}
function _M.error_body(api, status, message, typ, code)
    message = message or "error"
    if api == "anthropic" then
        if not (typ and ANTHROPIC_TYPES[typ]) then typ = _M.anthropic_error_type(status) end
        return { type = "error", error = { type = typ, message = message } }
    end
    return {
        error = {
            message = message,
            type = typ or _M.openai_error_type(status),
            param = null,
            code = code == nil and null or code,
        },
    }
end

--- Retry-After (seconds) from response headers, or nil.
function _M.retry_after(headers)
    local ms = tonumber(_M.header(headers, "retry-after-ms"))
    if ms then return ms / 1000 end
    local v = _M.header(headers, "retry-after")
    if v == nil then return nil end
    return tonumber(v) -- HTTP-date form is left to the caller (nil here)
end

--- Generic error table for a non-2xx response whose body we could not understand.
function _M.generic_error(status, headers, body, prefix)
    local msg = type(body) == "string" and body ~= "" and sub(body, 1, 500) or ("HTTP " .. tostring(status))
    return {
        status = tonumber(status) or 502,
        type = _M.openai_error_type(status),
        message = (prefix and (prefix .. ": ") or "") .. msg,
        retry_after = _M.retry_after(headers),
    }
end

--- Error table for an upstream 2xx body that is not the JSON we expected.
function _M.bad_upstream(message)
    return { status = 502, type = "api_error", message = message or "invalid upstream response" }
end

return _M

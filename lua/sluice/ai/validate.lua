-- sluice.ai.validate: checks a client's AI request before the gateway translates or forwards it.
--
--   local ok, err, param = validate.request(api, op, body, raw)
--   -- api "openai" | "anthropic", op "chat" | "completions" | "embeddings"; body: the decoded JSON;
--   -- raw: the body bytes it came from (nil when a plugin replaced the table): all of it must be UTF-8.
--   -- err names the field: "messages[2].content: expected string or array" (indexes count from 0, as in
--   -- the JSON); param is the field path alone.
--
-- What is checked is what the gateway and its drivers rely on: the structure and types of model, messages
-- (roles, content, content parts, tool calls), tools, tool_choice, stream, stream_options and the sampling numbers,
-- for each client API. Fields not named here pass unchecked, and so do unknown content part types and unknown
-- fields inside known objects: providers add them all the time. Strings must be well-formed UTF-8 (one pass of
-- core/common/utf8.c over the raw body; the table is walked only to name the field of a bad one).
local ffi = require("ffi")
local C = require("sluice.core")
local cjson = require("cjson.safe")

local type, pairs, next, tostring, tonumber, pcall, error, floor = type, pairs, next, tostring, tonumber, pcall, error,
    math.floor

ffi.cdef [[
int sl_utf8_valid(const char *s, size_t len, size_t *bad);
typedef struct sl_chat_scan {
    size_t model_off, model_len;
    int stream, include_usage, stop_n;
    size_t end_off;
    size_t n_off, n_len;
    size_t temp_off, temp_len;
} sl_chat_scan_t;
int sl_chat_scan(const char *s, size_t len, const char *deny, size_t denylen, sl_chat_scan_t *out);
]]

local null = cjson.null
local bad_at = ffi.new("size_t[1]")
local scan = ffi.new("sl_chat_scan_t")
local sub = string.sub

local _M = {}

--- true when s (a Lua string) is well-formed UTF-8; else false, the offset of the first bad byte (from 0).
function _M.utf8(s)
    if C.sl_utf8_valid(s, #s, bad_at) == 1 then
        return true
    end
    return false, tonumber(bad_at[0])
end
local utf8 = _M.utf8

---------------------------------------------------------------------------------------------------------------
-- JSON types as cjson decodes them (arrays and objects are both tables; [] and {} are the same empty table)

local function is_array(v)
    if type(v) ~= "table" then
        return false
    end
    local n = #v
    for k in pairs(v) do
        -- k % 1: an integer test without a call (keys are never NaN; an infinite one fails the bounds)
        if type(k) ~= "number" or k < 1 or k > n or k % 1 ~= 0 then
            return false
        end
    end
    return true
end

-- #v == 0: an empty table, or one that has a key outside 1..0 and so is no array (cjson's objects, every
-- message): no walk over the keys.
local function is_object(v)
    return type(v) == "table" and (#v == 0 or not is_array(v))
end

local function is_integer(v)
    return type(v) == "number" and v == floor(v) and v > -2 ^ 53 and v < 2 ^ 53
end

local function present(v)
    return v ~= nil and v ~= null
end

-- A failure: raises a table that request() turns into (nil, message, path); keeps the checks below short.
local function fail(path, what)
    error({ path = path, msg = path .. ": " .. what }, 0)
end

local function kind(v)
    if v == nil then return "missing" end
    if v == null then return "got null" end
    if type(v) == "table" then
        if next(v) == nil then return "got an empty one" end
        return is_array(v) and "got array" or "got object"
    end
    return "got " .. type(v)
end

local function want(v, ok, path, what)
    if not ok then
        fail(path, "expected " .. what .. " (" .. kind(v) .. ")")
    end
end

-- The opt_* checks join path .. k only for a failure: every request passes through them, and a concatenation is
-- a string made (or looked up) each time.
local function opt_string(t, k, path)
    local v = t[k]
    if present(v) and type(v) ~= "string" then want(v, false, path .. k, "string") end
end

local function opt_number(t, k, path)
    local v = t[k]
    if present(v) and type(v) ~= "number" then want(v, false, path .. k, "number") end
end

local function opt_integer(t, k, path)
    local v = t[k]
    if present(v) and not is_integer(v) then want(v, false, path .. k, "integer") end
end

local function opt_boolean(t, k, path)
    local v = t[k]
    if present(v) and type(v) ~= "boolean" then want(v, false, path .. k, "boolean") end
end

local function opt_object(t, k, path)
    local v = t[k]
    if present(v) and not is_object(v) then want(v, false, path .. k, "object") end
end

local function string_or_strings(t, k, path)
    local v = t[k]
    if not present(v) then return end
    if type(v) == "string" then return end
    want(v, is_array(v), path .. k, "string or array of strings")
    for i = 1, #v do
        want(v[i], type(v[i]) == "string", path .. k .. "[" .. (i - 1) .. "]", "string")
    end
end

-- stream, stream_options, the sampling numbers: the same in both APIs where they exist
local function common_fields(b)
    opt_string(b, "model", "")
    opt_boolean(b, "stream", "")
    opt_integer(b, "max_tokens", "")
    opt_number(b, "temperature", "")
    opt_number(b, "top_p", "")
end

---------------------------------------------------------------------------------------------------------------
-- OpenAI

local OPENAI_ROLES = { system = true, developer = true, user = true, assistant = true, tool = true,
                       ["function"] = true }

-- The paths of the OpenAI checks ("messages[1].content[0]") are made only when a check fails: path(i[, j])
-- below, called on the failure branch.
local function msg_path(i)
    return "messages[" .. (i - 1) .. "]"
end

local function part_path(i, j)
    return msg_path(i) .. ".content[" .. (j - 1) .. "]"
end

local function openai_part(p, i, j)
    if not is_object(p) then want(p, false, part_path(i, j), "object") end
    local t = p.type
    if type(t) ~= "string" then want(t, false, part_path(i, j) .. ".type", "string") end
    if t == "text" or t == "input_text" then
        if type(p.text) ~= "string" then want(p.text, false, part_path(i, j) .. ".text", "string") end
    elseif t == "image_url" then
        local iu = p.image_url
        if not is_object(iu) then want(iu, false, part_path(i, j) .. ".image_url", "object") end
        if type(iu.url) ~= "string" then want(iu.url, false, part_path(i, j) .. ".image_url.url", "string") end
    elseif t == "input_audio" or t == "file" then
        local v = p[t]
        if present(v) and not is_object(v) then opt_object(p, t, part_path(i, j) .. ".") end
    end -- other part types: the provider's business
end

local function openai_content(m, i, nullable)
    local c = m.content
    if not present(c) then
        if not nullable then fail(msg_path(i) .. ".content", "expected string or array") end
        return
    end
    if type(c) == "string" then return end
    if not is_array(c) then want(c, false, msg_path(i) .. ".content", "string or array") end
    for j = 1, #c do
        openai_part(c[j], i, j)
    end
end

local function openai_tool_calls(m, path)
    local tcs = m.tool_calls
    if not present(tcs) then return end
    local p = path .. ".tool_calls"
    want(tcs, is_array(tcs), p, "array")
    for i = 1, #tcs do
        local tc, tp = tcs[i], p .. "[" .. (i - 1) .. "]"
        want(tc, is_object(tc), tp, "object")
        opt_string(tc, "id", tp .. ".")
        opt_string(tc, "type", tp .. ".")
        local f = tc["function"]
        want(f, is_object(f), tp .. ".function", "object")
        want(f.name, type(f.name) == "string", tp .. ".function.name", "string")
        opt_string(f, "arguments", tp .. ".function.")
    end
end

local function openai_messages(b)
    local msgs = b.messages
    if not (is_array(msgs) and msgs[1] ~= nil) then want(msgs, false, "messages", "a non-empty array") end
    for i = 1, #msgs do
        local m = msgs[i]
        if not is_object(m) then want(m, false, msg_path(i), "object") end
        local role = m.role
        if type(role) ~= "string" then want(role, false, msg_path(i) .. ".role", "string") end
        if not OPENAI_ROLES[role] then
            fail(msg_path(i) .. ".role", "expected one of system, developer, user, assistant, tool, got " .. role)
        end
        if type(m.content) ~= "string" then -- a string needs no check
            openai_content(m, i, role == "assistant" or role == "function")
        end
        local name = m.name
        if present(name) and type(name) ~= "string" then opt_string(m, "name", msg_path(i) .. ".") end
        if role == "assistant" and present(m.tool_calls) then
            openai_tool_calls(m, msg_path(i))
        elseif role == "tool" and type(m.tool_call_id) ~= "string" then
            want(m.tool_call_id, false, msg_path(i) .. ".tool_call_id", "string")
        end
    end
end

local function openai_tools(b)
    local tools = b.tools
    if present(tools) then
        want(tools, is_array(tools), "tools", "array")
        for i = 1, #tools do
            local t, path = tools[i], "tools[" .. (i - 1) .. "]"
            want(t, is_object(t), path, "object")
            want(t.type, type(t.type) == "string", path .. ".type", "string")
            if t.type == "function" then
                local f = t["function"]
                want(f, is_object(f), path .. ".function", "object")
                want(f.name, type(f.name) == "string", path .. ".function.name", "string")
                opt_string(f, "description", path .. ".function.")
                opt_object(f, "parameters", path .. ".function.")
            end
        end
    end
    local tc = b.tool_choice
    if present(tc) then
        if type(tc) == "string" then return end
        want(tc, is_object(tc), "tool_choice", "string or object")
        want(tc.type, type(tc.type) == "string", "tool_choice.type", "string")
        if tc.type == "function" then
            local f = tc["function"]
            want(f, is_object(f), "tool_choice.function", "object")
            want(f.name, type(f.name) == "string", "tool_choice.function.name", "string")
        end
    end
end

local function openai_stream_options(b)
    local so = b.stream_options
    if present(so) then
        want(so, is_object(so), "stream_options", "object")
        opt_boolean(so, "include_usage", "stream_options.")
    end
end

-- The chat checks in the order of common_fields, openai_stream_options and the rest, written out: every chat
-- request passes here, and most of these fields are absent (one load and compare each instead of a call).
local function openai_chat(b)
    local v = b.model
    if v ~= nil and v ~= null and type(v) ~= "string" then want(v, false, "model", "string") end
    v = b.stream
    if v ~= nil and v ~= null and type(v) ~= "boolean" then want(v, false, "stream", "boolean") end
    v = b.max_tokens
    if v ~= nil and v ~= null and not is_integer(v) then want(v, false, "max_tokens", "integer") end
    v = b.temperature
    if v ~= nil and v ~= null and type(v) ~= "number" then want(v, false, "temperature", "number") end
    v = b.top_p
    if v ~= nil and v ~= null and type(v) ~= "number" then want(v, false, "top_p", "number") end
    if b.stream_options ~= nil then openai_stream_options(b) end
    v = b.max_completion_tokens
    if v ~= nil and v ~= null and not is_integer(v) then want(v, false, "max_completion_tokens", "integer") end
    v = b.n
    if v ~= nil and v ~= null and not is_integer(v) then want(v, false, "n", "integer") end
    v = b.presence_penalty
    if v ~= nil and v ~= null and type(v) ~= "number" then want(v, false, "presence_penalty", "number") end
    v = b.frequency_penalty
    if v ~= nil and v ~= null and type(v) ~= "number" then want(v, false, "frequency_penalty", "number") end
    if b.stop ~= nil then string_or_strings(b, "stop", "") end
    v = b.response_format
    if v ~= nil and v ~= null and not is_object(v) then want(v, false, "response_format", "object") end
    openai_messages(b)
    if b.tools ~= nil or b.tool_choice ~= nil then openai_tools(b) end
end

local OPENAI = {
    chat = openai_chat,
    completions = function(b)
        common_fields(b)
        openai_stream_options(b)
        local p = b.prompt
        want(p, type(p) == "string" or is_array(p), "prompt", "string or array")
        string_or_strings(b, "stop", "")
    end,
    embeddings = function(b)
        opt_string(b, "model", "")
        local v = b.input
        want(v, type(v) == "string" or is_array(v), "input", "string or array")
        opt_string(b, "encoding_format", "")
        opt_integer(b, "dimensions", "")
    end,
}

---------------------------------------------------------------------------------------------------------------
-- Anthropic Messages

local function anthropic_block(blk, path, role)
    want(blk, is_object(blk), path, "object")
    want(blk.type, type(blk.type) == "string", path .. ".type", "string")
    local t = blk.type
    if t == "text" then
        want(blk.text, type(blk.text) == "string", path .. ".text", "string")
    elseif t == "image" or t == "document" then
        want(blk.source, is_object(blk.source), path .. ".source", "object")
    elseif t == "tool_use" then
        want(blk.id, type(blk.id) == "string", path .. ".id", "string")
        want(blk.name, type(blk.name) == "string", path .. ".name", "string")
        opt_object(blk, "input", path .. ".")
    elseif t == "tool_result" then
        want(blk.tool_use_id, type(blk.tool_use_id) == "string", path .. ".tool_use_id", "string")
        local c = blk.content
        if present(c) and type(c) ~= "string" then
            want(c, is_array(c), path .. ".content", "string or array")
            for i = 1, #c do
                anthropic_block(c[i], path .. ".content[" .. (i - 1) .. "]", role)
            end
        end
        opt_boolean(blk, "is_error", path .. ".")
    elseif t == "thinking" then
        want(blk.thinking, type(blk.thinking) == "string", path .. ".thinking", "string")
    end -- other block types: the provider's business
end

local ANTHROPIC = function(b)
    common_fields(b)
    opt_integer(b, "top_k", "")
    string_or_strings(b, "stop_sequences", "")
    opt_object(b, "metadata", "")
    local sys = b.system
    if present(sys) and type(sys) ~= "string" then
        want(sys, is_array(sys), "system", "string or array")
        for i = 1, #sys do
            anthropic_block(sys[i], "system[" .. (i - 1) .. "]")
        end
    end
    local msgs = b.messages
    want(msgs, is_array(msgs) and msgs[1] ~= nil, "messages", "a non-empty array")
    for i = 1, #msgs do
        local m, path = msgs[i], "messages[" .. (i - 1) .. "]"
        want(m, is_object(m), path, "object")
        local role = m.role
        want(role, type(role) == "string", path .. ".role", "string")
        if role ~= "user" and role ~= "assistant" then
            fail(path .. ".role", "expected user or assistant, got " .. role)
        end
        local c = m.content
        if type(c) ~= "string" then
            want(c, is_array(c), path .. ".content", "string or array")
            for j = 1, #c do
                anthropic_block(c[j], path .. ".content[" .. (j - 1) .. "]", role)
            end
        end
    end
    local tools = b.tools
    if present(tools) then
        want(tools, is_array(tools), "tools", "array")
        for i = 1, #tools do
            local t, path = tools[i], "tools[" .. (i - 1) .. "]"
            want(t, is_object(t), path, "object")
            want(t.name, type(t.name) == "string", path .. ".name", "string")
            opt_string(t, "type", path .. ".")
            opt_string(t, "description", path .. ".")
            opt_object(t, "input_schema", path .. ".")
        end
    end
    local tc = b.tool_choice
    if present(tc) then
        want(tc, is_object(tc), "tool_choice", "object")
        want(tc.type, type(tc.type) == "string", "tool_choice.type", "string")
        if tc.type == "tool" then
            want(tc.name, type(tc.name) == "string", "tool_choice.name", "string")
        end
        opt_boolean(tc, "disable_parallel_tool_use", "tool_choice.")
    end
end

---------------------------------------------------------------------------------------------------------------
-- UTF-8: the path of the first bad string (keys included), walking the table only when a check failed

local function bad_string(v, path, depth)
    if type(v) == "string" then
        return not utf8(v) and path or nil
    end
    if type(v) ~= "table" or depth > 128 then
        return nil
    end
    if is_array(v) then
        for i = 1, #v do
            local p = bad_string(v[i], path .. "[" .. (i - 1) .. "]", depth + 1)
            if p then return p end
        end
        return nil
    end
    for k, x in pairs(v) do
        local ks = tostring(k)
        if type(k) == "string" and not utf8(k) then
            return (path == "" and "" or (path .. ".")) .. "(a key)"
        end
        local p = bad_string(x, path == "" and ks or (path .. "." .. ks), depth + 1)
        if p then return p end
    end
    return nil
end

---------------------------------------------------------------------------------------------------------------

--- Checks a decoded request body. Returns true, or nil, "path: what is wrong", path.
function _M.request(api, op, body, raw)
    if not is_object(body) then
        return nil, "request body must be a JSON object", nil
    end
    if raw == nil or not utf8(raw) then -- first: the messages below may quote what the client sent
        local path = bad_string(body, "", 0)
        if path then
            return nil, (path == "" and "request body" or path) .. ": invalid UTF-8", path
        elseif raw ~= nil then
            return nil, "request body: invalid UTF-8", nil
        end
    end
    local check = api == "anthropic" and ANTHROPIC or OPENAI[op]
    if check then
        local ok, e = pcall(check, body)
        if not ok then
            if type(e) == "table" then
                return nil, e.msg, e.path
            end
            error(e, 0)
        end
    end
    return true
end

_M.is_array, _M.is_object = is_array, is_object

--- The lean path's check of an OpenAI chat body (core/common/chat_scan.c): when raw passes everything
--- request("openai", "chat", decoded raw, raw) checks, is plain JSON without a member named in deny (names
--- separated by spaces) and nothing an OpenAI-wire driver would change, returns its model (string), stream,
--- include_usage (stream_options is exactly {"include_usage": true}), the length of an array stop (-1: none)
--- the offset (from 0) of its closing brace, n and temperature (numbers, nil when absent or null); else nil:
--- decode and check it with request().
function _M.chat_scan(raw, deny)
    local s = scan
    if C.sl_chat_scan(raw, #raw, deny, #deny, s) ~= 1 then
        return nil
    end
    local at = tonumber(s.model_off)
    local n, temperature
    if s.n_len > 0 then
        local o = tonumber(s.n_off)
        n = tonumber(sub(raw, o + 1, o + tonumber(s.n_len)))
    end
    if s.temp_len > 0 then
        local o = tonumber(s.temp_off)
        temperature = tonumber(sub(raw, o + 1, o + tonumber(s.temp_len)))
    end
    return sub(raw, at + 1, at + tonumber(s.model_len)), s.stream == 1, s.include_usage == 1, s.stop_n,
        tonumber(s.end_off), n, temperature
end

return _M

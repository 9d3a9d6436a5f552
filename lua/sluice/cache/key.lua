-- sluice.cache.key: the key of an AI chat request in the response cache (ai-cache).
--
--   local k = key.of(prefix, ai.request, ai.model, ignore)   -- 64 hex digits, or nil, why (not cacheable)
--
-- The key is SHA-256 over `prefix` (namespace, generations, scope: chosen by the caller) and a canonical form of
-- the request in the AI layer's canonical (OpenAI Chat) shape, so an OpenAI client and an Anthropic client asking
-- the same thing get the same key:
--   * model: the served name (after alias mapping), not what the client wrote;
--   * every other top-level field counts, except those that never change an answer (NEVER below: stream,
--     stream_options, user, metadata, ...) and the caller's `ignore` set;
--   * JSON null is the same as absent; `cache_control` (Anthropic prompt-caching hints) is left out everywhere;
--   * a message content made only of text parts is the same as the string of those texts joined with "\n"
--     (what the Anthropic translation makes of text blocks); max_completion_tokens is max_tokens; a string stop
--     is a list of one;
--   * object keys are sorted; numbers are written exactly (integers as integers, others with 17 digits);
--     strings are length-prefixed, so no two different requests serialise alike.
local crypto = require("sluice.crypto")
local cjson = require("cjson.safe")

local type, pairs, next, tostring, tonumber = type, pairs, next, tostring, tonumber
local sort, concat = table.sort, table.concat
local format, byte = string.format, string.byte
local floor, huge = math.floor, math.huge
local null = cjson.null
local sha256 = crypto.sha256

local _M = {}

-- Top-level request fields that never change the answer (identifiers, transport, storage).
local NEVER = {
    model = true, stream = true, stream_options = true, user = true, metadata = true, store = true,
    service_tier = true, prompt_cache_key = true, safety_identifier = true,
}
_M.NEVER = NEVER

local put

local function is_array(t)
    return t[1] ~= nil or next(t) == nil
end

local function put_number(v, out, n)
    if v == floor(v) and v > -9007199254740992 and v < 9007199254740992 then
        out[n + 1] = format("n%d;", v)
    elseif v ~= v then
        out[n + 1] = "nnan;"
    elseif v == huge or v == -huge then
        out[n + 1] = v > 0 and "ninf;" or "n-inf;"
    else
        out[n + 1] = format("n%.17g;", v)
    end
    return n + 1
end

local function put_string(v, out, n)
    out[n + 1] = "s" .. #v .. ":"
    out[n + 2] = v
    return n + 2
end

-- A content array made of text parts only ({type = "text", text = string} and nothing else but cache_control):
-- its texts joined with "\n", else nil.
local function text_only(parts)
    local texts = {}
    for i = 1, #parts do
        local p = parts[i]
        if type(p) ~= "table" or p.type ~= "text" or type(p.text) ~= "string" then
            return nil
        end
        for k in pairs(p) do
            if k ~= "type" and k ~= "text" and k ~= "cache_control" then
                return nil
            end
        end
        texts[i] = p.text
    end
    return concat(texts, "\n")
end

local function put_object(t, out, n)
    local keys, nk = {}, 0
    for k, v in pairs(t) do
        if v ~= null and k ~= "cache_control" then
            nk = nk + 1
            keys[nk] = type(k) == "string" and k or tostring(k)
        end
    end
    sort(keys)
    n = n + 1
    out[n] = "{"
    for i = 1, nk do
        local k = keys[i]
        local v = t[k]
        if v == nil then -- a number key written as a string
            v = t[tonumber(k)]
        end
        n = put_string(k, out, n)
        n = put(v, out, n)
    end
    n = n + 1
    out[n] = "}"
    return n
end

local function put_array(t, out, n)
    n = n + 1
    out[n] = "["
    for i = 1, #t do
        n = put(t[i], out, n)
    end
    n = n + 1
    out[n] = "]"
    return n
end

put = function(v, out, n)
    local tv = type(v)
    if tv == "string" then
        return put_string(v, out, n)
    elseif tv == "number" then
        return put_number(v, out, n)
    elseif tv == "boolean" then
        n = n + 1
        out[n] = v and "t" or "f"
        return n
    elseif tv == "table" then
        if is_array(v) then
            return put_array(v, out, n)
        end
        return put_object(v, out, n)
    end
    n = n + 1
    out[n] = "z" -- null (inside arrays), or a value JSON cannot carry
    return n
end

-- One message: its content as a string when it is text parts only.
local function put_message(m, out, n)
    if type(m) ~= "table" or is_array(m) then
        return put(m, out, n)
    end
    local c = m.content
    if type(c) == "table" and c[1] ~= nil then
        local s = text_only(c)
        if s then
            local copy = {}
            for k, v in pairs(m) do copy[k] = v end
            copy.content = s
            m = copy
        end
    end
    return put_object(m, out, n)
end

--- The canonical serialisation of request (see the top of this file), without model and the ignored fields.
function _M.serialize(request, ignore)
    local fields, keys, nk = {}, {}, 0
    for k, v in pairs(request) do
        if v ~= null and type(k) == "string" and not NEVER[k] and not (ignore and ignore[k]) then
            if k == "max_completion_tokens" then
                local mt = request.max_tokens
                if mt == nil or mt == null then k = "max_tokens" else k = nil end -- both: max_tokens wins
            elseif k == "stop" and type(v) == "string" then
                v = { v }
            end
            if k then
                nk = nk + 1
                keys[nk], fields[k] = k, v
            end
        end
    end
    sort(keys)
    local out, n = {}, 0
    for i = 1, nk do
        local k = keys[i]
        local v = fields[k]
        n = put_string(k, out, n)
        if k == "messages" and type(v) == "table" then
            n = n + 1
            out[n] = "["
            for j = 1, #v do
                n = put_message(v[j], out, n)
            end
            n = n + 1
            out[n] = "]"
        else
            n = put(v, out, n)
        end
    end
    return concat(out, "", 1, n)
end

local HEX32 = string.rep("%02x", 32)

--- 64 hex digits of SHA-256(s).
function _M.hash(s)
    local d = sha256(s)
    return format(HEX32, byte(d, 1, 32))
end

--- The key of a canonical chat request served as model, under prefix; ignore: set of top-level fields left out.
function _M.of(prefix, request, model, ignore)
    model = tostring(model) -- length-prefixed: a model name holding "\0" cannot pass for part of the request
    return _M.hash(prefix .. "\0" .. #model .. ":" .. model .. "\0" .. _M.serialize(request, ignore))
end

return _M

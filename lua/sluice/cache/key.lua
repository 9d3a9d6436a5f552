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
--
-- The raw memo, for a request whose body is still the client's JSON (nothing changed the table decoded from it):
-- its key is then a function of (prefix, model, ignored fields, body bytes) alone, so ai-cache memoises it in the
-- node's dict and a repeated request skips the canonical serialisation and SHA-256:
--   local name = key.raw_name(prefix, model, ignore_sig, body)  -- "r:" .. XXH64 of those (kept in a buffer)
--   local k = key.raw_key(d:get(name))     -- the memo's key, nil unless the memo was made from the same bytes
--   local k = key.raw_lookup(d, name)      -- the same, compared where the dict copies the memo out (no string)
--   d:set(name, key.raw_value(k), ttl)     -- the memo of the bytes of the last raw_name
-- The memo holds the bytes it was made from and raw_key compares them all, so a hash collision can never hand
-- out another request's key (it only costs a miss of the memo).
local ffi = require("ffi")
local buffer = require("string.buffer")
local cjson = require("cjson.safe")
local C = require("sluice.core")
require("sluice.pdk.shared") -- the cdef of sl_shdict_get (raw_lookup)

pcall(ffi.cdef, [[
void sl_sha256_hex(const void *p, size_t len, char out[64]);
]])
pcall(ffi.cdef, [[
uint64_t sl_xxh64(const void *p, size_t n, uint64_t seed);
int memcmp(const void *a, const void *b, size_t n);
]])
local libc = ffi.C
local tohex = require("bit").tohex

local type, pairs, next, tostring, tonumber = type, pairs, next, tostring, tonumber
local sort = table.sort
local floor, huge = math.floor, math.huge
local null = cjson.null

local _M = {}

-- Top-level request fields that never change the answer (identifiers, transport, storage).
local NEVER = {
    model = true, stream = true, stream_options = true, user = true, metadata = true, store = true,
    service_tier = true, prompt_cache_key = true, safety_identifier = true,
}
_M.NEVER = NEVER

-- One buffer for every key of the worker: the serialisation is written into it and hashed where it lies (no
-- Lua string of it is made, no table of pieces). Nothing in here yields, so requests cannot interleave in it.
-- Space grown for a large request is given back after it (KEEP), not held by the worker for good.
local buf = buffer.new(1024)
local KEEP = 65536
local hex = ffi.new("char[64]")
local rbuf = buffer.new(1024) -- the raw memo's bytes (raw_name .. raw_key / raw_value)

local put

local function is_array(t)
    return t[1] ~= nil or next(t) == nil
end

local function put_number(v)
    if v == floor(v) and v > -9007199254740992 and v < 9007199254740992 then
        buf:putf("n%d;", v)
    elseif v ~= v then
        buf:put("nnan;")
    elseif v == huge or v == -huge then
        buf:put(v > 0 and "ninf;" or "n-inf;")
    else
        buf:putf("n%.17g;", v)
    end
end

local function put_string(v)
    buf:put("s", #v, ":", v)
end

-- A content array made of text parts only ({type = "text", text = string} and nothing else but cache_control):
-- its texts joined with "\n", else nil.
local function text_only(parts)
    local n = #parts
    if n == 1 then -- the common case: no joining
        local p = parts[1]
        if type(p) ~= "table" or p.type ~= "text" or type(p.text) ~= "string" then
            return nil
        end
        for k in pairs(p) do
            if k ~= "type" and k ~= "text" and k ~= "cache_control" then
                return nil
            end
        end
        return p.text
    end
    local texts = {}
    for i = 1, n do
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
    return table.concat(texts, "\n")
end

-- Writes object t with its keys sorted; content: a value standing for t.content (a message's text parts).
local function put_object(t, content)
    local keys, nk = {}, 0
    for k, v in pairs(t) do
        if v ~= null and k ~= "cache_control" then
            nk = nk + 1
            keys[nk] = type(k) == "string" and k or tostring(k)
        end
    end
    sort(keys)
    buf:put("{")
    for i = 1, nk do
        local k = keys[i]
        local v = t[k]
        if v == nil then -- a number key written as a string
            v = t[tonumber(k)]
        end
        if content ~= nil and k == "content" then
            v = content
        end
        put_string(k)
        put(v)
    end
    buf:put("}")
end

local function put_array(t)
    buf:put("[")
    for i = 1, #t do
        put(t[i])
    end
    buf:put("]")
end

put = function(v)
    local tv = type(v)
    if tv == "string" then
        put_string(v)
    elseif tv == "number" then
        put_number(v)
    elseif tv == "boolean" then
        buf:put(v and "t" or "f")
    elseif tv == "table" then
        if is_array(v) then
            put_array(v)
        else
            put_object(v)
        end
    else
        buf:put("z") -- null (inside arrays), or a value JSON cannot carry
    end
end

-- One message: its content as a string when it is text parts only.
local function put_message(m)
    if type(m) ~= "table" or is_array(m) then
        return put(m)
    end
    local c = m.content
    if type(c) == "table" and c[1] ~= nil then
        return put_object(m, text_only(c))
    end
    return put_object(m)
end

-- Writes the canonical serialisation of request into buf.
local function put_request(request, ignore)
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
    for i = 1, nk do
        local k = keys[i]
        local v = fields[k]
        put_string(k)
        if k == "messages" and type(v) == "table" then
            buf:put("[")
            for j = 1, #v do
                put_message(v[j])
            end
            buf:put("]")
        else
            put(v)
        end
    end
end

--- The canonical serialisation of request (see the top of this file), without model and the ignored fields.
function _M.serialize(request, ignore)
    buf:reset()
    put_request(request, ignore)
    local s = buf:get()
    if #s > KEEP then
        buf:free()
    end
    return s
end

--- 64 hex digits of SHA-256(s).
function _M.hash(s)
    C.sl_sha256_hex(s, #s, hex)
    return ffi.string(hex, 64)
end

--- The key of a canonical chat request served as model, under prefix; ignore: set of top-level fields left out.
function _M.of(prefix, request, model, ignore)
    model = tostring(model) -- length-prefixed: a model name holding "\0" cannot pass for part of the request
    buf:reset()
    buf:put(prefix, "\0", #model, ":", model, "\0")
    put_request(request, ignore)
    local p, len = buf:ref()
    C.sl_sha256_hex(p, len, hex)
    if len > KEEP then
        buf:free()
    else
        buf:reset()
    end
    return ffi.string(hex, 64)
end

--- See the top of this file: the name of the raw memo of a request (its bytes stay in a buffer for raw_key and
--- raw_value, until the next raw_name).
function _M.raw_name(prefix, model, ignore_sig, body)
    model = tostring(model)
    rbuf:reset()
    rbuf:put(prefix, "\0", #model, ":", model, "\0", ignore_sig, "\0", body)
    local p, len = rbuf:ref()
    return "r:" .. tohex(C.sl_xxh64(p, len, 0))
end

--- The key a raw memo value holds when it was made from the bytes of the last raw_name, else nil.
function _M.raw_key(v)
    if type(v) ~= "string" then
        return nil
    end
    local p, len = rbuf:ref()
    if #v ~= len + 64 then
        return nil
    end
    local vp = ffi.cast("const char *", v)
    if libc.memcmp(vp, p, len) ~= 0 then
        return nil
    end
    return ffi.string(vp + len, 64)
end

-- where raw_lookup has the dict copy a memo out (grown for a larger one)
local vbuf_size = 4096
local vbuf = ffi.new("char[?]", vbuf_size)
local vtype, vnum, vlen, vflags = ffi.new("int[1]"), ffi.new("double[1]"), ffi.new("size_t[1]"), ffi.new("uint32_t[1]")

--- raw_key((d:get(name))) without the memo as a Lua string (it holds the whole request body: a string made, hashed
--- and collected on every repeated request): d is a sluice.shared dict; the memo is compared where d copied it.
function _M.raw_lookup(d, name)
    vlen[0] = 0
    local b, size = vbuf, vbuf_size
    local rc = C.sl_shdict_get(d.cd, name, #name, vtype, vnum, b, size, vlen, vflags)
    local n = tonumber(vlen[0])
    if rc ~= 0 and n > size then -- a larger memo: a larger buffer (kept for the next ones up to KEEP bytes)
        b, size = ffi.new("char[?]", n), n
        if n <= KEEP then
            vbuf, vbuf_size = b, size
        end
        rc = C.sl_shdict_get(d.cd, name, #name, vtype, vnum, b, size, vlen, vflags)
        n = tonumber(vlen[0])
    end
    local p, len = rbuf:ref()
    -- a number or boolean item copies no bytes (vlen 0): never the length of a memo
    if rc ~= 0 or n ~= len + 64 or libc.memcmp(b, p, len) ~= 0 then
        return nil
    end
    return ffi.string(b + len, 64)
end

--- The raw memo value for key k and the bytes of the last raw_name.
function _M.raw_value(k)
    local p, len = rbuf:ref()
    local v = ffi.string(p, len) .. k
    if len > KEEP then
        rbuf:free()
    end
    return v
end

return _M

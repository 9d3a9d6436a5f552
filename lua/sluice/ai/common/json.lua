-- sluice.ai.common.json: JSON values as the AI layer handles them.
--
-- Values that are JSON null in upstream bodies are `cjson.null` (a truthy lightuserdata): test them with
-- `is_null(v)` / `nn(v)`.
--
-- Empty arrays: the installed lua-cjson (2.1.0) has neither `empty_array` nor `array_mt`, and decodes `[]` to a
-- plain `{}`. `json_encode` therefore encodes as `[]`
--   * any table marked with `array(t)` (or `empty_array`) when empty, and
--   * any empty table under a key that is always an array in the APIs we speak (`choices`, `messages`,
--     `content`, `tool_calls`, `parts`, ... see ARRAY_KEYS), so decoded-then-re-encoded bodies keep their shape.
-- When a newer cjson with `array_mt` is installed, its markers are used as well.
local ffi = require("ffi")
local C = require("sluice.core")
local cjson = require("cjson.safe")

local type, pairs, next, tonumber = type, pairs, next, tonumber
local setmetatable, getmetatable = setmetatable, getmetatable
local gsub, find = string.gsub, string.find
local cjson_encode = cjson.encode

ffi.cdef [[
int sl_json_plain_object(const char *s, size_t len);
int sl_json_usage(const char *s, size_t len, size_t off, double *u);
long sl_json_usage_at(const char *s, size_t len, size_t from);
]]

local _M = {}

local null = cjson.null
_M.null = null
_M.cjson = cjson

local array_mt = cjson.array_mt or { __sluice_array = true }
_M.array_mt = array_mt

--- Marks t (default: a new table) as a JSON array, so it encodes as [] when empty.
function _M.array(t)
    return setmetatable(t or {}, array_mt)
end

-- A shared, never-mutated marker for an empty array.
_M.empty_array = cjson.empty_array or setmetatable({}, {
    __sluice_array = true,
    __newindex = function() error("empty_array is read-only", 2) end,
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
        return cjson_encode(v)
    end
    if next(v) == nil then
        return is_array_marked(v) and "[]" or "{}"
    end
    -- Every empty table encodes as "{}": without one in the text there was none to mark, and the walk below (a
    -- pass over every table) would change nothing. Most bodies have none.
    local s0 = cjson_encode(v)
    if s0 and not find(s0, "{}", 1, true) then
        return s0
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

--- True when the JSON text s is one object that can be sent on as it is instead of re-encoding its decoded table:
--- strict JSON, no object with a repeated key (a reader taking the first one would see another value than the
--- gateway did) and no escaped key (sl_json_plain_object).
function _M.plain_object(s)
    return type(s) == "string" and C.sl_json_plain_object(s, #s) == 1
end

local usage_out = ffi.new("double[5]")

--- The position (from 1) of the '{' of the last `"usage"` key of s at or after from (default 1) that is followed
--- by ':' and an object, or nil (sl_json_usage_at: a plain search in C).
function _M.usage_at(s, from)
    local at = C.sl_json_usage_at(s, #s, (from or 1) - 1)
    if at < 0 then
        return nil
    end
    return tonumber(at) + 1
end

--- The numbers of the plain usage object at s[at] ('{'): prompt, completion, total, cached, reasoning (each nil
--- when absent; total nil -> the caller adds), or false when it is not plain (decode it instead).
function _M.usage_numbers(s, at)
    local have = C.sl_json_usage(s, #s, at - 1, usage_out)
    if have < 0 then
        return false
    end
    local u = usage_out
    return u[0], u[1], have % 8 >= 4 and u[2] or nil, have % 16 >= 8 and u[3] or nil, have >= 16 and u[4] or nil
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

-- table.clone (OpenResty's LuaJIT): one C call instead of a pairs loop run by the interpreter on every request
local tclone = require("table.clone")

function _M.shallow_copy(t)
    local r = tclone(t)
    local mt = getmetatable(t)
    if mt ~= nil then
        setmetatable(r, mt)
    end
    return r
end

function _M.deep_copy(t)
    if type(t) ~= "table" then return t end
    local r = {}
    for k, v in pairs(t) do r[k] = _M.deep_copy(v) end
    return setmetatable(r, getmetatable(t))
end

return _M

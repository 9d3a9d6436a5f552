-- sluice.log: the error log. Phases: all.
--   sluice.log.warn("upstream ", name, " slow: ", ms, "ms")
local base = require("sluice.pdk.base")
local C = base.C

local concat, select, tostring = table.concat, select, tostring

local _M = {}

local function writer(level, tag)
    return function(...)
        if C.sl_log_enabled(level) == 0 then
            return
        end
        local n = select("#", ...)
        local parts = { tag }
        for i = 1, n do
            parts[i + 1] = tostring((select(i, ...)))
        end
        local ctx = base.current_ctx()
        if ctx then
            parts[#parts + 1] = " (request " .. ctx.request_id .. ")"
        end
        local msg = concat(parts)
        C.sl_log_write(level, msg, #msg)
    end
end

_M.debug = writer(0, "")
_M.info = writer(1, "")
_M.warn = writer(2, "")
_M.err = writer(3, "")
_M.error = _M.err

local cjson = require("cjson.safe")
local buffer = require("string.buffer")

local type, pairs, find, sub, format, huge, floor = type, pairs, string.find, string.sub, string.format, math.huge,
    math.floor
local cjson_encode = cjson.encode
local ENCODED_AS_IS = '[%c"\\/\127]' -- what cjson escapes: anything else it writes as it is
local flat = buffer.new(256)

-- v as cjson writes it ("%.14g" by printf), or nil when LuaJIT's formatting could round it otherwise: a tie at
-- the 14th significant digit (printf rounds those to even, LuaJIT up): digit 15 a 5 and the next ones zeros.
local function number14(v)
    if v == floor(v) and v > -1e14 and v < 1e14 then
        return (v == 0 and 1 / v < 0) and "-0" or format("%d", v)
    end
    local e = format("%.19e", v) -- 20 significant digits: "d.ddd...e+XX", after a sign
    local at = find(e, ".", 1, true)
    if sub(e, at + 14, at + 19) == "500000" then
        return nil
    end
    return format("%.14g", v)
end

-- Whether cjson writes s as it is, by string: keys and most values (provider and model names) repeat from one
-- request to the next, and a pattern search costs more than the rest of the encoding. Emptied when full.
local as_is, n_as_is = {}, 0
local function encoded_as_is(s)
    local v = as_is[s]
    if v == nil then
        if #s > 256 then
            return false -- long ones are not kept here (cjson encodes them)
        end
        v = not find(s, ENCODED_AS_IS)
        if n_as_is >= 1024 then
            as_is, n_as_is = {}, 0
        end
        as_is[s], n_as_is = v, n_as_is + 1
    end
    return v
end

-- A table of string keys and string, number or boolean values, encoded as cjson encodes it (same key order:
-- both walk it with next; numbers as "%.14g"), without going through the Lua C API and printf's float
-- formatting; nil for anything else (cjson then encodes it).
local function flat_json(t)
    flat:reset()
    local sep = "{\""
    for k, v in pairs(t) do
        if type(k) ~= "string" or not encoded_as_is(k) then
            return nil
        end
        local tv = type(v)
        if tv == "string" then
            if not encoded_as_is(v) then
                return nil
            end
            flat:put(sep, k, "\":\"", v, "\"")
        elseif tv == "number" then
            local s = v == v and v ~= huge and v ~= -huge and number14(v) -- cjson refuses NaN and inf
            if not s then
                return nil
            end
            flat:put(sep, k, "\":", s)
        elseif tv == "boolean" then
            flat:put(sep, k, v and "\":true" or "\":false")
        else
            return nil
        end
        sep = ",\""
    end
    if sep == "{\"" then
        return nil -- empty: cjson's choice
    end
    flat:put("}")
    return flat:tostring()
end
_M.flat_json = flat_json

--- Adds a field to this request's access log line (JSON lines): `sluice.log.access("ai", {model = m})`.
--- `sluice.log.access_enabled()` says whether there is an access log at all (to skip building a value).
--- Any phase; a name may be given once per request. Returns true, or nil and an error.
local good_names, n_good = {}, 0 -- names checked once (plugins use the same few on every request)
function _M.access(name, value)
    if not good_names[name] then
        if type(name) ~= "string" or not name:match("^[%w_]+$") or #name > 64 then
            error("access log field name must be 1-64 letters, digits or _", 2)
        end
        if n_good >= 256 then
            good_names, n_good = {}, 0
        end
        good_names[name], n_good = true, n_good + 1
    end
    local ctx = base.get_ctx()
    if C.sl_access_log_enabled() == 0 then
        return true -- no access log: nothing to build
    end
    local json, err = type(value) == "table" and flat_json(value)
    if not json then
        json, err = cjson_encode(value)
    end
    if not json then
        return nil, err
    end
    if C.sl_req_log_field(ctx.req, name, #name, json, #json) ~= 0 then
        return nil, "access log line too long"
    end
    return true
end

function _M.access_enabled()
    return C.sl_access_log_enabled() ~= 0
end

--- A logger that prefixes every line with "[name] " (used for plugins).
function _M.named(name)
    local p = "[" .. name .. "] "
    return { debug = writer(0, p), info = writer(1, p), warn = writer(2, p), err = writer(3, p),
             error = writer(3, p) }
end

return _M

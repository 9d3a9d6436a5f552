-- sluice.schema.values: the value side of sluice.schema: types, built-in formats, the spellings people write
-- (durations, sizes, statuses, booleans, decimal strings), how a value is described and shown in errors, and the
-- table helpers the validator and the schema checker share.
local type, pairs, tostring, tonumber, next, setmetatable, getmetatable =
    type, pairs, tostring, tonumber, next, setmetatable, getmetatable
local floor, huge = math.floor, math.huge
local find, format = string.find, string.format

local ok_cjson, cjson = pcall(require, "cjson")
local null = ok_cjson and cjson.null or nil
local empty_array_mt = ok_cjson and cjson.empty_array_mt or nil

local MAX_DEPTH = 200

local _M = { MAX_DEPTH = MAX_DEPTH, null = null, empty_array_mt = empty_array_mt }

_M.TYPES = { object = true, array = true, string = true, number = true, integer = true,
                boolean = true, null = true, duration = true, size = true, status = true }

--- Entity kinds a `ref` may name (resolved by sluice.config: entity maps/lists, node.shared_dicts, plugins).
_M.REF_KINDS = { upstreams = true, providers = true, consumers = true, consumer_groups = true, routes = true,
                 shared_dicts = true, plugins = true }

-- A host: a DNS name or IPv4 address (letters, digits, '-', '_', '.'), or an IPv6 literal in brackets; with
-- an optional ":port". Nothing that could end a header line or a URL authority gets through.
local function is_host(v)
    local h, port = v:match("^(%[[%x:%.]+%])(.*)$")
    if not h then
        h, port = v:match("^([%w_][%w%-_%.]*)(.*)$")
    end
    if not h or #h > 255 then return false end
    return port == "" or (port:match("^:%d%d?%d?%d?%d?$") ~= nil and tonumber(port:sub(2)) <= 65535)
end

-- Built-in formats: name -> (function(string) -> ok, description for the error message).
local FORMATS = {
    host = { is_host, "a host name or IP address, optionally with :port" },
    -- RFC 9110 token
    header_name = { function(v) return #v <= 256 and find(v, "^[%w!#%$%%&'%*%+%-%.%^_`|~]+$") ~= nil end,
                    "a header name (letters, digits and !#$%&'*+-.^_`|~)" },
    -- no CR, LF, NUL or other control characters (horizontal tab allowed)
    header_value = { function(v) return not find(v, "[%z\1-\8\10-\31\127]") end,
                     "a header value without control characters (CR, LF, NUL, ...)" },
    url = { function(v)
                local auth, rest = v:match("^[Hh][Tt][Tt][Pp][Ss]?://([^/%?#]+)(.*)$")
                return auth ~= nil and is_host(auth) and not find(rest, "[%z\1-\32\127]")
            end, "an http(s) URL: http(s)://host[:port][/path], no spaces or control characters" },
    uri_path = { function(v) return find(v, "^/[^%z\1-\32\127]*$") ~= nil end,
                 "a path starting with '/', without spaces or control characters" },
    id = { function(v) return #v <= 256 and find(v, "^[%w_][%w_%.%-]*$") ~= nil end,
           "an id: letters, digits, '_', '.', '-', not starting with '.' or '-', at most 256 characters" },
}
_M.FORMATS = FORMATS

local function is_array(t)
    if empty_array_mt and getmetatable(t) == empty_array_mt then return true end
    local n = 0
    for k in pairs(t) do
        if type(k) ~= "number" or k < 1 or k % 1 ~= 0 then return false end
        n = n + 1
    end
    for i = 1, n do
        if t[i] == nil then return false end
    end
    return true
end

local function is_integer(v)
    return type(v) == "number" and v == floor(v) and v ~= huge and v ~= -huge
end

-- Values written the way people write them. Each returns the normal form, or nil when v is not of the type.
local DURATION_UNITS = { ms = 0.001, s = 1, m = 60, h = 3600, d = 86400 }
local SIZE_UNITS = { b = 1, k = 1024, kb = 1024, kib = 1024, m = 1024 ^ 2, mb = 1024 ^ 2, mib = 1024 ^ 2,
                     g = 1024 ^ 3, gb = 1024 ^ 3, gib = 1024 ^ 3 }
local BOOLEAN_WORDS = { ["true"] = true, yes = true, on = true, ["false"] = false, no = false, off = false }

-- A plain decimal ("2", "-1.5", "1e3"; no hex, no inf/nan), or nil.
local function decimal(v)
    if not (find(v, "^%s*[-+]?%d+%.?%d*[eE]?[-+]?%d*%s*$") or find(v, "^%s*[-+]?%.%d+%s*$")) then return nil end
    local n = tonumber(v)
    if n == nil or n ~= n or n == huge or n == -huge then return nil end
    return n
end

--- Seconds from 30, 0.5, "30", "500ms", "5s", "1m30s", "1h", "1d" (units ms s m h d); nil for anything else.
local function parse_duration(v)
    if type(v) == "number" then return (v >= 0 and v < huge) and v or nil end
    if type(v) ~= "string" or #v > 64 then return nil end
    local n = decimal(v)
    if n then return n >= 0 and n or nil end
    local total, pos, any = 0, 1, false
    v = v:lower():match("^%s*(.-)%s*$")
    while pos <= #v do
        local num, unit, nxt = v:match("^(%d*%.?%d+)%s*(%a+)%s*()", pos)
        local mul = unit and DURATION_UNITS[unit]
        if not mul then return nil end
        total, pos, any = total + tonumber(num) * mul, nxt, true
    end
    return any and total or nil
end
_M.parse_duration = parse_duration

--- Bytes from 1048576, "1048576", "64k", "8m", "1g", "1.5m" (k/m/g = KiB/MiB/GiB, also kb/kib, ...); else nil.
local function parse_size(v)
    if type(v) == "number" then return (is_integer(v) and v >= 0) and v or nil end
    if type(v) ~= "string" or #v > 64 then return nil end
    local num, unit = v:lower():match("^%s*(%d*%.?%d+)%s*(%a*)%s*$")
    local mul = num and (unit == "" and 1 or SIZE_UNITS[unit])
    if not mul or (mul == 1 and tonumber(num) % 1 ~= 0) then return nil end -- no fractions of a byte
    local n = floor(tonumber(num) * mul)
    return n < huge and n or nil
end
_M.parse_size = parse_size

-- An HTTP status: 100..599 as a number or a 3-digit string -> integer; with classes, "5xx" -> "5xx".
local function parse_status(v, s)
    if type(v) == "number" then return (is_integer(v) and v >= 100 and v <= 599) and v or nil end
    if type(v) ~= "string" then return nil end
    local n = v:match("^%s*(%d%d%d)%s*$")
    n = n and tonumber(n)
    if n then return (n >= 100 and n <= 599) and n or nil end
    local c = s.classes == true and v:match("^%s*([1-5])[xX][xX]%s*$")
    return c and (c .. "xx") or nil
end

-- Types whose values are parsed (every spelling is "the type"): name -> parser(v, schema).
_M.PARSED = { duration = parse_duration, size = parse_size, status = parse_status }
-- Other spellings of plain types, accepted when nothing takes the value as it is: name -> converter(v).
_M.COERCE = {
    boolean = function(v)
        if type(v) == "string" then return BOOLEAN_WORDS[v:lower()] end
    end,
    number = function(v)
        if type(v) == "string" then return decimal(v) end
    end,
    integer = function(v)
        local n = type(v) == "string" and decimal(v)
        if n and is_integer(n) then return n end
    end,
}
-- How a type is named in errors (plain types: by name).
_M.TYPE_TEXT = {
    duration = "a duration (seconds, or a number with ms, s, m, h or d: 500ms, 5s, 1m30s)",
    size = "a size (bytes, or a number with k, m or g: 64k, 8m, 1g)",
    boolean = "a boolean (true/false, yes/no, on/off)",
}

local function type_matches(tname, v)
    local tv = type(v)
    if tname == "null" then return v == nil or (null ~= nil and v == null) end
    if tname == "integer" then return is_integer(v) end
    if tname == "object" then
        if tv ~= "table" then return false end
        if next(v) == nil then return empty_array_mt == nil or getmetatable(v) ~= empty_array_mt end
        return not is_array(v)
    end
    if tname == "array" then return tv == "table" and is_array(v) end
    return tv == tname
end

local function describe(v)
    if v == nil or (null ~= nil and v == null) then return "null" end
    local tv = type(v)
    if tv == "table" then return (next(v) ~= nil and is_array(v)) and "array" or "object" end
    if tv == "number" and is_integer(v) then return "integer" end
    return tv
end

-- The value for an error message; a field the schema marks `secret = true` never shows its value.
local function show(v, s)
    if s and s.secret and v ~= nil then return "(a secret value, not shown)" end
    if type(v) == "string" then return format("%q", v) end
    if type(v) == "table" then return describe(v) end
    return tostring(v)
end

local function deep_copy(v, seen)
    if type(v) ~= "table" then return v end
    seen = seen or {}
    if seen[v] then return seen[v] end
    local c = {}
    seen[v] = c
    for k, x in pairs(v) do c[deep_copy(k, seen)] = deep_copy(x, seen) end
    return setmetatable(c, getmetatable(v))
end
_M.deep_copy = deep_copy

local function deep_equal(a, b, depth)
    if a == b then return true end
    if type(a) ~= "table" or type(b) ~= "table" or (depth or 0) > MAX_DEPTH then return false end
    for k, v in pairs(a) do
        if not deep_equal(v, b[k], (depth or 0) + 1) then return false end
    end
    for k in pairs(b) do
        if a[k] == nil then return false end
    end
    return true
end
_M.deep_equal = deep_equal

local function join(path, key)
    if type(key) == "number" then return path .. "[" .. key .. "]" end
    if path == "" then return key end
    return path .. "." .. key
end


_M.is_array, _M.is_integer, _M.type_matches, _M.describe, _M.show, _M.join =
    is_array, is_integer, type_matches, describe, show, join

return _M

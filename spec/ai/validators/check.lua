-- A small checker language for the provider request validators (spec/ai/validators/<kind>.lua).
--
-- A checker is a function(v, path, errs, ctx) that appends "path: message" strings to errs. Objects are
-- closed: a field the provider does not document is an error, as the real APIs answer for unknown fields.
-- Paths use the providers' own style, 0-based: messages[2].content[0].text.
local cjson = require("cjson.safe")

local type, pairs, ipairs, tostring, tonumber, next = type, pairs, ipairs, tostring, tonumber, next
local floor, huge = math.floor, math.huge
local concat, sort = table.concat, table.sort
local null = cjson.null

local C = {}

local function add(errs, path, msg)
    errs[#errs + 1] = (path == "" and "(body)" or path) .. ": " .. msg
end
C.add = add

function C.join(path, key)
    if type(key) == "number" then return path .. "[" .. key .. "]" end
    if path == "" then return key end
    return path .. "." .. key
end
local join = C.join

--- "string", "number", "integer", "boolean", "array", "object", "null" (a JSON view of a decoded value).
function C.jtype(v)
    if v == null then return "null" end
    local t = type(v)
    if t == "number" then return floor(v) == v and v > -huge and v < huge and "integer" or "number" end
    if t == "table" then
        if next(v) == nil then return "empty" end -- [] and {} decode alike
        return v[1] ~= nil and "array" or "object"
    end
    return t
end
local jtype = C.jtype

function C.is_array(v) local t = jtype(v); return t == "array" or t == "empty" end
function C.is_object(v) local t = jtype(v); return t == "object" or t == "empty" end

local function describe(v)
    local t = jtype(v)
    if t == "string" then return "string '" .. v:sub(1, 40) .. "'" end
    if t == "integer" or t == "number" then return "number " .. tostring(v) end
    return t
end
C.describe = describe

function C.any() return function() end end

--- A string: {min, max (lengths), pattern (Lua), enum (list), nonblank}
function C.str(o)
    o = o or {}
    local enum
    if o.enum then enum = {} for _, e in ipairs(o.enum) do enum[e] = true end end
    return function(v, path, errs)
        if type(v) ~= "string" then return add(errs, path, "expected a string, got " .. describe(v)) end
        if o.min and #v < o.min then add(errs, path, "string shorter than " .. o.min) end
        if o.max and #v > o.max then add(errs, path, "string longer than " .. o.max) end
        if o.nonblank and not v:find("%S") then add(errs, path, "must not be blank") end
        if o.pattern and not v:find(o.pattern) then add(errs, path, "does not match " .. o.pattern .. ": '" .. v:sub(1, 80) .. "'") end
        if enum and not enum[v] then
            add(errs, path, "unexpected value '" .. v .. "' (allowed: " .. concat(o.enum, ", ") .. ")")
        end
    end
end

--- A number: {min, max, int = true}
function C.num(o)
    o = o or {}
    return function(v, path, errs)
        if type(v) ~= "number" then return add(errs, path, "expected a number, got " .. describe(v)) end
        if o.int and floor(v) ~= v then return add(errs, path, "expected an integer, got " .. tostring(v)) end
        if o.min and v < o.min then add(errs, path, tostring(v) .. " is less than the minimum " .. o.min) end
        if o.max and v > o.max then add(errs, path, tostring(v) .. " is greater than the maximum " .. o.max) end
    end
end
function C.int(o) o = o or {}; o.int = true; return C.num(o) end

function C.bool()
    return function(v, path, errs)
        if type(v) ~= "boolean" then add(errs, path, "expected a boolean, got " .. describe(v)) end
    end
end

--- A constant value.
function C.const(c)
    return function(v, path, errs)
        if v ~= c then add(errs, path, "expected '" .. tostring(c) .. "', got " .. describe(v)) end
    end
end

--- An array of item: {min, max}
function C.arr(item, o)
    o = o or {}
    return function(v, path, errs, ctx)
        if not C.is_array(v) then return add(errs, path, "expected an array, got " .. describe(v)) end
        if o.min and #v < o.min then add(errs, path, "expected at least " .. o.min .. " item(s), got " .. #v) end
        if o.max and #v > o.max then add(errs, path, "expected at most " .. o.max .. " item(s), got " .. #v) end
        for i, x in ipairs(v) do item(x, join(path, i - 1), errs, ctx) end
    end
end

--- A closed object: fields = {name = checker}; o = {required = {...}, open = true (unknown fields allowed)}
function C.obj(fields, o)
    o = o or {}
    return function(v, path, errs, ctx)
        if not C.is_object(v) then return add(errs, path, "expected an object, got " .. describe(v)) end
        local keys = {}
        for k in pairs(v) do keys[#keys + 1] = tostring(k) end
        sort(keys)
        for _, k in ipairs(keys) do
            local check = fields[k]
            if check then
                check(v[k], join(path, k), errs, ctx)
            elseif not o.open then
                add(errs, join(path, k), "unknown field")
            end
        end
        for _, k in ipairs(o.required or {}) do
            if v[k] == nil then add(errs, join(path, k), "field required") end
        end
    end
end

--- A map: keys (strings) to values checked by val; o = {max (entries), key = string checker}
function C.map(val, o)
    o = o or {}
    return function(v, path, errs, ctx)
        if not C.is_object(v) then return add(errs, path, "expected an object, got " .. describe(v)) end
        local n = 0
        for k, x in pairs(v) do
            n = n + 1
            if o.key then o.key(k, join(path, tostring(k)), errs, ctx) end
            val(x, join(path, tostring(k)), errs, ctx)
        end
        if o.max and n > o.max then add(errs, path, "expected at most " .. o.max .. " entries") end
    end
end

--- v or JSON null.
function C.nullable(check)
    return function(v, path, errs, ctx)
        if v ~= null then check(v, path, errs, ctx) end
    end
end

--- The first checker whose test(v) is true checks v; none: error naming what was expected.
--- alts = {{test = function(v) -> bool, check = checker}, ...}, what = "a string or an array of parts"
function C.alt(alts, what)
    return function(v, path, errs, ctx)
        for _, a in ipairs(alts) do
            if a.test(v) then return a.check(v, path, errs, ctx) end
        end
        add(errs, path, "expected " .. what .. ", got " .. describe(v))
    end
end
function C.is_string(v) return type(v) == "string" end
function C.is_number(v) return type(v) == "number" end

--- A tagged union: the value of field `key` chooses the checker (variants = {tag = checker}).
function C.union(key, variants, what)
    return function(v, path, errs, ctx)
        if not C.is_object(v) then return add(errs, path, "expected an object, got " .. describe(v)) end
        local tag = v[key]
        local check = type(tag) == "string" and variants[tag]
        if not check then
            local names = {}
            for k in pairs(variants) do names[#names + 1] = k end
            sort(names)
            return add(errs, join(path, key), "unexpected " .. (what or key) .. " " .. describe(tag)
                .. " (allowed: " .. concat(names, ", ") .. ")")
        end
        check(v, path, errs, ctx)
    end
end

--- Exactly one of the listed fields is set (protobuf oneof / AWS unions).
function C.one_of_fields(names, fields, o)
    local inner = C.obj(fields, o)
    return function(v, path, errs, ctx)
        inner(v, path, errs, ctx)
        if not C.is_object(v) then return end
        local n = 0
        for _, k in ipairs(names) do if v[k] ~= nil then n = n + 1 end end
        if n ~= 1 then
            add(errs, path, "exactly one of " .. concat(names, ", ") .. " must be set (got " .. n .. ")")
        end
    end
end

--- Runs check on a decoded body and returns errs.
function C.run(check, v, ctx)
    local errs = {}
    check(v, "", errs, ctx or {})
    return errs
end

--- Lower-case header map from a {Name = value} table.
function C.headers(h)
    local out = {}
    for k, v in pairs(h or {}) do
        if type(v) == "table" then v = v[1] end
        out[tostring(k):lower()] = v
    end
    return out
end

--- Splits "path?query" -> path, {name = value} (values percent-decoded).
function C.split_query(p)
    local path, q = p:match("^([^?]*)%??(.*)$")
    local query = {}
    for pair in q:gmatch("[^&]+") do
        local k, v = pair:match("^([^=]*)=?(.*)$")
        v = v:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)
        query[k] = v
    end
    return path, query
end

C.null = null
return C

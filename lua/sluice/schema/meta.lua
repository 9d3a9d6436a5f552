-- sluice.schema.meta: checks that a schema (one a plugin declares) is well formed, once, at load.
local values = require("sluice.schema.values")

local type, pairs, ipairs, tostring, pcall, next, error = type, pairs, ipairs, tostring, pcall, next, error
local concat, sort, find = table.concat, table.sort, string.find
local is_array, is_integer, show, join = values.is_array, values.is_integer, values.show, values.join
local TYPES, FORMATS, MAX_DEPTH = values.TYPES, values.FORMATS, values.MAX_DEPTH

local _M = {}

local function schema_error(path, msg)
    error({ path = path, message = msg }, 0)
end

local function need(cond, path, msg)
    if not cond then schema_error(path, msg) end
end

local function count_ok(v) return is_integer(v) and v >= 0 end

local meta_check

local function meta_list(s, kw, path, depth)
    local l = s[kw]
    need(type(l) == "table" and is_array(l) and #l > 0, join(path, kw), "must be a non-empty array of schemas")
    for i, sub in ipairs(l) do meta_check(sub, join(join(path, kw), i), depth + 1) end
end

meta_check = function(s, path, depth)
    if type(s) == "boolean" then return end
    need(type(s) == "table", path, "schema must be a table")
    need(depth <= MAX_DEPTH, path, "schema is nested too deeply")
    local t = s.type
    if t ~= nil then
        local list = type(t) == "table" and t or { t }
        need(type(t) == "string" or (type(t) == "table" and #t > 0 and is_array(t)), join(path, "type"),
             "must be a type name or an array of type names")
        for _, tn in ipairs(list) do
            need(TYPES[tn], join(path, "type"), "unknown type " .. show(tn))
        end
    end
    for _, kw in ipairs({ "properties", "patternProperties" }) do
        if s[kw] ~= nil then
            need(type(s[kw]) == "table", join(path, kw), "must be a table of schemas")
            for k, sub in pairs(s[kw]) do
                need(type(k) == "string", join(path, kw), "keys must be strings")
                if kw == "patternProperties" then
                    need(pcall(find, "", k), join(path, kw), "invalid Lua pattern " .. show(k))
                end
                meta_check(sub, join(join(path, kw), k), depth + 1)
            end
        end
    end
    if s.required ~= nil then
        need(type(s.required) == "table" and is_array(s.required), join(path, "required"),
            "must be an array of field names")
        for _, k in ipairs(s.required) do need(type(k) == "string", join(path, "required"), "must contain strings") end
    end
    local ap = s.additionalProperties
    if ap ~= nil and type(ap) ~= "boolean" then meta_check(ap, join(path, "additionalProperties"), depth + 1) end
    if s.enum ~= nil then
        need(type(s.enum) == "table" and is_array(s.enum) and #s.enum > 0, join(path, "enum"),
            "must be a non-empty array")
    end
    for _, kw in ipairs({ "minimum", "maximum" }) do
        need(s[kw] == nil or type(s[kw]) == "number", join(path, kw), "must be a number")
    end
    for _, kw in ipairs({ "exclusiveMinimum", "exclusiveMaximum" }) do
        need(s[kw] == nil or type(s[kw]) == "number" or type(s[kw]) == "boolean", join(path, kw),
            "must be a number or boolean")
    end
    for _, kw in ipairs({ "minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties" }) do
        need(s[kw] == nil or count_ok(s[kw]), join(path, kw), "must be a non-negative integer")
    end
    if s.pattern ~= nil then
        need(type(s.pattern) == "string" and pcall(find, "", s.pattern), join(path, "pattern"),
            "must be a valid Lua pattern")
    end
    if s.format ~= nil then
        local names = {}
        for k in pairs(FORMATS) do names[#names + 1] = k end
        sort(names)
        need(FORMATS[s.format] ~= nil, join(path, "format"), "unknown format " .. show(s.format) .. " (known: "
            .. concat(names, ", ") .. ")")
    end
    if s.ref ~= nil then
        local kinds = {}
        for k in pairs(values.REF_KINDS) do kinds[#kinds + 1] = k end
        sort(kinds)
        need(values.REF_KINDS[s.ref] ~= nil, join(path, "ref"), "unknown entity kind " .. show(s.ref) .. " (known: "
            .. concat(kinds, ", ") .. ")")
    end
    if s.propertyNames ~= nil then meta_check(s.propertyNames, join(path, "propertyNames"), depth + 1) end
    if s.items ~= nil then
        need(type(s.items) == "table" or type(s.items) == "boolean", join(path, "items"),
            "must be a schema or an array of schemas")
        if type(s.items) == "table" and next(s.items) ~= nil and is_array(s.items) then
            for i, sub in ipairs(s.items) do meta_check(sub, join(join(path, "items"), i), depth + 1) end
        else
            meta_check(s.items, join(path, "items"), depth + 1)
        end
    end
    need(s.uniqueItems == nil or type(s.uniqueItems) == "boolean", join(path, "uniqueItems"), "must be a boolean")
    need(s.classes == nil or type(s.classes) == "boolean", join(path, "classes"), "must be a boolean")
    need(s.secret == nil or type(s.secret) == "boolean", join(path, "secret"), "must be a boolean")
    for _, kw in ipairs({ "oneOf", "anyOf", "allOf" }) do
        if s[kw] ~= nil then meta_list(s, kw, path, depth) end
    end
    if s["not"] ~= nil then meta_check(s["not"], join(path, "not"), depth + 1) end
    if s.dependencies ~= nil then
        need(type(s.dependencies) == "table", join(path, "dependencies"), "must be a table")
        for k, dep in pairs(s.dependencies) do
            local dp = join(join(path, "dependencies"), tostring(k))
            need(type(dep) == "table", dp, "must be an array of field names or a schema")
            if next(dep) ~= nil and is_array(dep) then
                for _, d in ipairs(dep) do need(type(d) == "string", dp, "must contain strings") end
            else
                meta_check(dep, dp, depth + 1)
            end
        end
    end
end

--- Checks that a schema (e.g. one a plugin declares) is well formed. Returns true | nil, "path: message".
function _M.check_schema(schema)
    local ok, e = pcall(meta_check, schema, "", 0)
    if ok then return true end
    if type(e) == "table" then
        return nil, ((e.path == "" and "(root)") or e.path) .. ": " .. tostring(e.message)
    end
    return nil, "(root): " .. tostring(e)
end


return _M

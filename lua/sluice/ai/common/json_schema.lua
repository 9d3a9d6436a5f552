-- sluice.ai.common.json_schema: JSON Schema (as OpenAI tools and response_format carry it) reduced to the
-- OpenAPI 3.0 subset Gemini's Schema object takes (ai.google.dev/api/caching#Schema).
--
--   json_schema.to_gemini(schema, path) -> schema | nil, err      err names the path of what cannot be expressed
--
-- What it does (docs/providers.md lists it as lossy mappings):
--   $ref to #/$defs/... or #/definitions/...  inlined (a recursive or unresolvable $ref is an error)
--   type: [T, "null"]                         T with nullable: true; several types -> anyOf
--   anyOf / oneOf                             anyOf; a {type: null} branch becomes nullable: true
--   allOf                                     merged when every branch is an object schema, else an error
--   const                                     a one-value enum
--   enum                                      strings only: numbers and booleans become their text and the
--                                             type becomes string; null becomes nullable: true; an empty
--                                             string cannot be expressed (Gemini: "enum[n]: cannot be empty")
--   format                                    kept only where Gemini knows it (string enum/date-time, number
--                                             float/double, integer int32/int64)
--   required                                  names without a property are left out
--   anything else (additionalProperties, $schema, strict, examples, exclusiveMinimum, multipleOf,
--   uniqueItems, patternProperties, not, if/then/else...)  dropped
local type, pairs, ipairs, tostring, next = type, pairs, ipairs, tostring, next
local floor, abs = math.floor, math.abs
local fmt = string.format

local _M = {}

local KEEP = {
    title = true, description = true, nullable = true, maxItems = true, minItems = true, minProperties = true,
    maxProperties = true, minLength = true, maxLength = true, pattern = true, example = true, default = true,
    minimum = true, maximum = true, propertyOrdering = true,
}
local FORMATS = { string = { enum = true, ["date-time"] = true }, number = { float = true, double = true },
    integer = { int32 = true, int64 = true } }
local MAX_DEPTH = 64
local MAX_NODES = 20000 -- $ref inlining can grow a small schema exponentially: past this it is refused

local function join(path, k)
    if type(k) == "number" then return path .. "[" .. (k - 1) .. "]" end
    return path .. "." .. k
end

local function text_of(v)
    if type(v) == "number" then
        if v == floor(v) and abs(v) < 2 ^ 53 then return fmt("%d", v) end
        return fmt("%.17g", v)
    end
    return tostring(v)
end

local null = require("cjson.safe").null
local function is_null(v)
    return v == nil or v == null
end

local convert

-- #/$defs/Name or #/definitions/Name -> the schema, or nil, err
local function resolve(ref, ctx, path)
    if type(ref) ~= "string" then return nil, path .. ".$ref: expected a string" end
    local name = ref:match("^#/%$defs/(.+)$") or ref:match("^#/definitions/(.+)$")
    local defs = name and (ref:find("^#/%$defs/") and ctx.root["$defs"] or ctx.root.definitions)
    local target = type(defs) == "table" and defs[name:gsub("~1", "/"):gsub("~0", "~")] or nil
    if ref == "#" then target, name = ctx.root, "#" end
    if type(target) ~= "table" then
        return nil, path .. ".$ref: " .. ref
            .. " cannot be resolved (only #/$defs/... and #/definitions/... are inlined)"
    end
    return target, nil, name
end

-- Merges the object schemas of an allOf into one (properties, required, the rest from the first that has it).
local function merge_all(list, ctx, path)
    local out = { type = "object", properties = {}, required = {} }
    for i, sub in ipairs(list) do
        local s, err = convert(sub, ctx, join(path, i))
        if not s then return nil, err end
        local t = type(s.type) == "string" and s.type:lower()
        if t ~= "object" and not (t == nil and s.properties) then
            return nil, join(path, i) .. ": allOf can only be expressed when every branch is an object schema"
        end
        for k, v in pairs(s.properties or {}) do out.properties[k] = v end
        for _, r in ipairs(s.required or {}) do out.required[#out.required + 1] = r end
        for k, v in pairs(s) do
            if k ~= "properties" and k ~= "required" and k ~= "type" and out[k] == nil then out[k] = v end
        end
    end
    if #out.required == 0 then out.required = nil end
    return out
end

local function convert_enum(values, out, path)
    local list, seen, changed = {}, {}, false
    for i, v in ipairs(values) do
        if is_null(v) then
            out.nullable = true
        else
            if type(v) ~= "string" then
                if type(v) ~= "number" and type(v) ~= "boolean" then
                    return nil, join(join(path, "enum"), i) .. ": only strings, numbers and booleans can be expressed"
                end
                v = text_of(v)
                changed = true
            end
            if v == "" then
                return nil, join(join(path, "enum"), i) .. ": an empty string cannot be expressed (Gemini: enum values "
                    .. "cannot be empty)"
            end
            if not seen[v] then
                seen[v] = true
                list[#list + 1] = v
            end
        end
    end
    if #list > 0 then
        out.enum = list
        if changed or out.type == nil or (type(out.type) == "string" and out.type:lower() ~= "string") then
            out.type = "string"
            out.format = nil
        end
    end
    return true
end

convert = function(s, ctx, path)
    ctx.depth = ctx.depth + 1
    ctx.nodes = ctx.nodes + 1
    if ctx.depth > MAX_DEPTH then return nil, path .. ": schema nested too deeply" end
    if ctx.nodes > MAX_NODES then return nil, path .. ": schema too large once its $refs are inlined" end
    if type(s) ~= "table" then
        ctx.depth = ctx.depth - 1
        return {} -- true / false schemas: nothing Gemini can say
    end
    local out = {}
    if s["$ref"] ~= nil then
        local target, err, name = resolve(s["$ref"], ctx, path)
        if not target then return nil, err end
        if ctx.stack[target] then
            return nil, path .. ".$ref: " .. tostring(name) .. " is recursive, which Gemini's schema cannot express"
        end
        ctx.stack[target] = true
        local r
        r, err = convert(target, ctx, path)
        ctx.stack[target] = nil
        if not r then return nil, err end
        out = r
    end
    if type(s.allOf) == "table" and #s.allOf > 0 then
        local merged, err = merge_all(s.allOf, ctx, path .. ".allOf")
        if not merged then return nil, err end
        for k, v in pairs(merged) do if out[k] == nil then out[k] = v end end
    end
    for k, v in pairs(s) do
        if KEEP[k] then out[k] = v end
    end
    -- type
    local t = s.type
    if type(t) == "table" then
        local types = {}
        for _, x in ipairs(t) do
            if x == "null" then out.nullable = true else types[#types + 1] = x end
        end
        if #types == 1 then
            out.type = types[1]
        elseif #types > 1 then
            local any = {}
            for i, x in ipairs(types) do any[i] = { type = x } end
            out.anyOf = any
        end
    elseif type(t) == "string" then
        out.type = t
    end
    -- anyOf / oneOf
    local alts = s.anyOf or s.oneOf
    if type(alts) == "table" and #alts > 0 then
        local any = {}
        for i, sub in ipairs(alts) do
            if type(sub) == "table" and sub.type == "null" and next(sub, next(sub)) == nil then
                out.nullable = true
            else
                local c, err = convert(sub, ctx, join(path .. (s.anyOf and ".anyOf" or ".oneOf"), i))
                if not c then return nil, err end
                any[#any + 1] = c
            end
        end
        if #any == 1 and out.type == nil and out.properties == nil then
            for k, v in pairs(any[1]) do if out[k] == nil then out[k] = v end end
        elseif #any > 0 then
            out.anyOf = any
        end
    end
    -- const / enum
    if s.const ~= nil then
        local ok, err = convert_enum({ s.const }, out, path)
        if not ok then return nil, err end
    elseif type(s.enum) == "table" then
        local ok, err = convert_enum(s.enum, out, path)
        if not ok then return nil, err end
    end
    -- properties / items
    if type(s.properties) == "table" then
        local props = out.properties or {}
        for name, sub in pairs(s.properties) do
            local c, err = convert(sub, ctx, join(path .. ".properties", name))
            if not c then return nil, err end
            props[name] = c
        end
        out.properties = props
        if out.type == nil then out.type = "object" end
    end
    if type(s.required) == "table" then
        local req = {}
        for _, name in ipairs(s.required) do
            if type(out.properties) == "table" and out.properties[name] ~= nil then req[#req + 1] = name end
        end
        out.required = #req > 0 and req or nil
    end
    if s.items ~= nil then
        local items = s.items
        if type(items) == "table" and items[1] ~= nil then items = items[1] end -- tuple form: its first item
        local c, err = convert(items, ctx, path .. ".items")
        if not c then return nil, err end
        out.items = c
        if out.type == nil then out.type = "array" end
    end
    -- format
    if type(s.format) == "string" and out.format == nil then
        local ft = type(out.type) == "string" and FORMATS[out.type:lower()]
        if ft and ft[s.format] then out.format = s.format end
    end
    ctx.depth = ctx.depth - 1
    return out
end

--- JSON Schema -> Gemini Schema | nil, err (err names the path, e.g. "tools[0].function.parameters.properties.x").
function _M.to_gemini(schema, path)
    if type(schema) ~= "table" then return nil, (path or "schema") .. ": expected an object" end
    return convert(schema, { root = schema, stack = { [schema] = true }, depth = 0, nodes = 0 }, path or "schema")
end

return _M

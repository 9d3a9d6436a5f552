-- A JSON-schema subset for config and plugin validation (see docs/configuration.md, "Schemas").
--
-- validate(schema, value) never throws: a bad value, a bad schema or a cyclic table all end up
-- as error entries. `pattern` and `patternProperties` keys are Lua patterns, not regexes.
-- Beyond JSON schema: `secret = true` marks a value that is a secret (error messages never show it; sluice.secrets
-- keeps it encrypted in the state file and redacts it in Admin API answers). `format` names a built-in check
-- (sluice.schema.values FORMATS: host, header_name, header_value, url, uri_path, id), and `ref = KIND` marks a
-- string that names another config entity (a provider, an upstream, ...): validate() only collects such references;
-- sluice.config resolves them against the whole config.
-- Types people write in YAML (docs/configuration.md, "Values"): `duration` (seconds, or "500ms"/"5s"/"1m30s" ->
-- seconds), `size` (bytes, or "64k"/"8m"/"1g" -> bytes), `status` (100..599 or "429" -> integer; with
-- `classes = true` also "5xx"); `boolean` also takes the strings true/false/yes/no/on/off, `number` and `integer`
-- a decimal string ("2"). The value is replaced by its normal form, so code after validation sees only that.
-- Those string spellings count only when no branch of an anyOf/oneOf (or no other listed type) takes the value
-- as it is.
-- An empty Lua table is both an empty object and an empty array; in objects a cjson.null value
-- counts as absent (as YAML nulls do), so defaults and `required` treat it the same way.
local type, pairs, ipairs, tostring, pcall, next = type, pairs, ipairs, tostring, pcall, next
local concat, sort, find, format = table.concat, table.sort, string.find, string.format

local values = require("sluice.schema.values")
local meta = require("sluice.schema.meta")

local null, MAX_DEPTH = values.null, values.MAX_DEPTH
local FORMATS, PARSED, COERCE, TYPE_TEXT = values.FORMATS, values.PARSED, values.COERCE, values.TYPE_TEXT
local is_array, type_matches, deep_equal = values.is_array, values.type_matches, values.deep_equal
local describe, show, join, deep_copy = values.describe, values.show, values.join, values.deep_copy

local _M = {
    REF_KINDS = values.REF_KINDS, FORMATS = FORMATS, parse_duration = values.parse_duration,
    parse_size = values.parse_size, deep_copy = deep_copy, deep_equal = values.deep_equal,
    check_schema = meta.check_schema,
}

local function add(errs, path, msg)
    errs[#errs + 1] = { path = path, message = msg }
end

-- Replaces the contents of table dst with those of src, so defaults a branch filled reach the caller.
local function replace_contents(dst, src)
    if type(dst) ~= "table" or type(src) ~= "table" or dst == src then return end
    for k in pairs(dst) do dst[k] = nil end
    for k, v in pairs(src) do dst[k] = v end
end

local check, match_type -- forward

local function check_object(s, v, path, errs, depth)
    for k, x in pairs(v) do
        if null ~= nil and x == null then v[k] = nil end
    end
    local props = s.properties
    if props then
        for k, ps in pairs(props) do
            if v[k] == nil and type(ps) == "table" and ps.default ~= nil then
                v[k] = deep_copy(ps.default)
            end
        end
    end
    if s.required then
        for _, k in ipairs(s.required) do
            if v[k] == nil then add(errs, join(path, k), "is required") end
        end
    end
    if s.dependencies then
        for k, dep in pairs(s.dependencies) do
            if v[k] ~= nil and type(dep) == "table" then
                if is_array(dep) and next(dep) ~= nil then
                    for _, d in ipairs(dep) do
                        if v[d] == nil then
                            add(errs, join(path, d), "is required when " .. tostring(k) .. " is set")
                        end
                    end
                else
                    v = check(dep, v, path, errs, depth + 1)
                end
            end
        end
    end
    local nprops, unknown = 0, nil
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    sort(keys, function(a, b) return tostring(a) < tostring(b) end) -- stable error order
    for _, k in ipairs(keys) do
        nprops = nprops + 1
        local kp = join(path, tostring(k))
        local matched = false
        if s.propertyNames ~= nil then check(s.propertyNames, tostring(k), kp, errs, depth + 1) end
        if props and props[k] ~= nil then
            matched = true
            v[k] = check(props[k], v[k], kp, errs, depth + 1)
        end
        if s.patternProperties and type(k) == "string" then
            for pat, ps in pairs(s.patternProperties) do
                local okp, hit = pcall(find, k, pat)
                if okp and hit then
                    matched = true
                    v[k] = check(ps, v[k], kp, errs, depth + 1)
                end
            end
        end
        if not matched then
            local ap = s.additionalProperties
            if ap == false then
                unknown = unknown or {}
                unknown[#unknown + 1] = kp
            elseif type(ap) == "table" then
                v[k] = check(ap, v[k], kp, errs, depth + 1)
            end
        end
    end
    if unknown then
        local allowed = {}
        for k in pairs(props or {}) do allowed[#allowed + 1] = tostring(k) end
        sort(allowed)
        sort(unknown)
        for _, kp in ipairs(unknown) do
            add(errs, kp, "unknown field" .. (#allowed > 0 and (" (allowed: " .. concat(allowed, ", ") .. ")") or ""))
        end
    end
    if s.minProperties and nprops < s.minProperties then
        add(errs, path, format("must have at least %d field(s)", s.minProperties))
    end
    if s.maxProperties and nprops > s.maxProperties then
        add(errs, path, format("must have at most %d field(s)", s.maxProperties))
    end
    return v
end

local function check_array(s, v, path, errs, depth)
    local n = #v
    if s.minItems and n < s.minItems then add(errs, path, format("must have at least %d item(s)", s.minItems)) end
    if s.maxItems and n > s.maxItems then add(errs, path, format("must have at most %d item(s)", s.maxItems)) end
    local items = s.items
    if type(items) == "table" then
        local tuple = next(items) ~= nil and is_array(items)
        for i = 1, n do
            local is = tuple and items[i] or (not tuple and items) or nil
            if is then v[i] = check(is, v[i], join(path, i), errs, depth + 1) end
        end
    end
    if s.uniqueItems then
        for i = 1, n do
            for j = i + 1, n do
                if deep_equal(v[i], v[j]) then
                    add(errs, join(path, j), format("duplicate of item %d (items must be unique)", i))
                end
            end
        end
    end
    return v
end

local function check_string(s, v, path, errs)
    local len = #v
    local fmt = s.format and FORMATS[s.format]
    if fmt and not fmt[1](v) then
        add(errs, path, format("must be %s, got %s", fmt[2], show(v, s)))
    end
    if type(s.ref) == "string" and errs.refs then
        errs.refs[#errs.refs + 1] = { kind = s.ref, id = v, path = path }
    end
    if s.minLength and len < s.minLength then
        add(errs, path, format("must be at least %d character(s) long", s.minLength))
    end
    if s.maxLength and len > s.maxLength then
        add(errs, path, format("must be at most %d character(s) long", s.maxLength))
    end
    if type(s.pattern) == "string" then
        local okp, hit = pcall(find, v, s.pattern)
        if not (okp and hit) then
            add(errs, path, format("does not match pattern %q, got %s", s.pattern, show(v, s)))
        end
    end
end

local UNIT = { duration = " s", size = " bytes" }

local function check_number(s, v, path, errs)
    local emin, emax = s.exclusiveMinimum, s.exclusiveMaximum
    local u = UNIT[s.type] or ""
    local function bad(op, limit)
        add(errs, path, format("must be %s %s%s, got %s%s", op, tostring(limit), u, tostring(v), u))
    end
    -- `not (v > m)` rather than `v <= m`: NaN compares false both ways and must fail (luacheck: ignore 581)
    -- luacheck: push ignore 581
    if s.minimum then
        if emin == true and not (v > s.minimum) then bad(">", s.minimum)
        elseif not (v >= s.minimum) then bad(">=", s.minimum) end
    end
    if s.maximum then
        if emax == true and not (v < s.maximum) then bad("<", s.maximum)
        elseif not (v <= s.maximum) then bad("<=", s.maximum) end
    end
    if type(emin) == "number" and not (v > emin) then bad(">", emin) end
    if type(emax) == "number" and not (v < emax) then bad("<", emax) end
    -- luacheck: pop
end

local function branch_summary(berrs, path)
    local e = berrs[1]
    if not e then return "?" end
    local p = e.path
    if p ~= path and p:sub(1, #path) == path then p = p:sub(#path + 1):gsub("^%.", "") else p = "" end
    return (p ~= "" and (p .. ": ") or "") .. e.message
end

local function check_combinators(s, v, path, errs, depth)
    if s.allOf then
        for _, sub in ipairs(s.allOf) do v = check(sub, v, path, errs, depth + 1) end
    end
    for _, kw in ipairs({ "anyOf", "oneOf" }) do
        local list = s[kw]
        if list then
            -- first the branches that take v as it is; only when none does, other spellings ("5", "on")
            local passed, first, why
            for pass = 1, errs.strict and 1 or 2 do
                passed, first, why = {}, nil, {}
                for i, sub in ipairs(list) do
                    local be, copy = { refs = errs.refs and {} or nil, strict = pass == 1 }, deep_copy(v)
                    copy = check(sub, copy, path, be, depth + 1)
                    if #be == 0 then
                        passed[#passed + 1] = i
                        if not first and be.refs then
                            for _, r in ipairs(be.refs) do errs.refs[#errs.refs + 1] = r end
                        end
                        first = first or { copy }
                        if kw == "anyOf" then break end
                    else
                        why[#why + 1] = "(" .. i .. ") " .. branch_summary(be, path)
                    end
                end
                if #passed > 0 then break end
            end
            if #passed == 0 then
                add(errs, path, "does not match any allowed form: " .. concat(why, "; "))
            elseif kw == "oneOf" and #passed > 1 then
                add(errs, path, format("matches more than one allowed form (%s)", concat(passed, " and ")))
            elseif type(v) == "table" then
                replace_contents(v, first[1])
            else
                v = first[1] -- a scalar in its normal form ("5s" -> 5), or a default the branch filled
            end
        end
    end
    if s["not"] ~= nil then
        local be = {}
        check(s["not"], deep_copy(v), path, be, depth + 1)
        if #be == 0 then add(errs, path, "must not match the excluded form") end
    end
    return v
end

local function type_error(s, list, v)
    local names, spelled = {}, false
    for i, tn in ipairs(list) do
        if tn == "status" then
            names[i] = "an HTTP status (100..599)" .. (s.classes == true and " or a class (1xx..5xx)" or "")
        else
            names[i] = TYPE_TEXT[tn] or tn
        end
        spelled = spelled or names[i] ~= tn
    end
    -- for the types with spellings the value itself helps; plain types name the type they got
    local got = (spelled and type(v) ~= "table") and show(v, s) or describe(v)
    local msg = format("expected %s, got %s", concat(names, " or "), got)
    if type(v) == "number" and #list == 1 and list[1] == "string" then
        -- the hint helps with a secret too (an all-digit key), without its value
        msg = msg .. (s.secret and "" or " " .. tostring(v))
            .. " (YAML reads an unquoted number as a number: put it in quotes)"
    end
    return msg
end

-- Does v have one of the types s.type lists? true, v in its normal form | false, error message. A value taken as
-- it is wins over another spelling (unless strict, which allows only the former: see check_combinators).
match_type = function(s, v, strict)
    local t = s.type
    local list = type(t) == "table" and t or { t }
    for _, tn in ipairs(list) do
        local parse = PARSED[tn]
        if parse then
            local nv = parse(v, s)
            if nv ~= nil then return true, nv end
        elseif type_matches(tn, v) then
            return true, v
        end
    end
    if not strict then
        for _, tn in ipairs(list) do
            local conv = COERCE[tn]
            local nv = conv and conv(v)
            if nv ~= nil then return true, nv end
        end
    end
    return false, type_error(s, list, v)
end

-- Validates v against s, appending to errs; returns v (possibly a new value built from defaults).
check = function(s, v, path, errs, depth)
    if type(s) ~= "table" then
        if s == false then add(errs, path, "is not allowed") end
        return v
    end
    if depth > MAX_DEPTH then
        add(errs, path, "is nested too deeply")
        return v
    end
    if v == nil and s.default ~= nil then v = deep_copy(s.default) end
    if s.type ~= nil then
        local okt, nv = match_type(s, v, errs.strict)
        if not okt then
            add(errs, path, nv)
            return v
        end
        v = nv
    end
    if s.enum then
        local found = false
        for _, e in ipairs(s.enum) do
            if deep_equal(e, v) then found = true break end
        end
        if not found then
            local names = {}
            for i, e in ipairs(s.enum) do names[i] = type(e) == "string" and e or tostring(e) end
            add(errs, path, format("expected one of: %s; got %s", concat(names, ", "), show(v, s)))
        end
    end
    if s.const ~= nil and not deep_equal(s.const, v) then
        add(errs, path, format("expected %s, got %s", show(s.const), show(v, s)))
    end
    local tv = type(v)
    if tv == "table" then
        if not is_array(v) or next(v) == nil then v = check_object(s, v, path, errs, depth) end
        if is_array(v) then v = check_array(s, v, path, errs, depth) end
    elseif tv == "string" then
        check_string(s, v, path, errs)
    elseif tv == "number" then
        check_number(s, v, path, errs)
    end
    return check_combinators(s, v, path, errs, depth)
end

--- Validates value against schema, filling defaults in place. Returns true, value | nil, errors.
--- refs (optional list): gets one {kind, id, path} per string with a `ref` annotation, for the caller to resolve.
function _M.validate(schema, value, refs)
    local errs = { refs = refs }
    local ok, res = pcall(check, schema, value, "", errs, 0)
    errs.refs = nil
    if not ok then
        add(errs, "", "validation failed: " .. tostring(res))
    end
    if #errs > 0 then return nil, errs end
    return true, res
end

--- Formats an error list as "path: message" lines.
function _M.format_errors(errs)
    if type(errs) ~= "table" then return tostring(errs) end
    local out = {}
    for i, e in ipairs(errs) do
        local p = type(e) == "table" and e.path or ""
        local m = type(e) == "table" and e.message or tostring(e)
        out[i] = ((p == nil or p == "") and "(root)" or tostring(p)) .. ": " .. tostring(m)
    end
    return concat(out, "\n")
end

_M.is_array = is_array
_M.describe = describe

return _M

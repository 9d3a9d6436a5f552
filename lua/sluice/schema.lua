-- A JSON-schema subset for config and plugin validation (see docs/configuration.md, "Schemas").
--
-- validate(schema, value) never throws: a bad value, a bad schema or a cyclic table all end up
-- as error entries. `pattern` and `patternProperties` keys are Lua patterns, not regexes.
-- Beyond JSON schema: `secret = true` marks a value that is a secret (error messages never show it; sluice.secrets
-- keeps it encrypted in the state file and redacts it in Admin API answers). `format` names a built-in check (FORMATS below: host, header_name, header_value, url,
-- uri_path, id), and `ref = KIND` marks a string that names another config entity (a provider, an upstream, ...):
-- validate() only collects such references; sluice.config resolves them against the whole config.
-- Types people write in YAML (docs/configuration.md, "Values"): `duration` (seconds, or "500ms"/"5s"/"1m30s" ->
-- seconds), `size` (bytes, or "64k"/"8m"/"1g" -> bytes), `status` (100..599 or "429" -> integer; with
-- `classes = true` also "5xx"); `boolean` also takes the strings true/false/yes/no/on/off, `number` and `integer`
-- a decimal string ("2"). The value is replaced by its normal form, so code after validation sees only that.
-- Those string spellings count only when no branch of an anyOf/oneOf (or no other listed type) takes the value
-- as it is.
-- An empty Lua table is both an empty object and an empty array; in objects a cjson.null value
-- counts as absent (as YAML nulls do), so defaults and `required` treat it the same way.
local type, pairs, ipairs, tostring, tonumber, pcall, next = type, pairs, ipairs, tostring, tonumber, pcall, next
local floor, huge = math.floor, math.huge
local concat, sort, find, format = table.concat, table.sort, string.find, string.format

local ok_cjson, cjson = pcall(require, "cjson")
local null = ok_cjson and cjson.null or nil
local empty_array_mt = ok_cjson and cjson.empty_array_mt or nil

local MAX_DEPTH = 200

local _M = {}

local TYPES = { object = true, array = true, string = true, number = true, integer = true,
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
local PARSED = { duration = parse_duration, size = parse_size, status = parse_status }
-- Other spellings of plain types, accepted when nothing takes the value as it is: name -> converter(v).
local COERCE = {
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
local TYPE_TEXT = {
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
                        if v[d] == nil then add(errs, join(path, d), "is required when " .. tostring(k) .. " is set") end
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
    if s.minLength and len < s.minLength then add(errs, path, format("must be at least %d character(s) long", s.minLength)) end
    if s.maxLength and len > s.maxLength then add(errs, path, format("must be at most %d character(s) long", s.maxLength)) end
    if type(s.pattern) == "string" then
        local okp, hit = pcall(find, v, s.pattern)
        if not (okp and hit) then add(errs, path, format("does not match pattern %q, got %s", s.pattern, show(v, s))) end
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
        need(type(s.required) == "table" and is_array(s.required), join(path, "required"), "must be an array of field names")
        for _, k in ipairs(s.required) do need(type(k) == "string", join(path, "required"), "must contain strings") end
    end
    local ap = s.additionalProperties
    if ap ~= nil and type(ap) ~= "boolean" then meta_check(ap, join(path, "additionalProperties"), depth + 1) end
    if s.enum ~= nil then
        need(type(s.enum) == "table" and is_array(s.enum) and #s.enum > 0, join(path, "enum"), "must be a non-empty array")
    end
    for _, kw in ipairs({ "minimum", "maximum" }) do
        need(s[kw] == nil or type(s[kw]) == "number", join(path, kw), "must be a number")
    end
    for _, kw in ipairs({ "exclusiveMinimum", "exclusiveMaximum" }) do
        need(s[kw] == nil or type(s[kw]) == "number" or type(s[kw]) == "boolean", join(path, kw), "must be a number or boolean")
    end
    for _, kw in ipairs({ "minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties" }) do
        need(s[kw] == nil or count_ok(s[kw]), join(path, kw), "must be a non-negative integer")
    end
    if s.pattern ~= nil then
        need(type(s.pattern) == "string" and pcall(find, "", s.pattern), join(path, "pattern"), "must be a valid Lua pattern")
    end
    if s.format ~= nil then
        local names = {}
        for k in pairs(FORMATS) do names[#names + 1] = k end
        sort(names)
        need(FORMATS[s.format] ~= nil, join(path, "format"), "unknown format " .. show(s.format) .. " (known: " .. concat(names, ", ") .. ")")
    end
    if s.ref ~= nil then
        local kinds = {}
        for k in pairs(_M.REF_KINDS) do kinds[#kinds + 1] = k end
        sort(kinds)
        need(_M.REF_KINDS[s.ref] ~= nil, join(path, "ref"), "unknown entity kind " .. show(s.ref) .. " (known: " .. concat(kinds, ", ") .. ")")
    end
    if s.propertyNames ~= nil then meta_check(s.propertyNames, join(path, "propertyNames"), depth + 1) end
    if s.items ~= nil then
        need(type(s.items) == "table" or type(s.items) == "boolean", join(path, "items"), "must be a schema or an array of schemas")
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

_M.is_array = is_array
_M.describe = describe

return _M

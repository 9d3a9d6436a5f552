-- Ids, references between entities and error reporting of the config (sluice.config validates with these):
-- which ids are valid, the entries of a section (a map or a list), whether every reference names an entity
-- that exists, who still names one (the Admin API's 409 on a delete), unique consumer keys, overlapping routes,
-- and errors as "FILE:LINE: path: message" lines.
local schema = require("sluice.schema")
local cjson = require("cjson")

local type, pairs, ipairs, tostring, pcall, next = type, pairs, ipairs, tostring, pcall, next
local concat, sort, format = table.concat, table.sort, string.format
local is_array = schema.is_array

local _M = {}

--- The field that holds an entity's id, for the kinds written as lists (and kept in their objects).
local ID_FIELD = { routes = "id", upstreams = "id", consumers = "name" }
_M.ID_FIELD = ID_FIELD

-- Entity ids (routes, upstreams, providers, consumers, consumer groups): letters, digits, '_', '.', '-', not
-- starting with '.' or '-' (no ".", "..", "-x"), 1..256 characters. They appear in Admin API URLs, the state
-- file, logs and (provider names) response headers.
_M.ID_T = { type = "string", format = "id", minLength = 1, maxLength = 256 }
local id_t = _M.ID_T

local function join(path, key)
    if type(key) == "number" then return path .. "[" .. key .. "]" end
    if path == "" then return tostring(key) end
    return path .. "." .. tostring(key)
end

local function add(errs, path, msg) errs[#errs + 1] = { path = path, message = msg } end

-- What a reference names, for messages: kind -> singular, where it is defined.
local REF_WHAT = { upstreams = { "upstream", "upstreams" }, providers = { "provider", "providers" },
                   consumers = { "consumer", "consumers" }, consumer_groups = { "consumer group", "consumer_groups" },
                   routes = { "route", "routes" }, shared_dicts = { "shared dict", "node.shared_dicts" },
                   plugins = { "plugin", "node.plugin_paths" } }

-- A map key or list id must be an id (plugin metadata is keyed by plugin name, checked by its normalizer).
local check_id = function(...) return _M.check_id(...) end

--- nil when id is a valid id for entities of kind (Admin API URLs), else why not.
function _M.id_error(kind, id)
    local errs = {}
    if check_id(kind, id, "", errs) then return nil end
    return errs[1].message
end

--- Checks an id (a map key or a list entry's id field) of kind; adds an error at path when invalid. true | false.
function _M.check_id(kind, id, path, errs)
    if kind == "plugin_metadata" then
        if type(id) ~= "string" or not id:match("^[%w_%-]+$") or #id > 128 then
            local shown = schema.describe(id) == "string" and format("%q", id) or schema.describe(id)
            add(errs, path, format("invalid plugin name %s", shown))
            return false
        end
        return true
    end
    local ok, e = schema.validate(id_t, id)
    if not ok then add(errs, path, (ID_FIELD[kind] and "" or "key ") .. e[1].message) end
    return ok ~= nil
end

--- The entries {id, obj, path} of a section, written either as a map id -> entity or a list of
--- entities.
function _M.entries(kind, v, errs)
    local list, id_field = {}, ID_FIELD[kind]
    if v == nil or v == cjson.null then return list end
    if type(v) ~= "table" then
        add(errs, kind, "expected " .. (kind == "routes" and "a list" or "a map") .. ", got " .. schema.describe(v))
        return list
    end
    if next(v) == nil then return list end
    if is_array(v) then
        if not id_field then add(errs, kind, "expected a map of name -> entry, got a list") return list end
        for i, e in ipairs(v) do
            if e ~= false then
                list[#list + 1] = { id = type(e) == "table" and e[id_field] or nil, obj = e,
                                    path = kind .. "[" .. i .. "]" }
            end
        end
    else
        if kind == "routes" then add(errs, kind, "expected a list of routes") return list end
        for id, e in pairs(v) do
            if not id_field then check_id(kind, id, join(kind, id), errs) end
            if type(e) == "table" and id_field and e[id_field] == nil then e[id_field] = id end
            if type(e) == "table" and id_field and e[id_field] ~= id then
                add(errs, join(join(kind, id), id_field), format("must match its key %q", tostring(id)))
            end
            list[#list + 1] = { id = id, obj = e, path = join(kind, id) }
        end
        sort(list, function(a, b) return tostring(a.id) < tostring(b.id) end)
    end
    return list
end


-- Finds each error's source line: the line of its path, or of the nearest parent that has one.
function _M.line_of(lines, path)
    local p = path
    while p and p ~= "" do
        if lines[p] then return lines[p] end
        local parent = p:match("^(.*)%[%d+%]$") or p:match("^(.*)%.[^%.%[]*$")
        if parent == p then break end
        p = parent
    end
    return nil
end


-- Does cfg define an entity of this kind and id? (plugins: opts.plugins, the registry, when there is one)
local function defines(cfg, kind, id, opts)
    if kind == "shared_dicts" then
        return not cfg.node or (cfg.node.shared_dicts or {})[id] ~= nil -- no node: its errors are reported
    elseif kind == "plugins" then
        if not (opts and opts.plugins) then return true end
        local ok, p = pcall(opts.plugins.get, id)
        return ok and p ~= nil
    elseif kind == "routes" or kind == "consumers" then
        for _, e in ipairs(cfg[kind] or {}) do
            if e[ID_FIELD[kind]] == id then return true end
        end
        return false
    end
    return (cfg[kind] or {})[id] ~= nil
end

--- The reference checker, one for the config file, `sluice -t`, SIGHUP and the Admin API: every ref
--- ({kind, id, path} from `ref` schema annotations, core and plugin schemas alike) must name an entity that
--- cfg defines; each one that does not is an error at its path.
function _M.resolve_refs(cfg, refs, errs, opts)
    for _, r in ipairs(refs or {}) do
        if not defines(cfg, r.kind, r.id, opts) then
            local what = REF_WHAT[r.kind] or { r.kind, r.kind }
            add(errs, r.path, format("unknown %s %q (not defined under %s)", what[1], tostring(r.id), what[2]))
        end
    end
end

--- Who still names entity kind/id in cfg: a list of "kind id (path)" strings, empty when nothing does. The
--- Admin API refuses a delete with 409 while this is not empty (the same refs resolve_refs checks).
function _M.users_of(cfg, kind, id)
    local out, seen = {}, {}
    for _, r in ipairs(cfg and cfg.refs or {}) do
        if r.kind == kind and r.id == id then
            local o = r.owner or {}
            local who = o.id ~= nil
                and (REF_WHAT[o.kind] and REF_WHAT[o.kind][1] or tostring(o.kind)) .. " " .. tostring(o.id)
                or tostring(o.kind or "config")
            local s = who .. " (" .. r.path .. ")"
            if not seen[s] then seen[s], out[#out + 1] = true, s end
        end
    end
    return out
end

--- Checks what refs do not cover: unique consumer keys; fills cfg.warnings (overlapping routes).
function _M.check_refs(cfg, errs, paths)
    local seen_route = {}
    paths = paths or {}
    for _, r in ipairs(cfg.routes) do
        for _, p in ipairs(r.paths) do
            for _, m in ipairs(r.methods or { "*" }) do
                for _, h in ipairs(r.hosts or { "*" }) do
                    local key = p .. " " .. m .. " " .. h
                    if seen_route[key] then
                        cfg.warnings[#cfg.warnings + 1] = format("routes %q and %q both match %s %s (host %s)",
                            seen_route[key], r.id, m, p, h)
                    end
                    seen_route[key] = seen_route[key] or r.id
                end
            end
        end
    end
    local keys = {}
    for i, c in ipairs(cfg.consumers) do
        for j, k in ipairs(c.keys) do
            if keys[k] and keys[k] ~= c.name then
                add(errs, join(paths[c] or ("consumers[" .. i .. "]"), "keys") .. "[" .. j .. "]",
                    format("key is already used by consumer %q", keys[k]))
            end
            keys[k] = c.name
        end
    end
end

--- Formats an error list as "FILE:LINE: path: message" lines (FILE/LINE left out when unknown).
function _M.format_errors(errs, file, lines)
    local out = {}
    for i, e in ipairs(errs) do
        local line = e.line or (lines and _M.line_of(lines, e.path))
        local f = e.file or file
        local where = f and (f .. (line and (":" .. line) or "") .. ": ") or ""
        out[i] = where .. ((e.path == nil or e.path == "") and "(root)" or e.path) .. ": " .. tostring(e.message)
    end
    return concat(out, "\n")
end

return _M

-- The config center's entries (lua/sluice/config/center.lua, docs/cluster.md): etcd keys and values as
-- entities, checked one by one as the Admin API checks a body, and the choice of what to serve when some of them
-- do not validate together (settle): the last good version of each refused change stays.
local cjson = require("cjson.safe")
local store = require("sluice.config.store")
local config = require("sluice.config")
local schema = require("sluice.schema")
local secrets = require("sluice.secrets")

local type, pairs, ipairs, tostring, next, pcall = type, pairs, ipairs, tostring, next, pcall
local format, concat, sort = string.format, table.concat, table.sort
local is_array = schema.is_array

local vjson = require("cjson.safe").new() -- entity values: the Admin API's rules for bodies
vjson.decode_invalid_numbers(false)
vjson.decode_max_depth(100)

local _M = {}

--- The kinds, what others refer to first (import writes in this order).
_M.KINDS = { "upstreams", "providers", "consumer_groups", "plugin_metadata", "consumers", "global_plugins",
             "routes" }
local ENTITY = { routes = true, upstreams = true, providers = true, consumers = true, consumer_groups = true,
                 plugin_metadata = true }
local ID_FIELD = { routes = "id", upstreams = "id", consumers = "name" }
_M.ID_FIELD = ID_FIELD
local LIST = { routes = true, consumers = true }
local MAX_ERROR = 1000 -- characters of a refusal kept and logged
_M.vjson = vjson

--- The etcd key of an entity.
function _M.key(prefix, kind, id)
    if kind == "global_plugins" then return prefix .. "/global_plugins" end
    return prefix .. "/" .. kind .. "/" .. id
end

--- kind, id of a key under prefix | nil, nil, why
function _M.parse_key(prefix, key)
    if key:sub(1, #prefix + 1) ~= prefix .. "/" then return nil, nil, "outside the prefix " .. prefix end
    local rest = key:sub(#prefix + 2)
    if rest == "global_plugins" then return "global_plugins", nil end
    local kind, id = rest:match("^([%w_]+)/(.+)$")
    if kind == "nodes" then return nil, nil, "a node's registration (sluice.config.nodes), not config" end
    if not kind or not ENTITY[kind] then
        return nil, nil, "not a Sluice key (expected PREFIX/<routes|upstreams|providers|consumers|consumer_groups|"
            .. "plugin_metadata>/<id> or PREFIX/global_plugins)"
    end
    local bad = config.id_error(kind, id)
    if bad then return nil, nil, "invalid id in the key: " .. bad end
    return kind, id
end

--- An error on one line, bounded (for logs and GET /admin/status).
function _M.one_line(s)
    s = tostring(s):gsub("\n", "; ")
    if #s > MAX_ERROR then s = s:sub(1, MAX_ERROR) .. "..." end
    return s
end

--- An etcd kv as an entry {key, kind, id, value, obj, create_revision, mod_revision}; entry.err instead of obj
--- when the value is not a valid entity on its own (the Admin API's first check), or holds a sealed secret that
--- keyring kr (sluice.secrets; nil: no master key) does not open. entry.plain lists the secret fields the value
--- holds in the clear; with a master key, entry.sealed_value is then the value with them sealed (for the local
--- snapshot, which never holds a secret in the clear when there is a key).
function _M.decode_entry(prefix, kv, reg, kr)
    local e = { key = kv.key, value = kv.value, create_revision = kv.create_revision, mod_revision = kv.mod_revision }
    local kind, id, why = _M.parse_key(prefix, kv.key)
    if not kind then e.err = why return e end
    e.kind, e.id = kind, id
    local t, jerr = vjson.decode(kv.value)
    if type(t) ~= "table" or (next(t) ~= nil and is_array(t)) then
        e.err = "the value is not a JSON object" .. (jerr and (" (" .. tostring(jerr) .. ")") or "")
        return e
    end
    local schema_of = secrets.schema_lookup(reg and function(n) return reg:get(n) end)
    e.plain = secrets.plain_in_entity(kind, id, t, schema_of)
    if e.plain and kr and kr.current then
        local sealed = secrets.seal_entity(kr, kind, id, t, schema_of)
        e.sealed_value = sealed and cjson.encode(sealed) or nil
    end
    local opened, serr = secrets.open_entity(kr, kind, id, t)
    if not opened then e.err = "a sealed secret does not open: " .. serr return e end
    local obj, derr = store.decode(kind, id, opened)
    if not obj then e.err = derr return e end
    local idf = ID_FIELD[kind]
    if idf then
        if obj[idf] ~= nil and obj[idf] ~= id then
            e.err = format("%s %s does not match the id in the key (%q)", idf, cjson.encode(obj[idf]) or "?", id)
            return e
        end
        obj[idf] = id
    end
    local ok, res, errs = pcall(config.validate_entity, kind, id, obj, nil, { plugins = reg.for_config })
    if not ok then e.err = "cannot be checked: " .. tostring(res) return e end
    if errs then e.err = _M.one_line(config.format_errors(errs)) return e end
    e.obj = obj
    return e
end

--- A shallow copy of a set of entries (key -> entry).
function _M.copy(set)
    local c = {}
    for k, v in pairs(set) do c[k] = v end
    return c
end

--- Do two sets hold the same entries?
function _M.same(a, b)
    for k, v in pairs(a) do if b[k] ~= v then return false end end
    for k in pairs(b) do if a[k] == nil then return false end end
    return true
end

--- The entries of a set in creation order (etcd create_revision, then key).
function _M.sorted(set)
    local list = {}
    for _, e in pairs(set) do list[#list + 1] = e end
    sort(list, function(x, y)
        if x.create_revision ~= y.create_revision then return x.create_revision < y.create_revision end
        return x.key < y.key
    end)
    return list
end

--- A short digest of a set of entries (keys and revisions): equal sets, equal configs.
function _M.fingerprint(set)
    local lines = {}
    for k, e in pairs(set) do lines[#lines + 1] = k .. "\t" .. tostring(e.mod_revision) end
    sort(lines)
    return require("sluice.crypto").sha256_hex(concat(lines, "\n")):sub(1, 32)
end

--- The config document of a set of entries under node; where: {{path, key}} for blaming errors. Routes and
--- consumers are in creation order (etcd's create_revision), as appended through the Admin API.
function _M.build(node, set)
    local doc = { node = node, routes = {}, consumers = {}, upstreams = {}, providers = {}, consumer_groups = {},
                  plugin_metadata = {} }
    local where = {}
    for _, e in ipairs(_M.sorted(set)) do
        local path
        if e.kind == "global_plugins" then
            doc.global_plugins, path = e.obj, "global_plugins"
        elseif LIST[e.kind] then
            local list = doc[e.kind]
            list[#list + 1] = e.obj
            path = e.kind .. "[" .. #list .. "]"
        else
            doc[e.kind][e.id], path = e.obj, e.kind .. "." .. e.id
        end
        where[#where + 1] = { path = path, key = e.key }
    end
    return doc, where
end

--- The key an error path belongs to (the longest entry path it starts with), or nil.
function _M.blame(where, path)
    local best, blen = nil, 0
    path = tostring(path or "")
    for _, w in ipairs(where) do
        local p = w.path
        if #p > blen and (path == p or path:sub(1, #p + 1) == p .. "." or path:sub(1, #p + 1) == p .. "[") then
            best, blen = w.key, #p
        end
    end
    return best
end

--- Validates a whole document as the Admin API does (sluice.master.validate): cfg | nil, errs.
function _M.validate(doc, reg)
    return require("sluice.master").validate(doc, reg)
end

--- The set to serve: cand where it validates, else cand without the changes (against base) that break it;
--- refuse(key, entry | nil (a deletion), message) for each change left out. Returns set, doc, cfg (doc nil: no
--- change could be applied, set is base).
function _M.settle(base, cand, node, reg, refuse)
    local why = {} -- key -> what was wrong with its change, for the changes left out in the end
    local set, doc, cfg = _M.copy(cand), nil, nil
    for _ = 1, 50 do -- drop the changes the errors are at; each round drops at least one
        local where, errs
        doc, where = _M.build(node, set)
        cfg, errs = _M.validate(doc, reg)
        if cfg then break end
        local blamed = {}
        for _, e in ipairs(errs) do
            local k = _M.blame(where, e.path)
            if k and set[k] ~= base[k] then
                blamed[k] = blamed[k] or {}
                blamed[k][#blamed[k] + 1] = tostring(e.path) .. ": " .. tostring(e.message)
            end
        end
        if next(blamed) == nil then break end -- errors at entries that did not change: a deletion did it
        for k, msgs in pairs(blamed) do
            why[k] = concat(msgs, "; ")
            set[k] = base[k]
        end
    end
    if not cfg then -- one change at a time over base, oldest first, deletions last
        local changes = {}
        for k, e in pairs(cand) do if base[k] ~= e then changes[#changes + 1] = { key = k, e = e } end end
        for k in pairs(base) do if cand[k] == nil then changes[#changes + 1] = { key = k } end end
        sort(changes, function(a, b)
            if (a.e == nil) ~= (b.e == nil) then return a.e ~= nil end
            if a.e and a.e.mod_revision ~= b.e.mod_revision then return a.e.mod_revision < b.e.mod_revision end
            return a.key < b.key
        end)
        set, doc = _M.copy(base), nil
        local progress = true
        while progress do -- again while some change got in: it may be what another one needed
            progress = false
            for i, ch in ipairs(changes) do
                if ch then
                    local trial = _M.copy(set)
                    trial[ch.key] = ch.e
                    local tdoc = _M.build(node, trial)
                    local tcfg, errs = _M.validate(tdoc, reg)
                    if tcfg then
                        set, doc, cfg, changes[i], progress = trial, tdoc, tcfg, false, true
                    else
                        why[ch.key] = config.format_errors(errs)
                    end
                end
            end
        end
    end
    for k, e in pairs(cand) do
        if set[k] ~= e then refuse(k, e, why[k] or "does not validate with the other changes") end
    end
    for k in pairs(base) do
        if cand[k] == nil and set[k] ~= nil then refuse(k, nil, why[k] or "the config needs it") end
    end
    return set, doc, cfg
end

return _M

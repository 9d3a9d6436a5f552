-- `sluice etcd import [--merge] FILE` (lua/sluice/cli.lua, docs/cluster.md): a validated config's entities written
-- to etcd under the config center's prefix, in batches of transactions, what others refer to first.
local cjson = require("cjson.safe")
local etcd = require("sluice.config.etcd")
local store = require("sluice.config.store")
local config = require("sluice.config")
local schema = require("sluice.schema")
local E = require("sluice.config.entries")
local secrets = require("sluice.secrets")

local type, pairs, ipairs, tostring, next = type, pairs, ipairs, tostring, next
local format, sort, min = string.format, table.sort, math.min
local KINDS, ID_FIELD, vjson = E.KINDS, E.ID_FIELD, E.vjson

local _M = {}


-- Does etcd's value a hold the entity whose stored form (secrets not sealed yet) is b? Whatever the order of keys
-- in the text, with or without the id field the key already gives, its secrets sealed (opened with keyring kr to
-- compare) or not. With a master key, a value that holds a secret in the clear is not the same: it is written
-- again, sealed.
local function same_entity(kind, id, a, b, kr, schema_of)
    local x, y = vjson.decode(a), vjson.decode(cjson.encode(b))
    if type(x) ~= "table" or type(y) ~= "table" then return false end
    if kr and kr.current and secrets.plain_in_entity(kind, id, x, schema_of) then return false end
    x = secrets.open_entity(kr, kind, id, x)
    if not x then return false end
    local idf = ID_FIELD[kind]
    if idf then
        if x[idf] == nil then x[idf] = id end
        if y[idf] == nil then y[idf] = id end
    end
    return schema.deep_equal(x, y)
end

--- Writes the entities of a validated config (cfg.raw) to etcd under conf's prefix. mode "replace" also deletes
--- keys the file does not have; "merge" keeps them. Secret fields are sealed with the master key of cfg.node
--- (node.secrets), as the Admin API writes them. Returns a summary {put, deleted, unchanged, revision} | nil,
--- err. Main thread / command line only (blocking).
function _M.run(conf, cfg, mode, reg, node)
    local kr, kerr = secrets.keyring(cfg.node)
    if kerr then return nil, kerr end
    local schema_of = secrets.schema_lookup(function(n) return reg:get(n) end)
    local client = etcd.new(conf, "sync")
    local cur, err = client:range_prefix()
    if not cur then return nil, "cannot read etcd: " .. tostring(err) end
    local have, kvs = {}, {}
    for _, kv in ipairs(cur.kvs) do -- the nodes' registrations (PREFIX/nodes/) are not config: left alone
        if not require("sluice.config.nodes").is_key(client.prefix, kv.key) then
            have[kv.key] = kv
            kvs[#kvs + 1] = kv
        end
    end
    local want, order = {}, {}
    for _, kind in ipairs(KINDS) do
        local raw = cfg.raw[kind]
        if kind == "global_plugins" then
            if type(raw) == "table" and next(raw) ~= nil then
                order[#order + 1] = { kind = kind, obj = raw }
            end
        else
            local ids = {}
            for id in pairs(raw or {}) do ids[#ids + 1] = id end
            if kind == "routes" or kind == "consumers" then -- keep the file's order: it is the creation order
                ids = {}
                for _, n in ipairs(cfg[kind]) do ids[#ids + 1] = n[ID_FIELD[kind]] end
            else
                sort(ids)
            end
            for _, id in ipairs(ids) do order[#order + 1] = { kind = kind, id = id, obj = raw[id] } end
        end
    end
    local ops, sum = {}, { put = 0, deleted = 0, unchanged = 0 }
    for _, o in ipairs(order) do
        local key = E.key(client.prefix, o.kind, o.id)
        local stored, serr = store.encode(o.kind, o.id, o.obj)
        if not stored then return nil, key .. ": " .. tostring(serr) end
        local sealed, eerr = store.seal(o.kind, o.id, stored, { node = cfg.node, plugins = reg })
        if not sealed then return nil, key .. ": cannot seal the secrets: " .. tostring(eerr) end
        local value = cjson.encode(sealed)
        want[key] = true
        if have[key] and same_entity(o.kind, o.id, have[key].value, stored, kr, schema_of) then
            sum.unchanged = sum.unchanged + 1
        else
            ops[#ops + 1] = { put = key, value = value }
            sum.put = sum.put + 1
        end
    end
    if mode == "merge" then -- the result must validate as a whole
        local desired, prefix = {}, client.prefix
        for _, kv in ipairs(kvs) do desired[kv.key] = E.decode_entry(prefix, kv, reg, kr) end -- then the changes
        for _, op in ipairs(ops) do
            desired[op.put] = E.decode_entry(prefix, { key = op.put, value = op.value, create_revision = 0,
                                                       mod_revision = 0 }, reg, kr)
        end
        local set = {} -- entries already in etcd that nodes refuse on their own stay refused: not checked here
        for k, e in pairs(desired) do if e.obj then set[k] = e end end
        local ok, verrs = E.validate(E.build(node, set), reg)
        if not ok then
            return nil, "the merged config would not be valid, nothing written:\n" .. config.format_errors(verrs)
        end
    else
        local dels, rank = {}, {}
        for i, kind in ipairs(KINDS) do rank[kind] = i end
        for key in pairs(have) do
            if not want[key] then
                local kind = E.parse_key(client.prefix, key)
                dels[#dels + 1] = { key = key, rank = rank[kind] or #KINDS + 1 }
            end
        end
        sort(dels, function(a, b) -- what refers to others first: routes before the upstreams they name
            if a.rank ~= b.rank then return a.rank > b.rank end
            return a.key < b.key
        end)
        for i, d in ipairs(dels) do dels[i] = d.key end
        for _, key in ipairs(dels) do ops[#ops + 1] = { delete = key } sum.deleted = sum.deleted + 1 end
    end
    sum.revision = cur.revision
    for i = 1, #ops, 100 do -- etcd's default --max-txn-ops is 128
        local batch = {}
        for j = i, min(i + 99, #ops) do batch[#batch + 1] = ops[j] end
        local r, terr = client:txn(batch)
        if not r then
            return nil, format("etcd refused the write after %d of %d changes: %s", i - 1, #ops, tostring(terr))
        end
        sum.revision = r.revision
    end
    return sum
end

return _M

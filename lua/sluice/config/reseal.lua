-- `sluice secrets rotate` on a node with node.config_center (docs/cluster.md, "Secrets in etcd"): every secret of
-- the entities under the prefix opened with the configured keys and sealed again under the new one, each entity
-- written back in a transaction on the revision it was read at (an entity changed meanwhile is left for the next
-- run). Main thread / command line only (blocking).
local cjson = require("cjson.safe")
local etcd = require("sluice.config.etcd")
local secrets = require("sluice.secrets")
local E = require("sluice.config.entries")

local type, pairs, ipairs, tostring = type, pairs, ipairs, tostring
local format, concat, sort = string.format, table.concat, table.sort

local _M = {}

-- Is every secret of obj (kind, id) sealed with the key id (then the entity needs no new sealing)? And how many
-- secrets it has.
local function sealed_with(kind, id, obj, schema_of, key_id)
    local all, n = true, 0
    secrets.each_secret_of(kind, id, obj, schema_of, function(holder, k)
        local v = holder[k]
        n = n + 1
        if not (secrets.is_sealed(v) and v:match("^enc:v1:(%x+):") == key_id) then all = false end
    end)
    return all, n
end

--- Seals every secret under conf's prefix with nkr's current key, opening them with nkr's keys (the configured
--- ones and the new one). schema_of: which plugin config fields are secret. Returns {values, entities,
--- unchanged, changed (keys moved meanwhile), revision} | nil, err (nothing written when a value does not open).
function _M.run(conf, nkr, schema_of)
    local client = etcd.new(conf, "sync")
    local cur, err = client:range_prefix()
    if not cur then return nil, "cannot read etcd: " .. tostring(err) end
    local nodes = require("sluice.config.nodes")
    local writes, errs, sum = {}, {}, { values = 0, entities = 0, unchanged = 0, changed = {}, revision = cur.revision }
    for _, kv in ipairs(cur.kvs) do
        local kind, id = E.parse_key(client.prefix, kv.key)
        local t = kind and not nodes.is_key(client.prefix, kv.key) and E.vjson.decode(kv.value)
        if type(t) == "table" then -- what is not an entity is refused by the nodes: not touched here
            local opened, oerr = secrets.open_entity(nkr, kind, id, t)
            local done, n = sealed_with(kind, id, t, schema_of, nkr.current.id)
            if not opened then
                errs[#errs + 1] = kv.key .. ": " .. oerr
            elseif done then
                if n > 0 then sum.unchanged = sum.unchanged + 1 end
            else
                local sealed, serr = secrets.seal_entity(nkr, kind, id, opened, schema_of)
                if not sealed then return nil, kv.key .. ": " .. tostring(serr) end
                writes[#writes + 1] = { key = kv.key, value = cjson.encode(sealed), rev = kv.mod_revision, n = n }
            end
        end
    end
    if #errs > 0 then
        sort(errs)
        return nil, "cannot open secrets in etcd (add the key they were sealed with to node.secrets."
            .. "previous_key_files), nothing written: " .. concat(errs, "; ")
    end
    for _, w in ipairs(writes) do
        local r, werr = client:put_if(w.key, w.value, w.rev)
        if not r then
            return nil, format("etcd refused the write after %d of %d entities: %s", sum.entities, #writes,
                tostring(werr))
        end
        if r.ok then
            sum.entities, sum.values, sum.revision = sum.entities + 1, sum.values + w.n, r.revision
        else
            sum.changed[#sum.changed + 1] = w.key
        end
    end
    return sum
end

--- `sluice secrets rotate` for the config center of the config at config_path: kr the configured keys, new_key
--- the key to seal with (32 bytes). Prints to out / err_out; returns the exit code.
function _M.cli(config_path, kr, new_key, out, err_out)
    local settings, ncfg, reg = require("sluice.master").load_checked(config_path)
    if not settings then
        err_out:write("sluice: ", tostring(ncfg or "invalid configuration"), "\n")
        return 1
    end
    local conf = ncfg.node.config_center
    local nkr = secrets.with_current(kr, new_key)
    local sum, err = _M.run(conf, nkr, secrets.schema_lookup(function(n) return reg:get(n) end))
    if not sum then
        err_out:write("sluice: etcd (", conf.endpoints[1], ", prefix ", conf.prefix, "): ", err, "\n")
        return 1
    end
    local before = {}
    for id in pairs(kr and kr.by_id or {}) do before[#before + 1] = id end
    sort(before)
    out:write(format("sluice: etcd (%s, prefix %s): %d secret value(s) in %d entities sealed with key %s (%d "
        .. "entities already sealed with it; keys configured before: %s); etcd revision %d\n", conf.endpoints[1],
        conf.prefix,
        sum.values, sum.entities, nkr.current.id, sum.unchanged, #before > 0 and concat(before, ", ") or "none",
        sum.revision))
    if #sum.changed > 0 then
        out:write("sluice: changed meanwhile, not sealed again (run the command again): ", concat(sum.changed, ", "),
            "\n")
    end
    if not (kr and kr.current and kr.current.id == nkr.current.id) then
        out:write("sluice: every node needs the new key before this (node.secrets.previous_key_files); now point ",
            "node.secrets at it on every node (key_file, or the variable key_env), keep the old one in ",
            "previous_key_files, and send SIGHUP or restart; then run this again without a new key\n")
    end
    return #sum.changed > 0 and 1 or 0
end

return _M

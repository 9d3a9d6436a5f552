-- Where Admin API changes are kept, behind one interface, and the per-entity transforms every backend shares.
--
--   local store = require("sluice.config.store")
--   local b = store.backend(cfg)                          -- "state_file" (one node) or "etcd" (node.config_center)
--   local res, err, status = b:put(kind, id, obj, opts)   -- obj false: delete; opts.expect: the entity's revision
--   -- res: {revision = etcd revision (etcd), version = config version once applied on this worker (etcd)}
--   -- failure: nil, message, HTTP status (409: the entity changed since `expect`; 503: etcd unreachable)
--
-- A backend stores entities exactly as handed to it. Transforms of an entity's stored form (hashing a consumer's
-- keys) can be codecs registered here, applied above every backend: `encode` on the way to storage (state file
-- and etcd alike), `decode` on the way back (entities read from etcd at start, at resync, from the watch and from
-- the local etcd snapshot). Secrets are sealed with the master key by sluice.secrets (not a codec: it needs the
-- node's keys and the plugins' schemas): in config.state_put for the state file, in store.seal for etcd (opened by
-- sluice.config.entries as entries arrive):
--
--   store.add_codec({ name = "secrets", encode = function(kind, id, obj) ... return obj2 end,
--                     decode = function(kind, id, obj) ... return obj2 end })  -- nil, err refuses the entity
--
-- Codecs get (kind, id, obj) with kind one of routes, upstreams, providers, consumers, consumer_groups,
-- plugin_metadata, global_plugins (id nil); they must not change obj in place (return a copy), and decode must
-- accept what encode made. Encode runs in registration order, decode in reverse.
local type, tostring, ipairs, error, setmetatable = type, tostring, ipairs, error, setmetatable

local _M = {}

local codecs = {}

--- Registers a codec {name, encode = fn(kind, id, obj), decode = fn(kind, id, obj)} (either may be absent).
function _M.add_codec(c)
    if type(c) ~= "table" or type(c.name) ~= "string" then error("a codec needs a name", 2) end
    for i, x in ipairs(codecs) do
        if x.name == c.name then codecs[i] = c return end -- registered again (a module reloaded): replaced
    end
    codecs[#codecs + 1] = c
end

--- The stored form of an entity (every codec's encode): obj | nil, err.
function _M.encode(kind, id, obj)
    for _, c in ipairs(codecs) do
        if c.encode and obj then
            local out, err = c.encode(kind, id, obj)
            if out == nil then return nil, c.name .. ": " .. tostring(err) end
            obj = out
        end
    end
    return obj
end

--- An entity from its stored form (every codec's decode, last registered first): obj | nil, err.
function _M.decode(kind, id, obj)
    for i = #codecs, 1, -1 do
        local c = codecs[i]
        if c.decode and obj then
            local out, err = c.decode(kind, id, obj)
            if out == nil then return nil, c.name .. ": " .. tostring(err) end
            obj = out
        end
    end
    return obj
end

---------------------------------------------------------------------------------------------------------------
-- backends

local state_file = { kind = "state_file", publishes = false }
state_file.__index = state_file

-- The state file: the change is recorded, the caller publishes it to the workers.
function state_file:put(kind, id, obj, opts)
    local stored, err = obj and _M.encode(kind, id, obj) or false, nil
    if stored == nil then return nil, "cannot store the change: " .. tostring(err), 500 end
    -- secrets are sealed on the way into the file (sluice.secrets: node.secrets, the plugins' schemas)
    local ok, perr = require("sluice.config").state_put(self.path, kind, id, stored,
        opts and { node = opts.node, plugins = opts.plugins })
    if not ok then return nil, "cannot persist the change, nothing applied: " .. tostring(perr), 500 end
    return {}
end

function state_file:revision()
    return nil
end

--- An entity's stored form with its secret fields sealed under the master key, as the state file has them (the
--- etcd backend, `sluice etcd import`): obj itself without a key | nil, err. opts: node (normalized node settings:
--- node.secrets), plugins (a registry: which plugin config fields are secret).
function _M.seal(kind, id, obj, opts)
    local secrets = require("sluice.secrets")
    local kr, kerr = secrets.keyring(opts and opts.node)
    if kerr then return nil, kerr end
    if not (kr and kr.current) then return obj end
    local reg = opts.plugins
    return secrets.seal_entity(kr, kind, id, obj, secrets.schema_lookup(reg and function(n) return reg:get(n) end))
end

local etcd = { kind = "etcd", publishes = true }
etcd.__index = etcd

-- etcd: a transaction conditioned on the entity's revision; the change comes back to every node (this one
-- included) through the watch, which validates and publishes it. Waits until this worker runs it.
function etcd:put(kind, id, obj, opts)
    local stored, err = obj and _M.encode(kind, id, obj) or false, nil
    if stored == nil then return nil, "cannot store the change: " .. tostring(err), 500 end
    if stored then -- secrets sealed as in the state file (sluice.secrets: node.secrets, the plugins' schemas)
        stored, err = _M.seal(kind, id, stored, opts)
        if not stored then return nil, "cannot seal the secrets, nothing changed: " .. tostring(err), 500 end
    end
    return require("sluice.config.center").write(kind, id, stored, opts and opts.expect)
end

-- The etcd revision of an entity as this node last saw it (nil: none).
function etcd:revision(kind, id)
    return require("sluice.config.center").revision_of(kind, id)
end

--- The backend for a validated config.
function _M.backend(cfg)
    local node = cfg and cfg.node or {}
    if node.config_center then
        return setmetatable({}, etcd)
    end
    if not node.state_file then return nil, "no state file configured (node.state_file); change not applied" end
    return setmetatable({ path = node.state_file }, state_file)
end

return _M

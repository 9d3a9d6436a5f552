-- The state file as config.lua reads and writes it: secrets sealed at rest (sluice.secrets: opened on load, sealed on
-- every write when there is a master key), consumer keys written before they were hashed hashed and written back,
-- secrets still in the clear sealed once a master key exists. The file format itself is sluice.config.state.
local state = require("sluice.config.state")
local secrets = require("sluice.secrets")

local type, pairs, ipairs, tostring = type, pairs, ipairs, tostring

local _M = {}

local function resolve_path(prefix, p)
    if p:sub(1, 1) == "/" or prefix == nil or prefix == "" then return p end
    return prefix:gsub("/+$", "") .. "/" .. p
end

--- The state file at state_path for a node section as written (node) and config.load's opts (prefix, plugins,
--- check_only) of the config at config_path, opened: sealed secrets readable, consumer keys hashed. Returns the
--- table | nil, err.
function _M.read(state_path, node, opts, config_path)
    local st, err = state.read(state_path)
    if not st then return nil, err end
    -- sealed secrets (sluice.secrets): opened in a copy, so `st` stays as the file has it
    local kr, kerr = secrets.keyring(_M.secrets_node(node, opts.prefix))
    if kerr then return nil, tostring(config_path) .. ": " .. kerr end
    local opened, oerr = secrets.open_state(st, kr)
    if not opened then return nil, state_path .. ": " .. oerr end
    local hashed = false
    if type(opened.consumers) == "table" then
        -- a state file written before keys were hashed: hash them (the opened values: a sealed key is hashed as the
        -- key it holds), and write it back so no plain key stays
        for _, c in pairs(opened.consumers) do
            if require("sluice.config").hash_keys(c) then hashed = true end
        end
    end
    if hashed then
        local out, serr = opened, nil
        if kr and kr.current then
            out, serr = secrets.seal_state(opened, kr, secrets.schema_lookup(opts.plugins and opts.plugins.get))
        end
        local ok, werr = false, serr
        if out then ok, werr = state.write(state_path, out) end
        if not ok then
            io.stderr:write("sluice: warning: ", tostring(werr),
                " (consumer keys are hashed in memory; the state file still has plain ones)\n")
        end
    elseif not opts.check_only then
        _M.seal_plain_state(state_path, st, kr, opts.plugins)
    end
    return opened
end

--- Records one Admin API change in the state file (obj, or false to delete); the caller checked kind and id.
--- Returns true | nil, err. opts: node (the normalized node settings: the master key), plugins (a registry: which
--- plugin config fields are secret); secret fields are sealed when there is a master key.
function _M.put(state_path, kind, id, obj, opts)
    opts = opts or {}
    local kr, kerr = secrets.keyring(opts.node)
    if kerr then return nil, kerr end
    if not (kr and kr.current) then
        return state.put(state_path, kind, id, obj)
    end
    local schema_of = secrets.schema_lookup(opts.plugins and function(n) return opts.plugins:get(n) end)
    return state.put(state_path, kind, id, obj, function(k, i, o)
        return secrets.seal_entity(kr, k, i, o, schema_of)
    end)
end

--- node.secrets of a node section as written, with its key files resolved against prefix (for sluice.secrets).
function _M.secrets_node(node, prefix)
    local s = type(node) == "table" and type(node.secrets) == "table" and node.secrets or nil
    if not s then return nil end
    local out = { secrets = { key_env = s.key_env, previous_key_files = {} } }
    if type(s.key_file) == "string" then out.secrets.key_file = resolve_path(prefix, s.key_file) end
    for i, f in ipairs(type(s.previous_key_files) == "table" and s.previous_key_files or {}) do
        if type(f) == "string" then out.secrets.previous_key_files[i] = resolve_path(prefix, f) end
    end
    return out
end

local warned_plain
--- A state file written before there was a master key (or before secrets were sealed) keeps loading; with a key,
--- its secrets in the clear are sealed and the file rewritten once. Without a key, a warning says they are in the
--- clear. Never fails the load: a file that cannot be rewritten stays as it was (a warning says so).
function _M.seal_plain_state(state_path, st, kr, reg)
    local schema_of = secrets.schema_lookup(reg and reg.get)
    local plain = secrets.plain_secrets(st, schema_of)
    if not plain then return end
    if not (kr and kr.current) then
        if not warned_plain then
            warned_plain = true
            io.stderr:write("sluice: warning: ", state_path, ": ", #plain, " secret value(s) are stored in the clear",
                " (set a master key: node.secrets or SLUICE_MASTER_KEY; docs/configuration.md, \"Secrets at rest\")\n")
        end
        return
    end
    local sealed, err = secrets.seal_state(st, kr, schema_of)
    local ok, werr = false, err
    if sealed then ok, werr = state.write(state_path, sealed) end
    if not ok then
        io.stderr:write("sluice: warning: ", state_path, ": cannot seal the secrets stored in the clear: ",
            tostring(werr), "\n")
    end
end

return _M

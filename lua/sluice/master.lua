-- The main thread's side of config: load and check the file, hand C the node settings, publish snapshots.
-- Also used by worker 0's Admin API to publish changes.
local ffi = require("ffi")
local C = require("sluice.core")
local config = require("sluice.config")
local plugins = require("sluice.plugins")
local cjson = require("cjson")

ffi.cdef [[
int64_t sl_snapshot_publish(const char *json, size_t len, int bump_plugins);
int sl_tls_check_files(const char *cert_path, const char *key_path, char *err, size_t errlen);
]]

local ipairs, pairs, type = ipairs, pairs, type

local _M = {}

local function prefix()
    return SLUICE_HOME or os.getenv("SLUICE_HOME") or "."
end

--- The config document (as written, ordered) that workers rebuild their state from.
function _M.to_doc(cfg)
    local raw = cfg.raw
    local doc = { node = raw.node, upstreams = raw.upstreams, providers = raw.providers,
                  consumer_groups = raw.consumer_groups, plugin_metadata = raw.plugin_metadata,
                  global_plugins = raw.global_plugins, routes = {}, consumers = {} }
    for i, r in ipairs(cfg.routes) do
        doc.routes[i] = raw.routes[r.id]
    end
    for i, c in ipairs(cfg.consumers) do
        doc.consumers[i] = raw.consumers[c.name]
    end
    -- keep the state file where load() found it, so Admin API changes persist next to this config
    doc.node = doc.node or {}
    if cfg.node.state_file and not doc.node.state_file then
        doc.node = setmetatable({}, nil)
        for k, v in pairs(raw.node or {}) do doc.node[k] = v end
        doc.node.state_file = cfg.node.state_file
    end
    return doc
end

--- Validates a document with this VM's plugin registry; returns cfg | nil, errs (list).
function _M.validate(doc)
    return config.validate(doc, { plugins = plugins.for_config, prefix = prefix() })
end

local function node_settings(cfg)
    local n = cfg.node
    local s = {
        workers = n.workers, log_level = n.log_level, error_log = n.error_log, pid_file = n.pid_file,
        drain_timeout = n.drain_timeout, allow_encoded_slashes = n.allow_encoded_slashes, listen = {}, shared_dicts = {},
        access_log_path = n.access_log and n.access_log.path or "off",
        access_log_fields = n.access_log and n.access_log.fields or {},
    }
    for k, v in pairs(n.limits or {}) do
        s[k] = v
    end
    for i, l in ipairs(n.listen) do
        s.listen[i] = { host = l.host, port = l.port, tls = _M.tls_certs(l.tls) }
    end
    if n.admin then
        s.listen[#s.listen + 1] = { host = n.admin.listen.host, port = n.admin.listen.port, admin = true }
    end
    for name, size in pairs(n.shared_dicts or {}) do
        s.shared_dicts[#s.shared_dicts + 1] = { name = name, size = size }
    end
    local mc = n.memcached -- {servers: ["host:port", ...], timeout, failure_threshold, retry_after}
    if type(mc) == "table" and mc.servers then
        local servers = type(mc.servers) == "table" and table.concat(mc.servers, ",") or tostring(mc.servers)
        s.memcached = { servers = servers, timeout = tonumber(mc.timeout), retry_after = tonumber(mc.retry_after),
                        failure_threshold = tonumber(mc.failure_threshold) }
    end
    return s
end

--- A listener's certificates as {{cert = PATH, key = PATH}, ...} (the default first, paths resolved against the
--- prefix), or nil without TLS.
function _M.tls_certs(tls)
    if not tls then
        return nil
    end
    local list = { { cert = config.resolve_path(prefix(), tls.cert), key = config.resolve_path(prefix(), tls.key) } }
    for _, c in ipairs(tls.certs or {}) do
        list[#list + 1] = { cert = config.resolve_path(prefix(), c.cert), key = config.resolve_path(prefix(), c.key) }
    end
    return list
end

-- Certificate and key files must parse and match, so `sluice -t` and a reload catch a bad one: errors list.
local function check_tls(cfg)
    local errs, buf = {}, ffi.new("char[512]")
    for i, l in ipairs(cfg.node.listen) do
        local raw = l.tls and _M.tls_certs(l.tls) or {}
        for j, c in ipairs(raw) do
            if C.sl_tls_check_files(c.cert, c.key, buf, 512) ~= 0 then
                local p = "node.listen[" .. i .. "].tls" .. (j > 1 and (".certs[" .. (j - 1) .. "]") or "")
                errs[#errs + 1] = { path = p, message = ffi.string(buf) }
            end
        end
    end
    return errs
end

-- The plugin registry must search the config's plugin_paths while the config is validated, so that
-- plugin errors come with the others, each with its file:line: read them from the YAML first.
local function plugin_paths_of(path)
    local doc = require("sluice.yaml").load_file(path)
    local list = type(doc) == "table" and type(doc.node) == "table" and doc.node.plugin_paths
    if type(list) ~= "table" then
        list = { "plugins" }
    end
    local out = {}
    for _, p in ipairs(list) do
        if type(p) == "string" then
            out[#out + 1] = config.resolve_path(prefix(), p)
        end
    end
    return out
end

local function load(path)
    plugins.set_paths(plugin_paths_of(path))
    local cfg, err = config.load(path, { plugins = plugins.for_config, prefix = prefix() })
    if not cfg then
        return nil, err
    end
    local tls_errs = check_tls(cfg)
    if #tls_errs > 0 then
        local _, lines = require("sluice.yaml").load_file(path)
        return nil, config.format_errors(tls_errs, path, type(lines) == "table" and lines or nil)
    end
    for _, w in ipairs(cfg.warnings or {}) do
        io.stderr:write(path, ": warning: ", type(w) == "table" and (tostring(w.path) .. ": " .. tostring(w.message)) or tostring(w), "\n")
    end
    return node_settings(cfg), cjson.encode(_M.to_doc(cfg)), cfg
end

--- For `sluice -c`: node settings for C and the first snapshot, or nil, errors text.
function _M.load(path)
    return load(path)
end

--- For `sluice -t`.
function _M.check(path)
    return load(path)
end

--- For SIGHUP: reloads plugin code in this VM, then the file; nil, errors when the new config is rejected.
function _M.reload(path)
    local errs = plugins.reload()
    for _, e in ipairs(errs) do
        io.stderr:write("plugin reload: ", e, "\n")
    end
    return load(path)
end

--- Publishes a document to every worker; returns the new version.
function _M.publish(doc, bump_plugins)
    local json = cjson.encode(doc)
    local v = C.sl_snapshot_publish(json, #json, bump_plugins and 1 or 0)
    if v < 0 then
        return nil, "out of memory"
    end
    return tonumber(v)
end

return _M

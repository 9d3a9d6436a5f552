-- The main thread's side of config: load and check the file, hand C the node settings, publish snapshots.
-- Also used by worker 0's Admin API to publish changes, and by every worker to report what it runs.
--
-- A snapshot is {"config": the document, "plugins": {"version": N, "code": {name: hash}}}: the plugin code the
-- config was validated with (sluice.plugins registries). The publisher loads new plugin code and validates the
-- config with it before publishing; each worker then loads that same code (checked by hash), or keeps what it has
-- and says so in its report (sl_snapshot_report), which the Admin API shows.
local ffi = require("ffi")
local C = require("sluice.core")
local config = require("sluice.config")
local plugins = require("sluice.plugins")
local cjson = require("cjson")

ffi.cdef [[
int64_t sl_snapshot_publish(const char *json, size_t len);
int sl_snapshot_fetch(uint64_t *version, char **json, size_t *len);
uint64_t sl_snapshot_next_code_version(void);
void sl_snapshot_report(int worker, uint64_t seen, uint64_t config_version, uint64_t code_version, const char *err);
int sl_snapshot_report_get(int worker, uint64_t *seen, uint64_t *config_version, uint64_t *code_version, char *err,
                           size_t errlen);
int sl_tls_check_files(const char *cert_path, const char *key_path, char *err, size_t errlen);
]]

local ipairs, pairs, type, tonumber = ipairs, pairs, type, tonumber

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
    -- keep the state file (and the config center's snapshot) where load() found it, next to this config: the
    -- workers validate the document without knowing the file's path
    doc.node = doc.node or {}
    local cc = cfg.node.config_center
    local need_state = cfg.node.state_file and not doc.node.state_file
    local need_snap = cc and cc.snapshot_file and type(doc.node.config_center) == "table"
        and not doc.node.config_center.snapshot_file
    if need_state or need_snap then
        doc.node = setmetatable({}, nil)
        for k, v in pairs(raw.node or {}) do doc.node[k] = v end
        if need_state then doc.node.state_file = cfg.node.state_file end
        if need_snap then
            local c = {}
            for k, v in pairs(raw.node.config_center) do c[k] = v end
            c.snapshot_file = cc.snapshot_file
            doc.node.config_center = c
        end
    end
    return doc
end

--- Validates a document with a plugin registry (default: the one this VM serves from); returns cfg | nil, errs.
function _M.validate(doc, reg)
    return config.validate(doc, { plugins = (reg or plugins.current()).for_config, prefix = prefix() })
end

--- The snapshot text for a document and the plugin registry it was validated with; center: what the config
--- center built it from ({fingerprint, revision, source}, sluice.config.center), nil without one.
function _M.snapshot(doc, reg, center)
    return cjson.encode({ config = doc, plugins = { version = reg.version, code = reg:manifest() }, center = center })
end

--- Reserves the version a registry with new plugin code is published as.
function _M.next_code_version()
    return tonumber(C.sl_snapshot_next_code_version())
end

local function node_settings(cfg)
    local n = cfg.node
    local s = {
        workers = n.workers, log_level = n.log_level, error_log = n.error_log, pid_file = n.pid_file,
        drain_timeout = n.drain_timeout, allow_encoded_slashes = n.allow_encoded_slashes,
        listen = {}, shared_dicts = {},
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
    if n.metrics then -- GET /metrics only, without a key (sluice.admin.obs)
        s.listen[#s.listen + 1] = { host = n.metrics.listen.host, port = n.metrics.listen.port, metrics = true }
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

-- Loads the file with the plugin code on disk now (a new registry, holding the plugins the config uses): node
-- settings, cfg, registry | nil, errors.
local function load(path, check_only)
    local reg = plugins.stage(plugin_paths_of(path), {})
    local cfg, err = config.load(path, { plugins = reg.for_config, prefix = prefix(), check_only = check_only })
    if not cfg then
        return nil, err
    end
    local tls_errs = check_tls(cfg)
    if #tls_errs > 0 then
        local _, lines = require("sluice.yaml").load_file(path)
        return nil, config.format_errors(tls_errs, path, type(lines) == "table" and lines or nil)
    end
    for _, w in ipairs(cfg.warnings or {}) do
        local text = type(w) == "table" and (tostring(w.path) .. ": " .. tostring(w.message)) or tostring(w)
        io.stderr:write(path, ": warning: ", text, "\n")
    end
    return node_settings(cfg), cfg, reg
end

--- Loads and checks a config file with the plugin code on disk (no state kept): settings, cfg, registry | nil,
--- errors text. For command-line tools (sluice.cli).
_M.load_checked = load

local center_conf -- node.config_center as loaded at start (a reload cannot change it)

--- For `sluice -c`: node settings for C and the first snapshot, or nil, errors text. With node.config_center the
--- entities come from etcd (or the local snapshot of it): sluice.config.center.
function _M.load(path)
    local settings, cfg, reg = load(path)
    if not settings then
        return nil, cfg
    end
    center_conf = cfg.node.config_center
    reg.version = _M.next_code_version()
    plugins.use(reg)
    local doc, info = _M.to_doc(cfg), nil
    if cfg.node.config_center then
        doc, info = require("sluice.config.center").initial(cfg, doc.node, reg, path)
        if not doc then
            return nil, info
        end
    end
    return settings, _M.snapshot(doc, reg, info)
end

--- On a stop signal (main thread, as the workers begin to drain): with a config center, the node leaves the
--- cluster's list at once (sluice.config.nodes.leave revokes its registration's lease; blocking, a few seconds
--- at most).
function _M.stop()
    if center_conf then require("sluice.config.nodes").leave(center_conf) end
end

--- For `sluice -t`.
function _M.check(path)
    local settings, cfg, reg = load(path, true)
    if not settings then
        return nil, cfg
    end
    return settings, _M.snapshot(_M.to_doc(cfg), reg)
end

pcall(ffi.cdef, "void free(void *ptr);")

-- The live snapshot ({config, plugins = {version, code = {name: hash}}, center}), or nil. The Admin API may have
-- published newer code than this VM loaded, so a reload compares with what was published, not with this VM.
local function published()
    local ver, json, len = ffi.new("uint64_t[1]"), ffi.new("char *[1]"), ffi.new("size_t[1]")
    if C.sl_snapshot_fetch(ver, json, len) ~= 1 then
        return nil
    end
    local text = ffi.string(json[0], len[0])
    ffi.C.free(json[0])
    local ok, snap = pcall(cjson.decode, text)
    return ok and type(snap) == "table" and snap or nil
end

local ENTITY_SECTIONS = { "routes", "upstreams", "providers", "consumers", "consumer_groups", "plugin_metadata",
                          "global_plugins" }

--- For SIGHUP: the file and the plugin code on disk, validated together; nil, errors when rejected (nothing of
--- either is published then). Plugin code that did not change keeps its version.
function _M.reload(path)
    local settings, cfg, reg = load(path)
    if not settings then
        return nil, cfg
    end
    local snap = published() or {}
    local pub = type(snap.plugins) == "table" and snap.plugins or {}
    local doc, info = _M.to_doc(cfg), nil
    local live_node = type(snap.config) == "table" and type(snap.config.node) == "table" and snap.config.node or nil
    if live_node and not require("sluice.schema").deep_equal(live_node.config_center, doc.node.config_center) then
        -- the config center (its loop on worker 0, the entities it serves) is set up at start only
        return nil, "node.config_center: cannot be added, removed or changed by a reload (SIGHUP); restart the node "
            .. "for that (nothing was changed)"
    end
    if cfg.node.config_center then -- the entities stay those from etcd; the file gives the node settings
        local live = type(snap.config) == "table" and snap.config or {}
        for _, k in ipairs(ENTITY_SECTIONS) do doc[k] = live[k] end
        info = snap.center
        local ok, errs = _M.validate(doc, reg)
        if not ok then
            return nil, config.format_errors(errs)
        end
    end
    local was, changed = type(pub.code) == "table" and pub.code or {}, {}
    for name, h in pairs(reg:manifest()) do -- the plugins the config uses: the same code as published?
        if was[name] ~= h then changed[#changed + 1] = name end
    end
    table.sort(changed)
    if #changed == 0 and tonumber(pub.version) then
        reg.version = tonumber(pub.version)
    else
        reg.version = _M.next_code_version()
        require("sluice.pdk.log").info("SIGHUP: plugin code version ", reg.version, " (changed: ",
            table.concat(changed, ", "), ")")
    end
    plugins.use(reg)
    for _, e in ipairs(reg:errors()) do
        require("sluice.pdk.log").warn("plugin ", e.plugin, " cannot be loaded (no config uses it): ", e.message)
    end
    return settings, _M.snapshot(doc, reg, info)
end

--- Publishes a document validated with registry reg to every worker; returns the new snapshot version. center:
--- as for snapshot().
function _M.publish(doc, reg, center)
    local json = _M.snapshot(doc, reg, center)
    local v = C.sl_snapshot_publish(json, #json)
    if v < 0 then
        return nil, "out of memory"
    end
    return tonumber(v)
end

--- A worker's report of what it runs after looking at snapshot `seen` (err: why it did not take all of it).
function _M.report(worker, seen, config_version, code_version, err)
    C.sl_snapshot_report(worker, seen or 0, config_version or 0, code_version or 0, err)
end

local rep_seen, rep_cfg, rep_code = ffi.new("uint64_t[1]"), ffi.new("uint64_t[1]"), ffi.new("uint64_t[1]")
local rep_err = ffi.new("char[1024]")

--- Every worker's last report: { {id, seen, config_version, plugin_version, error?} } (nil fields: no report).
function _M.reports(n)
    local out = {}
    for id = 0, n - 1 do
        local rc = C.sl_snapshot_report_get(id, rep_seen, rep_cfg, rep_code, rep_err, 1024)
        if rc == 1 then
            local err = ffi.string(rep_err)
            out[#out + 1] = { id = id, seen = tonumber(rep_seen[0]), config_version = tonumber(rep_cfg[0]),
                              plugin_version = tonumber(rep_code[0]), error = err ~= "" and err or nil }
        else
            out[#out + 1] = { id = id }
        end
    end
    return out
end

--- Whether every worker has looked at snapshot version (its report says so), and the reports.
function _M.all_seen(version)
    local list = _M.reports(require("sluice.core").sl_worker_count())
    for _, r in ipairs(list) do
        if (r.seen or 0) < version then return false, list end
    end
    return true, list
end

return _M

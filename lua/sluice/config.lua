-- Loads, validates and normalizes the Sluice config (docs/configuration.md is the field reference).
--
-- Every error is collected rather than stopping at the first, so one `sluice -t` run shows them all.
-- The as-written entities are kept in cfg.raw (the Admin API returns those), the normalized ones
-- (defaults filled, sizes in bytes, durations in seconds, addresses split) are what the core reads.
local schema = require("sluice.schema")
local state = require("sluice.config.state")
local crefs = require("sluice.config.refs")
local cluster = require("sluice.config.cluster")
local secrets = require("sluice.secrets")
local persist = require("sluice.config.persist")

local type, pairs, ipairs, tostring, tonumber, pcall, next = type, pairs, ipairs, tostring, tonumber, pcall, next
local concat, sort, format = table.concat, table.sort, string.format
local deep_copy, is_array = schema.deep_copy, schema.is_array

local _M = {}

local KINDS = { "upstreams", "providers", "routes", "consumers", "consumer_groups", "global_plugins",
                "plugin_metadata" }
local TOP = { node = true }
for _, k in ipairs(KINDS) do TOP[k] = true end

local METHODS = { "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE" }
local PROVIDER_KINDS = { "openai", "azure-openai", "anthropic", "gemini", "deepseek", "openai-compatible",
                         "bedrock", "mock" }

local str = { type = "string" }
-- Sizes and durations as people write them ("8m", "500ms"); validation turns them into bytes and seconds.
local function duration(lo, hi, default) return { type = "duration", minimum = lo, maximum = hi, default = default } end
local function count(lo, hi, default) return { type = "integer", minimum = lo, maximum = hi, default = default } end
local bool_t = { type = "boolean" }
local obj_t = { type = "object" }
local id_t = crefs.ID_T -- entity ids: letters, digits, '_', '.', '-' (sluice.config.refs)
-- Sent as a header: no CR, LF, NUL or other control characters (tab allowed).
local header_value_t = { type = "string", format = "header_value" }
-- A credential: sent as a header, kept encrypted in the state file, never shown (sluice.secrets)
local secret_value_t = { type = "string", format = "header_value", secret = true }
local token_t = { type = "string", pattern = "^[%w%-%._]+$", maxLength = 128 } -- goes into URL paths and hosts

local TLS_CLIENT = { type = "object", additionalProperties = false, properties = {
    verify = { type = "boolean", default = true }, ca_file = { type = "string", minLength = 1, maxLength = 512 },
    sni = { type = "string", minLength = 1, maxLength = 255, format = "host" } } }
local KEEPALIVE = { type = "object", default = {}, additionalProperties = false, properties = {
    size = count(0, 100000, 64), idle_timeout = duration(0, 86400, 60) } }

local NODE = require("sluice.config.node_schema").SCHEMA -- the node section (listeners, admin, limits, ...)

local UPSTREAM = { type = "object", required = { "nodes" }, additionalProperties = false, properties = {
    id = id_t, name = str, desc = str,
    nodes = { type = { "array", "object" }, items = str, additionalProperties = { type = "integer", minimum = 0 } },
    scheme = { enum = { "http", "https" }, default = "http" },
    timeout = { type = "object", default = {}, additionalProperties = false, properties = {
        connect = duration(0.001, 86400, 5), send = duration(0.001, 86400, 30), read = duration(0.001, 86400, 60),
        header = duration(0.001, 86400) } }, -- the whole response head; default: read
    keepalive = KEEPALIVE,
    pass_host = { enum = { "pass", "node", "rewrite" }, default = "pass" },
    host = { type = "string", minLength = 1, format = "host" }, -- the Host header with pass_host: rewrite
    -- HTTPS upstreams: verify against the system CA bundle, or ca_file (PEM) when given
    tls = TLS_CLIENT,
} }

-- Fields that reach the wire (headers, the URL) are checked here; other fields are left to the AI layer.
local PROVIDER = { type = "object", required = { "kind" }, properties = {
    kind = { enum = PROVIDER_KINDS },
    endpoint = { type = "string", format = "url" },
    api_key = secret_value_t, access_key = header_value_t, secret_key = secret_value_t,
    session_token = secret_value_t,
    api_version = token_t, region = token_t, deployment = { type = "string", minLength = 1, format = "header_value" },
    options = { type = "object", properties = {
        headers = { type = "object", propertyNames = { type = "string", format = "header_name" },
                    additionalProperties = header_value_t },
        beta = { type = { "string", "array" }, format = "header_value", items = header_value_t },
        organization = header_value_t, project = header_value_t, region = token_t,
    } },
    proxy = bool_t, -- false: never through HTTP(S)_PROXY
    -- the calls to the provider (the AI layer reads these; a plugin's own timeout wins)
    timeout = { type = "object", additionalProperties = false, properties = {
        connect = duration(0.001, 3600), send = duration(0.001, 3600), read = duration(0.001, 3600) } },
    keepalive = { type = "object", additionalProperties = false, properties = {
        size = count(0, 100000), idle_timeout = duration(0, 86400) } },
    tls = { type = "object", additionalProperties = false, properties = {
        verify = bool_t, ca_file = { type = "string", minLength = 1, maxLength = 512 },
        sni = { type = "string", minLength = 1, maxLength = 255, format = "host" } } },
    models = { type = "object", additionalProperties = str },
    price = { type = "object", additionalProperties = { type = "object", properties = {
        input = { type = "number", minimum = 0 }, output = { type = "number", minimum = 0 } } } },
} }

secrets.ENTITY_SCHEMA.providers = PROVIDER -- its `secret = true` fields are sealed in the state file

local ROUTE = { type = "object", required = { "id", "paths" }, additionalProperties = false, properties = {
    id = id_t, name = str, desc = str,
    paths = { type = "array", minItems = 1, items = { type = "string", format = "uri_path", maxLength = 4096 } },
    methods = { type = "array", uniqueItems = true, items = { enum = METHODS } },
    hosts = { type = "array", items = { type = "string", pattern = "^[%w%.%-_%*]+$", maxLength = 255 } },
    priority = { type = "integer", default = 0 },
    upstream = { type = { "string", "object" }, ref = "upstreams" },
    plugins = { type = "object", default = {} },
    strip_prefix = { type = "boolean", default = false },
} }

-- Roles: which routes, providers and models (names or globs such as "gpt-4o*") a consumer or a group may use
-- (allow) and may not (deny); sluice.consumer.allowed evaluates them.
local names_t = { type = "array", items = { type = "string", minLength = 1, maxLength = 256 } }
local ACCESS = { type = "object", additionalProperties = false, properties = {
    routes = names_t, providers = names_t, models = names_t } }
-- Spending budgets in USD (the ai-budget plugin enforces them): per UTC day and per calendar month (UTC).
local usd_t = { type = "number", minimum = 0, maximum = 1e9 }
local BUDGET = { type = "object", additionalProperties = false, properties = { daily = usd_t, monthly = usd_t } }

-- keys: plain (hashed when loaded) or "sha256:<64 hex>" digests; only digests are kept (sluice.consumer).
local CONSUMER = { type = "object", required = { "name" }, additionalProperties = false, properties = {
    name = id_t, desc = str,
    -- digests (sluice.consumer); also sealed in the state file and never shown (sluice.secrets)
    keys = { type = "array", default = {},
             items = { type = "string", minLength = 1, maxLength = 4096, secret = true } },
    groups = { type = "array", default = {}, items = { type = "string", ref = "consumer_groups" } },
    metadata = { type = "object", default = {} },
    plugins = { type = "object", default = {} },
    allow = ACCESS, deny = ACCESS, budget = BUDGET,
} }

secrets.ENTITY_SCHEMA.consumers = CONSUMER -- its keys are sealed in the state file

local GROUP = { type = "object", additionalProperties = false, properties = {
    desc = str, plugins = { type = "object", default = {} }, metadata = { type = "object", default = {} },
    allow = ACCESS, deny = ACCESS, budget = BUDGET } }

local consumer_pdk
--- Replaces the plain keys of a consumer entity with their digests ("sha256:<hex>"), in place; other values are
--- left for the schema to report. Returns true when something changed.
function _M.hash_keys(c)
    if type(c) ~= "table" or type(c.keys) ~= "table" then return false end
    consumer_pdk = consumer_pdk or require("sluice.pdk.consumer")
    local changed = false
    for i, k in ipairs(c.keys) do
        if type(k) == "string" and k ~= "" and not consumer_pdk.is_hashed(k) then
            c.keys[i] = consumer_pdk.hash_key(k)
            changed = true
        end
    end
    return changed
end

-- Every consumer of a document (list or map) with its keys hashed; true when some key was plain.
local function hash_doc_keys(doc)
    local cs, changed = doc.consumers, false
    if type(cs) ~= "table" then return false end
    for _, c in pairs(cs) do
        if _M.hash_keys(c) then changed = true end
    end
    return changed
end
_M.hash_doc_keys = hash_doc_keys

local PLUGIN_META = { type = "object", properties = { disable = bool_t, priority = { type = "integer" } },
                      additionalProperties = false }

local function join(path, key)
    if type(key) == "number" then return path .. "[" .. key .. "]" end
    if path == "" then return tostring(key) end
    return path .. "." .. tostring(key)
end

local function add(errs, path, msg) errs[#errs + 1] = { path = path, message = msg } end

local function rebase(path, p)
    if p == "" then return path end
    if path == "" then return p end
    return p:sub(1, 1) == "[" and path .. p or path .. "." .. p
end

-- Runs schema.validate and re-bases its error paths under path. While a config is validated, errs.refs
-- collects the references (`ref` in a schema) with their full paths and their owner (errs.owner), for
-- resolve_refs; entity checks outside validate() leave it nil.
local function check(s, v, path, errs)
    local refs = errs.refs and {} or nil
    local ok, e = schema.validate(s, v, refs)
    for _, r in ipairs(refs or {}) do
        errs.refs[#errs.refs + 1] = { kind = r.kind, id = r.id, path = rebase(path, r.path), owner = errs.owner }
    end
    if ok then return true end
    for _, x in ipairs(e) do add(errs, rebase(path, x.path), x.message) end
    return false
end

--- Parses 1048576, "64k", "8m", "1g"; returns bytes or nil (the schema type `size`).
_M.parse_size = schema.parse_size

--- Parses 30, 1.5, "500ms", "30s", "5m", "1h", "1d", "1m30s"; returns seconds or nil (the schema type `duration`).
_M.parse_duration = schema.parse_duration

--- Splits "host:port" / "[v6]:port" into host, port (port defaults to dport when absent and dport given).
function _M.parse_addr(s, dport)
    if type(s) ~= "string" then return nil, "expected \"host:port\"" end
    local host, port = s:match("^%[([%x:%.]+)%]:(%d+)$")
    if not host then host, port = s:match("^([%w%.%-_]+):(%d+)$") end
    if not host and dport then host = s:match("^%[([%x:%.]+)%]$") or s:match("^([%w%.%-_]+)$") ; port = dport end
    port = tonumber(port)
    if not host or not port then
        return nil, format("invalid address %q, expected \"host:port\" or \"[ipv6]:port\"", s)
    end
    if port > 65535 then return nil, format("port %d is out of range (0..65535)", port) end
    return host, port
end

local function resolve_path(prefix, p)
    -- also exported: the plugin registry must know the plugin paths before a config is validated
    if p:sub(1, 1) == "/" or prefix == nil or prefix == "" then return p end
    return prefix:gsub("/+$", "") .. "/" .. p
end

_M.resolve_path = resolve_path

local function cpu_count()
    local f, n = io.open("/proc/cpuinfo"), 0
    if f then
        for line in f:lines() do if line:match("^processor%s*:") then n = n + 1 end end
        f:close()
    end
    return math.max(1, math.min(n, 64))
end

local normalize_node_checked

-- Normalizes even after schema errors, so address/size mistakes show up in the same run; a Lua
-- error from a wrongly typed field is only a follow-up of an error already reported.
local function normalize_node(raw, path, errs, opts)
    local n = deep_copy(raw or {})
    local valid = check(NODE, n, path, errs)
    local ok, out = pcall(normalize_node_checked, n, path, errs, opts)
    if not ok and valid then add(errs, path, "internal error: " .. tostring(out)) end
    return valid and ok and out or nil
end

normalize_node_checked = function(n, path, errs, opts)
    local out = { log_level = n.log_level, access_log = n.access_log, pid_file = n.pid_file,
                  allow_encoded_slashes = n.allow_encoded_slashes,
                  memcached = n.memcached, id = n.id, listen = {}, shared_dicts = {}, limits = {} }
    for i, l in ipairs(n.listen) do
        local addr = type(l) == "table" and l.addr or l
        local host, port = _M.parse_addr(addr)
        if host then out.listen[i] = { host = host, port = port, tls = type(l) == "table" and l.tls or nil }
        else add(errs, join(join(path, "listen"), i), port) end
    end
    local w = n.workers ~= "auto" and tonumber(n.workers) -- "4" as well as 4
    if n.workers == "auto" then out.workers, out.workers_auto = cpu_count(), true
    elseif w and w % 1 == 0 and w >= 1 and w <= 64 then out.workers = w
    else
        add(errs, join(path, "workers"), format("expected \"auto\" or an integer 1..64, got %s", tostring(n.workers)))
    end
    if n.admin then
        local host, port = _M.parse_addr(n.admin.listen)
        if not host then add(errs, join(path, "admin.listen"), port) end
        out.admin = { listen = { host = host, port = port }, key = n.admin.key, keys = {},
                      audit_log = n.admin.audit_log }
        -- every key with its name: the single `key` is "admin"
        local names = {}
        if n.admin.key then out.admin.keys[1] = { name = "admin", key = n.admin.key }; names.admin = "key" end
        for i, k in ipairs(n.admin.keys or {}) do
            local kp = join(path, "admin.keys") .. "[" .. i .. "]"
            if names[k.name] then
                add(errs, kp .. ".name", format("name %q is already used (%s)", k.name, names[k.name]))
            else
                names[k.name] = kp
            end
            for _, o in ipairs(out.admin.keys) do
                if o.key == k.key then add(errs, kp .. ".key", format("the same key as %q", o.name)) end
            end
            out.admin.keys[#out.admin.keys + 1] = { name = k.name, key = k.key }
        end
        if #out.admin.keys == 0 then add(errs, join(path, "admin"), "give key or keys (the Admin API needs a key)") end
    end
    if n.secrets then
        local sec = { key_env = n.secrets.key_env, previous_key_files = {} }
        if n.secrets.key_file then sec.key_file = resolve_path(opts.prefix, n.secrets.key_file) end
        for i, f in ipairs(n.secrets.previous_key_files or {}) do
            sec.previous_key_files[i] = resolve_path(opts.prefix, f)
        end
        out.secrets = sec
    end
    if n.metrics then
        local host, port = _M.parse_addr(n.metrics.listen)
        if not host then add(errs, join(path, "metrics.listen"), port) end
        out.metrics = { listen = { host = host, port = port } }
    end
    -- Listeners are bound with SO_REUSEPORT: two on one address would both bind and split its connections
    -- (keyless /metrics answering on the proxy's port, admin requests reaching the metrics listener).
    local WILD = { ["0.0.0.0"] = true, ["::"] = true, ["*"] = true }
    local function clash(a, b)
        return a and b and a.host and b.host and a.port ~= 0 and a.port == b.port
            and (a.host == b.host or WILD[a.host] or WILD[b.host])
    end
    for _, own in ipairs({ "admin", "metrics" }) do
        local l = out[own] and out[own].listen
        for i, p in ipairs(out.listen) do
            if clash(l, p) then
                add(errs, join(path, own .. ".listen"), format("same address as node.listen[%d]", i))
            end
        end
    end
    if clash(out.admin and out.admin.listen, out.metrics and out.metrics.listen) then
        add(errs, join(path, "metrics.listen"), "same address as node.admin.listen")
    end
    out.plugin_paths = {}
    for i, p in ipairs(n.plugin_paths) do out.plugin_paths[i] = resolve_path(opts.prefix, p) end
    out.error_log = n.error_log == "stderr" and "stderr" or resolve_path(opts.prefix, n.error_log)
    out.state_file = n.state_file or (opts.file and (opts.file .. ".state.json")) or nil
    out.config_center = cluster.normalize(n.config_center, join(path, "config_center"), errs, opts)
    if out.admin and out.admin.audit_log == nil and out.state_file then
        out.admin.audit_log = (out.state_file:gsub("%.json$", "")) .. ".audit.jsonl"
    end
    -- sizes and durations are bytes and seconds already (schema types `size` and `duration`)
    for name, sz in pairs(n.shared_dicts) do out.shared_dicts[name] = sz end
    for k, v in pairs(n.limits) do out.limits[k] = v end
    out.drain_timeout = n.drain_timeout
    return out
end

local function normalize_upstream(u, path, errs)
    if not check(UPSTREAM, u, path, errs) then return nil end
    local dport = u.scheme == "https" and 443 or 80
    local out = { id = u.id, scheme = u.scheme, pass_host = u.pass_host, host = u.host, nodes = {}, timeout = {},
                  keepalive = { size = u.keepalive.size }, tls = u.tls }
    local function node(addr, w, np)
        local host, port = _M.parse_addr(addr, dport)
        if not host then add(errs, np, port) return end
        if port == 0 then add(errs, np, "port 0 is not a valid upstream port") return end
        out.nodes[#out.nodes + 1] = { host = host, port = port, weight = w }
    end
    if next(u.nodes) == nil then add(errs, join(path, "nodes"), "must list at least one node") end
    if is_array(u.nodes) then
        for i, a in ipairs(u.nodes) do node(a, 1, join(join(path, "nodes"), i)) end
    else
        local keys = {}
        for a in pairs(u.nodes) do keys[#keys + 1] = a end
        sort(keys)
        for _, a in ipairs(keys) do node(a, u.nodes[a], join(join(path, "nodes"), a)) end
    end
    for k, v in pairs(u.timeout) do out.timeout[k] = v end
    out.keepalive.idle_timeout = u.keepalive.idle_timeout
    if u.pass_host == "rewrite" and not u.host then
        add(errs, join(path, "host"), "is required when pass_host is \"rewrite\"")
    end
    return out
end

-- Validates a map of plugin name -> conf with the registry in opts.plugins (defaults filled in place).
local function check_plugins(plugins, path, errs, opts)
    local names = {}
    for name in pairs(plugins) do names[#names + 1] = name end
    sort(names, function(a, b) return tostring(a) < tostring(b) end)
    for _, name in ipairs(names) do
        local conf, np = plugins[name], join(path, name)
        if type(conf) ~= "table" or (next(conf) ~= nil and is_array(conf)) then
            add(errs, np, "plugin config must be an object (use {} for none)")
        else
            if conf._meta ~= nil then check(PLUGIN_META, conf._meta, join(np, "_meta"), errs) end
            local reg = opts.plugins
            if reg then
                local meta = conf._meta
                conf._meta = nil
                local ok, p, err = pcall(reg.get, name)
                if not ok or not p then
                    local why = (ok and err) and (" (" .. tostring(err) .. ")") or ""
                    add(errs, np, "unknown plugin " .. format("%q", tostring(name)) .. why)
                elseif type(p.schema) == "table" then
                    local sok, serr = schema.check_schema(p.schema)
                    if not sok then add(errs, np, "plugin has an invalid schema: " .. serr)
                    elseif check(p.schema, conf, np, errs) and type(p.check) == "function" then
                        local cok, res, cerr = pcall(p.check, conf)
                        if not cok or not res then
                            add(errs, np, tostring(cok and (cerr or "rejected by plugin check") or res))
                        end
                    end
                end
                conf._meta = meta
            end
        end
    end
end

local function path_ok(p)
    local star = p:find("*", 1, true)
    return not star or star == #p
end

local NORMALIZERS = {}

function NORMALIZERS.upstreams(u, path, errs) return normalize_upstream(u, path, errs) end

function NORMALIZERS.providers(p, path, errs)
    if not check(PROVIDER, p, path, errs) then return nil end
    return p
end

function NORMALIZERS.routes(r, path, errs, opts)
    if not check(ROUTE, r, path, errs) then return nil end
    for i, p in ipairs(r.paths) do
        if not path_ok(p) then add(errs, join(join(path, "paths"), i), "'*' is only allowed at the end of a path") end
    end
    if type(r.upstream) == "table" then
        r.upstream = normalize_upstream(r.upstream, join(path, "upstream"), errs)
    elseif type(r.upstream) == "string" then
        r.upstream_id, r.upstream = r.upstream, nil
    end
    check_plugins(r.plugins, join(path, "plugins"), errs, opts)
    return r
end

function NORMALIZERS.consumers(c, path, errs, opts)
    if not check(CONSUMER, c, path, errs) then return nil end
    check_plugins(c.plugins, join(path, "plugins"), errs, opts)
    return c
end

function NORMALIZERS.consumer_groups(g, path, errs, opts)
    if not check(GROUP, g, path, errs) then return nil end
    check_plugins(g.plugins, join(path, "plugins"), errs, opts)
    return g
end

-- Metadata belongs to a plugin: the id is the plugin's name, checked with the registry when there is one.
function NORMALIZERS.plugin_metadata(m, path, errs, opts, id)
    if not check(obj_t, m, path, errs) then return nil end
    if opts.plugins and id ~= nil then
        local ok, p, err = pcall(opts.plugins.get, id)
        if not ok or not p then
            add(errs, path, format("unknown plugin %q (plugin metadata needs a plugin of that name%s)", tostring(id),
                (ok and err) and ("; " .. tostring(err)) or ""))
        elseif type(p.metadata_schema) == "table" then
            local sok, serr = schema.check_schema(p.metadata_schema)
            if not sok then add(errs, path, "plugin has an invalid metadata_schema: " .. serr)
            else check(p.metadata_schema, m, path, errs) end
        end
    end
    return m
end

local ID_FIELD = crefs.ID_FIELD

-- ids, cross-entity checks and error lines (sluice.config.refs), under their old names
local check_id, entries = crefs.check_id, crefs.entries
_M.id_error, _M.line_of, _M.format_errors = crefs.id_error, crefs.line_of, crefs.format_errors
_M.resolve_refs, _M.users_of, _M.check_refs = crefs.resolve_refs, crefs.users_of, crefs.check_refs

--- Validates a config table (from YAML or the Admin API); returns cfg | nil, errors ({path, message, line?}).
function _M.validate(doc, opts)
    opts = opts or {}
    local errs = {}
    if type(doc) ~= "table" or (next(doc) ~= nil and is_array(doc)) then
        return nil, { { path = "", message = "config must be a mapping of sections (node, routes, ...)" } }
    end
    if next(doc) == nil then
        return nil, { { path = "", message = "the config is empty: expected at least one section (node, routes, ...)" }
        }
    end
    doc = deep_copy(doc)
    hash_doc_keys(doc) -- from here on (raw copies, snapshots, the Admin API) only digests
    errs.refs = {}
    for k in pairs(doc) do
        if not TOP[k] then add(errs, tostring(k), "unknown section (allowed: node, " .. concat(KINDS, ", ") .. ")") end
    end
    local paths
    local cfg = { raw = { node = deep_copy(doc.node) }, warnings = {}, upstreams = {}, providers = {}, routes = {},
                  consumers = {}, consumer_groups = {}, plugin_metadata = {}, global_plugins = {} }
    cfg.node = normalize_node(doc.node, "node", errs, opts)
    for _, kind in ipairs(KINDS) do
        cfg.raw[kind] = {}
        if kind == "global_plugins" then
            local gp = doc.global_plugins or {}
            cfg.raw.global_plugins = deep_copy(gp)
            if check(obj_t, gp, "global_plugins", errs) then
                errs.owner = { kind = "global_plugins" }
                check_plugins(gp, "global_plugins", errs, opts)
                cfg.global_plugins = gp
            end
        else
            local seen = {}
            paths = paths or {}
            for _, e in ipairs(entries(kind, doc[kind], errs)) do
                local raw = deep_copy(e.obj)
                errs.owner = { kind = kind, id = e.id }
                local n = NORMALIZERS[kind](e.obj, e.path, errs, opts, e.id)
                if n and e.id ~= nil then
                    if seen[e.id] then
                        add(errs, join(e.path, ID_FIELD[kind] or ""), format("duplicate %s %q (also at %s)",
                            ID_FIELD[kind] or "name", tostring(e.id), seen[e.id]))
                    else
                        seen[e.id] = e.path
                        paths[n] = e.path
                        cfg.raw[kind][e.id] = raw
                        if kind == "routes" or kind == "consumers" then
                            cfg[kind][#cfg[kind] + 1] = n
                        else
                            cfg[kind][e.id] = n
                        end
                    end
                end
            end
        end
    end
    errs.owner = nil
    cfg.refs, errs.refs = errs.refs, nil
    _M.resolve_refs(cfg, cfg.refs, errs, opts)
    _M.check_refs(cfg, errs, paths)
    if opts.lines then
        for _, e in ipairs(errs) do e.line = _M.line_of(opts.lines, e.path) end
    end
    if #errs > 0 then return nil, errs end
    return cfg
end

--- Validates one entity (Admin API); returns the normalized copy | nil, errors with entity-relative paths.
function _M.validate_entity(kind, id, obj, cfg, opts)
    opts = opts or {}
    local errs = {}
    if not NORMALIZERS[kind] and kind ~= "global_plugins" then
        return nil, { { path = "", message = "unknown entity kind " .. tostring(kind) } }
    end
    if type(obj) ~= "table" or (next(obj) ~= nil and is_array(obj)) then
        return nil, { { path = "", message = "expected an object, got " .. schema.describe(obj) } }
    end
    obj = deep_copy(obj)
    if kind == "consumers" then _M.hash_keys(obj) end
    errs.refs = {}
    if kind == "global_plugins" then
        check_plugins(obj, "", errs, opts)
        local refs = errs.refs
        errs.refs = nil
        if cfg then _M.resolve_refs(cfg, refs, errs, opts) end
        if #errs > 0 then return nil, errs end
        return obj
    end
    if not check_id(kind, id, "", errs) then
        errs.refs = nil
        return nil, errs
    end
    local idf = ID_FIELD[kind]
    if idf then
        if obj[idf] == nil then obj[idf] = id end
        if obj[idf] ~= id then add(errs, idf, format("must match the id in the URL %q", tostring(id))) end
    end
    local n = NORMALIZERS[kind](obj, "", errs, opts, id)
    local refs = errs.refs
    errs.refs = nil
    if n and cfg then
        _M.resolve_refs(cfg, refs, errs, opts)
        if kind == "consumers" then
            for j, k in ipairs(n.keys) do
                for _, c in ipairs(cfg.consumers or {}) do
                    if c.name ~= n.name then
                        for _, k2 in ipairs(c.keys) do
                            if k == k2 then
                                add(errs, "keys[" .. j .. "]", format("key is already used by consumer %q", c.name))
                            end
                        end
                    end
                end
            end
        end
    end
    if #errs > 0 then return nil, errs end
    return n
end

function _M.load(path, opts)
    opts = opts or {}
    local yaml = require("sluice.yaml")
    local doc, lines = yaml.load_file(path)
    if not doc then return nil, lines end
    local node = type(doc.node) == "table" and doc.node or {}
    local state_path = opts.state_file or (type(node.state_file) == "string" and node.state_file)
        or (path .. ".state.json")
    local opened, err = persist.read(state_path, node, opts, path) -- secrets opened, plain consumer keys hashed
    if not opened then return nil, err end
    local origin = {}
    state.overlay(doc, opened, origin, KINDS, ID_FIELD)
    local vopts = setmetatable({ file = path, lines = lines }, { __index = opts })
    local cfg, errs = _M.validate(doc, vopts)
    if not cfg then
        for _, e in ipairs(errs) do
            local p = e.path
            while p and p ~= "" do
                if origin[p] then e.file, e.line = state_path, nil break end
                p = p:match("^(.*)%[%d+%]$") or p:match("^(.*)%.[^%.%[]*$")
            end
        end
        return nil, _M.format_errors(errs, path)
    end
    cfg.node.state_file = state_path
    cfg.file = path
    return cfg
end

--- Reads a state file; returns the state table ({version=1} when the file does not exist) | nil, err.
function _M.state_read(path)
    return state.read(path)
end

--- Records one Admin API change in the state file (obj, or false to delete), secrets sealed: sluice.config.persist.
function _M.state_put(state_path, kind, id, obj, opts)
    if kind ~= "global_plugins" and (not NORMALIZERS[kind] or id == nil) then
        return nil, "invalid entity kind or id"
    end
    return persist.put(state_path, kind, id, obj, opts)
end

_M.secrets_node, _M.seal_plain_state = persist.secrets_node, persist.seal_plain_state

return _M

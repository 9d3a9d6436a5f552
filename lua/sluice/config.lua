-- Loads, validates and normalizes the Sluice config (docs/configuration.md is the field reference).
--
-- Every error is collected rather than stopping at the first, so one `sluice -t` run shows them all.
-- The as-written entities are kept in cfg.raw (the Admin API returns those), the normalized ones
-- (defaults filled, sizes in bytes, durations in seconds, addresses split) are what the core reads.
local schema = require("sluice.schema")
local state = require("sluice.config.state")
local secrets = require("sluice.secrets")
local cjson = require("cjson")

local type, pairs, ipairs, tostring, tonumber, pcall, next = type, pairs, ipairs, tostring, tonumber, pcall, next
local concat, sort, format = table.concat, table.sort, string.format
local deep_copy, is_array = schema.deep_copy, schema.is_array

local _M = {}

local KINDS = { "upstreams", "providers", "routes", "consumers", "consumer_groups", "global_plugins", "plugin_metadata" }
local TOP = { node = true }
for _, k in ipairs(KINDS) do TOP[k] = true end

local LOG_FIELDS = { "time", "client", "method", "path", "query", "status", "bytes", "request_bytes", "latency_ms",
                     "upstream_latency_ms", "route", "upstream", "request_id", "user_agent", "upstream_status" }
local METHODS = { "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE" }
local PROVIDER_KINDS = { "openai", "azure-openai", "anthropic", "gemini", "deepseek", "openai-compatible", "bedrock", "mock" }

local str = { type = "string" }
-- Sizes and durations as people write them ("8m", "500ms"); validation turns them into bytes and seconds.
local function size(lo, hi, default) return { type = "size", minimum = lo, maximum = hi, default = default } end
local function duration(lo, hi, default) return { type = "duration", minimum = lo, maximum = hi, default = default } end
local function count(lo, hi, default) return { type = "integer", minimum = lo, maximum = hi, default = default } end
local bool_t = { type = "boolean" }
local obj_t = { type = "object" }
-- Entity ids (routes, upstreams, providers, consumers, consumer groups): letters, digits, '_', '.', '-', not
-- starting with '.' or '-' (no ".", "..", "-x"), 1..256 characters. They appear in Admin API URLs, the state
-- file, logs and (provider names) response headers.
local id_t = { type = "string", format = "id", minLength = 1, maxLength = 256 }
-- Sent as a header: no CR, LF, NUL or other control characters (tab allowed).
local header_value_t = { type = "string", format = "header_value" }
-- A credential: sent as a header, kept encrypted in the state file, never shown (sluice.secrets)
local secret_value_t = { type = "string", format = "header_value", secret = true }
local token_t = { type = "string", pattern = "^[%w%-%._]+$", maxLength = 128 } -- goes into URL paths and hosts

local YEAR = 86400 * 365
local LIMITS = {
    max_header_size = size(1, 1024 ^ 4, "16k"), max_body_size = size(1, 1024 ^ 4, "8m"),
    body_buffer_size = size(1, 1024 ^ 4, "64k"), max_url_length = size(1, 1024 ^ 4, "8k"),
    header_timeout = duration(0, YEAR, 10), body_timeout = duration(0, YEAR, 30),
    body_deadline = duration(0, YEAR, 300), keepalive_timeout = duration(0, YEAR, 60), send_timeout = duration(0, YEAR, 30),
    max_connections = count(1, 1e9, 10000), keepalive_requests = count(1, 1e9, 10000),
}
local TLS_CLIENT = { type = "object", additionalProperties = false, properties = {
    verify = { type = "boolean", default = true }, ca_file = { type = "string", minLength = 1, maxLength = 512 },
    sni = { type = "string", minLength = 1, maxLength = 255, format = "host" } } }
local KEEPALIVE = { type = "object", default = {}, additionalProperties = false, properties = {
    size = count(0, 100000, 64), idle_timeout = duration(0, 86400, 60) } }

local NODE = { type = "object", additionalProperties = false, properties = {
    listen = { type = "array", minItems = 1, default = { "127.0.0.1:8080" }, items = {
        type = { "string", "object" }, required = { "addr" }, additionalProperties = false, properties = {
            addr = str,
            tls = { type = "object", required = { "cert", "key" }, additionalProperties = false,
                    properties = { cert = str, key = str, -- the default certificate; more, chosen by SNI:
                                   certs = { type = "array", items = { type = "object", required = { "cert", "key" },
                                             additionalProperties = false, properties = { cert = str, key = str } } } } } } } },
    workers = { type = { "string", "integer" }, default = "auto" }, -- "auto" or 1..64, checked in normalize_node
    admin = { type = "object", additionalProperties = false, properties = {
        listen = { type = "string", default = "127.0.0.1:9180" },
        key = { type = "string", minLength = 8, secret = true },
        -- named keys: the name is who made a change in the audit log (the single `key` is named "admin")
        keys = { type = "array", maxItems = 1000, items = { type = "object", required = { "name", "key" },
                 additionalProperties = false, properties = { name = id_t,
                 key = { type = "string", minLength = 8, secret = true } } } },
        -- JSON lines of every change (sluice.admin.audit); "off"; default: next to the state file
        audit_log = { type = "string", minLength = 1 } } },
    -- secrets at rest (sluice.secrets): the master key that seals secret fields in the state file
    secrets = { type = "object", additionalProperties = false, properties = {
        key_file = { type = "string", minLength = 1 }, key_env = { type = "string", pattern = "^[%a_][%w_]*$" },
        previous_key_files = { type = "array", items = { type = "string", minLength = 1 } } } },
    -- a listener of its own for Prometheus (GET /metrics, no key; docs/observability.md)
    metrics = { type = "object", required = { "listen" }, additionalProperties = false, properties = {
        listen = { type = "string" } } },
    plugin_paths = { type = "array", items = str, default = { "plugins" } },
    log_level = { enum = { "debug", "info", "warn", "error" }, default = "info" },
    error_log = { type = "string", minLength = 1, default = "stderr" },
    access_log = { type = "object", default = {}, additionalProperties = false, properties = {
        path = { type = "string", minLength = 1, default = "stdout" },
        fields = { type = "array", uniqueItems = true, items = { enum = LOG_FIELDS },
                   default = { "time", "client", "method", "path", "status", "bytes", "latency_ms", "route" } } } },
    pid_file = str, state_file = str,
    shared_dicts = { type = "object", default = { sluice = "10m" }, additionalProperties = size(65536, 1024 ^ 3) },
    limits = { type = "object", default = {}, additionalProperties = false, properties = LIMITS },
    drain_timeout = duration(0, 86400, 30),
    allow_encoded_slashes = { type = "boolean", default = false }, -- %2F in paths: kept encoded instead of a 400
    memcached = { type = "object", additionalProperties = false, properties = {
        servers = { type = { "array", "string" }, items = str },
        timeout = { type = "duration", exclusiveMinimum = 0, maximum = 60 },
        failure_threshold = count(1, 1e6), retry_after = duration(0, 86400) } },
    etcd = obj_t, -- owned by a future shared-state layer; free-form here
} }

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
    if not host or not port then return nil, format("invalid address %q, expected \"host:port\" or \"[ipv6]:port\"", s) end
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
                  memcached = n.memcached, etcd = n.etcd, listen = {}, shared_dicts = {}, limits = {} }
    for i, l in ipairs(n.listen) do
        local addr = type(l) == "table" and l.addr or l
        local host, port = _M.parse_addr(addr)
        if host then out.listen[i] = { host = host, port = port, tls = type(l) == "table" and l.tls or nil }
        else add(errs, join(join(path, "listen"), i), port) end
    end
    local w = n.workers ~= "auto" and tonumber(n.workers) -- "4" as well as 4
    if n.workers == "auto" then out.workers, out.workers_auto = cpu_count(), true
    elseif w and w % 1 == 0 and w >= 1 and w <= 64 then out.workers = w
    else add(errs, join(path, "workers"), format("expected \"auto\" or an integer 1..64, got %s", tostring(n.workers))) end
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
    if u.pass_host == "rewrite" and not u.host then add(errs, join(path, "host"), "is required when pass_host is \"rewrite\"") end
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
                    add(errs, np, "unknown plugin " .. format("%q", tostring(name)) .. ((ok and err) and (" (" .. tostring(err) .. ")") or ""))
                elseif type(p.schema) == "table" then
                    local sok, serr = schema.check_schema(p.schema)
                    if not sok then add(errs, np, "plugin has an invalid schema: " .. serr)
                    elseif check(p.schema, conf, np, errs) and type(p.check) == "function" then
                        local cok, res, cerr = pcall(p.check, conf)
                        if not cok or not res then add(errs, np, tostring(cok and (cerr or "rejected by plugin check") or res)) end
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

local ID_FIELD = { routes = "id", upstreams = "id", consumers = "name" }
-- What a reference names, for messages: kind -> singular, where it is defined.
local REF_WHAT = { upstreams = { "upstream", "upstreams" }, providers = { "provider", "providers" },
                   consumers = { "consumer", "consumers" }, consumer_groups = { "consumer group", "consumer_groups" },
                   routes = { "route", "routes" }, shared_dicts = { "shared dict", "node.shared_dicts" },
                   plugins = { "plugin", "node.plugin_paths" } }

-- A map key or list id must be an id (plugin metadata is keyed by plugin name, checked by its normalizer).
local check_id

--- nil when id is a valid id for entities of kind (Admin API URLs), else why not.
function _M.id_error(kind, id)
    local errs = {}
    if check_id(kind, id, "", errs) then return nil end
    return errs[1].message
end

check_id = function(kind, id, path, errs)
    if kind == "plugin_metadata" then
        if type(id) ~= "string" or not id:match("^[%w_%-]+$") or #id > 128 then
            add(errs, path, format("invalid plugin name %s", schema.describe(id) == "string" and format("%q", id) or schema.describe(id)))
            return false
        end
        return true
    end
    local ok, e = schema.validate(id_t, id)
    if not ok then add(errs, path, (ID_FIELD[kind] and "" or "key ") .. e[1].message) end
    return ok ~= nil
end

-- Yields (id, entity, path) for a kind written either as a map id -> entity or a list of entities.
local function entries(kind, v, errs)
    local list, id_field = {}, ID_FIELD[kind]
    if v == nil or v == cjson.null then return list end
    if type(v) ~= "table" then add(errs, kind, "expected " .. (kind == "routes" and "a list" or "a map") .. ", got " .. schema.describe(v)) return list end
    if next(v) == nil then return list end
    if is_array(v) then
        if not id_field then add(errs, kind, "expected a map of name -> entry, got a list") return list end
        for i, e in ipairs(v) do
            if e ~= false then list[#list + 1] = { id = type(e) == "table" and e[id_field] or nil, obj = e, path = kind .. "[" .. i .. "]" } end
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

--- Validates a config table (from YAML or the Admin API); returns cfg | nil, errors ({path, message, line?}).
function _M.validate(doc, opts)
    opts = opts or {}
    local errs = {}
    if type(doc) ~= "table" or (next(doc) ~= nil and is_array(doc)) then
        return nil, { { path = "", message = "config must be a mapping of sections (node, routes, ...)" } }
    end
    if next(doc) == nil then
        return nil, { { path = "", message = "the config is empty: expected at least one section (node, routes, ...)" } }
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
                        add(errs, join(e.path, ID_FIELD[kind] or ""), format("duplicate %s %q (also at %s)", ID_FIELD[kind] or "name", tostring(e.id), seen[e.id]))
                    else
                        seen[e.id] = e.path
                        paths[n] = e.path
                        cfg.raw[kind][e.id] = raw
                        if kind == "routes" or kind == "consumers" then cfg[kind][#cfg[kind] + 1] = n else cfg[kind][e.id] = n end
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
            local who = o.id ~= nil and (REF_WHAT[o.kind] and REF_WHAT[o.kind][1] or tostring(o.kind)) .. " " .. tostring(o.id)
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
                        cfg.warnings[#cfg.warnings + 1] = format("routes %q and %q both match %s %s (host %s)", seen_route[key], r.id, m, p, h)
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
                add(errs, join(paths[c] or ("consumers[" .. i .. "]"), "keys") .. "[" .. j .. "]", format("key is already used by consumer %q", keys[k]))
            end
            keys[k] = c.name
        end
    end
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
                            if k == k2 then add(errs, "keys[" .. j .. "]", format("key is already used by consumer %q", c.name)) end
                        end
                    end
                end
            end
        end
    end
    if #errs > 0 then return nil, errs end
    return n
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

function _M.load(path, opts)
    opts = opts or {}
    local yaml = require("sluice.yaml")
    local doc, lines = yaml.load_file(path)
    if not doc then return nil, lines end
    local node = type(doc.node) == "table" and doc.node or {}
    local state_path = opts.state_file or (type(node.state_file) == "string" and node.state_file) or (path .. ".state.json")
    local st, err = state.read(state_path)
    if not st then return nil, err end
    -- sealed secrets (sluice.secrets): opened in a copy, so `st` stays as the file has it
    local kr, kerr = secrets.keyring(_M.secrets_node(node, opts.prefix))
    if kerr then return nil, path .. ": " .. kerr end
    local opened, oerr = secrets.open_state(st, kr)
    if not opened then return nil, state_path .. ": " .. oerr end
    local hashed = false
    if type(opened.consumers) == "table" then
        -- a state file written before keys were hashed: hash them (the opened values: a sealed key is hashed as the
        -- key it holds), and write it back so no plain key stays
        for _, c in pairs(opened.consumers) do
            if _M.hash_keys(c) then hashed = true end
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

--- Records one Admin API change in the state file (obj, or false to delete). Returns true | nil, err. opts: node (the
--- normalized node settings: the master key), plugins (a registry: which plugin config fields are secret); secret
--- fields are sealed when there is a master key.
function _M.state_put(state_path, kind, id, obj, opts)
    if kind ~= "global_plugins" and (not NORMALIZERS[kind] or id == nil) then return nil, "invalid entity kind or id" end
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

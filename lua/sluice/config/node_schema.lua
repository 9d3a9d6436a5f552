-- The schema of the `node` section (docs/configuration.md, "node"): listeners, workers, the Admin API, logs, limits,
-- shared dicts, memcached, the config center. sluice.config checks it and normalizes what it holds.
local cluster = require("sluice.config.cluster")
local crefs = require("sluice.config.refs")

local _M = {}

local str = { type = "string" }
local id_t = crefs.ID_T
-- Sizes and durations as people write them ("8m", "500ms"); validation turns them into bytes and seconds.
local function size(lo, hi, default) return { type = "size", minimum = lo, maximum = hi, default = default } end
local function duration(lo, hi, default) return { type = "duration", minimum = lo, maximum = hi, default = default } end
local function count(lo, hi, default) return { type = "integer", minimum = lo, maximum = hi, default = default } end

local LOG_FIELDS = { "time", "client", "method", "path", "query", "status", "bytes", "request_bytes", "latency_ms",
                     "upstream_latency_ms", "route", "upstream", "request_id", "user_agent", "upstream_status" }
local YEAR = 86400 * 365
local LIMITS = {
    max_header_size = size(1, 1024 ^ 4, "16k"), max_body_size = size(1, 1024 ^ 4, "8m"),
    body_buffer_size = size(1, 1024 ^ 4, "64k"), max_url_length = size(1, 1024 ^ 4, "8k"),
    header_timeout = duration(0, YEAR, 10), body_timeout = duration(0, YEAR, 30),
    body_deadline = duration(0, YEAR, 300), keepalive_timeout = duration(0, YEAR, 60),
    send_timeout = duration(0, YEAR, 30),
    max_connections = count(1, 1e9, 10000), keepalive_requests = count(1, 1e9, 10000),
}
_M.SCHEMA = { type = "object", additionalProperties = false, properties = {
    listen = { type = "array", minItems = 1, default = { "127.0.0.1:8080" }, items = {
        type = { "string", "object" }, required = { "addr" }, additionalProperties = false, properties = {
            addr = str,
            tls = { type = "object", required = { "cert", "key" }, additionalProperties = false,
                    properties = { cert = str, key = str, -- the default certificate; more, chosen by SNI:
                                   certs = { type = "array", items = { type = "object", required = { "cert", "key" },
                                             additionalProperties = false,
                                             properties = { cert = str, key = str } } } } } } } },
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
    id = { type = "string", minLength = 1, maxLength = 128, pattern = "^[%w%._:%-]+$" }, -- default: the host name
    config_center = cluster.SCHEMA, -- entities from etcd instead of this file (docs/cluster.md)
} }

return _M

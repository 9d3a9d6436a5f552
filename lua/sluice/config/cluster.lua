-- node.config_center (docs/cluster.md): its schema and its normalized form, checked with the other node settings
-- by sluice.config. The config center itself is sluice.config.center.
local type, ipairs, tostring = type, ipairs, tostring

local _M = {}

local function duration(lo, hi, default) return { type = "duration", minimum = lo, maximum = hi, default = default } end

local function join(path, key)
    if type(key) == "number" then return path .. "[" .. key .. "]" end
    return path .. "." .. tostring(key)
end

local function add(errs, path, msg) errs[#errs + 1] = { path = path, message = msg } end

local function resolve_path(prefix, p)
    if p:sub(1, 1) == "/" or prefix == nil or prefix == "" then return p end
    return prefix:gsub("/+$", "") .. "/" .. p
end

--- The schema of node.config_center (entities from etcd instead of the config file; read at start).
_M.SCHEMA = { type = "object", required = { "kind", "endpoints" }, additionalProperties = false, properties = {
    kind = { enum = { "etcd" } },
    endpoints = { type = "array", minItems = 1, maxItems = 32, items = { type = "string", format = "url" } },
    prefix = { type = "string", pattern = "^/[%w%._%-/]*$", maxLength = 256, default = "/sluice" },
    timeout = duration(0.001, 60, 5), -- each request to etcd
    watch_timeout = duration(1, 86400, 60), -- a quiet watch is opened again (from its revision) after this
    snapshot_file = { type = "string", minLength = 1 }, -- default <config path>.etcd.json
    node_ttl = duration(2, 3600, 15), -- the lease of this node's registration (PREFIX/nodes/ID)
    tls = { type = "object", additionalProperties = false, properties = {
        ca_file = { type = "string", minLength = 1, maxLength = 512 },
        cert_file = { type = "string", minLength = 1, maxLength = 512 },
        key_file = { type = "string", minLength = 1, maxLength = 512 },
        verify = { type = "boolean", default = true } } },
    auth = { type = "object", required = { "user", "password" }, additionalProperties = false, properties = {
        user = { type = "string", minLength = 1, format = "header_value" },
        password = { type = "string", format = "header_value" } } } } }

--- node.config_center with paths resolved (TLS files against the prefix, as listener certificates), the prefix
--- without a trailing '/', and the snapshot file next to the config file unless given.
function _M.normalize(c, path, errs, opts)
    if c == nil then return nil end
    local out = { kind = c.kind, endpoints = {}, prefix = c.prefix:gsub("/+$", ""), timeout = c.timeout,
                  watch_timeout = c.watch_timeout, node_ttl = c.node_ttl, auth = c.auth }
    if out.prefix == "" then add(errs, join(path, "prefix"), "must not be \"/\" alone (use e.g. \"/sluice\")") end
    for i, e in ipairs(c.endpoints) do
        if not e:match("^https?://[^/]+") then
            add(errs, join(join(path, "endpoints"), i), "expected an http:// or https:// URL of an etcd member")
        end
        out.endpoints[i] = e:gsub("/+$", "")
    end
    if c.tls then
        local t = c.tls
        if (t.cert_file == nil) ~= (t.key_file == nil) then
            add(errs, join(path, "tls"), "a client certificate needs both cert_file and key_file")
        end
        out.tls = { verify = t.verify, ca_file = t.ca_file and resolve_path(opts.prefix, t.ca_file),
                    cert_file = t.cert_file and resolve_path(opts.prefix, t.cert_file),
                    key_file = t.key_file and resolve_path(opts.prefix, t.key_file) }
    end
    out.snapshot_file = c.snapshot_file or (opts.file and (opts.file .. ".etcd.json")) or nil
    return out
end

return _M

-- sluice.admin.audit: who changed what through the Admin API, one JSON line per change appended to
-- node.admin.audit_log (default: next to the state file, "<state file without .json>.audit.jsonl"; "off" turns
-- it off). docs/admin-api.md, "Audit log".
--
--   {"time":"2026-12-02T10:00:00.123Z","who":"ci-deploy","client":"10.0.0.5","action":"update","kind":"providers",
--    "id":"openai","before":{...,"api_key":"***"},"after":{...,"api_key":"***"}}
--
-- who is the name of the admin key used (node.admin.keys[].name; the single node.admin.key is "admin"). before and
-- after are the entity as stored, secrets redacted ("***"); a create has no before, a delete no after. The line is
-- written before the change is persisted: a change that cannot be audited is refused; a change that then fails is
-- followed by a line with "outcome": "failed" and the error. Plugin reloads are lines of kind "plugins".
local cjson = require("cjson.safe")
local secrets = require("sluice.secrets")

local type, ipairs, tostring, floor = type, ipairs, tostring, math.floor

local _M = {}

local function now_iso()
    local t = require("sluice").time()
    local s = floor(t)
    return os.date("!%Y-%m-%dT%H:%M:%S", s) .. string.format(".%03dZ", floor((t - s) * 1000))
end

--- The name of the admin key that equals key (node.admin, normalized: keys = {{name, key}}), or nil. Every key is
--- compared, in time that does not depend on which one matches (equal: a constant-time comparison).
function _M.who(admin, key, equal)
    if type(admin) ~= "table" or type(key) ~= "string" then return nil end
    local name
    for _, k in ipairs(admin.keys or {}) do
        if equal(key, k.key) and not name then name = k.name end
    end
    if not name and admin.key and #(admin.keys or {}) == 0 and equal(key, admin.key) then name = "admin" end
    return name
end

--- The audit log path of node settings (nil when off).
function _M.path(node)
    local a = type(node) == "table" and node.admin
    local p = a and a.audit_log
    if p == nil or p == "off" then return nil end
    return p
end

--- Appends one line (a table: time is added); true | nil, err.
function _M.append(path, entry)
    entry.time = entry.time or now_iso()
    local line, err = cjson.encode(entry)
    if not line then return nil, "cannot encode the audit entry: " .. tostring(err) end
    local f, oerr = io.open(path, "a")
    if not f then return nil, "cannot open the audit log: " .. tostring(oerr) end
    local ok, werr = f:write(line, "\n")
    local cok, cerr = f:close()
    if not ok or not cok then return nil, "cannot write the audit log: " .. tostring(werr or cerr) end
    return true
end

--- Records an entity change before it is persisted. node: the settings (audit_log), who/client: the caller, kind,
--- id, before/after: the entity (nil for none), schema_of: plugin schemas (secrets redacted). true | nil, err (then
--- the caller refuses the change).
function _M.change(node, who, client, kind, id, before, after, schema_of)
    local path = _M.path(node)
    if not path then return true end
    local action = (before == nil and "create") or (after == nil and "delete") or "update"
    return _M.append(path, {
        who = who or "unknown", client = client, action = action, kind = kind, id = id,
        before = before ~= nil and secrets.redact(kind, before, schema_of, id) or nil,
        after = after ~= nil and secrets.redact(kind, after, schema_of, id) or nil,
    })
end

--- Records that an audited change was not applied after all.
function _M.failed(node, who, kind, id, err)
    local path = _M.path(node)
    if not path then return end
    _M.append(path, { who = who or "unknown", action = "failed", outcome = "failed", kind = kind, id = id,
                      error = tostring(err) })
end

--- Records a plugin reload (the plugins whose code changed and the new plugin code version).
function _M.reload(node, who, client, changed, version, outcome)
    local path = _M.path(node)
    if not path then return true end
    return _M.append(path, { who = who or "unknown", client = client, action = "reload", kind = "plugins",
                             changed = changed, plugin_version = version, outcome = outcome })
end

return _M

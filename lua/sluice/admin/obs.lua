-- Observability routes of the Admin API listener (docs/observability.md), kept apart from the entity API in
-- sluice.admin, which hands every request here first:
--
--   GET  /metrics                      Prometheus text format (X-API-KEY or Authorization: Bearer KEY)
--   GET  /admin/usage?group_by=...     usage and spend report (sluice.admin.usage), same keys
--   GET  /dashboard, /dashboard/*      the live dashboard (sluice.admin.dashboard): its own login and sessions
--
-- Returns status, body, headers for these paths, nil for every other one.
local metrics = require("sluice.pdk.metrics")
local request = require("sluice.pdk.request")

local sub = string.sub

local _M = {}

local TEXT = { ["content-type"] = "text/plain; version=0.0.4; charset=utf-8", ["cache-control"] = "no-store" }

--- The admin key a request presents: X-API-KEY, or Authorization: Bearer KEY (what Prometheus sends).
function _M.presented_key(ctx)
    local k = request.get_header("x-api-key", ctx)
    if k then return k end
    local auth = request.get_header("authorization", ctx)
    if type(auth) == "string" then
        return auth:match("^[Bb]earer%s+(.-)%s*$")
    end
    return nil
end

local function denied()
    return 401, '{"error":{"message":"missing or wrong X-API-KEY header (or Authorization: Bearer)"}}',
        { ["content-type"] = "application/json", ["www-authenticate"] = 'Bearer realm="sluice"' }
end

local function exposition(ctx)
    if ctx.method ~= "GET" and ctx.method ~= "HEAD" then
        return 405, '{"error":{"message":"method not allowed (GET)"}}', { ["content-type"] = "application/json" }
    end
    metrics.flush() -- this worker's share is up to date; the others' are at most a second old
    return 200, metrics.exposition(), TEXT
end

--- A request on node.metrics.listen: GET /metrics without a key (the listener is the access control: bind it
--- where only Prometheus reaches it); every other path is a 404.
function _M.metrics_listener(ctx, path)
    if path == "/metrics" then return exposition(ctx) end
    return 404, '{"error":{"message":"not found (this listener serves GET /metrics only)"}}',
        { ["content-type"] = "application/json" }
end

--- Handles path when it is one of ours. key: the admin key the caller presents (else the first configured);
--- secure_equal: constant-time compare; keys: every configured admin key.
function _M.handle(ctx, path, key, secure_equal, keys)
    if path == "/metrics" then
        if not secure_equal(_M.presented_key(ctx), key) then return denied() end
        return exposition(ctx)
    elseif path == "/admin/usage" then
        if not secure_equal(_M.presented_key(ctx), key) then return denied() end
        return require("sluice.admin.usage").handle(ctx)
    elseif path == "/dashboard" or sub(path, 1, 11) == "/dashboard/" then
        return require("sluice.admin.dashboard").handle(ctx, path, keys or { key }, secure_equal)
    end
    return nil
end

return _M

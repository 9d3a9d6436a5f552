-- sluice.admin.cache: the Admin API of ai-cache (docs/caching.md#purge), reached through sluice.admin.
--
--   GET    /admin/cache                  where the cache runs: routes, namespaces, dicts (size, free), memcached;
--                                        per route its namespace's counters on this node (sluice.cache.stats):
--                                        hits, misses, bypasses, refreshes, saved tokens and saved cost
--   DELETE /admin/cache                  purge everything
--   DELETE /admin/cache/routes/ID        purge the namespace of route ID (every route sharing it too)
--   DELETE /admin/cache/keys/KEY         purge one entry (KEY: the x-sluice-cache-key of a response)
--
-- A purge takes effect on this node at once (every worker) and on every other node through memcached: a new
-- generation for "all" or the namespace, or an entry in the purge log, that each node's sync timer picks up
-- within sluice.cache.store.SYNC seconds (sluice.cache.store). Without memcached there is one node to purge.
local cjson = require("cjson.safe")
local base = require("sluice.pdk.base")
local store = require("sluice.cache.store")
local routes = require("sluice.cache.routes")
local stats = require("sluice.cache.stats")
local memcached = require("sluice.pdk.memcached")

local ipairs, pairs, tostring, next = ipairs, pairs, tostring, next
local format = string.format

local _M = {}

local JSON_HEADERS = { ["content-type"] = "application/json" }

local function reply(status, body)
    return status, cjson.encode(body) or "{}", JSON_HEADERS
end

local function fail(status, message)
    return reply(status, { error = { message = message } })
end

-- What a purge did: 200, or 502 when this node is purged but memcached (the other nodes) could not be told.
local function purged(what, l2, err)
    local body = { purged = what, nodes = l2 and "this node now, the others within " .. store.SYNC .. " s"
        or "this node (no memcached: no other node shares the cache)" }
    if err then
        body.error = { message = "purged on this node only; memcached: " .. tostring(err) }
        return reply(502, body)
    end
    return reply(200, body)
end

local function uses_l2(cfg)
    if not routes.has_memcached(cfg) then return false end
    for _, route in ipairs(cfg.routes or {}) do
        local conf = routes.conf_of(cfg, route)
        if conf and conf.l2 then return true end
    end
    return false
end

local function status_body(cfg)
    local list, dicts = {}, {}
    for _, route in ipairs(cfg.routes or {}) do
        local conf = routes.conf_of(cfg, route)
        if conf then
            local ns = routes.namespace(conf, route)
            local d = require("sluice.pdk.shared").get(conf.shared_dict)
            list[#list + 1] = { route = route.id, namespace = ns, shared_dict = conf.shared_dict,
                                scope = conf.scope, ttl = conf.ttl, l2 = conf.l2 and routes.has_memcached(cfg),
                                semantic = conf.semantic ~= nil, stats = d and stats.read(d, ns) or nil }
            dicts[conf.shared_dict] = true
        end
    end
    local dlist = {}
    for name in pairs(dicts) do
        local d = require("sluice.pdk.shared").get(name)
        dlist[#dlist + 1] = { name = name, exists = d ~= nil, capacity = d and d:capacity() or nil,
                              free_space = d and d:free_space() or nil }
    end
    table.sort(dlist, function(a, b) return a.name < b.name end)
    return { routes = #list > 0 and list or cjson.empty_array or {}, shared_dicts = dlist,
             memcached = routes.has_memcached(cfg) and memcached.circuit() or nil }
end

--- Handles one request under /admin/cache (the caller checked the admin key); returns status, body, headers.
function _M.handle(method, path)
    local st = base.live_state()
    local cfg = st and st.cfg
    if not cfg then return fail(503, "no configuration loaded yet") end
    local rest = path:sub(#"/admin/cache" + 1):gsub("/$", "")
    if method == "GET" and rest == "" then
        return reply(200, status_body(cfg))
    end
    if method ~= "DELETE" then
        return fail(405, "method not allowed (GET /admin/cache; DELETE /admin/cache, /admin/cache/routes/ID, "
            .. "/admin/cache/keys/KEY)")
    end
    local dicts = routes.dicts_in_use(cfg)
    if next(dicts) == nil then
        return fail(404, "ai-cache runs on no route")
    end
    local l2 = uses_l2(cfg)
    if rest == "" then
        local ok, err = store.purge_all(dicts, l2)
        return purged("all", l2, not ok and err or nil)
    end
    local kind, id = rest:match("^/(%a+)/([^/]+)$")
    if kind == "routes" then
        for _, route in ipairs(cfg.routes or {}) do
            if route.id == id then
                local conf = routes.conf_of(cfg, route)
                if not conf then
                    return fail(404, format("ai-cache does not run on route %q", id))
                end
                local ns = routes.namespace(conf, route)
                local d = require("sluice.pdk.shared").get(conf.shared_dict)
                if not d then return fail(404, "shared dict " .. conf.shared_dict .. " does not exist") end
                local ok, err = store.purge_namespace({ [d] = true }, ns, l2 and conf.l2)
                local s, body, h = purged({ route = id, namespace = ns }, l2 and conf.l2, not ok and err or nil)
                return s, body, h
            end
        end
        return fail(404, format("route %q not found", id:sub(1, 100)))
    elseif kind == "keys" then
        if not id:match("^%x+$") or #id ~= 64 then
            return fail(400, "a key is 64 hex digits (the x-sluice-cache-key response header)")
        end
        local ok, err = store.purge_key(dicts, id:lower(), l2)
        return purged({ key = id:lower() }, l2, not ok and err or nil)
    end
    return fail(404, "not found: " .. path:sub(1, 200))
end

return _M

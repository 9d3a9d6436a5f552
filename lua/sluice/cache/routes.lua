-- sluice.cache.routes: where ai-cache runs in a validated config: for each route, its ai-cache conf (the route's
-- own, else the global one; none when disabled with _meta.disable) and namespace (conf.namespace, default the
-- route's id). Used by the sync timer and by the Admin API's purge (sluice.admin.cache).
local sluice = require("sluice")

local type, ipairs = type, ipairs

local _M = {}

local NAME = "ai-cache"

--- The ai-cache conf of route in cfg, or nil.
function _M.conf_of(cfg, route)
    local conf = type(route.plugins) == "table" and route.plugins[NAME]
    if conf == nil then
        conf = type(cfg.global_plugins) == "table" and cfg.global_plugins[NAME] or nil
    end
    if type(conf) ~= "table" or (type(conf._meta) == "table" and conf._meta.disable) then
        return nil
    end
    return conf
end

--- The namespace of conf on route.
function _M.namespace(conf, route)
    return conf.namespace or route.id
end

--- {dict = {namespace = true}} for the dicts and namespaces in use in cfg (a dict not created is left out);
--- l2_only: only confs that use memcached.
function _M.dicts_in_use(cfg, l2_only)
    local out = {}
    for _, route in ipairs(type(cfg) == "table" and cfg.routes or {}) do
        local conf = _M.conf_of(cfg, route)
        if conf and (not l2_only or conf.l2) then
            local d = sluice.shared.get(conf.shared_dict)
            if d then
                local set = out[d] or {}
                out[d] = set
                set[_M.namespace(conf, route)] = true
            end
        end
    end
    return out
end

--- True when cfg's node has memcached servers.
function _M.has_memcached(cfg)
    local mc = type(cfg) == "table" and cfg.node and cfg.node.memcached
    local s = type(mc) == "table" and mc.servers
    return (type(s) == "table" and #s > 0) or (type(s) == "string" and s ~= "")
end

return _M

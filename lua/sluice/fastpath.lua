-- Routes that run no Lua (core/upstream/fastpath.c): when a config is applied, every route without plugin
-- phases (its own or global) whose stage is a plain upstream is handed to C, which matches it with the same
-- router and proxies it without a coroutine. What C does for it is what sluice.proxy does for such a route.
local ffi = require("ffi")
local C = require("sluice.core")

local ipairs, sub = ipairs, string.sub

ffi.cdef [[
typedef struct sl_fast_route_opts {
    const char *route_id;
    const char *host;
    const char *ca_file;
    const char *sni;
    int32_t pass_host, tls, verify, pool_size;
    double connect_timeout, send_timeout, read_timeout, header_timeout, idle_timeout;
} sl_fast_route_opts_t;
int sl_fast_begin(int nroutes);
int sl_fast_route(int id, const sl_fast_route_opts_t *o);
int sl_fast_node(int id, const char *host, size_t hostlen, int port, int weight);
int sl_fast_prefix(int id, const char *prefix, size_t len);
void sl_fast_commit(const void *router);
]]

local PASS_HOST = { pass = 0, node = 1, rewrite = 2 }
local PHASES = { "rewrite", "access", "header_filter", "body_filter", "log" }

local _M = {}

local function has_phase(pipe)
    for _, ph in ipairs(PHASES) do
        if pipe[ph] then
            return true
        end
    end
    return false
end

-- One route into the table being built; false when C refused it (out of memory).
local function add(i, route, up)
    local t, ka, tls = up.timeout or {}, up.keepalive or {}, up.tls or {}
    local o = ffi.new("sl_fast_route_opts_t", {
        route_id = route.id_c, host = up.host, ca_file = tls.ca_file, sni = tls.sni,
        pass_host = PASS_HOST[up.pass_host or "pass"] or 0, tls = up.scheme == "https" and 1 or 0,
        verify = tls.verify == false and 0 or 1, pool_size = ka.size or 64,
        connect_timeout = t.connect or 5, send_timeout = t.send or 30, read_timeout = t.read or 60,
        header_timeout = t.header or t.read or 60, idle_timeout = ka.idle_timeout or 60,
    })
    if C.sl_fast_route(i, o) ~= 0 then
        return false
    end
    for _, n in ipairs(up.nodes) do
        if C.sl_fast_node(i, n.host, #n.host, n.port, n.weight) ~= 0 then
            return false
        end
    end
    if route.strip_prefix then
        for _, p in ipairs(route.paths) do
            if sub(p, -2) == "/*" and C.sl_fast_prefix(i, p, #p - 2) ~= 0 then
                return false
            end
        end
    end
    return true
end

--- Hands the routes of cfg (pipelines and upstream_conf already set) that run no Lua to C, for the router
--- rt (sluice.router); with global plugins that have phases, none. Call once per applied config, after the
--- router is built: C then matches with rt until the next call. Returns the ids of the C routes (a list).
function _M.install(cfg, rt, global_pipe)
    local routes = cfg.routes
    if C.sl_fast_begin(#routes) ~= 0 then
        C.sl_fast_commit(nil)
        return {}
    end
    local ids = {}
    if not has_phase(global_pipe) then
        for i, route in ipairs(routes) do
            local up = route.upstream_conf
            if up and not has_phase(route.pipeline) then
                if not add(i, route, up) then
                    C.sl_fast_commit(nil) -- out of memory: everything through Lua, as before
                    return {}
                end
                ids[#ids + 1] = route.id
            end
        end
    end
    C.sl_fast_commit(rt.cr)
    return ids
end

return _M

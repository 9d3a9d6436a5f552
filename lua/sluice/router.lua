-- Route matching for one config version, over the C router (core/router/router.c).
--
--   local r, err = router.new({ {id = "chat", paths = {"/v1/chat/completions"}, methods = {"POST"},
--                                hosts = {"api.example.com", "*.example.com"}, priority = 0}, ... })
--   local route, params = r:match("POST", "/v1/chat/completions", host_header)
--   -- route: the table given to new(); params: nil, or {name = value} for :name / *name patterns
--   -- on failure: nil, "not_found" | "method_not_allowed"
--
-- Matching allocates nothing unless the route has parameters (then one table and its strings).
local ffi = require("ffi")
local C = require("sluice.core")

local type, ipairs, tostring, setmetatable = type, ipairs, tostring, setmetatable
local sub, upper, gmatch = string.sub, string.upper, string.gmatch
local bor = require("bit").bor

ffi.cdef [[
typedef struct sl_router sl_router_t;
typedef struct {
    int id;
    int entry;
    int nparams;
    struct { uint16_t name_off, name_len; uint32_t val_off, val_len; } params[8];
} sl_route_match_t;
sl_router_t *sl_router_new(void);
int sl_router_add(sl_router_t *r, int id, const char *path, size_t path_len, unsigned methods,
                  const char *host, size_t host_len, int priority);
int sl_router_compile(sl_router_t *r);
int sl_router_match(const sl_router_t *r, unsigned method, const char *path, size_t path_len,
                    const char *host, size_t host_len, sl_route_match_t *m);
void sl_router_free(sl_router_t *r);
unsigned sl_http_method_bit(const char *m, size_t len);
]]

local NOT_FOUND, METHOD_NOT_ALLOWED = -404, -405
local EINVAL, E2BIG = -22, -7

-- One scratch result per VM: matching is synchronous, so it is never shared by two calls at once.
local scratch = ffi.new("sl_route_match_t")

local METHOD_BITS = {}
for _, m in ipairs({ "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE" }) do
    METHOD_BITS[m] = C.sl_http_method_bit(m, #m)
end

local _M = {}
local mt = { __index = {} }
local methods = mt.__index

-- Parameter names in pattern order, as the C side reports values; false when there are none.
local function param_names(path)
    local names = {}
    for seg in gmatch(path, "/([^/]*)") do
        local c = sub(seg, 1, 1)
        if (c == ":" or c == "*") and #seg > 1 then
            names[#names + 1] = sub(seg, 2)
        end
    end
    return #names > 0 and names
end

local function method_mask(list, id)
    if list == nil then
        return 0
    end
    if type(list) ~= "table" then
        return nil, "route '" .. id .. "': methods must be an array"
    end
    local mask = 0
    for _, m in ipairs(list) do
        local b = type(m) == "string" and METHOD_BITS[upper(m)]
        if not b then
            return nil, "route '" .. id .. "': unknown method '" .. tostring(m) .. "'"
        end
        mask = bor(mask, b)
    end
    return mask
end

local function add_route(self, idx, route)
    if type(route) ~= "table" then
        return nil, "route #" .. idx .. " must be a table"
    end
    local id = route.id
    if type(id) ~= "string" or id == "" then
        return nil, "route #" .. idx .. ": id must be a non-empty string"
    end
    if type(route.paths) ~= "table" or #route.paths == 0 then
        return nil, "route '" .. id .. "': paths must be a non-empty array"
    end
    local mask, err = method_mask(route.methods, id)
    if not mask then
        return nil, err
    end
    local prio = route.priority or 0
    if type(prio) ~= "number" then
        return nil, "route '" .. id .. "': priority must be a number"
    end
    local hosts = route.hosts
    if hosts ~= nil and type(hosts) ~= "table" then
        return nil, "route '" .. id .. "': hosts must be an array"
    end
    local nhosts = hosts and #hosts or 0
    for _, path in ipairs(route.paths) do
        if type(path) ~= "string" then
            return nil, "route '" .. id .. "': paths must be strings"
        end
        local names = param_names(path)
        for h = 1, (nhosts > 0 and nhosts or 1) do
            local host = hosts and hosts[h]
            if host ~= nil and type(host) ~= "string" then
                return nil, "route '" .. id .. "': hosts must be strings"
            end
            local rc = C.sl_router_add(self.cr, idx, path, #path, mask, host, host and #host or 0, prio)
            if rc ~= 0 then
                if rc == EINVAL then
                    return nil, "route '" .. id .. "': invalid path '" .. path .. "' or host '" ..
                        tostring(host) .. "'"
                elseif rc == E2BIG then
                    return nil, "route '" .. id .. "': too many parameters in '" .. path .. "'"
                end
                return nil, "route '" .. id .. "': cannot add path '" .. path .. "' (" .. rc .. ")"
            end
            self.names[#self.names + 1] = names
        end
    end
    return true
end

--- Compiles routes into a router; returns the router, or nil and an error naming the bad route.
function _M.new(routes)
    if type(routes) ~= "table" then
        error("routes must be an array", 2)
    end
    local cr = C.sl_router_new()
    if cr == nil then
        return nil, "out of memory"
    end
    cr = ffi.gc(cr, C.sl_router_free)
    local self = setmetatable({ cr = cr, routes = {}, names = {} }, mt)
    local seen = {}
    for i, route in ipairs(routes) do
        local ok, err = add_route(self, i, route)
        if not ok then
            return nil, err
        end
        if seen[route.id] then
            return nil, "duplicate route id '" .. route.id .. "'"
        end
        seen[route.id] = true
        self.routes[i] = route
    end
    if C.sl_router_compile(cr) ~= 0 then
        return nil, "out of memory"
    end
    return self
end

--- Finds the route for a request; host may be nil. Returns route, params|nil or nil, "not_found"|"method_not_allowed".
function methods.match(self, method, path, host)
    local mbit = METHOD_BITS[method]
    if not mbit then
        mbit = type(method) == "string" and C.sl_http_method_bit(method, #method) or 0
    end
    local m = scratch
    local rc = C.sl_router_match(self.cr, mbit, path, #path, host, host and #host or 0, m)
    if rc == 0 then
        local route = self.routes[m.id]
        local names = self.names[m.entry + 1]
        if not names then
            return route, nil
        end
        local params = {}
        for i = 0, m.nparams - 1 do
            local p = m.params[i]
            params[names[i + 1]] = sub(path, p.val_off + 1, p.val_off + p.val_len)
        end
        return route, params
    end
    if rc == METHOD_NOT_ALLOWED then
        return nil, "method_not_allowed"
    elseif rc == NOT_FOUND then
        return nil, "not_found"
    end
    return nil, "router error " .. rc
end

return _M

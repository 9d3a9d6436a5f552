-- limit-conn: how many requests of one key may be in flight at once (nginx's limit_conn), on AI and plain routes.
--
--   limit-conn:
--     conn: 4             # requests of one key served at the same time
--     by: consumer        # consumer | consumer_group | route | model | ip | global | "header:NAME" | "var:NAME"
--     policy: memcached   # local (this node) | memcached (every node of a cluster); fail_mode: open | closed
--     ttl: 1h             # memcached: a count left by a node that died goes away after this long
--
-- A request counts itself in (atomic incr) and is refused when that makes more than `conn`: 429 (or `status`)
-- in the client's API shape, Retry-After: 1, the count taken back at once. It counts itself out in the log
-- phase, which runs for every request however it ended (answered, refused by a later plugin, failed, the client
-- gone). X-RateLimit-Limit-<name> and -Remaining-<name> (no -Reset: there is no window) go on every response.
-- Runs in rewrite after the authentication plugins (key-auth 2500) and limit-req (2400).
local sluice = require("sluice")
local limits = require("sluice.limits")

local type, ipairs, tostring, setmetatable = type, ipairs, tostring, setmetatable
local format = string.format

local _M = {
    name = "limit-conn", version = "1.0", priority = 2390,
    schema = {
        type = "object",
        required = { "conn" },
        additionalProperties = false,
        properties = limits.store_schema({
            conn = { type = "integer", minimum = 1, maximum = 1e9 },
            by = limits.by_schema,
            name = { type = "string", pattern = "^[%w%-]+$", maxLength = 64, default = "Concurrent" },
            status = { type = "status", enum = { 429, 503 }, default = 429 },
            scope = { type = "string", minLength = 1, maxLength = 200, default = "route" },
            headers = { type = "boolean", default = true },
            ttl = { type = "duration", minimum = 1, maximum = 30 * 86400, default = 3600 },
        }),
    },
}

local compiled = setmetatable({}, { __mode = "k" })
local function compile(conf)
    local c = compiled[conf]
    if not c then
        c = { by = limits.compile_by(conf.by), header = conf.name:lower(), id = "c" .. conf.conn, pcache = {} }
        compiled[conf] = c
    end
    return c
end

local function attrs(c, ctx)
    for _, src in ipairs(c.by) do
        if src[1] == "model" or src[1] == "provider" then
            local body = ctx.method == "POST" and sluice.request.get_json(ctx) or nil
            return { model = type(body) == "table" and type(body.model) == "string" and body.model or nil }
        end
    end
    return nil
end

local function release(held)
    for _, e in ipairs(held) do
        e.st:decr(e.key, 1, e.where)
    end
end

function _M.rewrite(conf, ctx)
    local c = compile(conf)
    local st, serr = limits.store(conf, _M.name)
    if not st then
        return limits.refuse(ctx, 503, "limit-conn: " .. tostring(serr))
    end
    local ttl = conf.policy == "memcached" and conf.ttl or 0
    local held, lowest = {}, nil
    for _, k in ipairs(limits.keys(c.by, ctx, attrs(c, ctx))) do
        local key = limits.key_prefix(c.pcache, "lconn", conf.scope, ctx, c.id, k[1])
        local n, where = st:incr(key, 1, ttl)
        if not n then
            release(held)
            return limits.refuse(ctx, 503, "rate limit store unavailable: " .. tostring(where))
        end
        if n > conf.conn then
            st:decr(key, 1, where)
            release(held)
            ctx._limit_conn = { remaining = 0 }
            return limits.refuse(ctx, conf.status, format("Too many requests in flight for %s: at most %d at once.",
                k[2] == "-" and "anonymous callers" or k[2], conf.conn), 1, "rate_limit_exceeded", nil, "requests")
        end
        held[#held + 1] = { st = st, key = key, where = where }
        local rem = conf.conn - n
        if not lowest or rem < lowest then
            lowest = rem
        end
    end
    ctx._limit_conn = { held = held, remaining = lowest or conf.conn } -- header_filter sends X-RateLimit-*
end

function _M.header_filter(conf, ctx)
    if not conf.headers then
        return
    end
    local lc = ctx._limit_conn
    local rem = lc and lc.remaining
    if rem == nil then -- the limiter did not run for this response: the counts as they are
        local c = compile(conf)
        local st = limits.store(conf, _M.name)
        if not st then
            return
        end
        for _, k in ipairs(limits.keys(c.by, ctx, attrs(c, ctx))) do
            local n = st:get(limits.key_prefix(c.pcache, "lconn", conf.scope, ctx, c.id, k[1])) or 0
            local r = conf.conn - n
            if rem == nil or r < rem then
                rem = r
            end
        end
        rem = rem and (rem < 0 and 0 or rem) or conf.conn
    end
    limits.set_headers(ctx, compile(conf).header, conf.conn, rem)
end

function _M.log(conf, ctx)
    local lc = ctx._limit_conn
    if lc and lc.held then
        release(lc.held)
        lc.held = nil
    end
end

return _M

-- limit-req: request rate per key as a leaky bucket with a burst (nginx's limit_req), on AI and plain routes.
--
--   limit-req:
--     rate: 10            # requests per `per` (default 1s): the rate the bucket leaks at
--     per: 1s
--     burst: 20           # requests over the rate taken at once (they wait their turn unless nodelay)
--     nodelay: false      # true: serve the burst at once instead of spacing it out
--     by: consumer        # consumer | consumer_group | route | model | ip | global | "header:NAME" | "var:NAME"
--                         # or a list for a composite key
--     policy: local       # local (this node) | memcached (every node of a cluster), fail_mode: open | closed
--
-- A request arriving when the bucket holds more than `burst` requests is refused: 429 (or `status`) in the
-- client's API shape with Retry-After. Within the burst, a request waits until its turn at the rate (yielding:
-- the worker serves others meanwhile) unless nodelay. X-RateLimit-Limit-<name> (burst + 1: how many may go at
-- once), -Remaining-<name> and -Reset-<name> (seconds until the bucket is empty) go on every response.
-- The bucket state moves by compare-and-set (shared dict cas, memcached gets/cas), so several workers and nodes
-- never admit more than the bucket allows. Runs in rewrite after the authentication plugins (key-auth 2500),
-- before the prompt plugins: a request is counted even when a later plugin refuses or fails it.
local sluice = require("sluice")
local limits = require("sluice.limits")

local type, ipairs, tostring, setmetatable = type, ipairs, tostring, setmetatable
local format = string.format

local _M = {
    name = "limit-req", version = "1.0", priority = 2400,
    schema = {
        type = "object",
        required = { "rate" },
        additionalProperties = false,
        properties = limits.store_schema({
            rate = { type = "number", exclusiveMinimum = 0, maximum = 1e6 },
            per = { type = "duration", exclusiveMinimum = 0, maximum = 86400, default = 1 },
            burst = { type = "integer", minimum = 0, maximum = 1e6, default = 0 },
            nodelay = { type = "boolean", default = false },
            by = limits.by_schema,
            name = { type = "string", pattern = "^[%w%-]+$", maxLength = 64, default = "Rate" },
            status = { type = "status", enum = { 429, 503 }, default = 429 },
            scope = { type = "string", minLength = 1, maxLength = 200, default = "route" },
            headers = { type = "boolean", default = true },
        }),
    },
}

local compiled = setmetatable({}, { __mode = "k" })
local function compile(conf)
    local c = compiled[conf]
    if not c then
        c = { by = limits.compile_by(conf.by), rate = conf.rate / conf.per, header = conf.name:lower(),
              id = format("%g/%g+%d", conf.rate, conf.per, conf.burst), pcache = {} }
        compiled[conf] = c
    end
    return c
end

-- The model named in the request body, for `by: model` (the AI call is not prepared yet in rewrite).
local function attrs(c, ctx)
    for _, src in ipairs(c.by) do
        if src[1] == "model" or src[1] == "provider" then
            local body = ctx.method == "POST" and sluice.request.get_json(ctx) or nil
            return { model = type(body) == "table" and type(body.model) == "string" and body.model or nil,
                     provider = ctx.ai and ctx.ai.provider_name or nil }
        end
    end
    return nil
end

local function note(h, r)
    if h.remaining == nil or r.remaining < h.remaining then
        h.limit, h.remaining, h.reset = r.limit, r.remaining, r.reset
    end
end

function _M.rewrite(conf, ctx)
    local c = compile(conf)
    local st, serr = limits.store(conf, _M.name)
    if not st then
        return limits.refuse(ctx, 503, "limit-req: " .. tostring(serr))
    end
    local now = limits.now()
    local h, delay = {}, 0
    for _, k in ipairs(limits.keys(c.by, ctx, attrs(c, ctx))) do
        local key = limits.key_prefix(c.pcache, "lreq", conf.scope, ctx, c.id, k[1])
        local r, err = limits.leaky(st, key, c.rate, conf.burst, now)
        if not r then
            return limits.refuse(ctx, 503, "rate limit store unavailable: " .. tostring(err))
        end
        note(h, r)
        if not r.ok then
            ctx._limit_req = h -- header_filter (every response) sends X-RateLimit-*
            return limits.refuse(ctx, conf.status, format("Too many requests for %s: at most %g per %s with a "
                .. "burst of %d. Please try again in %ds.", k[2] == "-" and "anonymous callers" or k[2], conf.rate,
                limits.span(conf.per), conf.burst, r.retry_after), r.retry_after, "rate_limit_exceeded", nil,
                "requests")
        end
        if r.delay > delay then
            delay = r.delay
        end
    end
    ctx._limit_req = h
    if not conf.nodelay and delay > 0.001 then
        sluice.sleep(delay) -- keeps to the rate: the request goes when the bucket has leaked enough
    end
end

function _M.header_filter(conf, ctx)
    if not conf.headers then
        return
    end
    local h = ctx._limit_req
    if not h then -- the limiter did not run for this response: the bucket as it is
        local c = compile(conf)
        local st = limits.store(conf, _M.name)
        if not st then
            return
        end
        h = {}
        for _, k in ipairs(limits.keys(c.by, ctx, attrs(c, ctx))) do
            local key = limits.key_prefix(c.pcache, "lreq", conf.scope, ctx, c.id, k[1])
            note(h, limits.leaky_peek(st, key, c.rate, conf.burst, limits.now()))
        end
    end
    if h.limit then
        limits.set_headers(ctx, compile(conf).header, h.limit, h.remaining, h.reset)
    end
end

return _M

-- sluice.ai.breaker: per-target availability for ai-proxy-multi, shared by all workers through a shared dict:
-- circuit breaker (closed -> open -> half-open -> closed), health-check verdicts, Retry-After cool-downs.
--
--   local br = breaker.new(dict_name, {failures = 5, ratio = 0.5, window = 10, min_requests = 10,
--                                      open_for = 30, half_open_requests = 1, successes = 2})
--   local st = br:state(key, now)   -- "closed" | "half_open" | "open" | "down" | "cooling", retry in seconds
--   if br:try_probe(key, now) then ... end       -- half-open: reserve one of the probe slots
--   br:record(key, ok, now, probe)               -- passive: the outcome of a live request
--   br:set_down(key, true | false, ttl)          -- active health checks
--   br:cool(key, seconds, now)                   -- a 429/503 with Retry-After: skip the target for a while
--
-- Keys in the dict ("aipm|" .. key .. "|" .. field): open (open-until time, 0 = closed), fails (consecutive
-- failures), wn/wf (requests/failures in the current window, with the window as TTL), probes (half-open probes
-- in flight), hok (half-open successes), down (health checks: unhealthy), cool (cool-down end). "aipm|ver"
-- counts state changes: each worker re-reads a target's state only when it moved, so the hot path costs one
-- dict read per request plus one per outcome. Times are sluice.now() (monotonic, shared by the workers).
local shared = require("sluice.pdk.shared")

local type, setmetatable, max, ipairs, tostring = type, setmetatable, math.max, ipairs, tostring

local _M = {}
local Br = {}
Br.__index = Br

local VER = "aipm|ver"

--- A breaker over dict `dict_name` with opts (see above; failures = 0 turns the consecutive rule off, ratio = 0
--- the ratio rule). Returns nil, err when the dict does not exist.
function _M.new(dict_name, opts)
    local d = shared.get(dict_name)
    if not d then
        return nil, "shared dict " .. tostring(dict_name) .. " is not declared (node.shared_dicts)"
    end
    opts = opts or {}
    return setmetatable({
        d = d, ver = -1, ver_t = -1, cache = {},
        failures = opts.failures or 5, ratio = opts.ratio or 0, window = opts.window or 10,
        min_requests = opts.min_requests or 10, open_for = opts.open_for or 30,
        half_open_requests = opts.half_open_requests or 1, successes = opts.successes or 1,
    }, Br)
end

local function bump(self)
    self.d:incr(VER, 1, 0)
    self.ver_t = -1 -- this worker sees its own change at once
end

-- this worker's view of a target: {open, down, cool}, re-read when the version moved (the version itself is
-- read at most every 5 ms: one request's several looks cost one dict read)
local function view(self, key, now)
    if now == nil or now - self.ver_t > 0.005 or now < self.ver_t then
        self.ver_t = now or 0
        local v = self.d:get(VER) or 0
        if v ~= self.ver then
            self.ver = v
            self.cache = {}
        end
    end
    local c = self.cache[key]
    if not c then
        local d, p = self.d, "aipm|" .. key .. "|"
        c = { p = p, open = d:get(p .. "open") or 0, down = d:get(p .. "down") or false,
              cool = d:get(p .. "cool") or 0 }
        self.cache[key] = c
    end
    return c
end

--- "closed" | "half_open" | "open" | "down" | "cooling", and for the last three the seconds until a retry may
--- help (nil for "down").
function Br:state(key, now)
    local c = view(self, key, now)
    if c.down then
        return "down"
    end
    if c.cool > now then
        return "cooling", c.cool - now
    end
    if c.open > 0 then
        if now < c.open then
            return "open", c.open - now
        end
        return "half_open", 0
    end
    return "closed"
end

--- Half-open: takes one of the probe slots; false when they are all in use.
function Br:try_probe(key)
    local p = "aipm|" .. key .. "|probes"
    local n = self.d:incr(p, 1, 0, self.open_for)
    if n and n > self.half_open_requests then
        self.d:incr(p, -1, 0)
        return false
    end
    return true
end

local function open(self, c, now)
    local d, p = self.d, c.p
    d:set(p .. "open", now + self.open_for)
    d:delete(p .. "fails")
    d:delete(p .. "hok")
    d:delete(p .. "probes")
    d:delete(p .. "wn")
    d:delete(p .. "wf")
    bump(self)
end

--- The outcome of one attempt on target key (ok: true | false). probe: it held a half-open probe slot.
--- Returns the new state when it changed ("open" | "closed"), else nil.
function Br:record(key, ok, now, probe)
    local c = view(self, key, now)
    local d, p = self.d, c.p
    if probe then
        d:incr(p .. "probes", -1, 0)
    end
    local half = c.open > 0 and now >= c.open
    if ok then
        if half then
            local n = d:incr(p .. "hok", 1, 0)
            if n and n >= self.successes then
                d:set(p .. "open", 0)
                d:delete(p .. "hok")
                d:delete(p .. "probes")
                bump(self)
                return "closed"
            end
        elseif c.open == 0 then
            if self.ratio > 0 then
                d:incr(p .. "wn", 1, 0, self.window)
            end
            local f = d:get(p .. "fails")
            if f and f > 0 then
                d:set(p .. "fails", 0)
            end
        end
        return nil
    end
    if half then -- a failed probe: open again
        open(self, c, now)
        return "open"
    end
    if c.open > 0 then -- already open (a request that started before it opened)
        return nil
    end
    local n = d:incr(p .. "fails", 1, 0)
    if self.failures > 0 and n and n >= self.failures then
        open(self, c, now)
        return "open"
    end
    if self.ratio > 0 then
        local wn = d:incr(p .. "wn", 1, 0, self.window) or 0
        local wf = d:incr(p .. "wf", 1, 0, self.window) or 0
        if wn >= self.min_requests and wf / wn >= self.ratio then
            open(self, c, now)
            return "open"
        end
    end
    return nil
end

--- Health checks: marks key down (true, kept ttl seconds unless renewed) or up (false).
function Br:set_down(key, down, ttl)
    local k = "aipm|" .. key .. "|down"
    local was = self.d:get(k) or false
    if down then
        self.d:set(k, true, ttl or 0)
    else
        self.d:delete(k)
    end
    if was ~= (down and true or false) then
        bump(self)
        return true
    end
    return false
end

--- Skips key for seconds (Retry-After).
function Br:cool(key, seconds, now)
    if type(seconds) ~= "number" or seconds <= 0 then
        return
    end
    self.d:set("aipm|" .. key .. "|cool", now + seconds, max(seconds, 0.001))
    bump(self)
end

--- Forgets everything about key (specs, admin).
function Br:reset(key)
    local d, p = self.d, "aipm|" .. key .. "|"
    for _, f in ipairs({ "open", "fails", "wn", "wf", "probes", "hok", "down", "cool" }) do
        d:delete(p .. f)
    end
    bump(self)
end

return _M

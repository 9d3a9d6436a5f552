-- sluice.ai.balancer: choosing one target of a group of AI targets (ai-proxy-multi). Pure Lua, per-worker state.
--
--   local b = balancer.new("weighted", targets, {hash_on = "consumer"})
--   local t = b:pick(ok, ctx_key_or_cost)    -- ok(t) -> true when t may be chosen (health, breaker, not tried)
--   b:observe(t, seconds)                     -- latency sample (TTFT for streams, total otherwise)
--   b:failed(t)                               -- a failed attempt (penalizes the latency score)
--
-- targets: array of {name, weight, priority, inflight (kept by the caller), ...}; the balancer keeps its own
-- fields on them (cw, ewma, ewma_t). Strategies:
--   weighted        smooth weighted round-robin (as nginx)
--   priority        the highest `priority` among the eligible targets, weighted inside it
--   latency         lowest peak-EWMA latency x (in-flight + 1); a target not seen for a while decays back
--                   toward 0, so it is tried again
--   least-inflight  lowest in-flight / weight
--   cost            lowest cost for this request (arg: function(t) -> USD), ties weighted
--   hash            consistent hash ring (160 points per weight unit) on a key (arg: string); falls to the next
--                   point when the owner cannot be chosen, so only that owner's keys move
local bit = require("bit")

local exp, floor, huge, min = math.exp, math.floor, math.huge, math.min
local ipairs, setmetatable = ipairs, setmetatable
local byte, sort = string.byte, table.sort
local bxor, band, tobit, lshift, rshift = bit.bxor, bit.band, bit.tobit, bit.lshift, bit.rshift

local _M = {}
local B = {}
B.__index = B

local DECAY = 10     -- seconds: time constant of the latency EWMA
local FAIL_PENALTY = 1 -- seconds: a failed attempt counts at least this slow
local POINTS = 160   -- hash ring points per weight unit

-- a * b mod 2^32 (b < 2^32), exact: both partial products stay below 2^53
local function mul32(a, b)
    return tobit(band(a, 0xffff) * b + lshift(tobit(rshift(a, 16) * b), 16))
end

--- FNV-1a (32 bit) of a string, mixed.
local function fnv1a(s)
    local h = tobit(0x811c9dc5)
    for i = 1, #s do
        h = bxor(h, byte(s, i))
        h = tobit(lshift(h, 24) + h * 403) -- h * 16777619 (2^24 + 403) mod 2^32, exact in doubles
    end
    -- murmur3's finalizer: FNV alone leaves keys that differ in their last bytes close together on the ring
    h = bxor(h, rshift(h, 16))
    h = mul32(h, 0x85ebca6b)
    h = bxor(h, rshift(h, 13))
    h = mul32(h, 0xc2b2ae35)
    h = bxor(h, rshift(h, 16))
    return band(h, 0x7fffffff)
end
_M.hash = fnv1a

local wrr = require("sluice.wrr").pick -- smooth weighted round-robin among the targets ok(t) accepts

local function build_ring(list)
    local ring = {}
    for _, t in ipairs(list) do
        for i = 1, POINTS * t.weight do
            ring[#ring + 1] = { h = fnv1a(t.name .. "#" .. i), t = t }
        end
    end
    sort(ring, function(a, b) return a.h < b.h end)
    return ring
end

--- A balancer for targets with strategy (see the top of the file).
function _M.new(strategy, targets)
    for _, t in ipairs(targets) do
        t.weight = t.weight or 1
        t.priority = t.priority or 0
        t.cw, t.ewma, t.ewma_t, t.inflight = 0, 0, 0, t.inflight or 0
    end
    local self = setmetatable({ strategy = strategy, targets = targets, rr = 0 }, B)
    if strategy == "hash" then
        self.ring = build_ring(targets)
    end
    return self
end

-- the latency score of t now: the EWMA decayed toward 0 since the last sample
local function lat_score(t, now)
    local e = t.ewma
    if e == 0 then
        return 0
    end
    local dt = now - t.ewma_t
    if dt > 0 then
        e = e * exp(-dt / DECAY)
    end
    return e * (t.inflight + 1)
end

-- the target with the lowest score(t); ties go round-robin
local function lowest(self, ok, score)
    local list = self.targets
    local n = #list
    self.rr = self.rr % n + 1
    local best, bs = nil, huge
    for k = 0, n - 1 do
        local t = list[(self.rr + k - 1) % n + 1]
        if ok(t) then
            local s = score(t)
            if s < bs then
                best, bs = t, s
            end
        end
    end
    return best
end

--- The chosen target, or nil when ok() accepts none. arg: the hash key (hash) or cost function (cost);
--- now: sluice.now() (latency).
function B:pick(ok, arg, now)
    local s = self.strategy
    local list = self.targets
    if s == "weighted" then
        return wrr(list, ok)
    elseif s == "priority" then
        local top
        for i = 1, #list do
            local t = list[i]
            if (top == nil or t.priority > top) and ok(t) then
                top = t.priority
            end
        end
        return top and wrr(list, ok, top)
    elseif s == "latency" then
        now = now or 0
        return lowest(self, ok, function(t) return lat_score(t, now) end)
    elseif s == "least-inflight" then
        return lowest(self, ok, function(t) return t.inflight / t.weight end)
    elseif s == "cost" then
        local best, bc = nil, huge
        local cost = arg
        for i = 1, #list do
            local t = list[i]
            if ok(t) then
                local c = cost and cost(t) or 0
                if c < bc then
                    best, bc = t, c
                end
            end
        end
        if not best then
            return nil
        end
        -- ties (equal price) are spread by weight
        return wrr(list, function(t) return ok(t) and (cost and cost(t) or 0) <= bc end)
    elseif s == "hash" then
        local ring = self.ring
        local n = #ring
        if n == 0 then
            return nil
        end
        if arg == nil then -- no key: any target, weighted
            return wrr(list, ok)
        end
        local h = fnv1a(arg)
        local lo, hi = 1, n -- first point >= h
        while lo < hi do
            local mid = floor((lo + hi) / 2)
            if ring[mid].h < h then lo = mid + 1 else hi = mid end
        end
        if ring[lo].h < h then
            lo = 1
        end
        local seen = {}
        for k = 0, n - 1 do
            local t = ring[(lo + k - 1) % n + 1].t
            if not seen[t] then
                if ok(t) then
                    return t
                end
                seen[t] = true
            end
        end
        return nil
    end
    return wrr(list, ok)
end

--- A latency sample for t (seconds): peak-EWMA (a slower sample is taken at once, faster ones blend in).
function B:observe(t, seconds, now)
    now = now or 0
    local e = t.ewma
    if e == 0 or seconds > e then
        t.ewma = seconds
    else
        local w = exp(-min(now - t.ewma_t, DECAY * 10) / DECAY)
        t.ewma = e * w + seconds * (1 - w)
    end
    t.ewma_t = now
end

--- A failed attempt: the latency score of t becomes at least FAIL_PENALTY.
function B:failed(t, now)
    if t.ewma < FAIL_PENALTY then
        t.ewma = FAIL_PENALTY
    end
    t.ewma_t = now or 0
end

return _M

-- sluice.limits.store: where the limit plugins keep their counters and leaky-bucket states: a shared dict (every
-- worker of one node sees the same counts) or memcached (every node of a cluster does), and what happens when
-- memcached does not answer.
--
--   local st = store.get({policy = "memcached", dict = "sluice", fail_mode = "open"}, "ai-rate-limit")
--   local n, where = st:incr(key, 5, 60)     -- the count after adding 5; where: "local" | "memcached"
--   st:decr(key, 5, where)                   -- give back (never below 0), to the store that took it
--   local v = st:get(key)                    -- a count, or nil
--   local v, token = st:read(key)            -- a number for compare-and-set (token: what write compares)
--   local ok, err = st:write(key, token, new, ttl)   -- true | false, "changed" | nil, err
--
-- Counters are atomic in both: shared dict incr, memcached incr (created with the amount and the ttl by the same
-- call, so concurrent first requests cannot lose one). Leaky buckets advance by compare-and-set (shared dict
-- cas, memcached gets/cas).
--
-- memcached down (connection refused, timeout, circuit open): with fail_mode "open" the call is served from the
-- node's shared dict instead (a counter continues from the last value this worker saw in memcached, so the node
-- does not start again from zero), a warning is logged (at most every 10 s per worker) and the stats count it;
-- with fail_mode "closed" the call fails (the plugin answers 503). Stats (metric-ready counters, in the shared
-- dict `sluice`, read by GET /admin/limits): memcached_errors, fail_open, fail_closed, contention.
local shared = require("sluice.pdk.shared")
local mc = require("sluice.pdk.memcached")
local log = require("sluice.pdk.log")
local base = require("sluice.pdk.base")

local C = base.C
local ipairs, tostring, tonumber, setmetatable = ipairs, tostring, tonumber, setmetatable
local format, floor = string.format, math.floor

local MONTH = 30 * 86400 -- memcached takes a longer exptime as an absolute time
local LOG_EVERY = 10

local _M = {}

local STATS = { "memcached_errors", "fail_open", "fail_closed", "contention" }
_M.STATS = STATS

local function stats_dict(d)
    return shared.get("sluice") or d
end

--- Adds 1 to stat `name` (a metric-ready counter shared by every worker).
function _M.count(name, d)
    local sd = stats_dict(d)
    if sd then
        sd:incr("limits:stats:" .. name, 1, 0)
    end
end

--- The stats as {name = count}.
function _M.stats()
    local sd = shared.get("sluice")
    local out = {}
    for _, name in ipairs(STATS) do
        out[name] = sd and tonumber((sd:get("limits:stats:" .. name))) or 0
    end
    return out
end

local Store = {}
Store.__index = Store

local cache = {}
local by_conf = setmetatable({}, { __mode = "k" }) -- conf -> {plugin, store}: no key string made per request

--- The store for a plugin conf ({policy, dict, fail_mode}); one per distinct triple. nil, err when the dict is
--- missing (the config checker refuses that earlier).
function _M.get(conf, plugin)
    local hit = by_conf[conf]
    if hit and hit[1] == plugin then
        return hit[2]
    end
    local policy, dname, fail = conf.policy or "local", conf.dict or "sluice", conf.fail_mode or "open"
    local k = policy .. "|" .. dname .. "|" .. fail .. "|" .. (plugin or "")
    local st = cache[k]
    if not st then
        local d, err = shared.get(dname)
        if not d then
            return nil, err
        end
        st = setmetatable({ remote = policy == "memcached", d = d, fail_open = fail ~= "closed",
                            plugin = plugin or "limits", seen = {}, nseen = 0, logged = 0 }, Store)
        cache[k] = st
    end
    by_conf[conf] = { plugin, st }
    return st
end

local function exptime(ttl)
    ttl = floor(ttl + 0.5)
    if ttl < 1 then
        ttl = 1
    end
    if ttl > MONTH then
        return floor(C.sl_time()) + ttl
    end
    return ttl
end

-- memcached failed with err: the fallback (true: go local) or nil, err (fail closed); logs and counts.
function Store:failed(err)
    _M.count("memcached_errors", self.d)
    local now = C.sl_now()
    if now - self.logged >= LOG_EVERY then
        self.logged = now
        if self.fail_open then
            log.warn("[", self.plugin, "] memcached unavailable (", tostring(err), "): counting on this node only ",
                "(fail_mode open); limits are per node until it answers again")
        else
            log.err("[", self.plugin, "] memcached unavailable (", tostring(err), "): refusing requests with 503 ",
                "(fail_mode closed)")
        end
    end
    if self.fail_open then
        _M.count("fail_open", self.d)
        return true
    end
    _M.count("fail_closed", self.d)
    return nil, "limit store unavailable (memcached: " .. tostring(err) .. ")"
end

-- Remembers the last count memcached gave for key (the seed of a local fallback counter); bounded.
function Store:remember(key, n)
    local seen = self.seen
    if seen[key] == nil then
        self.nseen = self.nseen + 1
        if self.nseen > 10000 then
            seen = {}
            self.seen, self.nseen = seen, 1
        end
    end
    seen[key] = n
end

--- Adds delta (>= 0) to counter key (created with ttl seconds): the new count and where it was counted, or nil,
--- err (memcached down and fail_mode closed).
function Store:incr(key, delta, ttl)
    if self.remote then
        local n, err = mc.incr(key, delta, delta, exptime(ttl))
        if n then
            self:remember(key, n)
            return n, "memcached"
        end
        local ok, ferr = self:failed(err)
        if not ok then
            return nil, ferr
        end
        local v = self.d:incr(key, delta, self.seen[key] or 0, ttl)
        return v, "local"
    end
    local v, err = self.d:incr(key, delta, 0, ttl)
    if not v then
        return nil, "shared dict: " .. tostring(err)
    end
    return v, "local"
end

-- counts[i] after adding amounts[i] to keys[i] in the shared dict; the error, or nil.
local function local_incr(d, keys, amounts, ttls, counts, wheres, i)
    local v, err = d:incr(keys[i], amounts[i], 0, ttls[i])
    if not v then
        return err or "failed"
    end
    counts[i], wheres[i] = v, "local"
    return nil
end

--- Adds to several counters at once (one memcached round trip): keys[i] gets amounts[i] (>= 0), created with
--- ttls[i] seconds. Returns the counts and where each was counted (lists), or nil, err (memcached down with
--- fail_mode closed: then nothing stays counted).
function Store:incr_many(keys, amounts, ttls)
    local n = #keys
    local counts, wheres = {}, {}
    if not self.remote then
        -- (the first two outside the loop: one or two limits as a rule, see sluice.limits' prepare)
        local d = self.d
        local err
        if n >= 1 then err = local_incr(d, keys, amounts, ttls, counts, wheres, 1) end
        if n >= 2 and not err then err = local_incr(d, keys, amounts, ttls, counts, wheres, 2) end
        for i = 3, n do
            if err then break end
            err = local_incr(d, keys, amounts, ttls, counts, wheres, i)
        end
        if err then
            return nil, "shared dict: " .. tostring(err)
        end
        return counts, wheres
    end
    local calls = {}
    for i = 1, n do
        calls[i] = { "incr", keys[i], amounts[i], amounts[i], exptime(ttls[i]) }
    end
    local res = mc.batch(calls)
    local closed
    for i = 1, n do
        local r, key = res[i], keys[i]
        if r[1] then
            self:remember(key, r[1])
            counts[i], wheres[i] = r[1], "memcached"
        else
            local ok, ferr = self:failed(r[2])
            if ok then
                counts[i], wheres[i] = self.d:incr(key, amounts[i], self.seen[key] or 0, ttls[i]), "local"
            else
                closed = ferr
            end
        end
    end
    if closed then
        local back = {}
        for i = 1, n do
            if wheres[i] then back[#back + 1] = { keys[i], -amounts[i], ttls[i], wheres[i] } end
        end
        self:adjust_many(back)
        return nil, closed
    end
    return counts, wheres
end

--- Changes several counters after the fact, in the stores that counted them: items[i] = {key, delta, ttl,
--- where}; a positive delta is added (created with ttl when gone), a negative one taken back (never below 0).
--- Sent to memcached without waiting for the answers (nobody needs them; a failure counts for the circuit).
function Store:adjust_many(items)
    local calls = {}
    local n = #items
    -- (the first two outside the loop: one or two limits as a rule, see sluice.limits' prepare)
    if n >= 1 then self:adjust_one(items[1], calls) end
    if n >= 2 then self:adjust_one(items[2], calls) end
    for i = 3, n do
        self:adjust_one(items[i], calls)
    end
    if #calls > 0 then
        mc.send(calls)
    end
end

-- One item of adjust_many: done in the shared dict, or added to calls for memcached.
function Store:adjust_one(it, calls)
    local key, delta, ttl, where = it[1], it[2], it[3], it[4]
    if delta == 0 then
        return
    end
    if where == "memcached" then
        if delta > 0 then
            calls[#calls + 1] = { "incr", key, delta, delta, exptime(ttl or 60) }
        else
            calls[#calls + 1] = { "decr", key, -delta }
        end
    elseif delta > 0 then
        self.d:incr(key, delta, 0, ttl)
    else
        self:decr(key, -delta, "local")
    end
end

--- Takes delta back from counter key in the store that counted it (best effort: a counter that expired meanwhile
--- is left alone; never below 0).
function Store:decr(key, delta, where)
    if delta <= 0 then
        return
    end
    if where == "memcached" then
        local _, err = mc.decr(key, delta)
        if err and err ~= "not found" then
            _M.count("memcached_errors", self.d)
        end
        return
    end
    local v = self.d:incr(key, -delta)
    if v and v < 0 then
        self.d:incr(key, -v)
    end
end

--- Adds delta (>= 0) without a check (a charge after the fact) where the reservation was counted.
function Store:add(key, delta, ttl, where)
    if delta <= 0 then
        return
    end
    if where == "memcached" then
        local n, err = mc.incr(key, delta, delta, exptime(ttl))
        if not n then
            _M.count("memcached_errors", self.d)
            log.debug("[", self.plugin, "] charge of ", key, " lost: ", tostring(err))
        end
        return
    end
    self.d:incr(key, delta, 0, ttl)
end

--- A counter's value (nil when absent); memcached errors read as nil (fail open) or nil, err.
function Store:get(key)
    if self.remote then
        local v, err = mc.get(key)
        if v ~= nil then
            return tonumber(v)
        end
        if err == nil then
            return nil
        end
        local ok, ferr = self:failed(err)
        if not ok then
            return nil, ferr
        end
        return (self.d:get(key)) or self.seen[key]
    end
    return (self.d:get(key))
end

--- For compare-and-set: the number stored at key (nil when absent), a token for write, and where it lives;
--- nil, nil, nil, err when memcached is down and fail_mode is closed.
function Store:read(key)
    if self.remote then
        local v, cas = mc.gets(key)
        if v ~= nil then
            return tonumber(v), cas, "memcached"
        end
        if cas == nil then -- a miss (an error comes as the second value)
            return nil, false, "memcached"
        end
        local ok, ferr = self:failed(cas)
        if not ok then
            return nil, nil, nil, ferr
        end
    end
    local v = self.d:get(key)
    return v, v, "local"
end

--- Stores value at key if it still holds what read returned (token): true | false, "changed" | nil, err.
function Store:write(key, token, value, ttl, where)
    if where == "memcached" then
        local ok, err
        if token == false then
            ok, err = mc.add(key, format("%.6f", value), exptime(ttl))
        else
            ok, err = mc.cas(key, format("%.6f", value), token, exptime(ttl))
        end
        if ok then
            return true
        end
        if err == "exists" or err == "not found" then
            return false, "changed"
        end
        local fine, ferr = self:failed(err)
        if not fine then
            return nil, ferr
        end
        token = self.d:get(key) -- memcached went away between read and write: this node's dict
    end
    local ok, err = self.d:cas(key, token, value, ttl)
    if ok then
        return true
    end
    return false, err
end

_M._exptime = exptime

return _M

-- The leaky bucket of limit-req (GCRA: the virtual scheduling form of a leaky bucket with a burst), over a limits
-- store (sluice.limits.store): the shared dict's own compare-and-set, or memcached gets/cas with one line per hot
-- key per worker. docs/limits.md.
local store_mod = require("sluice.limits.store")
local base = require("sluice.pdk.base")
local timer = require("sluice.pdk.timer")
local log = require("sluice.pdk.log")

local C = base.C
local tostring, pcall = tostring, pcall
local floor, ceil, max, min, random = math.floor, math.ceil, math.max, math.min, math.random

local _M = {}


-- GCRA for one request at `now` on the bucket's TAT (nil: empty): its result and the TAT after it (unchanged when
-- refused).
local function conform(tat, now, t, tau, burst)
    local cur = max(tat or now, now)
    if cur - now > tau + 1e-9 then
        return { ok = false, limit = burst + 1, remaining = 0, retry_after = max(1, ceil(cur - now - tau)),
                 reset = ceil(cur - now) }, tat
    end
    local nxt = cur + t
    return { ok = true, delay = cur - now, limit = burst + 1,
             remaining = max(0, floor((tau - (nxt - now)) / t + 1e-9) + 1), reset = ceil(nxt - now) }, nxt
end


-- memcached buckets: gets and cas each yield for a round trip, so the coroutines of one worker on one hot key
-- would race each other's cas (all read one TAT, one wins, the others start again) and, with enough of them, run
-- out of attempts. Instead a worker keeps one line per key: the first request runs the gets/cas cycle, and the
-- requests arriving meanwhile queue; when the cycle ends, the first of the queue runs one cycle for the whole
-- queue (one gets, GCRA applied to each request in arrival order, one cas of the final TAT). A cas then only
-- fails when another worker or node moved the bucket. Waiting requests poll their entry every POLL seconds (the
-- PDK has no way to wake another request's coroutine); a line whose cycle has run for STALE seconds (its
-- request gone mid-call) is dropped and its waiters go on their own (a request of a stuck cycle that finishes
-- after all is then counted twice: at worst one more refusal, never one more admission).
local lines = {} -- key -> {since = when its current cycle started, queue = entries waiting for the next cycle}
local POLL, STALE = 0.001, 10
local CAS_ATTEMPTS = 64
local warned = 0

-- One gets/cas cycle for batch (entries {now, rate, burst, r = result, err = error, done = true}, in arrival
-- order): fills each entry's result. true, or nil, err (store unavailable), or false (out of cas attempts).
local function cycle(st, key, batch)
    local n = #batch
    for attempt = 1, CAS_ATTEMPTS do
        if attempt > 2 then -- another worker or node moves the same bucket: step aside, more each time
            timer.sleep(random() * 0.001 * min(attempt, 20))
        end
        local tat, token, where, err = st:read(key)
        if err then
            return nil, err
        end
        local cur, ttl = tat, 0
        for i = 1, n do
            local e = batch[i]
            local t = 1 / e[2]
            local tau = e[3] * t
            e.r, cur = conform(cur, e[1], t, tau, e[3])
            ttl = max(ttl, tau + t + 1)
        end
        if cur == tat then -- every one refused: nothing to write
            return true
        end
        local ok, werr = st:write(key, token, cur, ttl, where)
        if ok then
            return true
        end
        if ok == nil then
            return nil, werr
        end
    end
    return false
end

-- One request on a bucket in the shared dict: its cas only fails when another worker moved the bucket between
-- the get and the cas (a worker's dict calls do not yield), so the cycle is short; out of attempts, it is refused.
local function leaky_local(st, key, rate, burst, now)
    local me = { now, rate, burst }
    local res, err = cycle(st, key, { me })
    if res then
        return me.r
    elseif res == nil then
        return nil, err
    end
    store_mod.count("contention", st.d)
    return { ok = false, limit = burst + 1, remaining = 0, retry_after = 1, reset = 1, contention = true }
end

-- Runs the cycle for batch and settles its entries. Out of cas attempts (other workers and nodes kept moving
-- the bucket for all of them), the store could not decide, as when memcached is down: fail_mode open serves the
-- requests uncounted, closed refuses them with 503; either way `contention` counts them and a warning is logged.
local function settle_batch(st, key, batch)
    local okc, res, err = pcall(cycle, st, key, batch)
    if not okc then
        res, err = nil, "leaky bucket: " .. tostring(res)
    end
    local n = #batch
    if res == false then
        local open = st.fail_open
        err = not open and ("memcached: the bucket kept changing (" .. CAS_ATTEMPTS .. " compare-and-set attempts)")
            or nil
        local now = C.sl_now()
        if now - warned >= 10 then
            warned = now
            log.warn("[", st.plugin, "] leaky bucket ", key, " kept changing under ", CAS_ATTEMPTS,
                " compare-and-set attempts: ", n, open and " request(s) served uncounted (fail_mode open)"
                or " request(s) refused with 503 (fail_mode closed)")
        end
    end
    for i = 1, n do
        local e = batch[i]
        if res == false then
            store_mod.count("contention", st.d)
            e.r = st.fail_open and { ok = true, delay = 0, limit = e[3] + 1, remaining = 0, reset = 1,
                                     contention = true } or nil
            e.err = err
        elseif res == nil then
            e.r, e.err = nil, err
        end
        e.done = true
    end
end

-- Leads key's line from batch on: settles it, then hands the queue to its first entry (or ends the line).
local function lead(st, key, line, batch)
    settle_batch(st, key, batch)
    if lines[key] ~= line then -- dropped as stale meanwhile
        return
    end
    local q = line.queue
    if #q == 0 then
        lines[key] = nil
        return
    end
    line.queue, line.since = {}, C.sl_now()
    q[1].lead = q -- its poll sees this and runs the cycle for the whole queue
end

local function leaky_remote(st, key, rate, burst, now)
    local me = { now, rate, burst }
    local line = lines[key]
    if not line then
        line = { since = C.sl_now(), queue = {} }
        lines[key] = line
        lead(st, key, line, { me })
        return me.r, me.err
    end
    local q = line.queue
    q[#q + 1] = me
    while not me.done do
        local slept = timer.sleep(POLL)
        if me.lead then
            lead(st, key, line, me.lead)
        elseif not me.done and (not slept or lines[key] ~= line or C.sl_now() - line.since > STALE) then
            -- the worker is stopping (sleep returns at once), or the line's cycle is stuck or was dropped for
            -- that: no one will serve the queue, each request goes on its own
            if lines[key] == line then
                lines[key] = nil
            end
            settle_batch(st, key, { me })
        end
    end
    return me.r, me.err
end

--- One request through the bucket at key: rate requests per second, burst extra requests that may go at once.
--- State: the theoretical arrival time (TAT) of the next request. A request at `now` conforms when
--- TAT - now <= burst / rate; it then moves TAT to max(TAT, now) + 1 / rate. Returns
--- {ok, delay (s: how long it would wait to keep to the rate), remaining, reset, retry_after, limit} or nil, err.
function _M.leaky(st, key, rate, burst, now)
    if st.remote then
        return leaky_remote(st, key, rate, burst, now)
    end
    return leaky_local(st, key, rate, burst, now)
end

--- Peek of a leaky bucket (headers of responses the limiter did not check).
function _M.leaky_peek(st, key, rate, burst, now)
    local t = 1 / rate
    local tat = st:read(key)
    local cur = max(tat or now, now)
    return { ok = true, limit = burst + 1, remaining = max(0, floor((burst * t - (cur - now)) / t + 1e-9) + 1),
             reset = ceil(cur - now) }
end

return _M

-- sluice.cache.coalesce: identical cache misses on one node make one upstream call. The first request to miss a
-- key takes a lock in the node's shared dict and calls the provider; the others wait (polling the lock, with
-- back-off, for at most `wait` seconds) and then read the entry the first one stored.
--
--   local lead = coalesce.acquire(d, key, wait)      -- true: this request calls the provider
--   local r = coalesce.wait(d, key, wait, ctx)       -- "done" (look the entry up), "lead" (the lock was free
--                                                    -- again: this request now leads), "alone" (call the provider
--                                                    -- without leading: timed out, or the leader's answer could
--                                                    -- not be stored), "gone" (the client left)
--   coalesce.release(d, key, stored)                 -- the leader, once its answer is stored (or not: stored false)
--
-- Lock "l:KEY": "1" while the leader works (TTL = wait, so a leader that vanished frees it); on a failure it
-- becomes "x" for FAILED_TTL seconds: waiting requests then go to the provider themselves at once instead of
-- leading one after another (an answer that is never stored, e.g. tool calls, must not serialise them).
local timer = require("sluice.pdk.timer")
local base = require("sluice.pdk.base")

local C = base.C
local min = math.min

local _M = {}

local FAILED_TTL = 2
local FIRST_DELAY, MAX_DELAY = 0.005, 0.05

--- True when this request leads (the lock was free).
function _M.acquire(d, key, wait)
    return (d:add("l:" .. key, "1", wait)) == true
end

--- Waits for the leader of key (see the top of this file).
function _M.wait(d, key, wait, ctx)
    local deadline = C.sl_now() + wait
    local delay = FIRST_DELAY
    local lk = "l:" .. key
    while true do
        local left = deadline - C.sl_now()
        if left <= 0 then
            return "alone"
        end
        timer.sleep(min(delay, left))
        delay = min(delay * 2, MAX_DELAY)
        if ctx.req.client_gone ~= 0 then
            return "gone"
        end
        local v = d:get(lk)
        if v == nil then
            -- the leader finished: its entry is there, or it failed and the lock expired; either way look
            return "done"
        elseif v == "x" then
            return "alone"
        end
    end
end

--- Frees the lock of key: stored true lets the waiting requests read the entry; false sends them upstream.
function _M.release(d, key, stored)
    if stored then
        d:delete("l:" .. key)
    else
        d:set("l:" .. key, "x", FAILED_TTL)
    end
end

--- After "done": the entry was not there after all (evicted, not storable): lead if the lock is still free.
function _M.retake(d, key, wait)
    return _M.acquire(d, key, wait)
end

return _M

-- sluice.ai.qos: per-target concurrency limits with a priority queue (ai-proxy-multi).
--
--   local q = qos.new(dict_name, {max_queue = 100, poll = 0.01})
--   local ok, why = q:acquire(key, limit, class, deadline)   -- yields while waiting; why: "full" | "timeout"
--   ... the call ...
--   q:release(key, limit)
--
-- The in-flight count of a target is a counter in a shared dict ("aipm|" .. key .. "|busy"), so the limit holds
-- for all workers together. Requests that find the target full wait in this worker's queue for that target,
-- ordered by class (higher first), then arrival. A slot freed in this worker goes straight to the head of the
-- queue (it is never put back for a newcomer to take); slots freed by other workers are picked up by the head
-- waiter, which polls every `poll` seconds. A newcomer never overtakes a waiter of its class or higher. When the
-- queue is full, the lowest class is shed: the newcomer if it is not above the lowest waiter, else that waiter.
-- A waiter past its deadline gives up ("timeout"). Higher classes are therefore never starved by lower ones.
local shared = require("sluice.pdk.shared")
local timer = require("sluice.pdk.timer")
local base = require("sluice.pdk.base")

local C = base.C
local setmetatable, tostring, remove, insert, min = setmetatable, tostring, table.remove, table.insert, math.min

local _M = {}
local Q = {}
Q.__index = Q

--- A scheduler over dict `dict_name`; opts: max_queue (per target and worker, default 100), poll (seconds).
function _M.new(dict_name, opts)
    local d = shared.get(dict_name)
    if not d then
        return nil, "shared dict " .. tostring(dict_name) .. " is not declared (node.shared_dicts)"
    end
    opts = opts or {}
    return setmetatable({ d = d, queues = {}, seq = 0, max_queue = opts.max_queue or 100,
                          poll = opts.poll or 0.01 }, Q)
end

local function take(d, k, limit)
    local n = d:incr(k, 1, 0)
    if n and n <= limit then
        return true
    end
    d:incr(k, -1, 0)
    return false
end

-- position of waiter w in queue q (ordered by class desc, then seq)
local function place(q, w)
    for i = 1, #q do
        local o = q[i]
        if w.class > o.class then
            return i
        end
    end
    return #q + 1
end

local function unlink(q, w)
    for i = 1, #q do
        if q[i] == w then
            remove(q, i)
            return
        end
    end
end

--- Waits for a slot of target key (limit concurrent requests) until deadline (sluice.now() time).
--- Returns true (the caller must release) | false, "full" (shed at once or later by a higher class) | false,
--- "timeout". Phases: the proxy stage (it may sleep).
function Q:acquire(key, limit, class, deadline)
    local k = "aipm|" .. key .. "|busy"
    local q = self.queues[key]
    if not q then
        q = {}
        self.queues[key] = q
    end
    -- no overtaking: try at once only when nobody of this class or higher waits here
    if (#q == 0 or q[1].class < class) and take(self.d, k, limit) then
        return true
    end
    if #q >= self.max_queue then
        local last = q[#q]
        if last.class >= class then
            return false, "full"
        end
        q[#q] = nil
        last.shed = true
    end
    self.seq = self.seq + 1
    local w = { class = class, seq = self.seq }
    insert(q, place(q, w), w)
    while true do
        if w.granted then
            return true
        end
        if w.shed then
            return false, "full"
        end
        local now = C.sl_now()
        if q[1] == w and take(self.d, k, limit) then
            remove(q, 1)
            return true
        end
        if now >= deadline then
            unlink(q, w)
            return false, "timeout"
        end
        timer.sleep(min(self.poll, deadline - now))
    end
end

--- Frees a slot of target key: handed to the first waiter of this worker, else returned to the shared count.
function Q:release(key)
    local q = self.queues[key]
    if q and #q > 0 then
        local w = remove(q, 1)
        w.granted = true
        return
    end
    self.d:incr("aipm|" .. key .. "|busy", -1, 0)
end

--- Requests waiting in this worker for key.
function Q:waiting(key)
    local q = self.queues[key]
    return q and #q or 0
end

return _M

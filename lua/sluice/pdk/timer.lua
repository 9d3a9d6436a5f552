-- sluice.timer: run a function later, in its own coroutine (it may use sluice.sleep and async calls).
-- Phases: all, and init_worker.
--   sluice.timer.at(0.5, function(premature, arg) ... end, arg)
--   local t = sluice.timer.every(10, function() ... end)  ; t:cancel()
--   sluice.sleep(0.1)   -- inside a request or a timer: yields, the worker keeps serving others
local base = require("sluice.pdk.base")
local C = base.C

local running, yield, resume, create = coroutine.running, coroutine.yield, coroutine.resume, coroutine.create
local type, error, unpack, select = type, error, unpack, select

local _M = {}

local pending = {} -- id -> function (timer) or coroutine (sleep)
local next_id = 0

local log -- loaded lazily: sluice.pdk.log depends on base only, but keep start-up order simple

local function start(delay, what)
    next_id = next_id + 1
    local id = next_id
    if C.sl_timer_start(delay, id) ~= 0 then
        return nil, "worker is stopping"
    end
    pending[id] = what
    return id
end

--- Runs fn(premature, ...) after delay seconds; returns true or nil, err.
function _M.at(delay, fn, ...)
    if type(delay) ~= "number" or delay < 0 then
        error("delay must be a non-negative number", 2)
    end
    if type(fn) ~= "function" then
        error("fn must be a function", 2)
    end
    local n, args = select("#", ...), { ... }
    local id, err = start(delay, function()
        fn(false, unpack(args, 1, n))
    end)
    if not id then
        return nil, err
    end
    return true
end

--- Runs fn(premature, ...) every interval seconds until the handle's cancel() is called.
function _M.every(interval, fn, ...)
    if type(interval) ~= "number" or interval <= 0 then
        error("interval must be a positive number", 2)
    end
    local n, args = select("#", ...), { ... }
    local handle = { cancelled = false }
    function handle.cancel() handle.cancelled = true end
    local function tick()
        if handle.cancelled then
            return
        end
        fn(false, unpack(args, 1, n))
        if not handle.cancelled then
            start(interval, tick)
        end
    end
    local id, err = start(interval, tick)
    if not id then
        return nil, err
    end
    return handle
end

--- Suspends the running coroutine for seconds (request or timer context only).
function _M.sleep(seconds)
    if type(seconds) ~= "number" or seconds < 0 then
        error("seconds must be a non-negative number", 2)
    end
    local co, main = running()
    if co == nil or main then
        error("sleep outside a request or timer", 2)
    end
    local ctx = base.current_ctx()
    if ctx then
        -- a request's coroutine is resumed by C, which also notices when it ends
        if C.sl_req_sleep(ctx.req, seconds) ~= 0 then
            return nil, "worker is stopping"
        end
        yield()
        return true
    end
    local id, err = start(seconds, co)
    if not id then
        return nil, err
    end
    yield()
    return true
end

--- For PDK modules that wait on async C work: returns (req, id) to hand to C, which later calls
--- sl_vm_wake(w, req, id); then call `yield()`. Inside a request, C resumes the request coroutine (req set,
--- id 0); elsewhere (a timer's coroutine) the coroutine is parked under id and resumed through fire(id).
function _M.waiter()
    local ctx = base.current_ctx()
    if ctx then
        return ctx.req, 0
    end
    local co, main = running()
    if co == nil or main then
        error("async call outside a request or timer", 3)
    end
    next_id = next_id + 1
    pending[next_id] = co
    return nil, next_id
end

--- Yields until op, an async C operation with the fields done, waiting and wake_id (a memcached call, a group of
--- counter INCRs), is done: C wakes the waiter it was given when it finishes.
function _M.wait_done(op)
    while op.done == 0 do
        local _, id = _M.waiter()
        op.waiting = 1
        op.wake_id = id
        yield()
    end
    return op
end

--- Called by the C side when timer id fires.
function _M.fire(id)
    local what = pending[id]
    pending[id] = nil
    if what == nil then
        return
    end
    if type(what) == "thread" then
        local ok, err = resume(what)
        if not ok then
            log = log or require("sluice.pdk.log")
            log.err("sleeping coroutine failed: ", err)
        end
        return
    end
    local co = create(what)
    local ok, err = resume(co)
    if not ok then
        log = log or require("sluice.pdk.log")
        log.err("timer failed: ", err)
    end
end

return _M

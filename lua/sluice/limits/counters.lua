-- sluice.limits.counters: the window counters of a request's limits in a shared dict, in one FFI call
-- (core/shared/counters.c): the same keys ("<prefix><window index>"), values and reservation rule as
-- sluice.limits.reserve_all, which stays the general path (memcached, several keys per limit, fallbacks).
--
--   local items = counters.items(2)                 -- one per limit, reused: set prefix/window/limit once
--   counters.set(items, 0, prefix, window, limit, sliding)
--   items[0].amount = 120
--   local refused = counters.reserve(dict, items, 2, now)   -- 0 | i (1-based, all taken back) | nil, err
--   local refused = counters.reserve_mc(items, 2, now)       -- the same in memcached (yields; fixed windows)
--   -- items[i].remaining, .reset, .retry_after, .ok (1 fits, 0 refused, 2 never), .idx (the window counted in)
--   counters.deltas[0], counters.deltas[1] = d1, d2  -- after the call: used - reserved, per item
--   counters.adjust(dict, items, 2)                 -- or counters.adjust_mc(items, 2)
--
-- The items array belongs to a (limit set, key) pair and is shared by the requests on that key: read what a
-- reservation wrote before anything yields (one worker runs one coroutine at a time), and set .idx back before
-- adjust.
local ffi = require("ffi")
require("sluice.pdk.shared") -- declares sl_shdict_t
require("sluice.pdk.memcached") -- declares sl_mcop_t
local C = require("sluice.core")
local base = require("sluice.pdk.base")
local timer = require("sluice.pdk.timer")

local ffi_new, ffi_gc, ffi_string = ffi.new, ffi.gc, ffi.string

ffi.cdef [[
typedef struct sl_ctr_item {
    const char *prefix; uint32_t plen; int32_t sliding; double window; double limit; double amount;
    double remaining; double reset; double retry_after; double idx; double count; int32_t ok;
} sl_ctr_item_t;
int sl_ctr_reserve(sl_shdict_t *d, sl_ctr_item_t *items, int n, double now);
void sl_ctr_adjust(sl_shdict_t *d, const sl_ctr_item_t *items, const double *deltas, int n);
sl_mcop_t *sl_mc_ctr_start(sl_req_t *req, const sl_ctr_item_t *items, int n, double now);
int sl_mc_ctr_finish(sl_mcop_t *op, sl_ctr_item_t *items, int n);
void sl_mc_ctr_free(sl_mcop_t *op);
void sl_mc_ctr_adjust(const sl_ctr_item_t *items, const double *deltas, int n);
]]

local _M = {}

local MAX = 16 -- limits per conf (the plugins' schemas allow at most 16)
local deltas = ffi_new("double[?]", MAX)

--- n items (0-based), zeroed.
function _M.items(n)
    return ffi_new("sl_ctr_item_t[?]", n)
end

--- Sets item i (0-based) to a limit: prefix (the caller keeps the string alive as long as the items), window
--- seconds, limit, sliding.
function _M.set(items, i, prefix, window, limit, sliding)
    local it = items[i]
    it.prefix, it.plen, it.window, it.limit, it.sliding = prefix, #prefix, window, limit, sliding and 1 or 0
end

--- Reserves items[0..n-1].amount in their windows, all or nothing: 0 when every one fits, the 1-based index of
--- the first refused (every amount taken back), or nil, err when the dict failed (nothing stays counted).
function _M.reserve(d, items, n, now)
    local rc = C.sl_ctr_reserve(d.cd, items, n, now)
    if rc < 0 then
        return nil, rc == -12 and "no memory" or ("error " .. rc)
    end
    return rc
end

--- Adds deltas[0..n-1] (set by the caller: _M.deltas) to the windows the items' .idx name (negative: taken
--- back, never below 0).
function _M.adjust(d, items, n)
    C.sl_ctr_adjust(d.cd, items, deltas, n)
end

--- As reserve, in memcached (fixed windows): one group of pipelined INCR calls, waited on once (the coroutine
--- yields; the items' inputs were read before it and the results are written after it, so copy them out before
--- anything else yields). 0 | i | nil, err when a call failed (then nothing stays counted: the caller decides
--- what an outage means, see sluice.limits.store).
-- After the wait (a function of its own: the code after a resume runs in the interpreter until it enters a
-- function that has a trace). The op is freed by its finaliser, not here: one FFI call fewer, interpreted.
local function finish(op, items, n)
    local rc = C.sl_mc_ctr_finish(op, items, n)
    if rc < 0 then
        return nil, ffi_string(op.errmsg)
    end
    return rc
end

function _M.reserve_mc(items, n, now)
    local ctx = base.current_ctx()
    local op = C.sl_mc_ctr_start(ctx and ctx.req or nil, items, n, now)
    if op == nil then
        return nil, "out of memory"
    end
    op = ffi_gc(op, C.sl_mc_ctr_free)
    timer.wait_done(op)
    return finish(op, items, n)
end

--- As adjust, in memcached: sent without waiting for the answers.
function _M.adjust_mc(items, n)
    C.sl_mc_ctr_adjust(items, deltas, n)
end

_M.MAX, _M.deltas = MAX, deltas

return _M

-- sluice.memcached: cluster-wide state in memcached (core/shared/memcached.c, mc_net.c: binary protocol pipelined
-- on the worker's own connections, from its event loop; ketama consistent hashing over node.memcached.servers).
-- Phases: rewrite, access, header_filter, body_filter, log, and timers. Each call yields the coroutine.
--
--   local mc = require("sluice").memcached
--   local ok, err = mc.set("k", "v", 60)          -- exptime seconds (0/nil: none), flags optional
--   local v, err = mc.get("k")                    -- v nil and err nil: no such key; v, flags on a hit
--   local ok, err = mc.add("lock", "1", 5)        -- false, "exists" when the key is there
--   local n, err = mc.incr("hits", 1, 0, 60)      -- with an initial value (created with it, and exptime)
--   local n, err = mc.decr("budget", 5)           -- nil, "not found" without an initial value
--   local ok, err = mc.delete("k")
--   local v, cas = mc.gets("k")                   -- the value and its cas unique (v nil: no such key)
--   local res = mc.batch({{"incr", "a", 1, 1, 60}, {"get", "b"}})   -- sent together: res[i] = {value, err}
--   mc.send({{"decr", "a", 1}})                   -- incr/decr sent without waiting for their answers
--   local ok, err = mc.cas("k", "v2", cas, 60)    -- false, "exists" when the item changed since gets
--
-- Each server has its own circuit breaker: after node.memcached.failure_threshold failures in a row on a server
-- its keys go to the next servers on the ring (only its keys move), and a probe goes to it every retry_after
-- seconds. Calls to a server that is failing fail fast with nil/false plus an error, and "circuit open" once every
-- server is down. The caller decides how to degrade (e.g. fall back to sluice.shared). Error texts are fixed, one per
-- libmemcached return code ("connection failed (code 3)"), never libmemcached's own message.
local ffi = require("ffi")
local base = require("sluice.pdk.base")
local timer = require("sluice.pdk.timer")
local wait_done = timer.wait_done

local C = base.C
local type, tostring, error, tonumber = type, tostring, error, tonumber
local ffi_string, ffi_gc = ffi.string, ffi.gc
local yield = coroutine.yield

ffi.cdef [[
enum { SL_MC_GET = 1, SL_MC_SET, SL_MC_ADD, SL_MC_INCR, SL_MC_DECR, SL_MC_DELETE, SL_MC_GETS, SL_MC_CAS };
enum { SL_MC_OK = 0, SL_MC_NOT_FOUND = 1, SL_MC_NOT_STORED = 2 };
typedef struct sl_mcop {
    char *value; uint32_t value_len; uint32_t flags; uint64_t num;
    int32_t rc; int32_t wake_id; uint8_t done; uint8_t waiting; char errmsg[160];
} sl_mcop_t;
sl_mcop_t *sl_mc_start(sl_req_t *req, int op, const char *key, size_t klen, const char *val, size_t vlen,
    uint32_t flags, double exptime, uint64_t delta, uint64_t initial, int has_initial);
void sl_mc_free(sl_mcop_t *op);
void sl_mc_detach(sl_mcop_t *op);
int sl_mc_circuit_state(void);
int sl_mc_server_count(void);
int sl_mc_server_info(int i, char *addr, size_t len, int *state, int *failures);
]]

local GET, SET, ADD, INCR, DECR, DELETE = C.SL_MC_GET, C.SL_MC_SET, C.SL_MC_ADD, C.SL_MC_INCR, C.SL_MC_DECR,
    C.SL_MC_DELETE
local GETS, CAS = C.SL_MC_GETS, C.SL_MC_CAS
local NOT_FOUND, NOT_STORED = C.SL_MC_NOT_FOUND, C.SL_MC_NOT_STORED

local _M = {}

local function check_key(key)
    if type(key) ~= "string" or #key == 0 or #key > 250 then
        error("key must be a string of 1 to 250 bytes", 3)
    end
end

local function check_exptime(e)
    if e ~= nil and (type(e) ~= "number" or e < 0) then
        error("exptime must be a non-negative number", 3)
    end
    return e or 0
end

-- Runs one call to completion; returns the op (caller reads and frees it) or nil, err.
local function call(kind, key, val, flags, exptime, delta, initial)
    local ctx = base.current_ctx()
    local op = C.sl_mc_start(ctx and ctx.req or nil, kind, key, #key, val, val and #val or 0, flags or 0,
        exptime or 0, delta or 0, initial or 0, initial and 1 or 0)
    if op == nil then
        return nil, "out of memory"
    end
    return wait_done(ffi_gc(op, C.sl_mc_free))
end

local function free(op)
    ffi_gc(op, nil)
    C.sl_mc_free(op)
end

-- The result code, or nil, err (the op is freed then).
local function result(op)
    local rc = op.rc
    if rc >= 0 then
        return rc
    end
    local err = ffi_string(op.errmsg)
    free(op)
    return nil, err
end

--- Gets a value: value, flags (flags only when non-zero) | nil (miss) | nil, err.
function _M.get(key)
    check_key(key)
    local op, err = call(GET, key)
    if not op then return nil, err end
    local rc, rerr = result(op)
    if not rc then return nil, rerr end
    if rc == NOT_FOUND then free(op) return nil end
    local v = ffi_string(op.value, op.value_len)
    local flags = op.flags
    free(op)
    if flags ~= 0 then return v, flags end
    return v
end

local function store(kind, key, value, exptime, flags)
    check_key(key)
    if type(value) == "number" then value = tostring(value) end
    if type(value) ~= "string" then
        error("value must be a string or a number", 3)
    end
    exptime = check_exptime(exptime)
    local op, err = call(kind, key, value, flags, exptime)
    if not op then return false, err end
    local rc, rerr = result(op)
    if not rc then return false, rerr end
    free(op)
    if rc == NOT_STORED then return false, "exists" end
    return true
end

--- Stores a value: true | false, err.
function _M.set(key, value, exptime, flags)
    return store(SET, key, value, exptime, flags)
end

--- Stores a value only if the key is absent: true | false, "exists" | false, err.
function _M.add(key, value, exptime, flags)
    return store(ADD, key, value, exptime, flags)
end

local function incr(kind, key, delta, init, exptime)
    check_key(key)
    delta = delta or 1
    -- libmemcached's incr/decr without an initial value takes a 32-bit delta
    if type(delta) ~= "number" or delta < 0 or delta % 1 ~= 0 or (init == nil and delta > 4294967295) then
        error("delta must be a non-negative integer (below 2^32 without an initial value)", 3)
    end
    if init ~= nil and (type(init) ~= "number" or init < 0 or init % 1 ~= 0) then
        error("init must be a non-negative integer", 3)
    end
    exptime = check_exptime(exptime)
    local op, err = call(kind, key, nil, 0, exptime, delta, init)
    if not op then return nil, err end
    local rc, rerr = result(op)
    if not rc then return nil, rerr end
    local n = tonumber(op.num)
    free(op)
    if rc == NOT_FOUND then return nil, "not found" end
    if rc == NOT_STORED then return nil, "not stored (the counter was being created)" end
    return n
end

--- Adds delta (default 1) to a counter: new value | nil, "not found" (no init given) | nil, err.
-- With init, a missing counter is created as init (memcached's binary protocol semantics: the initial value
-- is stored as is, delta is not added) and gets exptime.
function _M.incr(key, delta, init, exptime)
    return incr(INCR, key, delta, init, exptime)
end

-- Starts call c (the i-th of a batch): an op, or nil on out of memory. Misuse raises at the caller's caller.
local function start_one(req, c, i, get_ok)
    local kind, key = c[1], c[2]
    if type(key) ~= "string" or #key == 0 or #key > 250 then
        error("calls[" .. i .. "]: key must be a string of 1 to 250 bytes", 3)
    end
    if kind == "incr" or kind == "decr" then
        local delta, init, exptime = c[3] or 1, c[4], c[5] or 0
        if type(delta) ~= "number" or delta < 0 or delta % 1 ~= 0 or (init == nil and delta > 4294967295) then
            error("calls[" .. i .. "]: delta must be a non-negative integer", 3)
        end
        if init ~= nil and (type(init) ~= "number" or init < 0 or init % 1 ~= 0) then
            error("calls[" .. i .. "]: init must be a non-negative integer", 3)
        end
        return C.sl_mc_start(req, kind == "incr" and INCR or DECR, key, #key, nil, 0, 0, exptime, delta, init or 0,
            init and 1 or 0)
    elseif kind == "get" and get_ok then
        return C.sl_mc_start(req, GET, key, #key, nil, 0, 0, 0, 0, 0, 0)
    end
    error("calls[" .. i .. "]: " .. (get_ok and "batch takes incr, decr and get" or "send takes incr and decr"), 3)
end

--- Several incr / decr / get calls sent together and answered together (one wait instead of one per call):
--- calls[i] = {"incr", key, delta, init?, exptime?} | {"decr", key, delta, init?, exptime?} | {"get", key}.
--- Returns a list: results[i] = {value} on success, {nil} for a miss (get) or {nil, err}; "not found" as incr.
-- The per-call steps of batch, in functions without loops: a batch holds one or two calls as a rule, and
-- LuaJIT never compiles a loop of one or two rounds (nor the trace around it), so batch does its first two
-- calls outside its loops and the work of each is compiled here.
local function start_at(req, calls, ops, out, i)
    local op = start_one(req, calls[i], i, true)
    if op == nil then
        out[i] = { nil, "out of memory" }
    else
        ops[i] = ffi_gc(op, C.sl_mc_free)
    end
end

-- Marks call i's op to wake id when it is still running.
local function wait_at(ops, i, id)
    local op = ops[i]
    if op and op.done == 0 then
        op.waiting = 1
        op.wake_id = id
    end
end

local function running_at(ops, i)
    local op = ops[i]
    return op ~= nil and op.done == 0
end

local function any_running(ops, n)
    if (n >= 1 and running_at(ops, 1)) or (n >= 2 and running_at(ops, 2)) then
        return true
    end
    for i = 3, n do
        if running_at(ops, i) then return true end
    end
    return false
end

local function result_at(calls, ops, out, i)
    local op = ops[i]
    if not op then
        return
    end
    local rc, err = result(op)
    if not rc then
        out[i] = { nil, err }
        return
    end
    if calls[i][1] == "get" then
        out[i] = { rc ~= NOT_FOUND and ffi_string(op.value, op.value_len) or nil }
    elseif rc == NOT_FOUND then
        out[i] = { nil, "not found" }
    elseif rc == NOT_STORED then
        out[i] = { nil, "not stored (the counter was being created)" }
    else
        out[i] = { tonumber(op.num) }
    end
    free(op)
end

--- Several incr / decr / get calls sent together and answered together (one wait instead of one per call):
--- calls[i] = {"incr", key, delta, init?, exptime?} | {"decr", key, delta, init?, exptime?} | {"get", key}.
--- Returns a list: results[i] = {value} on success, {nil} for a miss (get) or {nil, err}; "not found" as incr.
function _M.batch(calls)
    if type(calls) ~= "table" then
        error("calls must be a list", 2)
    end
    local ctx = base.current_ctx()
    local req = ctx and ctx.req or nil
    local ops, out, n = {}, {}, #calls
    if n >= 1 then start_at(req, calls, ops, out, 1) end
    if n >= 2 then start_at(req, calls, ops, out, 2) end
    for i = 3, n do
        start_at(req, calls, ops, out, i)
    end
    while any_running(ops, n) do
        -- every call still running is marked to wake this coroutine (the first one to finish does)
        local _, id = timer.waiter()
        if n >= 1 then wait_at(ops, 1, id) end
        if n >= 2 then wait_at(ops, 2, id) end
        for i = 3, n do
            wait_at(ops, i, id)
        end
        yield()
    end
    if n >= 1 then result_at(calls, ops, out, 1) end
    if n >= 2 then result_at(calls, ops, out, 2) end
    for i = 3, n do
        result_at(calls, ops, out, i)
    end
    return out
end

--- incr / decr calls sent without waiting for their answers (calls as for batch): for charges whose result does
--- not matter. Their failures count for the circuit breaker only. Returns at once, without yielding.
function _M.send(calls)
    if type(calls) ~= "table" then
        error("calls must be a list", 2)
    end
    local ctx = base.current_ctx()
    local req = ctx and ctx.req or nil
    for i = 1, #calls do
        local op = start_one(req, calls[i], i, false)
        if op ~= nil then
            C.sl_mc_detach(op)
        end
    end
end

--- Subtracts delta (default 1), never below 0; as incr.
function _M.decr(key, delta, init, exptime)
    return incr(DECR, key, delta, init, exptime)
end

--- Gets a value with its cas unique (a number): value, cas, flags (flags only when non-zero) | nil (miss) |
--- nil, err. Pass cas to _M.cas to store only if nobody changed the item meanwhile.
function _M.gets(key)
    check_key(key)
    local op, err = call(GETS, key)
    if not op then return nil, err end
    local rc, rerr = result(op)
    if not rc then return nil, rerr end
    if rc == NOT_FOUND then free(op) return nil end
    local v = ffi_string(op.value, op.value_len)
    local cas, flags = tonumber(op.num), op.flags
    free(op)
    if flags ~= 0 then return v, cas, flags end
    return v, cas
end

--- Stores a value only if the item still has cas unique `cas` (from _M.gets): true | false, "exists" (changed
--- since) | false, "not found" (gone) | false, err.
function _M.cas(key, value, cas, exptime, flags)
    check_key(key)
    if type(value) == "number" then value = tostring(value) end
    if type(value) ~= "string" then
        error("value must be a string or a number", 2)
    end
    if type(cas) ~= "number" or cas < 0 or cas % 1 ~= 0 then
        error("cas must be the number gets returned", 2)
    end
    exptime = check_exptime(exptime)
    local op, err = call(CAS, key, value, flags, exptime, cas)
    if not op then return false, err end
    local rc, rerr = result(op)
    if not rc then return false, rerr end
    free(op)
    if rc == NOT_STORED then return false, "exists" end
    if rc == NOT_FOUND then return false, "not found" end
    return true
end

--- Deletes a key: true | false, "not found" | false, err.
function _M.delete(key)
    check_key(key)
    local op, err = call(DELETE, key)
    if not op then return false, err end
    local rc, rerr = result(op)
    if not rc then return false, rerr end
    free(op)
    if rc == NOT_FOUND then return false, "not found" end
    return true
end

local SERVER_STATE = { [0] = "up", [1] = "down", [2] = "probing" }

--- Each server and its circuit: { {address, state = "up" | "down" | "probing", failures}, ... } (empty without
--- node.memcached). A "down" server's keys go to the next servers on the ring until a probe finds it back.
function _M.servers()
    local out, n = {}, C.sl_mc_server_count()
    local addr, st, fails = ffi.new("char[128]"), ffi.new("int[1]"), ffi.new("int[1]")
    for i = 0, n - 1 do
        if C.sl_mc_server_info(i, addr, 128, st, fails) == 0 then
            out[#out + 1] = { address = ffi_string(addr), state = SERVER_STATE[st[0]] or "unknown",
                              failures = tonumber(fails[0]) }
        end
    end
    return out
end

--- The memcached part of GET /admin/status: {circuit, servers} | nil without node.memcached.
function _M.status()
    if C.sl_mc_server_count() == 0 then return nil end
    return { circuit = _M.circuit(), servers = _M.servers() }
end

--- The servers' circuits together: "closed" (every server up), "open" (every one down: calls fail at once) or
--- "degraded" (some down or probing: their keys go to the others).
function _M.circuit()
    local s = C.sl_mc_circuit_state()
    return s == 0 and "closed" or s == 1 and "open" or "degraded"
end

return _M

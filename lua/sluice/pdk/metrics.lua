-- sluice.metrics: named counters, histograms and gauges, summed over every worker (docs/observability.md).
-- Any plugin may report through it; the prometheus plugin exposes everything at /metrics.
--
--   local metrics = require("sluice").metrics
--   local refused = metrics.counter("sluice_guard_refusals_total", "Requests refused by a guard", {"plugin", "reason"})
--   refused:inc(1, "prompt-guard", "injection")          -- label values in the order of the label names
--   local wait = metrics.histogram("sluice_x_wait_seconds", "Time waited", {"route"}, {0.01, 0.1, 1})
--   wait:observe(0.03, "chat")
--   local depth = metrics.gauge("sluice_x_depth", "Queue depth", {"target"})
--   depth:set(3, "openai")                               -- written to the shared dict at once (ttl optional)
--   metrics.bound("consumer", name, 100)                 -- name, or "other" past 100 distinct values (all workers)
--
-- Phases: all (and timers). Cheap on the request path: inc/observe add to this worker's tables (a lookup per
-- label, no allocation once a series exists); a timer moves the sums into the shared dict once a second
-- (`metrics` when node.shared_dicts declares it, else `sluice`), where every worker's share adds up. A series
-- is created on first use; each metric holds at most MAX_SERIES (2000) series, later label sets fold into one
-- series whose labels are all "other". Label values are strings (numbers are turned into strings), cut at 128
-- bytes. Registering a name twice returns the same metric; with another type or other labels it raises.
local base = require("sluice.pdk.base")
local shared = require("sluice.pdk.shared")
local timer = require("sluice.pdk.timer")

local ffi = require("ffi")
local C = base.C
ffi.cdef [[
int sl_worker_conn_stats(int32_t out[4]);
uint64_t sl_reopen_generation(void);
]]
local type, tostring, error, ipairs, tonumber, pcall = type, tostring, error, ipairs, tonumber, pcall
local gsub, sub, format, find, concat, sort = string.gsub, string.sub, string.format, string.find, table.concat,
    table.sort
local huge = math.huge

local _M = {}

local FLUSH_INTERVAL = 1
local MAX_SERIES = 2000
local MAX_LABELS = 6
local LEAF = true -- key of a series in the label tree (never a label value: those are strings)
local PREFIX = "M|" -- series keys in the dict: "M|" .. name .. '{a="x"}' (histogram buckets add "\1NN")
local META = "T|"   -- metric descriptions: "T|" .. name -> "type\1help\1bounds"
local CARD = "L|"   -- label bounds: "L|" .. label .. "|" .. value -> 1, "L|" .. label -> count

_M.DEFAULT_BUCKETS = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60 }
_M.FLUSH_INTERVAL = FLUSH_INTERVAL

local registry = {} -- name -> metric (this VM)
local dirty, ndirty = {}, 0 -- series with sums not yet in the dict
local flusher -- the flush timer of this worker (started on first use)
local dict_cache

--- The shared dict metrics live in: `metrics` when declared, else `sluice` (nil when neither exists).
local function dict()
    if dict_cache == nil then
        dict_cache = shared.get("metrics") or shared.get("sluice") or false
    end
    return dict_cache or nil
end
_M.dict = dict

local utf8_check
local function utf8_ok(v)
    if utf8_check == nil then
        local ok, validate = pcall(require, "sluice.ai.validate") -- sl_utf8_valid (core/common/utf8.c)
        utf8_check = ok and validate.utf8 or false
    end
    if not utf8_check then return not find(v, "[\128-\255]") end
    return utf8_check(v)
end

local function escape(v)
    if type(v) ~= "string" then
        v = v == nil and "" or tostring(v)
    end
    local was_cut = #v > 128
    if was_cut then
        v = sub(v, 1, 128)
    end
    if find(v, "[\128-\255]") and not utf8_ok(v) then -- Prometheus refuses a scrape with invalid UTF-8
        local fixed
        for k = 1, was_cut and 3 or 0 do -- a sequence split by the cut above
            if utf8_ok(sub(v, 1, -1 - k)) then fixed = sub(v, 1, -1 - k) break end
        end
        if fixed then
            v = fixed
        else -- each bad byte becomes "?" (at most 128 rounds)
            for _ = 1, 128 do
                local ok, at = utf8_ok(v)
                if ok then break end
                if not at then v = gsub(v, "[\128-\255]", "?") break end
                v = sub(v, 1, at) .. "?" .. sub(v, at + 2)
            end
        end
    end
    if find(v, '[\\"\n]') then
        v = gsub(gsub(gsub(v, "\\", "\\\\"), '"', '\\"'), "\n", "\\n")
    end
    return v
end

local function label_string(labels, vals, extra)
    local n = #labels
    if n == 0 and not extra then
        return ""
    end
    local parts = {}
    for i = 1, n do
        parts[i] = labels[i] .. '="' .. escape(vals[i]) .. '"'
    end
    if extra then
        parts[#parts + 1] = extra
    end
    return "{" .. concat(parts, ",") .. "}"
end

local function start_flusher()
    if flusher ~= nil then
        return
    end
    flusher = false
    local ok, h = pcall(timer.every, FLUSH_INTERVAL, function() _M.flush() end)
    if ok and h then
        flusher = h
    else
        flusher = nil -- not in a worker (main VM, unit specs): try again on the next use
    end
end

local function mark(s)
    if not s.dirty then
        s.dirty = true
        ndirty = ndirty + 1
        dirty[ndirty] = s
        if flusher == nil then
            start_flusher()
        end
    end
end

-- The series of metric m for label values (a..f), made on first use.
local scratch = {}
local function series(m, a, b, c, d, e, f)
    local n = m.nlabels
    local t = m.tree
    if n > 0 then
        scratch[1], scratch[2], scratch[3], scratch[4], scratch[5], scratch[6] = a, b, c, d, e, f
        for i = 1, n do
            local v = scratch[i]
            if v == nil then v = "" end
            local nx = t[v]
            if nx == nil then
                nx = {}
                t[v] = nx
            end
            t = nx
        end
    end
    local s = t[LEAF]
    if s then
        return s
    end
    local vals = {}
    for i = 1, n do vals[i] = scratch[i] end
    if m.nseries >= MAX_SERIES then
        if m.overflow then
            t[LEAF] = m.overflow
            return m.overflow
        end
        for i = 1, n do vals[i] = "other" end
    end
    s = { value = 0, dirty = false, m = m }
    local ls = label_string(m.labels, vals)
    if m.kind == "histogram" then
        local nb = #m.buckets
        s.counts, s.sum, s.keys, s.vals, s.n = {}, 0, {}, {}, 0
        for i = 1, nb do
            s.counts[i] = 0
            s.keys[i] = PREFIX .. m.name .. "_bucket" .. ls .. format("\1%02d", i)
        end
        s.keys[nb + 1] = PREFIX .. m.name .. "_bucket" .. ls .. format("\1%02d", nb + 1) -- +Inf
        s.counts[nb + 1] = 0
        s.sum_key = PREFIX .. m.name .. "_sum" .. ls
        s.count_key = PREFIX .. m.name .. "_count" .. ls
    else
        s.key = PREFIX .. m.name .. ls
    end
    m.nseries = m.nseries + 1
    if m.nseries > MAX_SERIES then
        m.overflow = s
    end
    t[LEAF] = s
    return s
end

-- Sorts the values a histogram series collected into its buckets (at flush, or when many wait).
local function bucketize(s)
    local bk, counts, vals = s.m.buckets, s.counts, s.vals
    local nb = #bk
    for j = 1, s.n do
        local v = vals[j]
        local i = 1
        while i <= nb and v > bk[i] do i = i + 1 end
        counts[i] = counts[i] + 1
    end
    s.n = 0
end

local MAX_PENDING = 4096 -- values a histogram series keeps before it sorts them into buckets

-- Adds v to histogram series s: appended, bucketed later (no search on the request path).
local function observe(s, v)
    local n = s.n + 1
    s.n = n
    s.vals[n] = v
    s.sum = s.sum + v
    if n >= MAX_PENDING then bucketize(s) end
    if not s.dirty then mark(s) end
end

-- Adds delta to counter series s.
local function add(s, delta)
    s.value = s.value + delta
    if not s.dirty then mark(s) end
end

local Counter = {}
Counter.__index = Counter

--- c:inc(delta, label values...): adds delta (>= 0; default 1).
function Counter.inc(self, delta, a, b, c, d, e, f)
    if delta == nil then
        delta = 1
    elseif type(delta) ~= "number" or delta < 0 or delta ~= delta then
        error("counter " .. self.name .. ": delta must be a number >= 0", 2)
    end
    add(series(self, a, b, c, d, e, f), delta)
end

local Histogram = {}
Histogram.__index = Histogram

--- h:observe(value, label values...): counts value in its bucket (values that are not numbers are ignored).
function Histogram.observe(self, v, a, b, c, d, e, f)
    if type(v) ~= "number" or v ~= v then
        return
    end
    observe(series(self, a, b, c, d, e, f), v)
end

--- m:handle(label values...) -> the series of a counter or histogram for these values. A hot path keeps it and
--- then calls metrics.add(handle, delta) / metrics.observe(handle, value): no label lookup at all.
function Counter.handle(self, a, b, c, d, e, f)
    return series(self, a, b, c, d, e, f)
end
Histogram.handle = Counter.handle

--- metrics.add(counter handle, delta >= 0); metrics.observe(histogram handle, number).
_M.add = add
function _M.observe(s, v)
    if type(v) == "number" and v == v then observe(s, v) end
end

local Gauge = {}
Gauge.__index = Gauge

--- g:set(value, label values...): stores value for all workers at once (the last writer wins). With
--- g.ttl (seconds, given at registration) a series not set again within ttl disappears.
function Gauge.set(self, v, a, b, c, d, e, f)
    if type(v) ~= "number" then
        error("gauge " .. self.name .. ": value must be a number", 2)
    end
    local s = series(self, a, b, c, d, e, f)
    local dd = dict()
    if dd then
        if not self.meta_done then _M.describe(self) end
        dd:set(s.key, v, self.ttl or 0)
    end
end

--- g:inc(delta, label values...): adds delta (may be negative) for all workers at once.
function Gauge.inc(self, delta, a, b, c, d, e, f)
    local s = series(self, a, b, c, d, e, f)
    local dd = dict()
    if dd then
        if not self.meta_done then _M.describe(self) end
        dd:incr(s.key, delta or 1, 0)
    end
end

local KINDS = { counter = Counter, histogram = Histogram, gauge = Gauge }

local function check_name(name)
    if type(name) ~= "string" or not find(name, "^[a-zA-Z_:][a-zA-Z0-9_:]*$") or #name > 200 then
        error("metric name must match [a-zA-Z_:][a-zA-Z0-9_:]*, got " .. tostring(name), 3)
    end
end

local function register(kind, name, help, labels, opts)
    check_name(name)
    labels = labels or {}
    if type(labels) ~= "table" or #labels > MAX_LABELS then
        error("metric " .. name .. ": labels must be a list of at most " .. MAX_LABELS .. " names", 3)
    end
    for _, l in ipairs(labels) do
        if type(l) ~= "string" or not find(l, "^[a-zA-Z_][a-zA-Z0-9_]*$") or sub(l, 1, 2) == "__" or l == "le" then
            error("metric " .. name .. ": bad label name " .. tostring(l), 3)
        end
    end
    local m = registry[name]
    if m then
        if m.kind ~= kind or concat(m.labels, ",") ~= concat(labels, ",") then
            error("metric " .. name .. " is already registered as a " .. m.kind .. " with labels {"
                .. concat(m.labels, ",") .. "}", 3)
        end
        return m
    end
    m = setmetatable({ kind = kind, name = name, help = tostring(help or ""), labels = labels, nlabels = #labels,
                       tree = {}, nseries = 0, meta_done = false }, KINDS[kind])
    if kind == "histogram" then
        local bk = opts and opts.buckets or _M.DEFAULT_BUCKETS
        local prev = -huge
        for i, b in ipairs(bk) do
            if type(b) ~= "number" or b <= prev or b == huge then
                error("metric " .. name .. ": buckets must be increasing finite numbers (at " .. i .. ")", 3)
            end
            prev = b
        end
        if #bk > 60 then error("metric " .. name .. ": at most 60 buckets", 3) end
        m.buckets = bk
    elseif kind == "gauge" then
        m.ttl = opts and opts.ttl
    end
    registry[name] = m
    return m
end

--- metrics.counter(name, help, labels?) -> counter (c:inc(delta, ...)). Names end in _total by convention.
function _M.counter(name, help, labels)
    return register("counter", name, help, labels)
end

--- metrics.histogram(name, help, labels?, buckets?) -> histogram (h:observe(v, ...)); default buckets in
--- seconds (DEFAULT_BUCKETS).
function _M.histogram(name, help, labels, buckets)
    return register("histogram", name, help, labels, { buckets = buckets })
end

--- metrics.gauge(name, help, labels?, {ttl = seconds}?) -> gauge (g:set(v, ...), g:inc(d, ...)).
function _M.gauge(name, help, labels, opts)
    return register("gauge", name, help, labels, opts)
end

--- The metric registered under name in this worker, or nil.
function _M.get(name)
    return registry[name]
end

--- Writes the description of metric m to the dict (type, help, buckets) for the exposition.
function _M.describe(m)
    local dd = dict()
    if not dd then return end
    local bk = ""
    if m.buckets then
        local parts = {}
        for i, b in ipairs(m.buckets) do parts[i] = format("%.17g", b) end
        bk = concat(parts, ",")
    end
    local ok = dd:set(META .. m.name, m.kind .. "\1" .. gsub(gsub(m.help, "\\", "\\\\"), "\n", "\\n") .. "\1" .. bk)
    m.meta_done = ok and true or false
end

--- Moves this worker's sums into the shared dict (the timer does it every second; /metrics on worker 0 first).
function _M.flush()
    local dd = dict()
    if not dd then
        ndirty = 0
        return
    end
    local list, n = dirty, ndirty
    dirty, ndirty = {}, 0
    for i = 1, n do
        local s = list[i]
        s.dirty = false
        local m = s.m
        if not m.meta_done then _M.describe(m) end
        if m.kind == "histogram" then
            bucketize(s)
            local counts, keys = s.counts, s.keys
            local run = 0
            for j = 1, #counts do
                run = run + counts[j]
                counts[j] = 0
                if run > 0 then dd:incr(keys[j], run, 0) end
            end
            if run > 0 then
                dd:incr(s.count_key, run, 0)
                dd:incr(s.sum_key, s.sum, 0)
            end
            s.sum = 0
        elseif s.value ~= 0 then
            dd:incr(s.key, s.value, 0)
            s.value = 0
        end
    end
end

local bounds = {} -- label -> value -> the value to use (this worker's cache of the shared decision)

--- The value to use for label `label`: value itself while at most `limit` distinct values have been seen
--- (by all workers, since the start), else "other". nil becomes "".
function _M.bound(label, value, limit)
    if value == nil then
        return ""
    end
    local seen = bounds[label]
    if not seen then
        seen = {}
        bounds[label] = seen
    end
    local got = seen[value]
    if got then
        return got
    end
    local dd = dict()
    if not dd then
        return value
    end
    local k = CARD .. label .. "|" .. tostring(value)
    if dd:get(k) then
        got = value
    else
        local n = dd:incr(CARD .. label, 1, 0)
        if n and n <= limit then
            dd:set(k, 1)
            got = value
        else
            got = "other"
        end
    end
    seen[value] = got
    return got
end

local function fmt_value(v)
    if v == huge then return "+Inf" end
    if v == -huge then return "-Inf" end
    if v ~= v then return "NaN" end
    if v == math.floor(v) and v > -1e15 and v < 1e15 then
        return format("%d", v)
    end
    return format("%.17g", v)
end
_M.format_value = fmt_value

--- Every series in the dict: list of {name = series name, labels = '{...}' or "", value, base = metric name,
--- kind, help}, sorted by metric then series; for the exposition and the dashboard.
function _M.collect()
    local dd = dict()
    if not dd then return {} end
    local keys = dd:get_keys(0)
    local meta = {}
    local out = {}
    for _, k in ipairs(keys) do
        if sub(k, 1, 2) == META then
            local v = dd:get(k)
            if type(v) == "string" then
                local kind, help, bk = v:match("^([^\1]*)\1([^\1]*)\1(.*)$")
                if kind then
                    local b = {}
                    for x in bk:gmatch("[^,]+") do b[#b + 1] = tonumber(x) end
                    meta[sub(k, 3)] = { kind = kind, help = help, buckets = b }
                end
            end
        end
    end
    for _, k in ipairs(keys) do
        if sub(k, 1, 2) == PREFIX then
            local v = dd:get(k)
            if type(v) == "number" then
                local body = sub(k, 3)
                local name, rest = body:match("^([a-zA-Z0-9_:]+)(.*)$")
                if name then
                    local labels, idx = rest, nil
                    local at = find(rest, "\1", 1, true)
                    if at then
                        labels, idx = sub(rest, 1, at - 1), tonumber(sub(rest, at + 1))
                    end
                    local basename, mt = name, meta[name]
                    if not mt then
                        local b = name:match("^(.*)_bucket$") or name:match("^(.*)_sum$") or name:match("^(.*)_count$")
                        if b and meta[b] and meta[b].kind == "histogram" then
                            basename, mt = b, meta[b]
                        end
                    end
                    if mt then
                        out[#out + 1] = { name = name, labels = labels, idx = idx, value = v, base = basename,
                                          kind = mt.kind, help = mt.help, buckets = mt.buckets, key = k }
                    end
                end
            end
        end
    end
    sort(out, function(x, y)
        if x.base ~= y.base then return x.base < y.base end
        return x.key < y.key
    end)
    return out
end

--- The Prometheus text exposition (version 0.0.4) of every metric in the dict.
function _M.exposition()
    local list = _M.collect()
    local out, n = {}, 0
    local last
    for _, s in ipairs(list) do
        if s.base ~= last then
            last = s.base
            n = n + 1
            out[n] = "# HELP " .. s.base .. " " .. s.help .. "\n# TYPE " .. s.base .. " " .. s.kind .. "\n"
        end
        local labels = s.labels
        if s.idx then -- a histogram bucket: le from the bounds
            local le = s.buckets[s.idx]
            le = le and fmt_value(le) or "+Inf"
            local extra = 'le="' .. le .. '"'
            labels = labels == "" and ("{" .. extra .. "}") or (sub(labels, 1, -2) .. "," .. extra .. "}")
        end
        n = n + 1
        out[n] = s.name .. labels .. " " .. fmt_value(s.value) .. "\n"
    end
    return concat(out)
end

--- The numbers of the running request a metrics plugin reads in its log phase, without reading the request's C
--- struct: status, response bytes sent, arrival (wall clock, seconds), seconds waited on the upstream (0: none),
--- request body bytes received. Phases: log (earlier: the values so far).
function _M.request_stats(ctx)
    ctx = ctx or base.get_ctx()
    local r = ctx.req
    return r.status, tonumber(r.bytes_sent), r.start_time, r.upstream_time, r.body_len
end

--- Drops this worker's unflushed sums and registry (specs).
function _M._reset()
    registry, dirty, ndirty, bounds, dict_cache = {}, {}, 0, {}, nil
end

_M.now = function() return C.sl_now() end

return _M

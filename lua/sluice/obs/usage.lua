-- sluice.obs.usage: requests, tokens and cost per (time bucket, consumer, model, provider, route), for the
-- usage and spend reports of the Admin API (GET /admin/usage, lua/sluice/admin/usage.lua).
--
--   usage.record(opts, consumer, model, provider, route, input, output, cached, cost)   -- request path (log)
--   usage.report{group_by = "consumer", from = t0, to = t1}                             -- Admin API
--
-- Kept per node in a shared dict (opts.dict, default `sluice`), so it survives config and plugin reloads and
-- every worker's share adds up: each worker sums into its own tables on the request path and a timer moves the
-- sums into the dict once a second (keys "U|<bucket start>|<consumer>\1<model>\1<provider>\1<route>|<field>",
-- kept for opts.retention). With node.memcached configured, worker 0 also publishes this node's buckets to
-- memcached every opts.publish_interval seconds ("sluice:usage:<bucket>:<node id>", one JSON per bucket and
-- node), and a report sums every node that published.
local shared = require("sluice.pdk.shared")
local timer = require("sluice.pdk.timer")
local base = require("sluice.pdk.base")
local cjson = require("cjson.safe")

local C = base.C
local type, pairs, ipairs, tostring, tonumber, pcall, floor = type, pairs, ipairs, tostring, tonumber, pcall,
    math.floor
local find, sub, format, concat, sort = string.find, string.sub, string.format, table.concat, table.sort

local _M = {}

local FIELDS = { "requests", "input_tokens", "output_tokens", "cached_tokens", "cost" }
local DIMS = { consumer = 1, model = 2, provider = 3, route = 4 }
local MAX_BUCKETS = 24 * 400 -- a report reads at most this many buckets (per node)

local opts_cur = { dict = "sluice", bucket = 3600, retention = 7 * 86400, publish_interval = 10 }
local acc = {} -- bucket -> consumer -> model -> provider -> route -> {n, in, out, cached, cost}
local pending = false
local flusher

--- Sets the store's options (from the prometheus plugin's conf): dict, bucket, retention, node_id,
--- publish_interval.
function _M.configure(o)
    opts_cur = o
end

function _M.options()
    return opts_cur
end

local function bucket_of(t, size)
    return floor(t / size) * size
end

local function flush()
    if not pending then return end
    pending = false
    local o = opts_cur
    local d = shared.get(o.dict)
    local cur = acc
    acc = {}
    if not d then return end
    local ttl = o.retention + o.bucket
    for b, cs in pairs(cur) do
        local pre = "U|" .. b .. "|"
        for c, ms in pairs(cs) do
            for m, ps in pairs(ms) do
                for p, rs in pairs(ps) do
                    for r, a in pairs(rs) do
                        local k = pre .. c .. "\1" .. m .. "\1" .. p .. "\1" .. r .. "|"
                        d:incr(k .. "requests", a[1], 0, ttl)
                        if a[2] ~= 0 then d:incr(k .. "input_tokens", a[2], 0, ttl) end
                        if a[3] ~= 0 then d:incr(k .. "output_tokens", a[3], 0, ttl) end
                        if a[4] ~= 0 then d:incr(k .. "cached_tokens", a[4], 0, ttl) end
                        if a[5] ~= 0 then d:incr(k .. "cost", a[5], 0, ttl) end
                    end
                end
            end
        end
    end
end
_M.flush = flush

local function get(t, k)
    local v = t[k]
    if v == nil then
        v = {}
        t[k] = v
    end
    return v
end

local function slot_acc(slot, b)
    local rs = get(get(get(get(acc, b), slot[1]), slot[2]), slot[3])
    local a = rs[slot[4]]
    if not a then
        a = { 0, 0, 0, 0, 0 }
        rs[slot[4]] = a
    end
    slot.b, slot.a, slot.acc = b, a, acc
    return a
end

--- A slot for one (consumer, model, provider, route): kept by the caller, record_slot then costs a few adds.
function _M.slot(consumer, model, provider, route)
    return { consumer or "", model or "", provider or "", route or "", b = -1 }
end

--- Adds one request to a slot.
function _M.record_slot(slot, input, output, cached, cost)
    local b = bucket_of(C.sl_time(), opts_cur.bucket)
    local a = slot.a
    if slot.b ~= b or slot.acc ~= acc then -- another bucket, or the sums moved to the dict since
        a = slot_acc(slot, b)
    end
    a[1] = a[1] + 1
    a[2] = a[2] + (input or 0)
    a[3] = a[3] + (output or 0)
    a[4] = a[4] + (cached or 0)
    a[5] = a[5] + (cost or 0)
    if not pending then
        pending = true
        if not flusher then
            local ok, h = pcall(timer.every, 1, flush)
            flusher = ok and h or nil
        end
    end
end

--- Adds one request. Names are used as given (the caller bounds them); nil becomes "".
function _M.record(consumer, model, provider, route, input, output, cached, cost)
    local b = bucket_of(C.sl_time(), opts_cur.bucket)
    local rs = get(get(get(get(acc, b), consumer or ""), model or ""), provider or "")
    local a = rs[route or ""]
    if not a then
        a = { 0, 0, 0, 0, 0 }
        rs[route or ""] = a
    end
    a[1] = a[1] + 1
    a[2] = a[2] + (input or 0)
    a[3] = a[3] + (output or 0)
    a[4] = a[4] + (cached or 0)
    a[5] = a[5] + (cost or 0)
    if not pending then
        pending = true
        if not flusher then
            local ok, h = pcall(timer.every, 1, flush)
            flusher = ok and h or nil
        end
    end
end

-- This node's rows from the dict: list of {bucket, consumer, model, provider, route, fields...}, buckets in
-- [from, to].
local function local_rows(from, to)
    local d = shared.get(opts_cur.dict)
    if not d then return {} end
    local rows = {}
    for _, k in ipairs(d:get_keys(0)) do
        if sub(k, 1, 2) == "U|" then
            local b, tuple, field = k:match("^U|(%d+)|(.*)|([%a_]+)$")
            b = tonumber(b)
            if b and b + opts_cur.bucket > from and b <= to then
                local row = rows[b .. "|" .. tuple]
                if not row then
                    local c, m, p, r = tuple:match("^([^\1]*)\1([^\1]*)\1([^\1]*)\1([^\1]*)$")
                    if c then
                        row = { bucket = b, c, m, p, r, requests = 0, input_tokens = 0, output_tokens = 0,
                                cached_tokens = 0, cost = 0 }
                        rows[b .. "|" .. tuple] = row
                    end
                end
                if row then
                    row[field] = (row[field] or 0) + (tonumber(d:get(k)) or 0)
                end
            end
        end
    end
    local list = {}
    for _, row in pairs(rows) do list[#list + 1] = row end
    return list
end

--- This node's id: opts.node_id, else node.id (docs/cluster.md), else host name and the first listen port.
function _M.node_id()
    if opts_cur.node_id then return opts_cur.node_id end
    local live = base.live_state()
    if live and live.cfg and live.cfg.node.id then return live.cfg.node.id end
    local host = "localhost"
    local f = io.open("/proc/sys/kernel/hostname", "r")
    if f then
        host = (f:read("*l") or host):gsub("%s+", "")
        f:close()
    end
    local st = base.live_state()
    local l = st and st.cfg and st.cfg.node.listen and st.cfg.node.listen[1]
    return host .. ":" .. tostring(l and l.port or 0)
end

local mc_mod
local function mc()
    if mc_mod == nil then
        local st = base.live_state()
        local m = st and st.cfg and st.cfg.node.memcached
        mc_mod = (m and m.servers) and require("sluice.pdk.memcached") or false
    end
    return mc_mod or nil
end

local MC = "sluice:usage:"
local my_index

--- Worker 0: publishes this node's recent buckets to memcached (called by a timer; yields).
function _M.publish()
    local m = mc()
    if not m then return end
    flush()
    local o = opts_cur
    local id = _M.node_id()
    if not my_index then
        local n, err = m.incr(MC .. "nodes", 1, 0)
        if not n then return nil, err end
        my_index = n
    end
    m.set(MC .. "node:" .. my_index, id, o.retention + o.bucket)
    local now = C.sl_time()
    local cur = bucket_of(now, o.bucket)
    -- the current bucket and the one before (requests that ended in it after its last publish)
    local rows = local_rows(cur - o.bucket, cur)
    local by = {}
    for _, r in ipairs(rows) do
        local t = get(by, r.bucket)
        t[#t + 1] = { r[1], r[2], r[3], r[4], r.requests, r.input_tokens, r.output_tokens, r.cached_tokens, r.cost }
    end
    for _, b in ipairs({ cur - o.bucket, cur }) do
        local list = by[b]
        if list then
            local ok, err = m.set(MC .. b .. ":" .. id, cjson.encode(list), o.retention + o.bucket)
            if not ok then return nil, err end
        end
    end
    return true
end

-- Rows of the other nodes from memcached (nil, err when memcached fails).
local function remote_rows(from, to)
    local m = mc()
    if not m then return {} end
    local o = opts_cur
    local n, err = m.get(MC .. "nodes")
    if err then return nil, err end
    n = tonumber(n) or 0
    local me = _M.node_id()
    local ids, seen = {}, {}
    for i = 1, n do
        local id = m.get(MC .. "node:" .. i)
        if id and id ~= me and not seen[id] then
            seen[id] = true
            ids[#ids + 1] = id
        end
    end
    local rows = {}
    local first, last = bucket_of(from, o.bucket), bucket_of(to, o.bucket)
    if (last - first) / o.bucket * (#ids > 0 and #ids or 1) > MAX_BUCKETS then
        return nil, "the range spans too many buckets to sum across nodes"
    end
    for _, id in ipairs(ids) do
        for b = first, last, o.bucket do
            local v, gerr = m.get(MC .. b .. ":" .. id)
            if gerr then return nil, gerr end
            local list = v and cjson.decode(v)
            if type(list) == "table" then
                for _, e in ipairs(list) do
                    if type(e) == "table" then
                        rows[#rows + 1] = { bucket = b, e[1], e[2], e[3], e[4], requests = tonumber(e[5]) or 0,
                                            input_tokens = tonumber(e[6]) or 0, output_tokens = tonumber(e[7]) or 0,
                                            cached_tokens = tonumber(e[8]) or 0, cost = tonumber(e[9]) or 0 }
                    end
                end
            end
        end
        rows.nodes = (rows.nodes or 0) + 1
    end
    return rows
end

--- Sums rows by dimension group_by ("consumer" | "model" | "provider" | "route") for buckets overlapping
--- [from, to] (seconds since the epoch). Returns {group_by, from, to, bucket, nodes, rows = {{key, requests,
--- input_tokens, output_tokens, cached_tokens, cost}}, totals, partial?, error?} sorted by cost, then requests.
function _M.report(q)
    local dim = DIMS[q.group_by]
    if not dim then
        return nil, "group_by must be one of consumer, model, provider, route"
    end
    flush()
    local rows = local_rows(q.from, q.to)
    local out = { group_by = q.group_by, from = q.from, to = q.to, bucket = opts_cur.bucket, nodes = 1 }
    if q.cluster ~= false then
        local rem, err = remote_rows(q.from, q.to)
        if rem then
            for _, r in ipairs(rem) do rows[#rows + 1] = r end
            out.nodes = 1 + (rem.nodes or 0)
        else
            out.partial, out.error = true, "memcached: " .. tostring(err)
        end
    end
    local groups, totals = {}, { requests = 0, input_tokens = 0, output_tokens = 0, cached_tokens = 0, cost = 0 }
    for _, r in ipairs(rows) do
        local k = r[dim]
        local g = groups[k]
        if not g then
            g = { key = k, requests = 0, input_tokens = 0, output_tokens = 0, cached_tokens = 0, cost = 0 }
            groups[k] = g
        end
        for _, f in ipairs(FIELDS) do
            g[f] = g[f] + (r[f] or 0)
            totals[f] = totals[f] + (r[f] or 0)
        end
    end
    local list = {}
    for _, g in pairs(groups) do list[#list + 1] = g end
    sort(list, function(a, b)
        if a.cost ~= b.cost then return a.cost > b.cost end
        if a.requests ~= b.requests then return a.requests > b.requests end
        return a.key < b.key
    end)
    out.rows, out.totals = list, totals
    return out
end

local function csv_field(v)
    v = tostring(v)
    if find(v, '[",\r\n]') or find(v, "^[=+%-@]") then -- quoted; formula-like cells get a leading '
        if find(v, "^[=+%-@]") then v = "'" .. v end
        return '"' .. v:gsub('"', '""') .. '"'
    end
    return v
end

--- The report as CSV (a header line, one line per group, no totals line).
function _M.csv(rep)
    local out = { rep.group_by .. ",requests,input_tokens,output_tokens,cached_tokens,cost_usd" }
    for _, g in ipairs(rep.rows) do
        out[#out + 1] = concat({ csv_field(g.key), format("%d", g.requests), format("%d", g.input_tokens),
            format("%d", g.output_tokens), format("%d", g.cached_tokens), format("%.6f", g.cost) }, ",")
    end
    return concat(out, "\r\n") .. "\r\n"
end

_M.FIELDS = FIELDS

return _M

-- sluice.cache.store: where ai-cache keeps answers. L1: a shared dict of this node (all workers, LRU, bounded by
-- the dict's size and its per-item limit); L2: memcached, shared by every gateway node. Values larger than
-- `compress_min` are zlib-compressed (sluice.zip) in both.
--
--   local st = store.new({dict = d, l1 = true, l2 = true, ttl = 3600, max_size = 1048576, compress_min = 8192})
--   local value, layer = store.get(st, key)       -- the stored string and "l1" | "l2", or nil (a miss)
--   store.put(st, key, value, ready, arg)          -- L1 now, then L2; ready(arg, readable) once (see put)
--
-- Layout (key: 64 hex digits from sluice.cache.key):
--   L1  "e:KEY" -> value (flags = 0) or compressed value (flags = the original length); TTL = ttl
--   L1  "r:XXH64" -> the raw memo of a request's key (sluice.cache.key, made by ai-cache); TTL = ttl
--   L2  PREFIX .. "e:KEY" -> "EXPIRES:" .. value (flags as in L1); EXPIRES is the epoch second the entry dies at,
--       so an L2 hit fills L1 with what is left of the TTL, never more
-- Generations make purges cheap on every node: the key prefix holds the generation of "all" and of the entry's
-- namespace, and a purge only changes a generation (new entries get new keys; old ones are never found again and
-- age out of the LRU and memcached). Generations are tokens (time + random), not counters, so a memcached that
-- lost them (restart) never brings an old one back:
--   L1  "g:all", "g:ns:NS"           read on every lookup (this node's truth; a purge here changes it at once)
--   L2  PREFIX .. "g:all", "g:ns:NS" copied into L1 by the sync timer (worker 0, every SYNC seconds)
-- A purge of one key deletes it from L1 and L2 here and appends it to a purge log in memcached (PREFIX ..
-- "pseq", PREFIX .. "p:N") that the sync timer of every other node replays against its own L1.
local base = require("sluice.pdk.base")
local memcached = require("sluice.pdk.memcached")
local zip = require("sluice.zip")

local C = base.C
local type, pairs, tonumber, tostring, setmetatable = type, pairs, tonumber, tostring, setmetatable
local find, sub, format = string.find, string.sub, string.format
local floor, random = math.floor, math.random

local _M = {}

_M.PREFIX = "sluice:cache:" -- memcached keys
_M.SYNC = 1 -- seconds between two syncs of a node with memcached (generations, key purges)
local PREFIX = _M.PREFIX
local PURGE_LOG_TTL = 3600 -- seconds a key purge stays in the log for nodes to replay
local PURGE_REPLAY_MAX = 512 -- entries one sync replays at most (a node further behind drops its whole L1)

local function now()
    return C.sl_time()
end

--- A store for one ai-cache conf (fields: dict (sluice.shared dict), l1, l2 (booleans), ttl (seconds),
--- max_size (bytes of one value, uncompressed), compress_min (bytes)).
function _M.new(o)
    return { dict = o.dict, l1 = o.l1 ~= false, l2 = o.l2 == true, ttl = o.ttl, max_size = o.max_size,
             compress_min = o.compress_min or 8192 }
end

local function unpack_value(v, flags, max_size)
    if not flags or flags == 0 then
        return v
    end
    if flags > max_size then
        return nil, "stored entry larger than max_size"
    end
    return zip.inflate(v, flags)
end

--- The value stored under key in L1, or nil (no yield).
function _M.get_l1(st, key)
    if not st.l1 then
        return nil
    end
    local d = st.dict
    local v, flags = d:get("e:" .. key)
    if v then
        local out = unpack_value(v, flags, st.max_size)
        if out then
            return out
        end
        d:delete("e:" .. key)
    end
    return nil
end

--- The value stored under key and where it was found ("l1" | "l2"), or nil. An L2 hit is copied into L1 (with the
--- rest of its TTL). Corrupt entries are deleted and count as misses. Yields for L2.
function _M.get(st, key)
    local d = st.dict
    local hit = _M.get_l1(st, key)
    if hit then
        return hit, "l1"
    end
    if not st.l2 then
        return nil
    end
    local raw, flags = memcached.get(PREFIX .. "e:" .. key)
    if type(raw) ~= "string" then
        return nil
    end
    local colon = find(raw, ":", 1, true)
    local expires = colon and tonumber(sub(raw, 1, colon - 1))
    local left = expires and expires - now()
    if not left or left <= 0 then
        return nil
    end
    local v = sub(raw, colon + 1)
    local out = unpack_value(v, flags, st.max_size)
    if not out then
        memcached.delete(PREFIX .. "e:" .. key)
        return nil
    end
    if st.l1 then
        d:set("e:" .. key, v, left, flags or 0)
    end
    return out, "l2"
end

--- Stores value under key: L1 at once (when it fits one item of the dict), then L2 (yields). ready(arg,
--- readable), when given, is called once as soon as the entry can be read on this node (readable true: after the
--- L1 write, or after the L2 write without L1) or storing failed (false): the caller's moment to let waiting
--- requests go (a function and its argument rather than a closure: no closure made per request).
--- Values over max_size are not stored. Returns true, or nil, why.
function _M.put(st, key, value, ready, arg)
    if #value > st.max_size then
        if ready then ready(arg, false) end
        return nil, "larger than max_size (" .. #value .. " bytes)"
    end
    local stored, flags = value, 0
    if #value >= st.compress_min then
        local z = zip.deflate(value)
        if z and #z < #value then
            stored, flags = z, #value
        end
    end
    local ttl = st.ttl
    local l1_ok, err = false, nil
    if st.l1 then
        l1_ok, err = st.dict:set("e:" .. key, stored, ttl, flags)
        if l1_ok and ready then
            ready(arg, true)
            ready = nil
        end
    end
    if st.l2 then
        local expires = floor(now() + ttl)
        local ok, merr = memcached.set(PREFIX .. "e:" .. key, expires .. ":" .. stored, ttl, flags)
        if ready then ready(arg, ok == true) end
        if not ok then
            return l1_ok or nil, "l2: " .. tostring(merr)
        end
        return true
    end
    if ready then ready(arg, false) end
    return l1_ok or nil, err and ("l1: " .. tostring(err)) or nil
end

---------------------------------------------------------------------------------------------------------------
-- generations and purges

-- The last generations this worker read, by dict and name: a generation the LRU pushed out of the dict (a
-- namespace nobody asked for in a while) is put back from here instead of starting again at "0".
local seen = setmetatable({}, { __mode = "k" })

local function gen_of(d, name)
    local v = d:get(name)
    local mine = seen[d]
    if not mine then
        mine = {}
        seen[d] = mine
    end
    if v then
        if mine[name] ~= v then mine[name] = v end
        return v
    end
    v = mine[name]
    if v then
        d:add(name, v)
        return v
    end
    return "0"
end

-- per namespace: its generation item's name, and the last prefix made (no string built per request)
local ns_items = {}

--- The generation prefix of namespace ns in dict d (this node's view): "ALL/NS".
function _M.generation(d, ns)
    local t = ns_items[ns]
    if not t then
        t = { name = "g:ns:" .. ns }
        ns_items[ns] = t
    end
    local all, mine = gen_of(d, "g:all"), gen_of(d, t.name)
    if t.all ~= all or t.ns ~= mine then
        t.all, t.ns, t.prefix = all, mine, all .. "/" .. mine
    end
    return t.prefix
end

local function token()
    return format("%x.%04x", floor(now() * 1000), random(0, 65535))
end

-- Sets a generation here and (when l2) in memcached; returns the token, or nil, err when memcached failed (the
-- local change stands: this node is purged at once whatever happens to the others).
local function bump(dicts, name, l2)
    local t = token()
    for d in pairs(dicts) do
        d:set("g:" .. name, t)
    end
    if l2 then
        local ok, err = memcached.set(PREFIX .. "g:" .. name, t, 0)
        if not ok then
            return nil, err
        end
    end
    return t
end

--- Purges every entry of every namespace (dicts: set of the dicts in use on this node); true | nil, err (L2).
function _M.purge_all(dicts, l2)
    return bump(dicts, "all", l2)
end

--- Purges namespace ns.
function _M.purge_namespace(dicts, ns, l2)
    return bump(dicts, "ns:" .. ns, l2)
end

--- Purges one entry by its key: L1 here, L2, and (through the purge log) the L1 of every other node.
function _M.purge_key(dicts, key, l2)
    for d in pairs(dicts) do
        d:delete("e:" .. key)
    end
    if not l2 then
        return true
    end
    local dok, derr = memcached.delete(PREFIX .. "e:" .. key)
    if not dok and derr ~= "not found" then
        return nil, derr
    end
    local seq, err = memcached.incr(PREFIX .. "pseq", 1, 1, 0)
    if not seq then
        return nil, err
    end
    local ok, serr = memcached.set(PREFIX .. "p:" .. seq, key, PURGE_LOG_TTL)
    if not ok then
        return nil, serr
    end
    -- this node's dicts have the key gone already: do not replay our own entry
    for d in pairs(dicts) do
        local last = d:get("s:pseq")
        if last and last == seq - 1 then
            d:set("s:pseq", seq)
        end
    end
    return true
end

--- One sync of this node with memcached: dicts maps each dict in use to the set of its namespaces. Copies the
--- generations that changed elsewhere and replays key purges; returns true | nil, err.
function _M.sync(dicts)
    local all, err = memcached.get(PREFIX .. "g:all")
    if err then
        return nil, err
    end
    local seq
    seq, err = memcached.get(PREFIX .. "pseq")
    if err then
        return nil, err
    end
    seq = tonumber(seq) or 0 -- no log yet: its first entry will be 1
    for d, namespaces in pairs(dicts) do
        if seq then -- key purges first: a node too far behind starts over (below, generations are copied anew)
            local last = d:get("s:pseq")
            if not last then
                d:set("s:pseq", seq) -- a node that just started has nothing older to forget
            elseif seq > last then
                if seq - last > PURGE_REPLAY_MAX then
                    d:flush_all() -- the dict is ai-cache's alone (docs/caching.md)
                else
                    for i = last + 1, seq do
                        local k = memcached.get(PREFIX .. "p:" .. i)
                        if type(k) == "string" then
                            d:delete("e:" .. k)
                        end
                    end
                end
                d:set("s:pseq", seq)
            end
        end
        if all and d:get("g:all") ~= all then
            d:set("g:all", all)
        end
        for ns in pairs(namespaces) do
            local g = memcached.get(PREFIX .. "g:ns:" .. ns)
            if g and d:get("g:ns:" .. ns) ~= g then
                d:set("g:ns:" .. ns, g)
            end
        end
    end
    return true
end

return _M

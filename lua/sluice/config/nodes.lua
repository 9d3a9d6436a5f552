-- The cluster's nodes (docs/cluster.md, "Nodes"). With node.config_center every node registers itself in etcd:
--   PREFIX/nodes/<node id>   {"id", "version", "hostname", "pid", "started_at", "listen", "admin", "workers",
--                             "revision", "config", "memcached", "lease", "last_seen"}
-- attached to a lease of node_ttl seconds that the node keeps alive (a renewal every third of it). The config
-- center's watch sees every node's key and hands it here (on_kv, reset), so GET /admin/status and the dashboard
-- list the nodes this node sees. A stop signal makes the main thread revoke the lease (leave): the node leaves the
-- list at once; a node that dies leaves it when its lease expires.
--
-- Where it runs: worker 0, beside the watch, in a timer coroutine of its own: registering never holds a request
-- up. While etcd does not answer it tries again every second; a lease that expired meanwhile (or was revoked by
-- hand) is granted again and the key put again. The value is written again when something in it changes (the
-- config the node serves, memcached's state) and every node_ttl seconds (last_seen).
--
-- Two nodes with one id: the first keeps PREFIX/nodes/<id>; the second registers as PREFIX/nodes/<id>@<lease>
-- (an id cannot hold '@') and takes the plain key once the first is gone. Both are listed with conflict = true and
-- each logs a warning: nothing stops, nothing is overwritten.
local ffi = require("ffi")
local cjson = require("cjson.safe")
local etcd = require("sluice.config.etcd")
local log = require("sluice.pdk.log")

local type, pairs, ipairs, tostring, tonumber, pcall = type, pairs, ipairs, tostring, tonumber, pcall
local byte, sort, min, max = string.byte, table.sort, math.min, math.max

pcall(ffi.cdef, [[
void sl_node_lease_set(int64_t id);
int64_t sl_node_lease_get(void);
int64_t sl_node_lease_take(void);
int gethostname(char *name, size_t len);
int getpid(void);
long sysconf(int name);
]])

local _M = {}

local R -- the registration (worker 0 with a config center)

---------------------------------------------------------------------------------------------------------------
-- this node

local hostname, started_at, version

--- The host name (gethostname), read once.
function _M.hostname()
    if not hostname then
        local buf = ffi.new("char[256]")
        hostname = ffi.C.gethostname(buf, 255) == 0 and ffi.string(buf) or "unknown"
    end
    return hostname
end

--- This node's id: node.id, else the host name.
function _M.id(node)
    return node and node.id or _M.hostname()
end

-- When the process started (Unix time): /proc/self/stat's start time after boot, plus the boot time.
local function process_start()
    local f = io.open("/proc/self/stat", "rb")
    local stat = f and f:read("*a")
    if f then f:close() end
    local ticks = stat and tonumber((stat:match(".*%) (.*)$") or ""):match("^%S+" .. ("%s+%S+"):rep(18) .. "%s+(%d+)"))
    f = io.open("/proc/stat", "rb")
    local boot = f and tonumber((f:read("*a") or ""):match("\nbtime (%d+)"))
    if f then f:close() end
    local hz = tonumber(ffi.C.sysconf(2)) -- _SC_CLK_TCK
    if not (ticks and boot and hz and hz > 0) then return os.time() end
    return boot + math.floor(ticks / hz)
end

local function sluice_version()
    if not version then
        local ok, v = pcall(function() return ffi.string(require("sluice.core").sl_version()) end)
        version = ok and v or "unknown"
    end
    return version
end

local function live_node()
    local st = require("sluice.pdk.base").live_state()
    return st and st.doc and st.doc.node or {}
end

local function memcached_summary()
    local ok, s = pcall(function() return require("sluice.pdk.memcached").status() end)
    if not ok or not s then return nil end
    local up = 0
    for _, sv in ipairs(s.servers or {}) do if sv.state == "up" then up = up + 1 end end
    return { circuit = s.circuit, up = up, servers = #(s.servers or {}) }
end

-- What this node says about itself (last_seen left to the caller).
local function self_info(lease)
    local node = live_node()
    local listen = {}
    for i, l in ipairs(type(node.listen) == "table" and node.listen or {}) do
        listen[i] = type(l) == "table" and l.addr or tostring(l)
    end
    started_at = started_at or process_start()
    local center = require("sluice.config.center")
    return { id = _M.id(node), version = sluice_version(), hostname = _M.hostname(), pid = ffi.C.getpid(),
             started_at = started_at, listen = listen, admin = type(node.admin) == "table" and node.admin.listen or nil,
             workers = tonumber(node.workers) or node.workers, revision = center.config_revision(),
             config = center.config_fingerprint(), memcached = memcached_summary(), lease = lease }
end

---------------------------------------------------------------------------------------------------------------
-- the lease id between Lua (a decimal string) and C (int64)

local function to_i64(s)
    local v = ffi.new("int64_t", 0)
    for i = 1, #s do v = v * 10 + (byte(s, i) - 48) end
    return v
end

local function from_i64(v)
    return (tostring(v):gsub("[LU]+$", ""))
end

---------------------------------------------------------------------------------------------------------------
-- the registration (worker 0)

local function now()
    return require("sluice").now()
end

local function leaving()
    return ffi.C.sl_node_lease_get() < 0
end

-- The lease is gone (expired, revoked): the next step grants another one.
local function lost(r, why)
    if r.lease and not leaving() then
        log.warn("nodes: the lease of this node's registration is gone (", why, "): registering again")
    end
    r.lease, r.alt_key, r.written = nil, nil, nil
    ffi.C.sl_node_lease_set(0)
end

local function lease_gone(err)
    return tostring(err):find("lease not found", 1, true) ~= nil
end

-- A conflict: another node holds PREFIX/nodes/<id>; this one registers under <id>@<lease> meanwhile.
local function conflict(r, holder, value)
    local h = cjson.decode(holder.value or "")
    h = type(h) == "table" and h or {}
    r.conflict = { key = r.key, hostname = h.hostname, pid = h.pid, started_at = h.started_at, lease = holder.lease }
    if r.warned ~= holder.lease then
        r.warned = holder.lease
        log.warn("nodes: another node is registered as ", r.id, " (", r.key, ": hostname ", tostring(h.hostname),
            ", pid ", tostring(h.pid), ", started ", os.date("!%Y-%m-%dT%H:%M:%SZ", tonumber(h.started_at) or 0),
            "); give every node its own node.id. This node is listed as ", r.key, "@", r.lease,
            " meanwhile (if that is this node before a restart, its registration expires within ", r.ttl, " s)")
    end
    r.alt_key = r.key .. "@" .. r.lease
    return r.client:txn({ { put = r.alt_key, value = value, lease = r.lease } })
end

-- Puts this node's value (when it changed, or every ttl for last_seen): true | nil, err.
local function publish(r)
    local info = self_info(r.lease)
    local body = cjson.encode(info)
    if body == r.written and not r.dirty and now() - r.last_put < r.ttl then return true end
    info.last_seen = os.time()
    local value = cjson.encode(info)
    local res, err = r.client:claim(r.key, value, r.lease)
    if not res then return nil, err end
    if res.ok then
        if r.alt_key then
            r.client:txn({ { delete = r.alt_key } }) -- best effort: it goes with the lease anyway
            r.alt_key = nil
        end
        if r.conflict then
            log.warn("nodes: this node holds ", r.key, " now (the other node with id ", r.id, " is gone)")
            r.conflict, r.warned = nil, nil
        end
    elseif res.holder then
        local ok, cerr = conflict(r, res.holder, value)
        if not ok then return nil, cerr end
    else
        r.dirty = true -- taken and let go meanwhile: again at the next step
        return true
    end
    r.written, r.last_put, r.dirty, r.alive_at = body, now(), false, os.time()
    r.registered = true
    return true
end

-- One step: a lease (granted or renewed when due), then the value: true | nil, err.
local function step(r)
    for _ = 1, 2 do -- a second time when the lease turned out to be gone
        if not r.lease then
            local id, err = r.client:lease_grant(r.ttl)
            if not id then return nil, "lease grant: " .. tostring(err) end
            r.lease, r.next_renew, r.written = id, now() + r.ttl / 3, nil
            ffi.C.sl_node_lease_set(to_i64(id))
            if leaving() then -- the stop signal came while granting: nobody else revokes this one
                r.client:lease_revoke(id)
                return true
            end
        elseif now() >= r.next_renew then
            local left, err = r.client:lease_keepalive(r.lease)
            if not left then return nil, "lease keepalive: " .. tostring(err) end
            if left > 0 then
                r.next_renew, r.alive_at = now() + r.ttl / 3, os.time()
            else
                lost(r, "expired")
            end
        end
        if r.lease then
            local ok, err = publish(r)
            if ok then return true end
            if not lease_gone(err) then return nil, "register: " .. tostring(err) end
            lost(r, "etcd does not know it")
        end
    end
    return nil, "the lease was lost twice in a row"
end

local function run(r)
    local sleep = require("sluice.pdk.timer").sleep
    while not leaving() do
        local ok, err = step(r)
        if ok then
            if r.last_error then log.info("nodes: registered in etcd again as ", r.alt_key or r.key) end
            r.last_error = nil
        else
            if not r.last_error then
                log.warn("nodes: cannot keep this node's registration in etcd (", err, "); serving on, retrying")
            end
            r.last_error = require("sluice.config.entries").one_line(err)
            r.registered = false
        end
        if not sleep(r.tick) then return end -- the worker is stopping
    end
end

--- Worker 0, once its config center runs (st: sluice.config.center's state): registers this node and keeps the
--- registration alive.
function _M.start(st)
    if R then return end
    local conf = st.conf
    local ttl = math.ceil(conf.node_ttl or 15) -- etcd's TTLs are whole seconds
    local id = _M.id(live_node())
    R = { client = etcd.new(conf, "async"), prefix = st.prefix, id = id, key = st.prefix .. "/nodes/" .. id,
          ttl = ttl, tick = min(1, ttl / 3), last_put = 0, entries = {}, center = st }
    require("sluice.pdk.timer").at(0, function() run(R) end)
end

--- The key of a node's registration under prefix?
function _M.is_key(prefix, key)
    return key:sub(1, #prefix + 7) == prefix .. "/nodes/"
end

--- The watch saw key change (kv) or go (nil).
function _M.on_kv(key, kv)
    if not R then return end
    if kv then
        local info = cjson.decode(kv.value or "")
        info = type(info) == "table" and info or nil
        R.entries[key] = { key = key, lease = kv.lease, info = info }
        if info and info.id == R.id and kv.lease ~= R.lease and key ~= R.key and R.warned_dup ~= key then
            R.warned_dup = key -- this node holds the plain key: the other one waits under <id>@<lease>
            log.warn("nodes: another node registered with this node's id ", R.id, " (", key, ": hostname ",
                tostring(info.hostname), ", pid ", tostring(info.pid), "); give every node its own node.id")
        end
    else
        R.entries[key] = nil
    end
    -- this node's key deleted (by hand, an expiry) or taken: put it again, or learn who has it, at the next step
    if key == R.key and (kv == nil or (kv.lease ~= R.lease and not R.conflict)) then R.dirty = true end
    if key == R.alt_key and kv == nil then R.dirty = true end
end

--- A full read of the prefix: the registrations in it (etcd kvs), replacing what the watch had.
function _M.reset(kvs)
    if not R then return end
    R.entries = {}
    for _, kv in ipairs(kvs) do _M.on_kv(kv.key, kv) end
    if not R.entries[R.alt_key or R.key] then R.dirty = true end
end

---------------------------------------------------------------------------------------------------------------
-- the list

local function entry_of(key, info, lease)
    info = info or {}
    return { id = type(info.id) == "string" and info.id or (key and key:match("/nodes/([^@]*)")), key = key,
             version = info.version, hostname = info.hostname, pid = info.pid, started_at = info.started_at,
             listen = info.listen, admin = info.admin, workers = info.workers, revision = info.revision,
             config = info.config, memcached = info.memcached, last_seen = info.last_seen, lease = lease }
end

--- The nodes this node knows of, sorted by id: every registration the watch saw, this node (self = true) even
--- before etcd has its key, conflict = true on each of two or more registrations with one id.
function _M.list()
    local out = {}
    if not R then
        local me = entry_of(nil, self_info(nil))
        me.key, me.self, me.last_seen = nil, true, os.time()
        return { me }
    end
    local mine = false
    for key, e in pairs(R.entries) do
        local n = entry_of(key, e.info, e.lease)
        if R.lease and e.lease == R.lease then
            n.self, mine = true, true
            n.last_seen = max(tonumber(n.last_seen) or 0, R.alive_at or 0)
        end
        out[#out + 1] = n
    end
    if not mine then -- not (yet) in etcd: etcd down, a conflict being sorted out, the first step under way
        local me = entry_of(R.alt_key or R.key, self_info(R.lease), R.lease)
        me.self, me.registered, me.last_seen = true, false, R.alive_at
        out[#out + 1] = me
    end
    local count = {}
    for _, n in ipairs(out) do
        n.id = n.id or "?"
        count[n.id] = (count[n.id] or 0) + 1
    end
    for _, n in ipairs(out) do if count[n.id] > 1 then n.conflict = true end end
    sort(out, function(a, b)
        if a.id ~= b.id then return tostring(a.id) < tostring(b.id) end
        return tostring(a.key) < tostring(b.key)
    end)
    return out
end

--- The `cluster` part of GET /admin/status.
function _M.status()
    local nodes = _M.list()
    if not R then return { nodes = nodes } end
    local other = R.conflict
    if not other then -- holding the plain key while another node with this id waits under <id>@<lease>
        for _, n in ipairs(nodes) do
            if n.id == R.id and not n.self then other = { key = n.key, hostname = n.hostname, pid = n.pid } end
        end
    end
    return { nodes = nodes, key = R.alt_key or R.key, lease = R.lease, ttl = R.ttl, registered = R.registered == true,
             conflict = other, last_error = R.last_error,
             stale = R.center.state ~= "connected" or nil } -- the list is the last one seen while etcd is away
end

---------------------------------------------------------------------------------------------------------------
-- leaving (main thread)

--- On a stop signal (main thread): revokes this node's lease, so that every node's list loses it now. Blocking,
--- each request bounded by conf.timeout and 2 s; an error is logged (the lease then expires by itself).
function _M.leave(conf)
    local id = ffi.C.sl_node_lease_take()
    if id <= 0 then return end
    local lease = from_i64(id)
    local quick = {} -- every request of it (authentication too) bounded by 2 s: the node is stopping
    for k, v in pairs(conf) do quick[k] = v end
    quick.timeout = min(conf.timeout or 5, 2)
    local ok, err = etcd.new(quick, "sync"):lease_revoke(lease)
    if ok then
        log.info("nodes: left the cluster's list (lease ", lease, " revoked)")
    else
        log.warn("nodes: cannot revoke lease ", lease, " (", tostring(err), "): this node leaves the list when it "
            .. "expires")
    end
end

return _M

-- The config center (docs/cluster.md): with node.config_center, a node's entities live in etcd under a prefix and
-- its YAML file holds only the node settings. Keys and values:
--   PREFIX/routes/ID  PREFIX/upstreams/ID  PREFIX/providers/NAME  PREFIX/consumers/NAME
--   PREFIX/consumer_groups/NAME  PREFIX/plugin_metadata/PLUGIN  PREFIX/global_plugins
-- each holding the entity as JSON (the Admin API's body, in its stored form: sluice.config.store codecs).
-- PREFIX/nodes/ID holds the nodes' registrations, not config: the watch hands them to sluice.config.nodes.
--
-- Where each part runs:
--  * the main thread, before the workers: the first load (etcd; else the local snapshot of the last config seen;
--    else the node refuses to start): initial(), through the blocking transport (sluice.config.etcd "sync").
--  * worker 0 (beside the Admin API): the watch loop (run), Admin API writes (write), GET /admin/status (status).
--    It validates every change as the Admin API does and publishes to every worker (sluice.master.publish).
--  * `sluice etcd import FILE`: sluice.config.import.
-- Entries, their validation and the choice of what to serve: sluice.config.entries.
--
-- What a node serves is what etcd holds minus what does not validate. `desired` is every key as etcd has it,
-- `applied` the entries the published config was built from. A change that would make the config invalid is
-- refused (logged once per key and revision, listed in GET /admin/status) and the entity keeps its last good
-- version (or stays absent); refused entries are tried again whenever anything changes, so a route written before
-- its upstream is served once the upstream is there.
--
-- Secrets (docs/cluster.md, "Secrets in etcd"): with a master key (node.secrets) the Admin API seals them as it
-- writes (sluice.config.store.seal); entries are opened with this node's keys as they arrive (an entry that does
-- not open is refused like an invalid one) and read again when a reload changes the keys.
local cjson = require("cjson.safe")
local etcd = require("sluice.config.etcd")
local config = require("sluice.config")
local log = require("sluice.pdk.log")
local secrets = require("sluice.secrets")
local E = require("sluice.config.entries")
local nodes = require("sluice.config.nodes")

local type, pairs, ipairs, tostring, tonumber, next, pcall = type, pairs, ipairs, tostring, tonumber, next, pcall
local format, sort, min, concat = string.format, table.sort, math.min, table.concat
local key_of, decode_entry, fingerprint, build, settle, sorted, same, one_line, validate =
    E.key, E.decode_entry, E.fingerprint, E.build, E.settle, E.sorted, E.same, E.one_line, E.validate

local _M = {}

_M.KINDS = E.KINDS
_M.key = key_of
_M.fingerprint = fingerprint

local BACKOFF_MIN, BACKOFF_MAX = 0.1, 2 -- seconds between attempts while etcd is unreachable (doubling)
local PROBE_EVERY = 5                   -- a quiet watch cannot tell a vanished etcd: a cheap read this often

local S -- this process's state (one config center per process)

---------------------------------------------------------------------------------------------------------------
-- state

local function new_state(conf, mode)
    local st = { conf = conf, client = etcd.new(conf, mode), desired = {}, applied = {}, refused = {},
                 revision = 0, state = "connecting", since = os.time(), source = nil, warned = {} }
    st.prefix = st.client.prefix
    return st
end

---------------------------------------------------------------------------------------------------------------
-- secrets: sealed in etcd with the master key (node.secrets) as in the state file, opened as entries arrive

-- The keys (sluice.secrets keyring) of node settings node_cfg (normalized: cfg.node) become the ones entries are
-- opened with; keys that cannot be read now (a key file gone) leave the ones in use. Returns true when they differ
-- from those the entries in st.desired were read with.
local function use_keys(st, node_cfg)
    local kr, err = secrets.keyring(node_cfg)
    if err then
        log.err("config center: ", err, st.keys_sig and ": keeping the keys read before" or "")
        return false
    end
    local ids = {}
    for id in pairs(kr and kr.by_id or {}) do ids[#ids + 1] = id end
    sort(ids)
    local sig = (kr and kr.current and kr.current.id or "-") .. "|" .. concat(ids, ",")
    local changed = st.keys_sig ~= nil and sig ~= st.keys_sig
    st.kr, st.keys_sig = kr, sig
    return changed
end

-- With a master key, a secret in the clear in etcd (written by hand) is served as it is and said once per version.
local function note_plain(st, e)
    if not (e.plain and st.kr and st.kr.current) or st.warned[e.key] == e.mod_revision then return end
    st.warned[e.key] = e.mod_revision
    log.warn("config center: ", e.key, " (etcd revision ", e.mod_revision, ") holds ", #e.plain, " secret(s) in the ",
        "clear (", concat(e.plain, ", "), ") although a master key is configured: served as they are; the Admin ",
        "API seals them at its next write of it, `sluice etcd import` too")
end

-- An etcd kv as an entry (sluice.config.entries), sealed secrets opened with st's keys.
local function decode(st, kv, reg)
    local e = decode_entry(st.prefix, kv, reg, st.kr)
    note_plain(st, e)
    return e
end

-- Every entry read again with the keys now configured (a refused entry may open now, or a served one no longer).
local function redecode(st, reg)
    for k, e in pairs(st.desired) do
        st.desired[k] = decode(st, { key = e.key, value = e.value, create_revision = e.create_revision,
                                     mod_revision = e.mod_revision }, reg)
    end
end

local function refuse(st, key, e, msg)
    local rev = e and e.mod_revision or -1
    msg = one_line(msg)
    local r = st.refused[key]
    if r and r.revision == rev and r.error == msg then return end
    st.refused[key] = { key = key, revision = e and rev or nil, deleted = e == nil or nil, error = msg }
    local kept = st.applied[key] and "keeps the last good version of it" or "goes on without it"
    if e then
        log.err("config center: ", key, " (etcd revision ", rev, ") refused, the running config ", kept, ": ", msg)
    else
        log.err("config center: the deletion of ", key, " refused, the running config ", kept, ": ", msg)
    end
end

-- Works out what to serve from st.desired: doc, cfg, fingerprint when it is not what the workers run (or were
-- just given); nil otherwise.
local function reconcile(st, node, reg)
    for k, r in pairs(st.refused) do -- a refusal of a version etcd no longer has is forgotten
        local d = st.desired[k]
        if (d and d.mod_revision or nil) ~= r.revision then st.refused[k] = nil end
    end
    local cand = {}
    for k, e in pairs(st.desired) do
        if e.obj then
            cand[k] = e
        else
            refuse(st, k, e, e.err)
            cand[k] = st.applied[k]
        end
    end
    local doc, cfg
    if not same(cand, st.applied) then
        st.applied, doc, cfg = settle(st.applied, cand, node, reg, function(k, e, msg) refuse(st, k, e, msg) end)
    end
    for k, r in pairs(st.refused) do -- what is served now is no longer refused
        if st.applied[k] == st.desired[k] and (st.desired[k] == nil or st.desired[k].obj) then st.refused[k] = nil end
        if r.deleted and st.desired[k] == nil and st.applied[k] == nil then st.refused[k] = nil end
    end
    local fp = fingerprint(st.applied)
    if fp == st.live_fp or fp == st.published_fp then return nil end
    if not doc then
        local errs
        doc = build(node, st.applied)
        cfg, errs = validate(doc, reg)
        if not cfg then
            log.err("config center: the last good entries no longer validate (node settings or plugin code changed?), "
                .. "nothing published: ", one_line(config.format_errors(errs)))
            return nil
        end
    end
    return doc, cfg, fp
end

---------------------------------------------------------------------------------------------------------------
-- the local snapshot: the entries last served, to start from while etcd is down

local function write_snapshot(st)
    local path = st.conf.snapshot_file
    if not path then return end
    local kvs = {}
    for i, e in ipairs(sorted(st.applied)) do
        -- with a master key, a secret held in the clear in etcd is sealed here: the file never has one in the clear
        local value = st.kr and st.kr.current and e.sealed_value or e.value
        kvs[i] = { key = e.key, value = value, create_revision = e.create_revision, mod_revision = e.mod_revision }
    end
    local data = cjson.encode({ version = 1, prefix = st.prefix, revision = st.revision, saved_at = os.time(),
                                kvs = #kvs > 0 and kvs or nil })
    local ok, err = require("sluice.config.state").write_atomic(path, data)
    if not ok then log.warn("config center: cannot write the local snapshot: ", err) end
end

local function read_snapshot(path, prefix)
    if not path then return nil, "no snapshot_file configured" end
    local f, err = io.open(path, "rb")
    if not f then return nil, tostring(err) end
    local text = f:read("*a")
    f:close()
    local t = cjson.decode(text or "")
    if type(t) ~= "table" or t.version ~= 1 or type(t.revision) ~= "number" then
        return nil, path .. ": not a config center snapshot"
    end
    if t.prefix ~= prefix then
        return nil, format("%s: a snapshot of prefix %s, not %s", path, tostring(t.prefix), prefix)
    end
    local kvs = {}
    for _, kv in ipairs(type(t.kvs) == "table" and t.kvs or {}) do
        if type(kv) == "table" and type(kv.key) == "string" and type(kv.value) == "string" then
            kvs[#kvs + 1] = { key = kv.key, value = kv.value, create_revision = tonumber(kv.create_revision) or 0,
                              mod_revision = tonumber(kv.mod_revision) or 0 }
        end
    end
    return { revision = t.revision, kvs = kvs, saved_at = t.saved_at }
end

---------------------------------------------------------------------------------------------------------------
-- main thread: the first load

local function has_entities(cfg)
    return #cfg.routes > 0 or #cfg.consumers > 0 or next(cfg.upstreams) ~= nil or next(cfg.providers) ~= nil
        or next(cfg.consumer_groups) ~= nil or next(cfg.plugin_metadata) ~= nil or next(cfg.global_plugins) ~= nil
end

--- The document to start from (node: the YAML's node section) and its snapshot info, read from etcd, else from
--- the local snapshot; nil, err when neither can be had (the node refuses to start). Main thread only.
function _M.initial(cfg, node, reg, file)
    local conf = cfg.node.config_center
    if has_entities(cfg) then
        log.warn("config center: the entities in ", tostring(file), " are not used (node.config_center: they come ",
            "from etcd); import them with `sluice etcd import FILE`")
    end
    local st = new_state(conf, "sync")
    use_keys(st, cfg.node)
    local snap, err, unreachable = st.client:range_prefix()
    local source = "etcd"
    if not snap then
        if not unreachable then
            return nil, "config center: " .. tostring(err)
        end
        local saved, serr = read_snapshot(conf.snapshot_file, st.prefix)
        if not saved then
            return nil, format("config center: etcd is unreachable (%s) and there is no snapshot of an earlier "
                .. "config to start from (%s): start etcd, check node.config_center.endpoints, or start once while "
                .. "etcd is up to take a snapshot", tostring(err), tostring(serr))
        end
        log.warn("config center: etcd is unreachable (", err, "): starting from the local snapshot of etcd revision ",
            saved.revision, " saved ", os.date("!%Y-%m-%dT%H:%M:%SZ", tonumber(saved.saved_at) or 0), " (",
            conf.snapshot_file, ")")
        snap, source = saved, "snapshot"
    end
    for _, kv in ipairs(snap.kvs) do
        -- worker 0 reads everything again within a second: it says which secrets are in the clear
        if not nodes.is_key(st.prefix, kv.key) then st.desired[kv.key] = decode_entry(st.prefix, kv, reg, st.kr) end
    end
    if not (st.kr and st.kr.current) then
        local plain = {}
        for _, e in pairs(st.desired) do
            for _, p in ipairs(e.plain or {}) do plain[#plain + 1] = p end
        end
        if #plain > 0 then
            sort(plain)
            log.warn("config center: ", #plain, " secret(s) in ", source == "etcd" and "etcd" or "the local snapshot",
                " are stored in the clear (", concat(plain, ", ", 1, min(#plain, 10)), #plain > 10 and ", ..." or "",
                "): set a master key on every node (node.secrets, docs/configuration.md \"Secrets at rest\") and ",
                "the Admin API seals them as it writes them")
        end
    end
    st.revision = snap.revision
    local doc = reconcile(st, node, reg)
    if not doc then doc = build(node, st.applied) end -- nothing valid in etcd: start with no entities
    if source == "etcd" then write_snapshot(st) end
    return doc, { fingerprint = fingerprint(st.applied), revision = snap.revision, source = source,
                  error = source == "snapshot" and tostring(err) or nil }
end

---------------------------------------------------------------------------------------------------------------
-- worker 0: watch, publish, write, status

local function registry()
    local ok, admin = pcall(require, "sluice.admin")
    local reg = ok and admin.pending_registry and admin.pending_registry()
    return reg or require("sluice.plugins").current()
end

local function live_node()
    local st = require("sluice.pdk.base").live_state()
    return st and st.doc and st.doc.node
end

local function set_state(st, state, err)
    if state ~= st.state then
        st.since = os.time()
        if state == "unreachable" then
            log.warn("config center: etcd unreachable (", err, "); serving the last config (etcd revision ",
                st.revision, "), retrying")
        elseif state == "connected" then
            log.info("config center: watching ", st.client:endpoint(), " from etcd revision ", st.revision)
        end
    end
    st.state = state
    if err then st.last_error = one_line(err) end
end

-- Reconciles and publishes what changed; the etcd revision is taken as seen only after that.
local function process(st, revision)
    local node = live_node()
    if node then
        local reg = registry()
        local doc, _, fp = reconcile(st, node, reg)
        if doc then
            local version, err = require("sluice.master").publish(doc, reg,
                { fingerprint = fp, revision = revision, source = "etcd" })
            if version then
                st.published_version, st.published_fp, st.config_revision = version, fp, revision
                log.info("config center: etcd revision ", revision, " published as config version ", version)
            else
                log.err("config center: cannot publish: ", err)
            end
        end
        if revision > st.revision then st.revision = revision end
        if doc or not st.synced then write_snapshot(st) end
        return
    end
    if revision > st.revision then st.revision = revision end
end

local function resync(st)
    local snap, err = st.client:range_prefix()
    if not snap then return nil, err end
    local reg = registry()
    local desired, regs = {}, {}
    for _, kv in ipairs(snap.kvs) do
        if nodes.is_key(st.prefix, kv.key) then
            regs[#regs + 1] = kv
        else
            desired[kv.key] = decode(st, kv, reg)
        end
    end
    st.desired = desired
    nodes.reset(regs)
    st.revision = 0 -- a full read replaces everything: the revision goes back to what it read
    process(st, snap.revision)
    st.synced = true
    return true
end

local function on_message(st, msg)
    if type(msg.error) == "table" or type(msg.error) == "string" then
        st.watch_error = type(msg.error) == "table" and tostring(msg.error.message) or msg.error
        return false
    end
    local r = msg.result
    if type(r) ~= "table" then return end
    st.last_ok = os.time()
    if r.canceled or tonumber(r.compact_revision or 0) > 0 then
        st.compacted = tonumber(r.compact_revision) or true
        return false
    end
    if r.created then
        set_state(st, "connected")
        return
    end
    local events = type(r.events) == "table" and r.events or {}
    local reg, top, changed = registry(), st.revision, #events == 0
    for _, ev in ipairs(events) do
        local kv = type(ev) == "table" and type(ev.kv) == "table" and etcd.kv_of(ev.kv)
        if kv and kv.key and kv.mod_revision > st.revision then
            if nodes.is_key(st.prefix, kv.key) then -- a node's registration: not config
                nodes.on_kv(kv.key, ev.type ~= "DELETE" and kv or nil)
            elseif ev.type == "DELETE" then
                st.desired[kv.key], changed = nil, true
            else
                st.desired[kv.key], changed = decode(st, kv, reg), true
            end
            if kv.mod_revision > top then top = kv.mod_revision end
        end
    end
    if #events == 0 then -- a progress notification: everything up to header.revision was sent
        local h = tonumber(type(r.header) == "table" and r.header.revision)
        if h and h > top then top = h end
    end
    if top > st.revision then
        if changed then process(st, top) else st.revision = top end -- registrations alone change no config
    end
end

local function sleep(s)
    return require("sluice.pdk.timer").sleep(s)
end

-- The watch loop (worker 0's timer coroutine): full read, then watch from the revision read until the stream
-- breaks; a compacted revision or a failure means a full read again, after a backoff while etcd does not answer.
local function run(st)
    local backoff = 0
    while true do
        local ok, err = resync(st)
        if ok then
            backoff = 0
            set_state(st, "connected")
            while true do
                st.watching = true
                local why, detail = st.client:watch(st.revision + 1, function(msg) return on_message(st, msg) end,
                    st.conf.watch_timeout or 60)
                st.watching = false
                if st.compacted then
                    log.warn("config center: etcd revision ", st.revision + 1, " was compacted (",
                        tostring(st.compacted), "): reading everything again")
                    st.compacted = nil
                    break
                elseif why == "timeout" then -- quiet: watch again from where it was
                    if not sleep(0) then return end
                else
                    err = st.watch_error or (tostring(why) .. (detail and (": " .. tostring(detail)) or ""))
                    st.watch_error = nil
                    set_state(st, "unreachable", "watch: " .. err)
                    st.client:next_endpoint()
                    break
                end
            end
        else
            set_state(st, "unreachable", err)
            st.client:next_endpoint()
        end
        backoff = backoff == 0 and BACKOFF_MIN or min(backoff * 2, BACKOFF_MAX)
        if not sleep(backoff * (0.75 + math.random() * 0.5)) then return end -- the worker is stopping
    end
end

-- While the watch is quiet, a cheap read now and then says whether etcd still answers.
local function probe(st)
    while sleep(PROBE_EVERY) do
        if st.watching then
            local rev, err = st.client:revision()
            if not rev then
                set_state(st, "unreachable", "probe: " .. tostring(err))
            elseif st.state == "unreachable" and st.watching then
                set_state(st, "connected")
            end
        end
    end
end

--- Worker 0, after each snapshot it applied: starts the loop the first time (with node.config_center), and
--- publishes the entries it serves again when a snapshot published elsewhere (SIGHUP, a plugin reload) was
--- built from other ones.
function _M.on_apply(cfg, info, version)
    local conf = cfg and cfg.node and cfg.node.config_center
    if not conf then return end
    local rekeyed = false
    if not S then
        S = new_state(conf, "async")
        use_keys(S, cfg.node)
        S.source = type(info) == "table" and info.source or nil
        S.revision = type(info) == "table" and tonumber(info.revision) or 0
        S.config_revision = S.revision
        if S.source == "snapshot" then set_state(S, "unreachable", info.error) end
        local timer = require("sluice.pdk.timer")
        timer.at(0, function() run(S) end)
        timer.at(0, function() probe(S) end)
        nodes.start(S)
    else
        rekeyed = use_keys(S, cfg.node) -- a SIGHUP may have added, changed or rotated the master key
    end
    S.live_fp = type(info) == "table" and info.fingerprint or nil
    local stale = false
    if version ~= S.published_version then
        S.published_fp = nil
        stale = S.live_fp ~= fingerprint(S.applied)
    end
    if S.synced and (stale or rekeyed) then
        if rekeyed then
            log.info("config center: the master keys changed (node.secrets): reading the entries again with them")
        end
        require("sluice.pdk.timer").at(0, function()
            if rekeyed then redecode(S, registry()) end
            process(S, S.revision)
        end)
    end
end

--- The etcd revision of the entity this node serves (nil when it serves none, or without a config center).
function _M.revision_of(kind, id)
    local e = S and S.applied[key_of(S.prefix, kind, id)]
    return e and e.mod_revision or nil
end

--- The etcd revision at which the config this node serves last changed (nil without a config center).
function _M.config_revision()
    return S and S.config_revision or nil
end

--- A short digest of the entries this node serves: two nodes serving the same entries show the same one.
function _M.config_fingerprint()
    local fp = S and (S.published_fp or S.live_fp)
    return fp and fp:sub(1, 12) or nil
end

--- True while this process runs a config center (worker 0).
function _M.active()
    return S ~= nil
end

-- Waits until the watch brought revision back and every worker of this node runs what was published for it (a
-- client's next request may reach any of them).
local function wait_applied(st, revision)
    local master = require("sluice.master")
    local deadline = require("sluice").now() + (st.conf.timeout or 5)
    while true do
        if st.revision >= revision and master.all_seen(st.published_version or 0) then return true end
        if require("sluice").now() >= deadline or not sleep(0.005) then return false end
    end
end

--- An Admin API write (stored: the entity in its stored form, false to delete) conditioned on expect (the
--- entity's revision the writer saw; default: the one this node saw). Returns {revision, applied, refused} |
--- nil, err, status (409: changed meanwhile; 503: etcd unreachable), extra.
function _M.write(kind, id, stored, expect)
    local st = S
    if not st then return nil, "the config center is not running on this worker", 503 end
    local key = key_of(st.prefix, kind, id)
    local seen = st.desired[key]
    local rev = expect or (seen and seen.mod_revision) or 0
    local r, err, unreachable
    if stored then
        local value, eerr = cjson.encode(stored)
        if not value then return nil, "cannot encode the entity: " .. tostring(eerr), 500 end
        r, err, unreachable = st.client:put_if(key, value, rev)
    else
        r, err, unreachable = st.client:delete_if(key, rev)
    end
    if not r then
        local e = tostring(err)
        if e:lower():find("time", 1, true) then -- sent, maybe applied, no answer: say so, do not guess
            return nil, "config center: " .. e .. "; etcd did not confirm the change: it may or may not have been "
                .. "made (GET it before trying again)", 504
        end
        return nil, "config center: " .. e .. "; nothing changed", unreachable and 503 or 502
    end
    if not r.ok then
        return nil, format("changed by another writer: etcd has revision %d of it, this change was based on %s; "
            .. "read it again and retry", r.current, rev == 0 and "it not existing" or ("revision " .. rev)), 409,
            { revision = r.current }
    end
    local applied = wait_applied(st, r.revision)
    local ref = st.refused[key]
    return { revision = r.revision, applied = applied, version = st.published_version,
             refused = ref and (ref.revision == r.revision or ref.deleted) and ref.error or nil }
end

--- The config center's part of GET /admin/status.
function _M.status()
    local st = S
    if not st then return nil end
    local refused = {}
    for _, r in pairs(st.refused) do refused[#refused + 1] = r end
    sort(refused, function(a, b) return a.key < b.key end)
    return { kind = "etcd", state = st.state, since = st.since, endpoint = st.client:endpoint(),
             endpoints = st.conf.endpoints, prefix = st.prefix, revision = st.revision,
             last_error = st.state ~= "connected" and st.last_error or nil, started_from = st.source,
             entries = (function() local n = 0 for _ in pairs(st.applied) do n = n + 1 end return n end)(),
             refused = refused, snapshot_file = st.conf.snapshot_file }
end

return _M

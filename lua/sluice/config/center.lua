-- The config center (docs/cluster.md): with node.config_center, a node's entities live in etcd under a prefix and
-- its YAML file holds only the node settings. Keys and values:
--   PREFIX/routes/ID  PREFIX/upstreams/ID  PREFIX/providers/NAME  PREFIX/consumers/NAME
--   PREFIX/consumer_groups/NAME  PREFIX/plugin_metadata/PLUGIN  PREFIX/global_plugins
-- each holding the entity as JSON (the Admin API's body, in its stored form: sluice.config.store codecs).
--
-- Where each part runs:
--  * the main thread, before the workers: the first load (etcd; else the local snapshot of the last config seen;
--    else the node refuses to start): initial(), through the blocking transport (sluice.config.etcd "sync").
--  * worker 0 (beside the Admin API): the watch loop (run), Admin API writes (write), GET /admin/status (status).
--    It validates every change as the Admin API does and publishes to every worker (sluice.master.publish).
--  * `sluice etcd import FILE` (import).
--
-- What a node serves is what etcd holds minus what does not validate. `desired` is every key as etcd has it,
-- `applied` the entries the published config was built from. A change that would make the config invalid is
-- refused (logged once per key and revision, listed in GET /admin/status) and the entity keeps its last good
-- version (or stays absent); refused entries are tried again whenever anything changes, so a route written before
-- its upstream is served once the upstream is there.
local cjson = require("cjson.safe")
local etcd = require("sluice.config.etcd")
local store = require("sluice.config.store")
local config = require("sluice.config")
local schema = require("sluice.schema")
local log = require("sluice.pdk.log")

local type, pairs, ipairs, tostring, tonumber, next, pcall = type, pairs, ipairs, tostring, tonumber, next, pcall
local format, concat, sort, min = string.format, table.concat, table.sort, math.min
local is_array = schema.is_array

local vjson = require("cjson.safe").new() -- entity values: the Admin API's rules for bodies
vjson.decode_invalid_numbers(false)
vjson.decode_max_depth(100)

local _M = {}

local KINDS = { "upstreams", "providers", "consumer_groups", "plugin_metadata", "consumers", "global_plugins",
                "routes" } -- what others refer to first (import writes in this order)
local ENTITY = { routes = true, upstreams = true, providers = true, consumers = true, consumer_groups = true,
                 plugin_metadata = true }
local ID_FIELD = { routes = "id", upstreams = "id", consumers = "name" }
local LIST = { routes = true, consumers = true }
_M.KINDS = KINDS

local BACKOFF_MIN, BACKOFF_MAX = 0.1, 2 -- seconds between attempts while etcd is unreachable (doubling)
local PROBE_EVERY = 5                   -- a quiet watch cannot tell a vanished etcd: a cheap read this often
local MAX_ERROR = 1000                  -- characters of a refusal kept and logged

local S -- this process's state (one config center per process)

---------------------------------------------------------------------------------------------------------------
-- keys and entries

--- The etcd key of an entity.
function _M.key(prefix, kind, id)
    if kind == "global_plugins" then return prefix .. "/global_plugins" end
    return prefix .. "/" .. kind .. "/" .. id
end

-- kind, id of a key under prefix | nil, nil, why
local function parse_key(prefix, key)
    if key:sub(1, #prefix + 1) ~= prefix .. "/" then return nil, nil, "outside the prefix " .. prefix end
    local rest = key:sub(#prefix + 2)
    if rest == "global_plugins" then return "global_plugins", nil end
    local kind, id = rest:match("^([%w_]+)/(.+)$")
    if not kind or not ENTITY[kind] then
        return nil, nil, "not a Sluice key (expected PREFIX/<routes|upstreams|providers|consumers|consumer_groups|"
            .. "plugin_metadata>/<id> or PREFIX/global_plugins)"
    end
    local bad = config.id_error(kind, id)
    if bad then return nil, nil, "invalid id in the key: " .. bad end
    return kind, id
end

local function one_line(s)
    s = tostring(s):gsub("\n", "; ")
    if #s > MAX_ERROR then s = s:sub(1, MAX_ERROR) .. "..." end
    return s
end

-- An etcd kv as an entry {key, kind, id, value, obj, create_revision, mod_revision}; entry.err instead of obj
-- when the value is not a valid entity on its own (the Admin API's first check).
local function decode_entry(prefix, kv, reg)
    local e = { key = kv.key, value = kv.value, create_revision = kv.create_revision, mod_revision = kv.mod_revision }
    local kind, id, why = parse_key(prefix, kv.key)
    if not kind then e.err = why return e end
    e.kind, e.id = kind, id
    local t, jerr = vjson.decode(kv.value)
    if type(t) ~= "table" or (next(t) ~= nil and is_array(t)) then
        e.err = "the value is not a JSON object" .. (jerr and (" (" .. tostring(jerr) .. ")") or "")
        return e
    end
    local obj, derr = store.decode(kind, id, t)
    if not obj then e.err = derr return e end
    local idf = ID_FIELD[kind]
    if idf then
        if obj[idf] ~= nil and obj[idf] ~= id then
            e.err = format("%s %s does not match the id in the key (%q)", idf, cjson.encode(obj[idf]) or "?", id)
            return e
        end
        obj[idf] = id
    end
    local ok, res, errs = pcall(config.validate_entity, kind, id, obj, nil, { plugins = reg.for_config })
    if not ok then e.err = "cannot be checked: " .. tostring(res) return e end
    if errs then e.err = one_line(config.format_errors(errs)) return e end
    e.obj = obj
    return e
end

local function copy(set)
    local c = {}
    for k, v in pairs(set) do c[k] = v end
    return c
end

local function same(a, b)
    for k, v in pairs(a) do if b[k] ~= v then return false end end
    for k in pairs(b) do if a[k] == nil then return false end end
    return true
end

local function sorted(set)
    local list = {}
    for _, e in pairs(set) do list[#list + 1] = e end
    sort(list, function(x, y)
        if x.create_revision ~= y.create_revision then return x.create_revision < y.create_revision end
        return x.key < y.key
    end)
    return list
end

--- A short digest of a set of entries (keys and revisions): equal sets, equal configs.
local function fingerprint(set)
    local lines = {}
    for k, e in pairs(set) do lines[#lines + 1] = k .. "\t" .. tostring(e.mod_revision) end
    sort(lines)
    return require("sluice.crypto").sha256_hex(concat(lines, "\n")):sub(1, 32)
end
_M.fingerprint = fingerprint

-- The config document of a set of entries under node; where: {{path, key}} for blaming errors. Routes and
-- consumers are in creation order (etcd's create_revision), as appended through the Admin API.
local function build(node, set)
    local doc = { node = node, routes = {}, consumers = {}, upstreams = {}, providers = {}, consumer_groups = {},
                  plugin_metadata = {} }
    local where = {}
    for _, e in ipairs(sorted(set)) do
        local path
        if e.kind == "global_plugins" then
            doc.global_plugins, path = e.obj, "global_plugins"
        elseif LIST[e.kind] then
            local list = doc[e.kind]
            list[#list + 1] = e.obj
            path = e.kind .. "[" .. #list .. "]"
        else
            doc[e.kind][e.id], path = e.obj, e.kind .. "." .. e.id
        end
        where[#where + 1] = { path = path, key = e.key }
    end
    return doc, where
end

-- The key an error path belongs to (the longest entry path it starts with), or nil.
local function blame(where, path)
    local best, blen = nil, 0
    path = tostring(path or "")
    for _, w in ipairs(where) do
        local p = w.path
        if #p > blen and (path == p or path:sub(1, #p + 1) == p .. "." or path:sub(1, #p + 1) == p .. "[") then
            best, blen = w.key, #p
        end
    end
    return best
end

local function validate(doc, reg)
    return require("sluice.master").validate(doc, reg)
end

-- The set to serve: cand where it validates, else cand without the changes (against base) that break it;
-- refuse(key, entry | nil (a deletion), message) for each change left out. Returns set, doc, cfg (doc nil: no
-- change could be applied, set is base).
local function settle(base, cand, node, reg, refuse)
    local why = {} -- key -> what was wrong with its change, for the changes left out in the end
    local set, doc, cfg = copy(cand), nil, nil
    for _ = 1, 50 do -- drop the changes the errors are at; each round drops at least one
        local where, errs
        doc, where = build(node, set)
        cfg, errs = validate(doc, reg)
        if cfg then break end
        local blamed = {}
        for _, e in ipairs(errs) do
            local k = blame(where, e.path)
            if k and set[k] ~= base[k] then
                blamed[k] = blamed[k] or {}
                blamed[k][#blamed[k] + 1] = tostring(e.path) .. ": " .. tostring(e.message)
            end
        end
        if next(blamed) == nil then break end -- errors at entries that did not change: a deletion did it
        for k, msgs in pairs(blamed) do
            why[k] = concat(msgs, "; ")
            set[k] = base[k]
        end
    end
    if not cfg then -- one change at a time over base, oldest first, deletions last
        local changes = {}
        for k, e in pairs(cand) do if base[k] ~= e then changes[#changes + 1] = { key = k, e = e } end end
        for k in pairs(base) do if cand[k] == nil then changes[#changes + 1] = { key = k } end end
        sort(changes, function(a, b)
            if (a.e == nil) ~= (b.e == nil) then return a.e ~= nil end
            if a.e and a.e.mod_revision ~= b.e.mod_revision then return a.e.mod_revision < b.e.mod_revision end
            return a.key < b.key
        end)
        set, doc = copy(base), nil
        local progress = true
        while progress do -- again while some change got in: it may be what another one needed
            progress = false
            for i, ch in ipairs(changes) do
                if ch then
                    local trial = copy(set)
                    trial[ch.key] = ch.e
                    local tdoc = build(node, trial)
                    local tcfg, errs = validate(tdoc, reg)
                    if tcfg then
                        set, doc, cfg, changes[i], progress = trial, tdoc, tcfg, false, true
                    else
                        why[ch.key] = config.format_errors(errs)
                    end
                end
            end
        end
    end
    for k, e in pairs(cand) do
        if set[k] ~= e then refuse(k, e, why[k] or "does not validate with the other changes") end
    end
    for k in pairs(base) do
        if cand[k] == nil and set[k] ~= nil then refuse(k, nil, why[k] or "the config needs it") end
    end
    return set, doc, cfg
end

---------------------------------------------------------------------------------------------------------------
-- state

local function new_state(conf, mode)
    local st = { conf = conf, client = etcd.new(conf, mode), desired = {}, applied = {}, refused = {},
                 revision = 0, state = "connecting", since = os.time(), source = nil }
    st.prefix = st.client.prefix
    return st
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
        kvs[i] = { key = e.key, value = e.value, create_revision = e.create_revision, mod_revision = e.mod_revision }
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
    for _, kv in ipairs(snap.kvs) do st.desired[kv.key] = decode_entry(st.prefix, kv, reg) end
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
                st.published_version, st.published_fp = version, fp
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
    local desired = {}
    for _, kv in ipairs(snap.kvs) do desired[kv.key] = decode_entry(st.prefix, kv, reg) end
    st.desired = desired
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
    local reg, top = registry(), st.revision
    for _, ev in ipairs(events) do
        local kv = type(ev) == "table" and type(ev.kv) == "table" and etcd.kv_of(ev.kv)
        if kv and kv.key and kv.mod_revision > st.revision then
            if ev.type == "DELETE" then
                st.desired[kv.key] = nil
            else
                st.desired[kv.key] = decode_entry(st.prefix, kv, reg)
            end
            if kv.mod_revision > top then top = kv.mod_revision end
        end
    end
    if #events == 0 then -- a progress notification: everything up to header.revision was sent
        local h = tonumber(type(r.header) == "table" and r.header.revision)
        if h and h > top then top = h end
    end
    if top > st.revision then process(st, top) end
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
    if not S then
        S = new_state(conf, "async")
        S.source = type(info) == "table" and info.source or nil
        S.revision = type(info) == "table" and tonumber(info.revision) or 0
        if S.source == "snapshot" then set_state(S, "unreachable", info.error) end
        local timer = require("sluice.pdk.timer")
        timer.at(0, function() run(S) end)
        timer.at(0, function() probe(S) end)
    end
    S.live_fp = type(info) == "table" and info.fingerprint or nil
    if version ~= S.published_version then
        S.published_fp = nil
        if S.synced and S.live_fp ~= fingerprint(S.applied) then
            require("sluice.pdk.timer").at(0, function() process(S, S.revision) end)
        end
    end
end

--- The etcd revision of the entity this node serves (nil when it serves none, or without a config center).
function _M.revision_of(kind, id)
    local e = S and S.applied[_M.key(S.prefix, kind, id)]
    return e and e.mod_revision or nil
end

--- True while this process runs a config center (worker 0).
function _M.active()
    return S ~= nil
end

-- Waits until the watch brought revision back and this worker runs what was published for it.
local function wait_applied(st, revision)
    local base = require("sluice.pdk.base")
    local deadline = require("sluice").now() + (st.conf.timeout or 5)
    while true do
        if st.revision >= revision and base.seen_version() >= (st.published_version or 0) then return true end
        if require("sluice").now() >= deadline or not sleep(0.005) then return false end
    end
end

--- An Admin API write (stored: the entity in its stored form, false to delete) conditioned on expect (the
--- entity's revision the writer saw; default: the one this node saw). Returns {revision, applied, refused} |
--- nil, err, status (409: changed meanwhile; 503: etcd unreachable), extra.
function _M.write(kind, id, stored, expect)
    local st = S
    if not st then return nil, "the config center is not running on this worker", 503 end
    local key = _M.key(st.prefix, kind, id)
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
        return nil, "config center: " .. tostring(err) .. "; nothing changed", unreachable and 503 or 502
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

---------------------------------------------------------------------------------------------------------------
-- `sluice etcd import FILE`

-- Do two stored values hold the same entity? Whatever the order of keys in the text, with or without the id
-- field the key already gives.
local function same_entity(kind, id, a, b)
    if a == b then return true end
    local x, y = vjson.decode(a), vjson.decode(b)
    if type(x) ~= "table" or type(y) ~= "table" then return false end
    local idf = ID_FIELD[kind]
    if idf then
        if x[idf] == nil then x[idf] = id end
        if y[idf] == nil then y[idf] = id end
    end
    return schema.deep_equal(x, y)
end

--- Writes the entities of a validated config (cfg.raw) to etcd under conf's prefix. mode "replace" also deletes
--- keys the file does not have; "merge" keeps them. Returns a summary {put, deleted, unchanged, revision} | nil,
--- err. Main thread / command line only (blocking).
function _M.import(conf, cfg, mode, reg, node)
    local client = etcd.new(conf, "sync")
    local cur, err = client:range_prefix()
    if not cur then return nil, "cannot read etcd: " .. tostring(err) end
    local have = {}
    for _, kv in ipairs(cur.kvs) do have[kv.key] = kv end
    local want, order = {}, {}
    for _, kind in ipairs(KINDS) do
        local raw = cfg.raw[kind]
        if kind == "global_plugins" then
            if type(raw) == "table" and next(raw) ~= nil then
                order[#order + 1] = { kind = kind, obj = raw }
            end
        else
            local ids = {}
            for id in pairs(raw or {}) do ids[#ids + 1] = id end
            if kind == "routes" or kind == "consumers" then -- keep the file's order: it is the creation order
                ids = {}
                for _, n in ipairs(cfg[kind]) do ids[#ids + 1] = n[ID_FIELD[kind]] end
            else
                sort(ids)
            end
            for _, id in ipairs(ids) do order[#order + 1] = { kind = kind, id = id, obj = raw[id] } end
        end
    end
    local ops, sum = {}, { put = 0, deleted = 0, unchanged = 0 }
    for _, o in ipairs(order) do
        local key = _M.key(client.prefix, o.kind, o.id)
        local stored, serr = store.encode(o.kind, o.id, o.obj)
        if not stored then return nil, key .. ": " .. tostring(serr) end
        local value = cjson.encode(stored)
        want[key] = true
        if have[key] and same_entity(o.kind, o.id, have[key].value, value) then
            sum.unchanged = sum.unchanged + 1
        else
            ops[#ops + 1] = { put = key, value = value }
            sum.put = sum.put + 1
        end
    end
    if mode == "merge" then -- the result must validate as a whole
        local st = new_state(conf, "sync")
        for _, kv in ipairs(cur.kvs) do st.desired[kv.key] = decode_entry(st.prefix, kv, reg) end -- then the changes
        for _, op in ipairs(ops) do
            st.desired[op.put] = decode_entry(st.prefix, { key = op.put, value = op.value, create_revision = 0,
                                                           mod_revision = 0 }, reg)
        end
        local set = {} -- entries already in etcd that nodes refuse on their own stay refused: not checked here
        for k, e in pairs(st.desired) do if e.obj then set[k] = e end end
        local ok, verrs = validate(build(node, set), reg)
        if not ok then
            return nil, "the merged config would not be valid, nothing written:\n" .. config.format_errors(verrs)
        end
    else
        local dels, rank = {}, {}
        for i, kind in ipairs(KINDS) do rank[kind] = i end
        for key in pairs(have) do
            if not want[key] then
                local kind = parse_key(client.prefix, key)
                dels[#dels + 1] = { key = key, rank = rank[kind] or #KINDS + 1 }
            end
        end
        sort(dels, function(a, b) -- what refers to others first: routes before the upstreams they name
            if a.rank ~= b.rank then return a.rank > b.rank end
            return a.key < b.key
        end)
        for i, d in ipairs(dels) do dels[i] = d.key end
        for _, key in ipairs(dels) do ops[#ops + 1] = { delete = key } sum.deleted = sum.deleted + 1 end
    end
    sum.revision = cur.revision
    for i = 1, #ops, 100 do -- etcd's default --max-txn-ops is 128
        local batch = {}
        for j = i, min(i + 99, #ops) do batch[#batch + 1] = ops[j] end
        local r, terr = client:txn(batch)
        if not r then
            return nil, format("etcd refused the write after %d of %d changes: %s", i - 1, #ops, tostring(terr))
        end
        sum.revision = r.revision
    end
    return sum
end

return _M

-- The Admin API (docs/admin-api.md), served by worker 0 on node.admin.listen.
--
--   GET    /admin/{kind}            list (routes upstreams providers consumers consumer_groups plugin_metadata)
--   GET    /admin/{kind}/{id}       one entity, as written (secrets redacted)
--   PUT    /admin/{kind}/{id}       create (201) or replace (200)
--   DELETE /admin/{kind}/{id}       delete (409 while other entities still use it)
--   GET|PUT /admin/global_plugins, GET /admin/plugins, POST /admin/plugins/reload, GET /admin/status
--   GET /metrics, GET /admin/usage, /dashboard: sluice.admin.obs (docs/observability.md)
--   POST   /admin/consumers/{id}/keys   a generated key (the consumer created when absent), shown once
--   GET    /admin/consumers/{id}/usage  budgets: spend and what remains;  GET /admin/limits: limiter stats
--   GET|DELETE /admin/cache[/routes/ID | /keys/KEY]   ai-cache: what it holds, purges (sluice.admin.cache)
--
-- Consumer keys are kept as SHA-256 digests: a plain key sent with PUT is hashed before it is validated,
-- written to the state file or published, and no answer ever carries a key (except a generated one, once).
--
-- A change is checked twice (the entity alone, then the whole new document), written to the state file,
-- and only then published to every worker. Publishing is asynchronous, so the last document published here
-- is kept as `pending` (with the plugin registry it was validated with) and later changes and reads build on it
-- until this worker has dealt with it. A plugin reload loads the new code beside the running one, validates the
-- live document with it, publishes only then, and answers once every worker said what it runs.
-- Its own cjson instance: request bodies may not use NaN/Infinity/hex numbers (they could not be written back
-- out as JSON: the snapshot and the state file would fail after validation), nor nest deeper than 100 levels.
local cjson = require("cjson.safe").new()
cjson.decode_invalid_numbers(false)
cjson.decode_max_depth(100)
local bit = require("bit")
local config = require("sluice.config")
local schema = require("sluice.schema")
local plugins = require("sluice.plugins")
local request = require("sluice.pdk.request")
local base = require("sluice.pdk.base")
local store = require("sluice.config.store")
local secrets = require("sluice.secrets")
local audit = require("sluice.admin.audit")

local type, pairs, ipairs, tostring, next, pcall, require = type, pairs, ipairs, tostring, next, pcall, require
local byte, format, concat, sort = string.byte, string.format, table.concat, table.sort
local bor, bxor = bit.bor, bit.bxor
local deep_copy, is_array = schema.deep_copy, schema.is_array

local _M = {}

local ID_FIELD = { routes = "id", upstreams = "id", providers = false, consumers = "name", consumer_groups = false,
                   plugin_metadata = false }
local SINGULAR = { routes = "route", upstreams = "upstream", providers = "provider", consumers = "consumer",
                   consumer_groups = "consumer group", plugin_metadata = "plugin metadata",
                   global_plugins = "global plugins" }
local REDACTED = "***"
local JSON_HEADERS = { ["content-type"] = "application/json" }
local EMPTY_LIST = "\0empty-list\0" -- cjson 2.1.0 writes {} for an empty table; see encode()

local with_new_key -- defined with the key endpoints below
local pending -- { doc, cfg, version, reg }: published from here, maybe not applied by this worker yet
local caller = {} -- the running request's admin key name and client address (sluice.admin.audit)
local RELOAD_WAIT = 5 -- seconds a reload waits for every worker's report

---------------------------------------------------------------------------------------------------------------
-- helpers

local function encode(body)
    local s, err = cjson.encode(body)
    if not s then return nil, err end
    return (s:gsub('"\\u0000empty%-list\\u0000"', "[]"))
end

local function list_of(t)
    return #t > 0 and t or EMPTY_LIST
end

local function reply(status, body)
    local s, err = encode(body)
    if not s then
        status, s = 500, encode({ error = { message = "cannot encode response: " .. tostring(err) } })
    end
    return status, s, JSON_HEADERS
end

local function fail(status, msg, details)
    return reply(status, { error = { message = msg, details = details and list_of(details) or nil } })
end

--- Compares two strings in time that depends only on their lengths (every byte is looked at).
function _M.secure_equal(a, b)
    if type(a) ~= "string" or type(b) ~= "string" then
        return false
    end
    local la, lb = #a, #b
    local n = la > lb and la or lb
    local diff = bxor(la, lb)
    for i = 1, n do
        diff = bor(diff, bxor(byte(a, i) or 0, byte(b, i) or 0))
    end
    return diff == 0 and la > 0
end

local function state()
    return base.live_state() -- the worker's live config (installed by sluice.worker)
end

-- The document, cfg and plugin registry changes build on: ours if this worker has not looked at it yet, else
-- what the worker runs.
local function current()
    if pending and base.seen_version() < pending.version then
        return pending.doc, pending.cfg, pending.reg
    end
    pending = nil
    local st = base.live_state()
    if not st then return nil end
    return st.doc, st.cfg, plugins.current()
end

-- Finds an entity in doc[kind] (a list for routes/consumers, a map otherwise); returns obj, key.
local function find(doc, kind, id)
    local coll = doc[kind]
    if type(coll) ~= "table" then return nil end
    local idf = ID_FIELD[kind]
    if idf and next(coll) ~= nil and is_array(coll) then
        for i, e in ipairs(coll) do
            if type(e) == "table" and e[idf] == id then return e, i end
        end
        return nil
    end
    if coll[id] ~= nil then return coll[id], id end
    return nil
end

-- Entities of a kind as { id, obj } sorted the way the document has them (lists keep their order).
local function entities(doc, kind)
    local coll, out = doc[kind], {}
    if type(coll) ~= "table" then return out end
    local idf = ID_FIELD[kind]
    if idf and next(coll) ~= nil and is_array(coll) then
        for _, e in ipairs(coll) do
            if type(e) == "table" then out[#out + 1] = { id = e[idf], obj = e } end
        end
    else
        for id, e in pairs(coll) do out[#out + 1] = { id = id, obj = e } end
        sort(out, function(a, b) return tostring(a.id) < tostring(b.id) end)
    end
    return out
end

-- Sets (obj) or removes (nil) an entity in doc, in place.
local function put(doc, kind, id, obj)
    local coll = doc[kind]
    local idf = ID_FIELD[kind]
    local as_list = kind == "routes" or kind == "consumers"
    if type(coll) ~= "table" or (next(coll) == nil) then
        coll = {}
        doc[kind] = coll
    elseif next(coll) ~= nil and not is_array(coll) then
        as_list = false
    end
    if as_list then
        local _, at = find(doc, kind, id)
        if obj == nil then
            if at then table.remove(coll, at) end
        else
            coll[at or #coll + 1] = obj
        end
    else
        if obj ~= nil and idf and obj[idf] == nil then obj[idf] = id end
        coll[id] = obj
    end
end

-- Plugin schemas of the registry changes are validated with (which plugin config fields are secret).
local function schema_of(reg)
    return secrets.schema_lookup(function(n) return (reg or plugins.current()):get(n) end)
end

-- Secrets are never answered: schema `secret = true` fields (provider credentials, plugin secrets) and keys.
local function redact(kind, obj, id, reg)
    if type(obj) ~= "table" then return obj end
    obj = secrets.redact(kind, obj, schema_of(reg), id)
    if kind == "consumers" and type(obj.keys) == "table" then
        obj = deep_copy(obj)
        for i in ipairs(obj.keys) do obj.keys[i] = REDACTED end
    end
    return obj
end

-- A client that GETs an entity and PUTs it back sends "***" for secrets: keep the stored values.
local function unredact(kind, obj, old, id, reg)
    if type(old) ~= "table" then return end
    secrets.unredact(kind, obj, old, schema_of(reg), id)
    if kind == "consumers" and type(obj.keys) == "table" and type(old.keys) == "table" then
        for i, k in ipairs(obj.keys) do
            if k == REDACTED and old.keys[i] ~= nil then obj.keys[i] = old.keys[i] end
        end
    end
end

--- The plugin registry a change made here was validated with while this worker has not applied it yet, or nil
--- (the config center publishes with it too: sluice.config.center).
function _M.pending_registry()
    return pending and base.seen_version() < pending.version and pending.reg or nil
end

local function what(kind, id)
    return kind == "global_plugins" and "global plugins" or format("%s %q", SINGULAR[kind], id)
end

-- Stores a change through the config's backend (sluice.config.store: the state file, or etcd with node.config_center)
-- and, unless the backend's own path publishes it (etcd: the watch, on every node), publishes the new document
-- (validated with registry reg). expect: the entity's revision the writer based the change on (etcd). Returns the
-- response.
local function commit(doc, cfg, reg, kind, id, obj, status, body, expect)
    local backend, berr = store.backend(cfg)
    if not backend then
        return fail(500, berr)
    end
    if expect and not backend.publishes then
        return fail(400, "If-Match needs a config center (node.config_center): the state file keeps no revisions")
    end
    -- the audit line first (who, what, before/after with secrets redacted): a change that cannot be audited is not made
    local cur = current()
    local before = cur and (kind == "global_plugins" and cur.global_plugins or find(cur, kind, id)) or nil
    local aok, aerr = audit.change(cfg.node, caller.who, caller.client, kind, id, before, obj or nil, schema_of(reg))
    if not aok then
        return fail(500, "change not applied: " .. tostring(aerr))
    end
    local res, err, code, extra = backend:put(kind, id, obj, { expect = expect, node = cfg.node, plugins = reg })
    if not res then
        audit.failed(cfg.node, caller.who, kind, id, err)
        if code == 409 then
            return reply(409, { error = { message = what(kind, id) .. " was " .. tostring(err) },
                                revision = extra and extra.revision })
        end
        return fail(code or 500, err)
    end
    if backend.publishes then
        body.revision, body.version = res.revision, res.version
        if res.refused then
            body.error = { message = format("written to etcd (revision %d) but refused by this node, which keeps "
                .. "its last good config: %s", res.revision, res.refused) }
            return reply(202, body)
        elseif not res.applied then
            body.error = { message = format("written to etcd (revision %d); not applied on this node yet (see "
                .. "GET /admin/status)", res.revision) }
            return reply(202, body)
        end
        return reply(status, body)
    end
    local version, perr = require("sluice.master").publish(doc, reg)
    if not version then
        audit.failed(cfg.node, caller.who, kind, id, perr)
        return fail(500, "change persisted but not published: " .. tostring(perr))
    end
    pending = { doc = doc, cfg = cfg, version = version, reg = reg }
    body.version = version
    return reply(status, body)
end

local function invalid(kind, errs)
    local details = {}
    for i, e in ipairs(errs) do details[i] = { path = e.path, message = e.message } end
    return fail(400, "invalid " .. (SINGULAR[kind] or kind), details)
end

-- Validates the change alone and in the whole document, then commits it.
local function change(kind, id, obj, extra, expect)
    local doc, cfg, reg = current()
    if not doc then return fail(503, "no configuration loaded yet") end
    local old = kind == "global_plugins" and doc.global_plugins or find(doc, kind, id)
    if obj ~= nil then
        local idf = ID_FIELD[kind]
        if idf and type(obj) == "table" and not is_array(obj) and obj[idf] == nil then obj[idf] = id end
        if type(obj) == "table" then unredact(kind, obj, old, id, reg) end
        if kind == "consumers" then config.hash_keys(obj) end -- only digests are kept (memory, state file)
        local _, errs = config.validate_entity(kind, id, obj, cfg, { plugins = reg.for_config })
        if errs then return invalid(kind, errs) end
    elseif old == nil then
        return fail(404, format("%s %q not found", SINGULAR[kind], id))
    else
        -- the same references the config checker resolves (config.resolve_refs), so the two cannot disagree
        local users = config.users_of(cfg, kind, id)
        if #users > 0 then
            local details = {}
            for i, u in ipairs(users) do details[i] = { path = u:match("%((.*)%)$") or "", message = u } end
            return fail(409, format("%s %q is still used by: %s", SINGULAR[kind], id, concat(users, ", ")), details)
        end
    end
    local new = deep_copy(doc)
    if kind == "global_plugins" then
        new.global_plugins = obj
    else
        put(new, kind, id, deep_copy(obj))
    end
    local ncfg, errs = require("sluice.master").validate(new, reg)
    if not ncfg then return invalid(kind, errs) end
    if obj == nil then
        return commit(new, ncfg, reg, kind, id, false, 200, { deleted = true, id = id }, expect)
    end
    local status = (old == nil and kind ~= "global_plugins") and 201 or 200 -- global plugins always exist
    local body = { [kind == "global_plugins" and "global_plugins" or "item"] = redact(kind, obj, id, reg) }
    for k, v in pairs(extra or {}) do body[k] = v end
    return commit(new, ncfg, reg, kind, id, obj, status, body, expect)
end

local function body_json(ctx)
    local body = request.get_body(ctx)
    if body == nil or body == "" then return nil, "empty body, expected a JSON object" end
    local t, err = cjson.decode(body)
    if t == nil then return nil, "invalid JSON: " .. tostring(err) end
    if type(t) ~= "table" or (next(t) ~= nil and is_array(t)) then return nil, "expected a JSON object" end
    return t
end

-- The revision an If-Match header names ("12" or 12): number | nil | false, error response.
local function if_match(ctx)
    local v = request.get_header("if-match", ctx)
    if v == nil then return nil end
    local n = type(v) == "string" and tonumber(v:match('^%s*"?(%d+)"?%s*$'))
    if not n or n > 2 ^ 53 then
        return false, fail(400, "If-Match must be an entity's revision (a number, as GET returns it)")
    end
    return n
end

-- The etcd revision of an entity (with a config center), for GET and If-Match.
local function revision_of(kind, id)
    return require("sluice.config.center").revision_of(kind, id)
end

---------------------------------------------------------------------------------------------------------------
-- endpoints

-- A new API key: "sk-sluice-" and 32 base64url characters (192 random bits from the kernel).
local function new_key()
    local crypto = require("sluice.crypto")
    local raw = crypto.random(24)
    return raw and ("sk-sluice-" .. crypto.b64url_encode(raw)) or nil
end

-- Creates consumer id with obj (or adds a key to the existing one) with a generated key, answered once: only
-- its digest is kept.
with_new_key = function(id, obj, expect)
    local key = new_key()
    if not key then return fail(500, "cannot read random bytes for a key") end
    if type(obj.keys) ~= "table" then obj.keys = {} end
    obj.keys[#obj.keys + 1] = key
    return change("consumers", id, obj, { key = key, message = "the key is shown only this once: store it now" },
        expect)
end

-- POST /admin/consumers/{id}/keys: a generated key for a consumer (created when absent), answered once.
local function consumer_keys(method, id, ctx)
    if method ~= "POST" then return fail(405, "method not allowed (POST)") end
    local bad = config.id_error("consumers", id)
    if bad then return fail(400, "invalid id " .. format("%q", id:sub(1, 300)) .. ": " .. bad) end
    local doc = current()
    if not doc then return fail(503, "no configuration loaded yet") end
    local old = find(doc, "consumers", id)
    local obj = old and deep_copy(old) or { name = id }
    local body = request.get_body(ctx)
    if body and body ~= "" and old then
        return fail(400, "the consumer exists: POST without a body adds a key; PUT changes its other fields")
    elseif body and body ~= "" then
        local t, err = body_json(ctx)
        if not t then return fail(400, err) end
        obj = t
    end
    return with_new_key(id, obj)
end

-- GET /admin/consumers/{id}/usage: spend and what remains of the consumer's budgets and its groups'.
local function consumer_usage(method, id)
    if method ~= "GET" then return fail(405, "method not allowed (GET)") end
    local st = state()
    local cfg = st and st.cfg
    if not cfg then return fail(503, "no configuration loaded yet") end
    local c
    for _, e in ipairs(cfg.consumers) do
        if e.name == id then c = e end
    end
    if not c then return fail(404, format("consumer %q not found", id)) end
    local budget = require("sluice.limits.budget")
    local now = require("sluice").time()
    local list, err = budget.usage(cfg, c, now)
    if not list then return fail(503, "cannot read the budget counters: " .. tostring(err)) end
    return reply(200, { consumer = id, groups = list_of(c.groups or {}), budgets = list_of(list),
                        store = budget.store_conf(cfg).policy or "local" })
end

-- GET /admin/limits: the limit plugins' counters of memcached trouble (metric-ready, summed over workers).
local function limits_stats(method)
    if method ~= "GET" then return fail(405, "method not allowed (GET)") end
    local mc = require("sluice.pdk.memcached")
    return reply(200, { stats = require("sluice.limits").stats(), memcached_circuit = mc.circuit() })
end

local function entity(method, kind, id, ctx)
    local bad = config.id_error(kind, id)
    if bad then
        return fail(400, "invalid id " .. format("%q", id:sub(1, 300)) .. ": " .. bad)
    end
    if method == "GET" then
        local doc = current()
        if not doc then return fail(503, "no configuration loaded yet") end
        local obj = find(doc, kind, id)
        if obj == nil then return fail(404, format("%s %q not found", SINGULAR[kind], id)) end
        return reply(200, { item = redact(kind, obj, id), revision = revision_of(kind, id) })
    elseif method == "PUT" or method == "DELETE" then
        local expect, mb, bs, bh = if_match(ctx)
        if expect == false then return mb, bs, bh end
        if method == "DELETE" then return change(kind, id, nil, nil, expect) end
        local obj, err = body_json(ctx)
        if not obj then return fail(400, err) end
        if kind == "consumers" and obj.generate_key ~= nil then
            local gen = obj.generate_key
            obj.generate_key = nil
            if gen == true then
                return with_new_key(id, obj, expect)
            elseif gen ~= false then
                return fail(400, "generate_key must be true or false")
            end
        end
        return change(kind, id, obj, nil, expect)
    end
    return fail(405, "method not allowed (GET, PUT, DELETE)")
end

local function collection(method, kind)
    if method ~= "GET" then return fail(405, "method not allowed (GET; PUT /admin/" .. kind .. "/{id} to create)") end
    local doc = current()
    if not doc then return fail(503, "no configuration loaded yet") end
    local list = {}
    for i, e in ipairs(entities(doc, kind)) do
        local obj = redact(kind, e.obj, e.id)
        if not ID_FIELD[kind] and type(obj) == "table" then
            obj = deep_copy(obj)
            obj.name = obj.name or e.id -- map entries carry their name in the key
        end
        list[i] = obj
    end
    return reply(200, { list = list_of(list), total = #list })
end

local function global_plugins(method, ctx)
    if method == "GET" then
        local doc = current()
        if not doc then return fail(503, "no configuration loaded yet") end
        return reply(200, { global_plugins = redact("global_plugins", doc.global_plugins or {}),
                            revision = revision_of("global_plugins") })
    elseif method == "PUT" then
        local expect, bad, bs, bh = if_match(ctx)
        if expect == false then return bad, bs, bh end
        local obj, err = body_json(ctx)
        if not obj then return fail(400, err) end
        return change("global_plugins", nil, obj, nil, expect)
    end
    return fail(405, "method not allowed (GET, PUT)")
end

-- What each worker runs (its last report); the Admin API shows every worker, not only this one.
local function workers()
    local n = require("sluice.core").sl_worker_count()
    local list = require("sluice.master").reports(n)
    local out = {}
    for i, r in ipairs(list) do
        out[i] = { id = r.id, config_version = r.config_version, plugin_version = r.plugin_version, error = r.error }
    end
    return out, list
end

local function plugin_info(reg, name)
    local e, err = reg:entry(name)
    local loaded = e ~= nil
    if not e then e, err = reg:peek(name) end -- a file added since the registry was loaded: shown, not kept
    if not e then return { name = name, error = tostring(err) } end
    local p = e.plugin
    if not p then return { name = name, error = tostring(e.err), file = e.file } end
    local phases = {}
    for _, ph in ipairs(plugins.PHASES) do
        if type(p[ph]) == "function" then phases[#phases + 1] = ph end
    end
    local info = { name = name, priority = p.priority, version = p.version and tostring(p.version) or nil,
                   phases = list_of(phases), file = e.file, loaded = loaded }
    if p.schema and encode(p.schema) then info.schema = p.schema end
    return info
end

local function list_plugins(method)
    if method ~= "GET" then return fail(405, "method not allowed (GET)") end
    local reg = plugins.current()
    local list = {}
    for i, name in ipairs(reg:names()) do list[i] = plugin_info(reg, name) end
    return reply(200, { list = list_of(list), total = #list, plugin_version = reg.version, workers = workers() })
end

-- Config errors of a reload, each with the plugin it is about (the name after "plugins." / "plugin_metadata.").
local function plugin_errors(errs)
    local out = {}
    for i, e in ipairs(errs) do
        local p = tostring(e.path or "")
        out[i] = { plugin = p:match("plugins%.([%w_%-]+)") or p:match("^plugin_metadata%.([%w_%-]+)"),
                   path = p, message = tostring(e.message) }
    end
    return out
end

-- Waits (yielding) until every worker has looked at snapshot version, at most RELOAD_WAIT seconds; the reports.
local function wait_workers(version)
    local timer = require("sluice.pdk.timer")
    local deadline = require("sluice").now() + RELOAD_WAIT
    while true do
        local all, list = require("sluice.master").all_seen(version)
        if all or require("sluice").now() >= deadline then
            return all, list
        end
        timer.sleep(0.01)
    end
end

local function reload_plugins(method)
    if method ~= "POST" then return fail(405, "method not allowed (POST)") end
    local doc, cfg, cur = current()
    if not doc then return fail(503, "no configuration loaded yet") end
    local master = require("sluice.master")
    local log = require("sluice.pdk.log")
    -- the plugins loaded here (those configs used), from disk again; others load when a config names them
    local staged = plugins.stage(cfg.node.plugin_paths, cur:loaded())
    local warnings = staged:errors() -- plugins that do not load; a config that uses one fails below
    local changed = staged:changes(cur)
    if #changed == 0 then
        return reply(200, { reloaded = false, changed = EMPTY_LIST, plugin_version = cur.version,
                            message = "no plugin changed on disk", warnings = #warnings > 0 and warnings or nil })
    end
    local ncfg, errs = master.validate(doc, staged)
    if not ncfg then
        local list = plugin_errors(errs)
        log.err("plugin reload refused, plugin code version ", cur.version, " kept:\n", config.format_errors(errs))
        return reply(422, { reloaded = false, plugin_version = cur.version, changed = list_of(changed),
                            errors = list, error = { message = "the new plugin code does not accept the running "
                            .. "config; nothing was changed" } })
    end
    staged.version = master.next_code_version()
    local aok, aerr = audit.reload(cfg.node, caller.who, caller.client, changed, staged.version)
    if not aok then return fail(500, "reload not made: " .. tostring(aerr)) end
    plugins.offer(staged) -- this worker applies the snapshot with the code it validated
    local version, perr = master.publish(doc, staged)
    if not version then return fail(500, "reload not published: " .. tostring(perr)) end
    pending = { doc = doc, cfg = ncfg, version = version, reg = staged }
    local all, list = wait_workers(version)
    local out, failed, switched = {}, {}, 0
    for i, r in ipairs(list) do
        out[i] = { id = r.id, config_version = r.config_version, plugin_version = r.plugin_version, error = r.error }
        if r.plugin_version == staged.version then switched = switched + 1 end
        if (r.seen or 0) >= version and (r.plugin_version ~= staged.version or r.error) then
            failed[#failed + 1] = { worker = r.id, message = r.error or "did not switch" }
        end
    end
    local body = { reloaded = switched == #list, plugin_version = staged.version, changed = list_of(changed),
                   version = version, workers = out, warnings = #warnings > 0 and warnings or nil }
    if #failed > 0 then
        body.errors = failed
        body.error = { message = format("%d of %d workers could not take plugin code version %d and keep what "
            .. "they ran (see workers)", #failed, #list, staged.version) }
        return reply(500, body)
    end
    if not all then
        body.error = { message = "not every worker confirmed within " .. RELOAD_WAIT .. " s (see workers)" }
        return reply(202, body)
    end
    log.info("plugin code version ", staged.version, " runs on every worker (changed: ", concat(changed, ", "), ")")
    return reply(200, body)
end

local function status(method)
    if method ~= "GET" then return fail(405, "method not allowed (GET)") end
    current() -- drops `pending` once applied
    local st = state()
    local ok, version = pcall(function() return require("ffi").string(require("sluice.core").sl_version()) end)
    local cfg = st and st.cfg
    local center = cfg and cfg.node.config_center and require("sluice.config.center").status()
    if center then center.refused = list_of(center.refused) end
    return reply(200, {
        node_id = require("sluice.config.nodes").id(cfg and cfg.node),
        config_center = center or { kind = cfg and cfg.node.config_center and "etcd" or "file",
                                    state = cfg and cfg.node.config_center and "starting" or nil },
        memcached = require("sluice.pdk.memcached").status(),
        cluster = require("sluice.config.nodes").status(), -- the nodes this node sees (docs/cluster.md, "Nodes")
        version = ok and version or "unknown",
        config_version = st and st.version or 0,
        pending_version = pending and pending.version or nil,
        plugin_version = plugins.current().version,
        workers = cfg and cfg.node.workers or nil,
        worker_id = base.C.sl_worker_id(),
        worker_status = workers(),
        c_routes = st and st.c_routes or nil, -- routes this worker serves without Lua (core/upstream/fastpath.c)
        state_file = cfg and not cfg.node.config_center and cfg.node.state_file or nil,
    })
end

--- Handles one Admin API request; returns status, body (JSON text), headers.
function _M.handle(ctx)
    if ctx.req.is_admin == 2 then -- node.metrics.listen (SL_LISTEN_METRICS): /metrics and nothing else
        return require("sluice.admin.obs").metrics_listener(ctx, (ctx.path or ""):gsub("%?.*$", ""))
    end
    local st = state()
    local admin = st and st.cfg and st.cfg.node.admin
    -- /metrics, /admin/usage, /dashboard: sluice.admin.obs (they also take Authorization: Bearer KEY); with named
    -- keys (node.admin.keys), the one the caller presents counts, else the first
    local obs = require("sluice.admin.obs")
    local keys = {} -- every admin key: the dashboard's login may be made with any of them
    if admin and admin.key then keys[1] = admin.key end
    for _, k in ipairs(admin and admin.keys or {}) do keys[#keys + 1] = k.key end
    local key = keys[1]
    local presented = obs.presented_key(ctx)
    for _, k in ipairs(keys) do
        if _M.secure_equal(presented, k) then key = k end
    end
    local os_, ob, oh = obs.handle(ctx, (ctx.path or ""):gsub("%?.*$", ""), key, _M.secure_equal, keys)
    if os_ then return os_, ob, oh end
    local who = audit.who(admin, request.get_header("x-api-key", ctx), _M.secure_equal)
    if not who then
        return fail(401, "missing or wrong X-API-KEY header")
    end
    caller.who, caller.client = who, request.get_client_ip(ctx) -- read by commit (no yield in between)
    local method = ctx.method
    local path = (ctx.path or ""):gsub("%?.*$", "")
    if path == "/admin/cache" or path:sub(1, 13) == "/admin/cache/" then -- ai-cache's purges
        return require("sluice.admin.cache").handle(method, path)
    end
    local a, b, c = path:match("^/admin/([^/]+)/?([^/]*)/?([^/]*)$")
    if not a then return fail(404, "not found: " .. path) end
    if a == "consumers" and b ~= "" and c == "keys" then
        return consumer_keys(method, b, ctx)
    elseif a == "consumers" and b ~= "" and c == "usage" then
        return consumer_usage(method, b)
    elseif a == "rag" then -- RAG indexes (lua/sluice/rag/admin.lua)
        local st_, body = require("sluice.rag.admin").handle(method, b, c, request.get_raw_query(ctx))
        return reply(st_, body)
    elseif a == "sessions" then -- ai-context session memory (lua/sluice/ai/session.lua)
        local st_, body = require("sluice.ai.session").admin(method, b, c)
        return reply(st_, body)
    elseif c ~= "" then
        return fail(404, "not found: " .. path)
    elseif a == "limits" and b == "" then
        return limits_stats(method)
    elseif a == "plugins" then
        if b == "" then return list_plugins(method) end
        if b == "reload" then return reload_plugins(method) end
    elseif a == "status" and b == "" then
        return status(method)
    elseif a == "global_plugins" and b == "" then
        return global_plugins(method, ctx)
    elseif ID_FIELD[a] ~= nil then
        if b == "" then return collection(method, a) end
        return entity(method, a, b, ctx)
    end
    return fail(404, "not found: " .. path)
end

return _M

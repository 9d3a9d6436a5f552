-- ai-cache: answers an AI chat request from a cache of earlier answers instead of calling the provider again.
--
--   node: {shared_dicts: {ai-cache: 64m}, memcached: {servers: ["127.0.0.1:11211"]}}
--   routes:
--     - id: chat
--       paths: ["/v1/chat/completions", "/v1/messages"]
--       plugins:
--         ai-proxy: {provider: openai-main}
--         ai-cache: {ttl: 1h, scope: consumer}
--         # semantic: {provider: openai-main, model: text-embedding-3-small, threshold: 0.95}
--
-- Runs in access after ai-proxy / ai-proxy-multi (priority 1030 < 1040): it wraps their upstream stage
-- (sluice.upstream.take_over returns the handler it replaces), so every access plugin has run and the request
-- is final when the key is made. A hit answers in the client's API (OpenAI or Anthropic, streamed or not) through
-- sluice.response, so header_filter, body_filter and log plugins see it as any answer; a miss calls the
-- provider, its answer is seen by body_filter on its way to the client and stored in log once it is whole.
-- Response header X-Sluice-Cache (conf.header): HIT | MISS | BYPASS | REFRESH; the usage record gets `cache`,
-- and on a hit the tokens and cost it saved (docs/caching.md). Helpers: sluice.cache.key (the key),
-- .store (L1 shared dict, L2 memcached, generations, purges), .coalesce (one upstream call per key and node),
-- .capture (the answer as the client got it -> the stored form), .replay (the stored form -> the client's
-- API), .semantic (the semantic cache: embeddings; prompts in the node's vector store). Purge: DELETE
-- /admin/cache (sluice.admin.cache).
local sluice = require("sluice")
local usage = require("sluice.ai.usage")
local common = require("sluice.ai.common")
local keys = require("sluice.cache.key")
local store = require("sluice.cache.store")
local coalesce = require("sluice.cache.coalesce")
local capture = require("sluice.cache.capture")
local replay = require("sluice.cache.replay")
local routes = require("sluice.cache.routes")
local stats = require("sluice.cache.stats")
local semantic_step = require("ai-cache.semantic")
local semantic = require("sluice.cache.semantic")

local response, request = sluice.response, sluice.request
local type, ipairs, next, tostring, setmetatable = type, ipairs, next, tostring, setmetatable
local concat = table.concat
local tnew = require("table.new")
local decode = require("cjson.safe").decode
local finish_usage, scan_usage = usage.finish_usage, usage.scan_usage
local null = common.null

local JSON_HEADERS = { ["content-type"] = "application/json" }
local SSE_HEADERS = { ["content-type"] = "text/event-stream", ["cache-control"] = "no-cache" }
local ZERO = { prompt_tokens = 0, completion_tokens = 0, total_tokens = 0 }

local _M = {
    name = "ai-cache",
    version = "1.0",
    priority = 1030, -- after ai-proxy (1040): its access prepared ctx.ai and took over the upstream stage
    schema = require("ai-cache.schema"),
}

function _M.check(conf)
    if conf.semantic and not conf.semantic.model then
        return nil, "semantic.model is required (the embeddings model)"
    end
    return true
end

---------------------------------------------------------------------------------------------------------------
-- per conf, once per config version

local runtimes = setmetatable({}, { __mode = "k" })

local function runtime(conf, ctx)
    local rt = runtimes[conf]
    if rt ~= nil then
        return rt
    end
    local d = sluice.shared.get(conf.shared_dict)
    if not d then -- declared by a reload: shared dicts are made at start only
        sluice.log.warn("ai-cache: shared dict ", conf.shared_dict, " does not exist (restart to create it); ",
            "requests bypass the cache")
        runtimes[conf] = false
        return false
    end
    local has_mc = routes.has_memcached(ctx.config)
    local ignore, sorted = {}, {}
    for i, f in ipairs(conf.ignore_fields) do ignore[f], sorted[i] = true, #f .. ":" .. f end
    table.sort(sorted)
    local sem = conf.semantic
    rt = { conf = conf, dict = d, ignore = ignore, ignore_sig = concat(sorted, ","), prefixes = {},
           st = store.new({ dict = d, l1 = conf.l1, l2 = conf.l2 and has_mc, ttl = conf.ttl,
                            max_size = conf.max_entry_size, compress_min = conf.compress_min }),
           index = sem and semantic.index(conf.shared_dict, sem.capacity, sem.max_entries) }
    runtimes[conf] = rt
    return rt
end

---------------------------------------------------------------------------------------------------------------
-- the decision

-- "no-store" | "no-cache" | nil from the request's Cache-Control
local function cache_control(ctx)
    local cc = request.get_header("cache-control", ctx)
    if not cc then return nil end
    cc = cc:lower()
    if cc:find("no-store", 1, true) then return "no-store" end
    if cc:find("no-cache", 1, true) or cc:find("max-age=0", 1, true) then return "no-cache" end
    return nil
end

-- Why the request is not looked up nor stored (a BYPASS), or nil.
local function bypass_reason(conf, ai, ctx)
    local ok, n, t = sluice.ai.get_sampling(ctx) -- on the lean path: without decoding the request
    if ai.op ~= "chat" or not ok then
        return "not a chat request"
    end
    if n and n > 1 then
        return "n > 1"
    end
    t = t or conf.default_temperature
    if t > conf.max_temperature then
        return "temperature above max_temperature"
    end
    return nil
end

-- The tenant part of the key: "" (global), the consumer, or the consumer's groups. A request without a consumer
-- shares only with other requests without one; a consumer without groups is its own group.
local function make_tenant(scope, c, name)
    if scope == "consumer" then
        return "c:" .. #name .. ":" .. name
    end
    local groups = type(c.groups) == "table" and c.groups or {}
    if #groups == 0 then
        return "c:" .. #name .. ":" .. name
    end
    local list = {}
    for i, g in ipairs(groups) do list[i] = tostring(g) end
    table.sort(list)
    local out = {}
    for i, g in ipairs(list) do out[i] = #g .. ":" .. g end
    return "cg:" .. table.concat(out, ",")
end

-- tenants by consumer (a config's table, the same on every request of a config version) and scope
local tenants = setmetatable({}, { __mode = "k" })

local function tenant_of(conf, ctx)
    local scope = conf.scope
    if scope == "global" then
        return "g"
    end
    local c = ctx.consumer
    local name = type(c) == "table" and type(c.name) == "string" and c.name or nil
    if not name then
        return "anonymous"
    end
    local by_scope = tenants[c]
    if not by_scope then
        by_scope = {}
        tenants[c] = by_scope
    end
    local t = by_scope[scope]
    if not t then
        t = make_tenant(scope, c, name)
        by_scope[scope] = t
    end
    return t
end

local function set_status(ctx, cs, status)
    cs.status = status
    response.set_header(cs.conf.header, status, ctx)
    local rec = sluice.ai.get_usage(ctx)
    if rec then rec.cache = status end
end

---------------------------------------------------------------------------------------------------------------
-- a hit

-- The usage record of a hit: nothing spent, what was saved.
local function record_hit(ctx, ai, u, layer, how)
    finish_usage(ctx, ai, ZERO, 200)
    local rec = ai.usage
    rec.ttft = rec.latency
    rec.cache, rec.cache_layer, rec.cache_match = "HIT", layer, how
    local p, c = u and u.prompt_tokens or 0, u and u.completion_tokens or 0
    rec.saved_prompt_tokens, rec.saved_completion_tokens, rec.saved_total_tokens = p, c,
        u and u.total_tokens or (p + c)
    local prices = ai.provider and ai.provider.price
    local price = type(prices) == "table" and (prices[ai.requested_model or ""] or prices[ai.model or ""]) or nil
    rec.saved_cost = price and (p * (price.input or 0) + c * (price.output or 0)) / 1e6 or 0
end

-- Answers from value; false when value cannot be read (then the caller goes on as for a miss).
local function serve_hit(ctx, cs, value, layer, how, key)
    local ai = ctx.ai
    local t, u
    if ai.stream or ai.api == "anthropic" then
        t = decode(value)
        if type(t) ~= "table" or type(t.choices) ~= "table" then
            return false
        end
        u = common.normalize_usage(t.usage)
    else
        u = scan_usage(value)
    end
    record_hit(ctx, ai, u, layer, how)
    cs.status = "HIT"
    response.set_header(cs.conf.header, "HIT", ctx)
    if cs.conf.expose_key then
        response.set_header(cs.conf.key_header, key, ctx)
    end
    if ai.stream then
        local body = replay.stream(ai.api, t, { include_usage = ai.include_usage, model = ai.requested_model })
        if response.stream_start(200, SSE_HEADERS, ctx) and response.stream_write(body, ctx) then
            response.stream_finish(ctx)
        end
    else
        response.send(200, replay.body(ai.api, value, t), JSON_HEADERS, ctx)
    end
    return true
end

-- Looks key (default: the request's) up; true when the request was answered from the cache.
local function try_hit(ctx, cs, how, key)
    key = key or cs.key
    local value, layer = store.get(cs.rt.st, key)
    return value ~= nil and serve_hit(ctx, cs, value, layer, how, key)
end

---------------------------------------------------------------------------------------------------------------
-- the upstream stage

-- The key prefix: namespace, generations, tenant. The last one made per namespace is kept (no string built for
-- a request like the one before).
local function prefix_of(rt, ns, gen, tenant)
    local last = rt.prefixes[ns]
    if last and last.gen == gen and last.tenant == tenant then
        return last.prefix
    end
    local prefix = "v1\0" .. ns .. "\0" .. gen .. "\0" .. tenant
    rt.prefixes[ns] = { gen = gen, tenant = tenant, prefix = prefix }
    return prefix
end

-- The request's key (sluice.cache.key), and true when that key is to be memoised once its entry is found. A body
-- still the client's JSON (ai.raw while nobody was handed the decoded table) has its key memoised by its bytes
-- once it hit: a repeated request then skips the canonical serialisation (a one-off one pays a dict lookup more).
local function key_of(ctx, rt, prefix, ai)
    local raw = ai.raw
    if not raw or rawget(ctx, "_json_out") or rawget(ctx, "json_changed") then
        return keys.of(prefix, ai.request, ai.model, rt.ignore)
    end
    local name = keys.raw_name(prefix, ai.model, rt.ignore_sig, raw)
    local key = keys.raw_lookup(rt.dict, name)
    if key then
        return key
    end
    return keys.of(prefix, ai.request, ai.model, rt.ignore), true
end

-- Memoises the key of a request whose entry was found by its canonical key (key_of said memo).
local function memoise(rt, prefix, ai, key)
    local name = keys.raw_name(prefix, ai.model, rt.ignore_sig, ai.raw) -- again: a lookup in L2 yields
    rt.dict:set(name, keys.raw_value(key), rt.conf.ttl)
end

-- Lets the requests waiting on cs's key go, once: readable when its entry can be read now.
local function release(cs, readable)
    if cs.leader then
        cs.leader = false
        coalesce.release(cs.rt.dict, cs.key, readable)
    end
end

local function upstream_stage(ctx)
    local cs = ctx.ai_cache
    local conf, ai, prev = cs.conf, ctx.ai, cs.prev
    local rt = runtime(conf, ctx)
    local ns = conf.namespace or (ctx.route and ctx.route.id) or "-"
    cs.rt, cs.ns = rt or nil, ns
    local why = not rt and "no shared dict" or bypass_reason(conf, ai, ctx)
    local control = cache_control(ctx)
    if why or control == "no-store" then
        set_status(ctx, cs, "BYPASS")
        return prev(ctx)
    end
    local prefix = prefix_of(rt, ns, store.generation(rt.dict, ns), tenant_of(conf, ctx))
    local memo
    cs.key, memo = key_of(ctx, rt, prefix, ai)
    local refresh = control == "no-cache"
    if not refresh then
        if try_hit(ctx, cs, "exact") then
            if memo then memoise(rt, prefix, ai, cs.key) end
            return
        end
        if conf.semantic and semantic_step.lookup(ctx, cs, prefix, try_hit) then return end
        if conf.coalesce then
            local d, wait = rt.dict, conf.coalesce_timeout
            if coalesce.acquire(d, cs.key, wait) then
                cs.leader = true
                -- a leader that finished between our lookup and the lock (the semantic step yields, a log phase
                -- stores after its client got the answer): its entry is in L1 now
                local value = store.get_l1(rt.st, cs.key)
                if value and serve_hit(ctx, cs, value, "l1", "exact", cs.key) then
                    release(cs, true)
                    return
                end
            else
                local r = coalesce.wait(d, cs.key, wait, ctx)
                if r == "gone" then
                    finish_usage(ctx, ai, nil, 499)
                    return
                elseif r == "done" then
                    if try_hit(ctx, cs, "coalesced") then return end
                    cs.leader = coalesce.acquire(d, cs.key, wait)
                end -- "alone", or "done" without an entry and someone else leads: go without leading
            end
        end
    elseif conf.semantic then
        semantic_step.prepare(ctx, cs, prefix)
    end
    set_status(ctx, cs, refresh and "REFRESH" or "MISS")
    if conf.expose_key then
        response.set_header(conf.key_header, cs.key, ctx)
    end
    cs.capture, cs.parts, cs.n, cs.size = true, {}, 0, 0
    return prev(ctx)
end

function _M.access(conf, ctx)
    if not ctx.ai or not sluice.upstream.taken_over(ctx) then
        return -- not an AI call, or answered already
    end
    -- room for the fields a request sets (prev, rt, ns, key, status, and capture's): grown from one, the table
    -- was rehashed three times per request
    local cs = tnew(0, 8)
    cs.conf = conf
    ctx.ai_cache = cs
    cs.prev = sluice.upstream.take_over(upstream_stage, ctx)
end

-- The answer on its way to the client, kept (up to max_entry_size) to be stored once it is whole.
function _M.body_filter(conf, ctx, chunk)
    local cs = ctx.ai_cache
    if not (cs and cs.capture) or chunk == "" then
        return
    end
    local size = cs.size + #chunk
    if size > conf.max_entry_size * 2 then -- the stored form is smaller than the SSE or Anthropic form
        cs.capture, cs.parts = false, nil
        return
    end
    local n = cs.n + 1
    cs.parts[n], cs.n, cs.size = chunk, n, size
end

-- Counts the request (sluice.cache.stats), stores a whole 200 answer, lets requests waiting on it go.
function _M.log(conf, ctx)
    local cs = ctx.ai_cache
    if not cs or not cs.rt then
        return
    end
    local ai = ctx.ai
    local rec = ai and ai.usage
    if cs.status then
        stats.count(cs.rt.dict, cs.ns, ctx.route and ctx.route.id or "", cs.status, rec)
    end
    if not cs.key then
        return
    end
    -- a 200 answer; or a stream its client closed once it had it all: SDKs stop reading at [DONE] (message_stop)
    -- and may close before the provider ends its response; capture.entry keeps only a whole stream
    local whole = rec and (rec.status == 200 and not rec.cut or ai.stream and rec.cut == "client")
    if cs.capture and whole and ctx.response and ctx.response.status == 200 then
        local n = cs.n
        local body = n == 1 and cs.parts[1] or concat(cs.parts, "", 1, n)
        local value, why = capture.entry(ai.api, ai.stream, body, rec, conf.cache_tool_calls)
        cs.parts = nil
        if value then
            local ok, err = store.put(cs.rt.st, cs.key, value, release, cs)
            if ok and cs.vector then
                semantic_step.add(cs)
            end
            if not ok then
                sluice.log.info("ai-cache: not stored (id ", ctx.request_id, "): ", err)
            elseif err then -- in L1 only: other nodes will miss it
                sluice.log.warn("ai-cache: stored on this node only (id ", ctx.request_id, "): ", err)
            end
        else
            sluice.log.debug("ai-cache: not stored (id ", ctx.request_id, "): ", why)
        end
    end
    release(cs, false)
end

-- Worker 0 of every node keeps the node in step with memcached (purges made on other nodes).
function _M.init_worker()
    if sluice.worker_id() ~= 0 then
        return
    end
    sluice.timer.every(store.SYNC, function()
        local _, cfg = sluice.each_conf("ai-cache")()
        local dicts = cfg and routes.has_memcached(cfg) and routes.dicts_in_use(cfg, true) or {}
        if next(dicts) then
            local ok, err = store.sync(dicts)
            if not ok then
                sluice.log.debug("ai-cache: sync with memcached failed: ", err)
            end
        end
    end)
end

_M.null = null
return _M

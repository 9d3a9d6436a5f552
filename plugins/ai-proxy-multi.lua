-- ai-proxy-multi: serves a route's AI requests from several provider targets, with a balancing strategy,
-- routing rules, retries and fallback before the first byte, circuit breakers, health checks and QoS.
--
--   ai-proxy-multi:
--     strategy: weighted            # weighted | priority | latency | least-inflight | cost | hash
--     targets:
--       - {provider: openai-main, weight: 3}
--       - {provider: claude, weight: 1, priority: 1, model: claude-haiku, groups: [default, fast]}
--     rules: [{name: code, prompt: "(?i)\\b(python|function|stack trace)\\b", group: code}]
--     retries: 2
--     fallback_on: [error, timeout, "429", "5xx"]
--     fallback: {group: cheap}      # or {response: "Busy, try later."} or {status: 503, retry_after: 5}
--
-- Calls go through sluice.ai.proxy (the ai-proxy runtime) in its defer_errors mode: a failure before anything
-- reached the client comes back here, and the next target (its own driver, so the body is re-translated for
-- its provider kind) gets the request. Balancing: sluice.ai.balancer; breakers, health verdicts, Retry-After
-- cool-downs: sluice.ai.breaker (shared dict `shared_dict`); concurrency limits and the priority queue:
-- sluice.ai.qos. See docs/ai-proxy-multi.md.
local sluice = require("sluice")
local ai_proxy = require("sluice.ai.proxy")
local balancer = require("sluice.ai.balancer")
local breaker = require("sluice.ai.breaker")
local qos_mod = require("sluice.ai.qos")
local common = require("sluice.ai.common")
local proxy = require("sluice.proxy")

local request, response, re, log = sluice.request, sluice.response, sluice.re, sluice.log.named("ai-proxy-multi")
local type, pairs, ipairs, tostring, tonumber, pcall, error, next = type, pairs, ipairs, tostring, tonumber, pcall,
    error, next
local min, max, huge, ceil, floor, random = math.min, math.max, math.huge, math.ceil, math.floor, math.random
local find, lower, concat, sort = string.find, string.lower, table.concat, table.sort
local now_s = sluice.now

local str = { type = "string", minLength = 1 }
local strs = { type = "array", items = str }
local pos = { type = "number", exclusiveMinimum = 0, maximum = 3600 }
local timeout = {
    type = "object",
    additionalProperties = false,
    properties = { connect = pos, send = pos, read = pos, ttft = pos, idle = pos, total = pos },
}

local schema = {
    type = "object",
    required = { "targets" },
    additionalProperties = false,
    properties = {
        strategy = { enum = { "weighted", "priority", "latency", "least-inflight", "cost", "hash" },
                     default = "weighted" },
        hash_on = { enum = { "consumer", "header", "session" }, default = "consumer" },
        hash_header = { type = "string", minLength = 1, default = "x-session-id" },
        targets = {
            type = "array", minItems = 1,
            items = {
                type = "object", required = { "provider" }, additionalProperties = false,
                properties = {
                    name = str, provider = str, model = str,
                    weight = { type = "integer", minimum = 0, maximum = 10000, default = 1 },
                    priority = { type = "integer", default = 0 },
                    groups = { type = "array", items = str, minItems = 1, default = { "default" } },
                    max_concurrency = { type = "integer", minimum = 1 },
                    timeout = timeout,
                },
            },
        },
        rules = {
            type = "array",
            items = {
                type = "object", required = { "group" }, additionalProperties = false,
                properties = {
                    name = str, group = str,
                    models = strs,                                            -- requested model (alias) is one of
                    headers = { type = "object", additionalProperties = str }, -- header value matches regex
                    consumers = strs, consumer_groups = strs,
                    prompt = str,                                             -- regex over the prompt text
                    keywords = strs,                                          -- any, case-insensitive
                    min_tokens = { type = "integer", minimum = 0 },           -- estimated prompt tokens
                    max_tokens = { type = "integer", minimum = 0 },
                },
            },
        },
        default_group = { type = "string", minLength = 1, default = "default" },
        retries = { type = "integer", minimum = 0, maximum = 10, default = 2 },
        fallback_on = { type = "array", items = { type = "string", pattern = "^[1-5x%dertimouc]+$" },
                        default = { "error", "timeout", "429", "5xx" } },
        backoff = {
            type = "object", additionalProperties = false, default = {},
            properties = {
                base = { type = "number", minimum = 0, maximum = 60, default = 0.02 },
                max = { type = "number", minimum = 0, maximum = 60, default = 1 },
                retry_after_max = { type = "number", minimum = 0, maximum = 3600, default = 2 },
                cooldown_max = { type = "number", minimum = 0, maximum = 3600, default = 60 },
            },
        },
        timeout = timeout,
        fallback = {
            type = "object", additionalProperties = false,
            properties = { group = str, response = { type = "string" }, status = { enum = { 429, 502, 503, 504 } },
                           retry_after = { type = "number", minimum = 0, maximum = 86400 } },
        },
        breaker = {
            type = "object", additionalProperties = false, default = {},
            properties = {
                failures = { type = "integer", minimum = 0, default = 5 },
                ratio = { type = "number", minimum = 0, maximum = 1, default = 0 },
                window = { type = "number", exclusiveMinimum = 0, default = 10 },
                min_requests = { type = "integer", minimum = 1, default = 10 },
                open_for = { type = "number", exclusiveMinimum = 0, default = 30 },
                half_open_requests = { type = "integer", minimum = 1, default = 1 },
                successes = { type = "integer", minimum = 1, default = 1 },
            },
        },
        health_check = {
            type = "object", additionalProperties = false,
            properties = {
                interval = { type = "number", minimum = 0.1, default = 5 },
                timeout = { type = "number", exclusiveMinimum = 0, default = 2 },
                path = str, -- GET this path on the provider's host instead of a 1-token chat request
                healthy = { type = "integer", minimum = 1, default = 2 },
                unhealthy = { type = "integer", minimum = 1, default = 2 },
            },
        },
        qos = {
            type = "object", additionalProperties = false, default = {},
            properties = {
                default_class = { type = "integer", default = 1 },
                header = str, -- a trusted header carrying the class (an integer)
                consumer_groups = { type = "object", additionalProperties = { type = "integer" } },
                queue_timeout = { type = "number", exclusiveMinimum = 0, default = 1 },
                max_queue = { type = "integer", minimum = 0, default = 100 },
                shed_status = { enum = { 429, 503 }, default = 503 },
            },
        },
        shared_dict = { type = "string", minLength = 1, default = "sluice" },
        response_headers = { type = "boolean", default = true }, -- x-sluice-route-target, x-sluice-rule
    },
}

local _M = { name = "ai-proxy-multi", version = "1.0", priority = 1040, schema = schema }

local FALLBACK_ON = { error = true, timeout = true }

--- Config checks after the schema: unique target names, known groups, valid regexes and fallback_on entries.
function _M.check(conf)
    local names, groups = {}, {}
    for i, t in ipairs(conf.targets) do
        local n = t.name or t.provider
        if names[n] and not t.name then
            n = t.provider .. "#" .. i
        end
        if names[n] then
            return nil, "targets[" .. i .. "]: duplicate target name " .. n .. " (set `name`)"
        end
        names[n] = true
        for _, g in ipairs(t.groups or { "default" }) do groups[g] = true end
    end
    local function need_group(g, where)
        if not groups[g] then
            return nil, where .. ": no target is in group " .. g
        end
        return true
    end
    local ok, err = need_group(conf.default_group or "default", "default_group")
    if not ok then return nil, err end
    for i, r in ipairs(conf.rules or {}) do
        ok, err = need_group(r.group, "rules[" .. i .. "].group")
        if not ok then return nil, err end
        for h, pat in pairs(r.headers or {}) do
            local okp, _, perr = pcall(re.find, "", pat, "jo")
            if not okp or perr then return nil, "rules[" .. i .. "].headers." .. h .. ": bad regex" end
        end
        if r.prompt then
            local okp, _, perr = pcall(re.find, "", r.prompt, "jo")
            if not okp or perr then return nil, "rules[" .. i .. "].prompt: bad regex " .. tostring(perr or _) end
        end
    end
    if conf.fallback and conf.fallback.group then
        ok, err = need_group(conf.fallback.group, "fallback.group")
        if not ok then return nil, err end
    end
    for i, f in ipairs(conf.fallback_on or {}) do
        if not (FALLBACK_ON[f] or find(f, "^[1-5]xx$") or find(f, "^[1-5]%d%d$")) then
            return nil, "fallback_on[" .. i .. "]: expected error, timeout, a status (429) or a class (5xx)"
        end
    end
    return true
end

---------------------------------------------------------------------------------------------------------------
-- runtime state of one conf (per worker, rebuilt with the config)

local runtimes = setmetatable({}, { __mode = "k" })

local function runtime(conf, cfg)
    local rt = runtimes[conf]
    if rt then
        return rt
    end
    local br, err = breaker.new(conf.shared_dict, conf.breaker)
    if not br then
        return nil, err
    end
    local q = qos_mod.new(conf.shared_dict, { max_queue = conf.qos.max_queue })
    local providers = cfg and cfg.providers or {}
    rt = { conf = conf, br = br, qos = q, targets = {}, groups = {}, serves = {}, providers = providers,
           fallback_on = {} }
    local members = {}
    local names = {}
    for i, tc in ipairs(conf.targets) do
        local name = tc.name or tc.provider
        if names[name] and not tc.name then name = tc.provider .. "#" .. i end
        names[name] = true
        local tmo = tc.timeout or conf.timeout or {}
        local prov = providers[tc.provider] or {}
        local ptmo = prov.timeout or {}
        local t = {
            name = name, provider = tc.provider, model = tc.model, weight = tc.weight or 1,
            priority = tc.priority or 0, max_concurrency = tc.max_concurrency,
            key = tc.provider .. "|" .. (tc.model or "*"),
            tconf = { model = tc.model, timeout = tc.timeout or conf.timeout },
            idle = tmo.idle,
            opts = { timeout = { connect = tmo.connect or ptmo.connect, send = tmo.send or ptmo.send,
                                 read = tmo.ttft or tmo.read or ptmo.read },
                     keepalive = prov.keepalive, tls = prov.tls },
        }
        rt.targets[i] = t
        for _, g in ipairs(tc.groups or { "default" }) do
            members[g] = members[g] or {}
            members[g][#members[g] + 1] = t
        end
    end
    for g, list in pairs(members) do
        rt.groups[g] = { name = g, targets = list, bal = balancer.new(conf.strategy, list) }
    end
    for _, f in ipairs(conf.fallback_on) do rt.fallback_on[f] = true end
    rt.rules = {}
    for i, r in ipairs(conf.rules or {}) do
        local c = { name = r.name or ("rule" .. i), group = r.group, prompt = r.prompt, headers = r.headers,
                    min_tokens = r.min_tokens, max_tokens = r.max_tokens }
        local function set(list)
            if not list then return nil end
            local s = {}
            for _, v in ipairs(list) do s[v] = true end
            return s
        end
        c.models, c.consumers, c.consumer_groups = set(r.models), set(r.consumers), set(r.consumer_groups)
        if r.keywords then
            c.keywords = {}
            for j, k in ipairs(r.keywords) do c.keywords[j] = lower(k) end
        end
        rt.rules[i] = c
    end
    runtimes[conf] = rt
    return rt
end
_M.runtime = runtime

---------------------------------------------------------------------------------------------------------------
-- routing rules

--- All text of a chat body (OpenAI or Anthropic shape): system and every message, in order.
local function prompt_text(body)
    if type(body) ~= "table" then
        return ""
    end
    local out = {}
    local sys = body.system
    if type(sys) == "string" then
        out[1] = sys
    elseif type(sys) == "table" then
        out[1] = common.content_text(sys)
    end
    if type(body.messages) == "table" then
        for _, m in ipairs(body.messages) do
            if type(m) == "table" then out[#out + 1] = common.content_text(m.content) end
        end
    elseif type(body.prompt) == "string" then
        out[#out + 1] = body.prompt
    end
    return concat(out, "\n")
end
_M.prompt_text = prompt_text

local tokens_mod
local function est_tokens(m, body)
    if not m.tokens then
        tokens_mod = tokens_mod or require("sluice.ai.tokens")
        m.text = m.text or prompt_text(body)
        m.tokens = tokens_mod.count_text(m.text)
    end
    return m.tokens
end

local function in_groups(consumer, set)
    local gs = type(consumer) == "table" and consumer.groups
    if type(gs) ~= "table" then return false end
    for _, g in ipairs(gs) do
        if set[g] then return true end
    end
    return false
end

--- The first rule of rt that matches the request (m: per-request state with requested model), or nil.
local function match_rule(rt, ctx, body, m)
    for _, r in ipairs(rt.rules) do
        local ok = true
        if r.models and not (m.requested and r.models[m.requested]) then ok = false end
        if ok and r.consumers then
            local c = ctx.consumer
            ok = type(c) == "table" and r.consumers[c.name] or false
        end
        if ok and r.consumer_groups then ok = in_groups(ctx.consumer, r.consumer_groups) end
        if ok and r.headers then
            for h, pat in pairs(r.headers) do
                local v = request.get_header(h, ctx)
                if not v or not re.find(v, pat, "jo") then ok = false break end
            end
        end
        if ok and r.prompt then
            m.text = m.text or prompt_text(body)
            ok = re.find(m.text, r.prompt, "jo") ~= nil
        end
        if ok and r.keywords then
            m.text = m.text or prompt_text(body)
            m.ltext = m.ltext or lower(m.text)
            local any = false
            for _, k in ipairs(r.keywords) do
                if find(m.ltext, k, 1, true) then any = true break end
            end
            ok = any
        end
        if ok and r.min_tokens and est_tokens(m, body) < r.min_tokens then ok = false end
        if ok and r.max_tokens and est_tokens(m, body) > r.max_tokens then ok = false end
        if ok then return r end
    end
    return nil
end
_M.match_rule = match_rule

---------------------------------------------------------------------------------------------------------------
-- choosing a target

-- state of the pick in progress (picks never yield, so one set of upvalues serves every request)
local cur_rt, cur_m, cur_now, cur_wait

local function serves(rt, t, requested)
    local k = requested or ""
    local s = rt.serves[k]
    if not s then
        s = {}
        rt.serves[k] = s
    end
    local v = s[t]
    if v == nil then
        local prov = rt.providers[t.provider]
        v = type(prov) == "table" and ai_proxy.resolve_model(t.tconf, prov, requested) ~= nil or false
        s[t] = v
    end
    return v
end

local function eligible(t)
    if t.weight <= 0 or cur_m.tried[t] or not serves(cur_rt, t, cur_m.requested) then
        return false
    end
    local st, wait = cur_rt.br:state(t.key, cur_now)
    if st == "closed" or st == "half_open" then
        return true
    end
    if wait and (cur_wait == nil or wait < cur_wait) then
        cur_wait = wait
    end
    return false
end

local function hash_key(rt, ctx, m)
    local on = rt.conf.hash_on
    if on == "consumer" then
        local c = ctx.consumer
        return type(c) == "table" and c.name or request.get_client_ip(ctx)
    end
    local v = request.get_header(rt.conf.hash_header, ctx)
    if v == nil and on == "session" and type(m.body) == "table" then
        local b = m.body
        v = type(b.user) == "string" and b.user or (type(b.metadata) == "table" and b.metadata.user_id) or nil
    end
    return v
end

local function cost_fn(rt, m)
    return function(t)
        local prov = rt.providers[t.provider]
        local price = type(prov) == "table" and prov.price
        if type(price) ~= "table" then return 0 end
        local _, served = ai_proxy.resolve_model(t.tconf, prov, m.requested)
        local p = price[t.model or m.requested or ""] or price[served or ""]
        if type(p) ~= "table" then return 0 end
        local b = type(m.body) == "table" and m.body or {}
        local out = tonumber(b.max_tokens) or tonumber(b.max_completion_tokens) or 256
        return (est_tokens(m, m.body) * (p.input or 0) + out * (p.output or 0)) / 1e6
    end
end

--- The next target of group g for request m (a half-open target counts only when a probe slot is free).
local function pick(rt, g, m, ctx, now)
    cur_rt, cur_m, cur_now, cur_wait = rt, m, now, nil
    local strategy = rt.conf.strategy
    local arg
    if strategy == "hash" then
        arg = hash_key(rt, ctx, m)
    elseif strategy == "cost" then
        m.cost = m.cost or cost_fn(rt, m)
        arg = m.cost
    end
    for _ = 1, #g.targets do
        local t = g.bal:pick(eligible, arg, now)
        if not t then
            break
        end
        if rt.br:state(t.key, now) ~= "half_open" then
            m.probe = false
            cur_m = nil
            return t
        end
        if rt.br:try_probe(t.key) then
            m.probe = true
            cur_m = nil
            return t
        end
        m.tried[t] = true -- probe slots taken: not this one now
    end
    cur_m = nil
    return nil, cur_wait
end

local function class_of(conf, ctx)
    local q = conf.qos
    local c = q.default_class or 1
    if q.header then
        local v = tonumber(request.get_header(q.header, ctx))
        if v then return v end
    end
    local map, consumer = q.consumer_groups, ctx.consumer
    if map and type(consumer) == "table" and type(consumer.groups) == "table" then
        local best
        for _, g in ipairs(consumer.groups) do
            local v = map[g]
            if v and (best == nil or v > best) then best = v end
        end
        if best then return best end
    end
    return c
end

---------------------------------------------------------------------------------------------------------------
-- the call: attempts, then degradation

local function retryable(rt, fail)
    local f = rt.fallback_on
    if fail.kind == "timeout" then return f.timeout end
    if fail.kind == "error" then return f.error end
    local s = fail.status or 0
    return f[tostring(s)] or f[tostring(floor(s / 100)) .. "xx"] or false
end

-- points ctx.ai at target t (provider, driver, model, call options) and the usage record with it
local function switch(ctx, ai, rt, m, t, deadline, now)
    local prov = rt.providers[t.provider]
    local d, err = ai_proxy.driver(prov and prov.kind)
    if not d then
        return nil, err
    end
    local name, served = ai_proxy.resolve_model(t.tconf, prov, m.requested)
    if not name then
        return nil, "model not served by " .. t.name
    end
    ai.conf, ai.provider_name, ai.provider, ai.driver = t.tconf, t.provider, prov, d
    ai.requested_model, ai.model = name, served
    local o = t.opts
    local left = deadline - now
    if left < (o.timeout.read or 60) or left < (o.timeout.connect or 5) then
        o = { timeout = { connect = min(o.timeout.connect or 5, left), send = o.timeout.send,
                          read = min(o.timeout.read or 60, left) }, keepalive = o.keepalive, tls = o.tls }
    end
    ai.call_opts, ai.idle_timeout = o, t.idle
    local rec = ai.usage
    rec.provider, rec.provider_kind, rec.requested_model, rec.model = t.provider, prov.kind, name, served
    rec.route_target = t.name
    if rt.conf.response_headers then
        response.set_header("x-sluice-route-target", t.name, ctx)
    end
    return true
end

local function static_answer(ctx, pipe, ai, text)
    local anthropic = ai.api == "anthropic"
    local state = { id = common.new_id("chatcmpl-"), created = floor(sluice.time()), model = ai.requested_model or "" }
    local zero = { prompt_tokens = 0, completion_tokens = 0, total_tokens = 0 }
    ai_proxy.finish_usage(ctx, ai, zero, 200)
    if not ai.stream then
        local resp
        if ai.op == "completions" then
            resp = { id = state.id, object = "text_completion", created = state.created, model = state.model,
                     choices = { { index = 0, text = text, finish_reason = "stop" } }, usage = zero }
        else
            resp = { id = state.id, object = "chat.completion", created = state.created, model = state.model,
                     choices = { { index = 0, message = { role = "assistant", content = text },
                                   finish_reason = "stop" } }, usage = zero }
            if anthropic then
                resp = require("sluice.ai.anthropic_api").from_openai_response(resp)
            end
        end
        return proxy.respond(ctx, pipe, 200, { ["content-type"] = "application/json" },
            common.json_encode(resp) or "{}")
    end
    local chunks = { common.chunk(state, { role = "assistant", content = text }), common.chunk(state, {}, "stop") }
    local out = {}
    if anthropic then
        local enc = require("sluice.ai.anthropic_api").stream_encoder({ model = state.model })
        for _, c in ipairs(chunks) do out[#out + 1] = enc:chunk(c) or "" end
        out[#out + 1] = enc:finish() or ""
    else
        for _, c in ipairs(chunks) do out[#out + 1] = common.encode_chunk_sse(c) end
        out[#out + 1] = common.done_sse()
    end
    if proxy.stream_start(ctx, pipe, 200, { ["content-type"] = "text/event-stream", ["cache-control"] = "no-cache" }) then
        proxy.stream_write(ctx, pipe, concat(out))
        proxy.stream_finish(ctx, pipe)
    end
end

local function degrade(ctx, pipe, ai, rt, last, wait)
    local fb = rt.conf.fallback or {}
    local rec = ai.usage
    if ctx.req.client_gone ~= 0 then
        return ai_proxy.finish_usage(ctx, ai, nil, 499)
    end
    if fb.response and ai.op ~= "embeddings" then
        rec.degraded = "static"
        if rt.conf.response_headers then response.set_header("x-sluice-route-target", "static", ctx) end
        return static_answer(ctx, pipe, ai, fb.response)
    end
    local status = fb.status or 503
    local ra = fb.retry_after or max(1, ceil(wait or (last and last.retry_after) or 1))
    local msg = "no provider could answer: " .. (last and (last.message or ("status " .. tostring(last.status)))
        or "every target is unavailable")
    rec.degraded = "error"
    ai_proxy.finish_usage(ctx, ai, nil, status)
    rec.error = msg
    ai_proxy.send_error(ctx, pipe, ai, status, msg, nil, nil, ra)
end

local function note_failure(rec, t, fail)
    local list = rec.attempts
    if not list then
        list = {}
        rec.attempts = list
    end
    list[#list + 1] = { target = t.name, status = fail.status, kind = fail.kind, error = fail.message }
end

local function run(ctx, _, pipe)
    local ai = ctx.ai
    local m = ai.multi
    local rt = m.rt
    local conf = rt.conf
    local rec = ai.usage
    ai.defer_errors = true
    local now = now_s()
    local total = conf.timeout and conf.timeout.total
    local deadline = total and (now + total) or huge
    local bo = conf.backoff
    local groups = { m.group }
    if conf.fallback and conf.fallback.group and conf.fallback.group ~= m.group then
        groups[2] = conf.fallback.group
    end
    local attempts, first, last, last_t, wait = 0, nil, nil, nil, nil
    local t = m.first
    for gi = 1, #groups do
        local g = rt.groups[groups[gi]]
        if gi > 1 then
            t = nil
            m.tried = {}
            rec.group = g.name
            rec.degraded = "group"
        end
        local n, reset = 0, false
        while n <= conf.retries do
            now = now_s()
            if now >= deadline or ctx.req.client_gone ~= 0 then break end
            if not t then
                t, wait = pick(rt, g, m, ctx, now)
                if not t and not reset and next(m.tried) then -- every target tried: once more from the top
                    reset = true
                    m.tried = {}
                    t, wait = pick(rt, g, m, ctx, now)
                end
                if not t and wait and wait <= bo.retry_after_max and now + wait < deadline then
                    sluice.sleep(wait) -- the soonest target is back within the Retry-After cap: wait for it
                    now = now_s()
                    t, wait = pick(rt, g, m, ctx, now)
                end
                if not t then break end
            end
            if attempts > 0 then
                local delay = min(bo.max, bo.base * 2 ^ (attempts - 1)) * (0.5 + random() * 0.5)
                if now + delay >= deadline then break end
                if delay > 0 then
                    sluice.sleep(delay)
                    now = now_s()
                end
            end
            local ok, serr = switch(ctx, ai, rt, m, t, deadline, now)
            if not ok then
                m.tried[t] = true
                last = { kind = "error", message = serr }
                t = nil
            else
                n, attempts = n + 1, attempts + 1
                m.tried[t] = true
                first = first or t
                rec.retries = attempts - 1
                if t ~= first then rec.fallbacks = rec.fallbacks + 1 end
                local slot = false
                if t.max_concurrency then
                    local q = conf.qos
                    local got, why = rt.qos:acquire(t.key, t.max_concurrency, m.class, min(deadline, now + q.queue_timeout))
                    if not got then
                        rec.shed = why
                        ai_proxy.finish_usage(ctx, ai, nil, q.shed_status)
                        rec.error = "shed (" .. why .. ")"
                        return ai_proxy.send_error(ctx, pipe, ai, q.shed_status,
                            "the service is busy, retry later (priority class " .. m.class .. ")", nil, nil, 1)
                    end
                    slot = true
                end
                t.inflight = t.inflight + 1
                local started, started_wall = now_s(), sluice.time()
                local pok, res, fail = pcall(ai_proxy.run, ctx, nil, pipe)
                t.inflight = t.inflight - 1
                if slot then rt.qos:release(t.key) end
                local done = now_s()
                if not pok then
                    if m.probe then rt.br:record(t.key, false, done, true) end
                    error(res, 0)
                end
                if res ~= false then -- answered (also a stream that failed after its first byte)
                    local st = rec.status or 200
                    local good = st < 500 and st ~= 429
                    if st ~= 499 then
                        rt.br:record(t.key, good, done, m.probe)
                    elseif m.probe then
                        rt.br:record(t.key, true, done, true)
                    end
                    if good then
                        local ttft = rec.ttft and (ai.t0 + rec.ttft - started_wall) or nil
                        g.bal:observe(t, (ai.stream and ttft and ttft > 0) and ttft or (done - started), done)
                    end
                    return
                end
                -- failed before the first byte
                note_failure(rec, t, fail)
                if fail.retry_after and (fail.status == 429 or fail.status == 503 or fail.status == 529) then
                    rt.br:cool(t.key, min(fail.retry_after, bo.cooldown_max), done)
                end
                if not retryable(rt, fail) then
                    local st = fail.client_status or fail.status or 502
                    if ai.api == "openai" and st == 529 then st = 503 end
                    ai_proxy.finish_usage(ctx, ai, nil, st)
                    rec.error = fail.message
                    if fail.kind == "status" and st < 500 then
                        rt.br:record(t.key, true, done, m.probe) -- the provider answered: it is up
                    else
                        rt.br:record(t.key, false, done, m.probe)
                    end
                    return ai_proxy.send_error(ctx, pipe, ai, st, fail.message, fail.type, fail.code,
                        fail.retry_after)
                end
                rt.br:record(t.key, false, done, m.probe)
                g.bal:failed(t, done)
                last, last_t = fail, t
                t = nil
            end
        end
    end
    degrade(ctx, pipe, ai, rt, last, wait)
end

_M.upstream = { run = run }

---------------------------------------------------------------------------------------------------------------
-- access

local function models_answer(rt, ctx)
    local names, seen = {}, {}
    for _, t in ipairs(rt.targets) do
        local prov = rt.providers[t.provider]
        for _, n in ipairs(type(prov) == "table" and ai_proxy.served_names(t.tconf, prov) or {}) do
            if not seen[n] then seen[n], names[#names + 1] = true, n end
        end
    end
    for _, r in ipairs(rt.conf.rules or {}) do
        for _, n in ipairs(r.models or {}) do
            if not seen[n] then seen[n], names[#names + 1] = true, n end
        end
    end
    sort(names)
    local data = {}
    if request.get_header("anthropic-version", ctx) then
        for i, n in ipairs(names) do
            data[i] = { type = "model", id = n, display_name = n, created_at = "1970-01-01T00:00:00Z" }
        end
        return 200, { data = common.array(data), has_more = false, first_id = names[1] or sluice.json.null,
                      last_id = names[#names] or sluice.json.null }
    end
    for i, n in ipairs(names) do
        data[i] = { id = n, object = "model", created = 0, owned_by = "sluice" }
    end
    return 200, { object = "list", data = common.array(data) }
end

function _M.access(conf, ctx)
    local rt, err = runtime(conf, ctx.config)
    if not rt then
        return ai_proxy.api_error((ai_proxy.detect(ctx.path)) or "openai", 500, "ai-proxy-multi: " .. err)
    end
    local _, op = ai_proxy.detect(ctx.path)
    if op == "models" and (ctx.method == "GET" or ctx.method == "HEAD") then
        return models_answer(rt, ctx)
    end
    local body = ctx.method == "POST" and request.get_json(ctx) or nil
    local m = { rt = rt, tried = {}, body = body,
                requested = type(body) == "table" and type(body.model) == "string" and body.model or nil }
    local rule = #rt.rules > 0 and match_rule(rt, ctx, body, m) or nil
    local gname = rule and rule.group or conf.default_group
    local g = rt.groups[gname]
    m.rule, m.group = rule and rule.name or nil, gname
    m.class = conf.qos and class_of(conf, ctx) or 1
    local now = now_s()
    local first = pick(rt, g, m, ctx, now)
    local t0 = first
    if not t0 then -- nothing available: validate with the first target that serves the model, degrade in run()
        for _, t in ipairs(g.targets) do
            if serves(rt, t, m.requested) then t0 = t break end
        end
        t0 = t0 or g.targets[1]
    end
    local status, rbody = ai_proxy.prepare(ctx, t0.tconf, t0.provider)
    if status then
        if first and m.probe then rt.br:record(first.key, true, now, true) end -- give the probe slot back
        return status, rbody
    end
    local ai = ctx.ai
    ai.multi = m
    m.first = first
    local rec = ai.usage
    rec.rule, rec.group, rec.route_target, rec.qos_class = m.rule, gname, first and first.name or nil, m.class
    if conf.response_headers and m.rule then
        response.set_header("x-sluice-rule", m.rule, ctx)
    end
    ctx.upstream_override = _M.upstream
end

---------------------------------------------------------------------------------------------------------------
-- active health checks: worker 0 probes every target of every route using this plugin with `health_check`

local health = {} -- target key -> {next, running, ok, bad, down}

local function probe(rt, t, hc, hs)
    local prov = rt.providers[t.provider]
    local ok = false
    local d = type(prov) == "table" and ai_proxy.driver(prov.kind)
    if d then
        local _, served = ai_proxy.resolve_model(t.tconf, prov, nil)
        local req = d.build_request(prov, "chat", { model = served or t.model or "probe", max_tokens = 1,
            messages = { { role = "user", content = "ping" } } }, { stream = false })
        if req then
            local port = req.port and (":" .. req.port) or ""
            local method, path, body = req.method, req.path, req.body
            if hc.path then method, path, body = "GET", hc.path, nil end
            local res = sluice.http.request({ method = method, url = req.scheme .. "://" .. req.host .. port .. path,
                headers = req.headers, body = body, timeout = hc.timeout })
            ok = res ~= nil and res.status < 500
        end
    end
    hs.running = false
    if ok then
        hs.bad, hs.ok = 0, hs.ok + 1
        if hs.down and hs.ok >= hc.healthy then
            hs.down = false
            rt.br:set_down(t.key, false)
            log.warn("target ", t.name, " (", t.key, ") is healthy again")
        end
    else
        hs.ok, hs.bad = 0, hs.bad + 1
        if hs.bad >= hc.unhealthy then
            if not hs.down then log.warn("target ", t.name, " (", t.key, ") failed ", hs.bad, " health checks") end
            hs.down = true
            rt.br:set_down(t.key, true, hc.interval * 3 + hc.timeout + 1)
        end
    end
end

local function tick()
    local st = require("sluice.worker").state
    if not st or not st.cfg then return end
    local now = now_s()
    local seen = {}
    for _, route in ipairs(st.cfg.routes) do
        local conf = route.plugins and route.plugins[_M.name]
        local hc = type(conf) == "table" and conf.health_check
        if hc and not (conf._meta and conf._meta.disable) then
            local rt = runtime(conf, st.cfg)
            for _, t in ipairs(rt and rt.targets or {}) do
                if not seen[t.key] then
                    seen[t.key] = true
                    local hs = health[t.key]
                    if not hs then
                        hs = { next = 0, ok = 0, bad = 0 }
                        health[t.key] = hs
                    end
                    if now >= hs.next and not hs.running then
                        hs.running, hs.next = true, now + hc.interval
                        sluice.timer.at(0, function() probe(rt, t, hc, hs) end)
                    end
                end
            end
        end
    end
end

function _M.init_worker()
    if sluice.worker_id() ~= 0 then
        return
    end
    sluice.timer.every(0.1, tick)
end

return _M

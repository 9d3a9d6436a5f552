-- ai-proxy-multi.routing: the per-conf runtime (targets, groups with their balancers, compiled rules, breaker
-- and QoS handles), the routing rules that choose a group, and the pick of one target in a group.
local sluice = require("sluice")
local ai_proxy = require("sluice.ai.proxy")
local balancer = require("sluice.ai.balancer")
local breaker = require("sluice.ai.breaker")
local qos_mod = require("sluice.ai.qos")
local common = require("sluice.ai.common")

local request, re, consumers = sluice.request, sluice.re, sluice.consumer
local type, pairs, ipairs, tonumber = type, pairs, ipairs, tonumber
local find, lower, concat = string.find, string.lower, table.concat

local _M = {}

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
            tconf = { model = tc.model, timeout = tc.timeout or conf.timeout, max_event_size = conf.max_event_size },
            idle = tmo.idle,
            opts = { timeout = { connect = tmo.connect or ptmo.connect, send = tmo.send or ptmo.send,
                                 read = tmo.ttft or tmo.read or ptmo.read },
                     keepalive = prov.keepalive, tls = prov.tls, proxy = prov.proxy },
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
    for _, f in ipairs(conf.fallback_on) do
        rt.fallback_on[tostring(f)] = true -- 429 -> "429", as retryable() looks it up
    end
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
local cur_rt, cur_m, cur_now, cur_wait, cur_ctx

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
    if cur_ctx.consumer and not consumers.allowed("provider", t.provider, cur_ctx) then
        return false -- the consumer's roles deny this provider: the others serve it
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
    cur_rt, cur_m, cur_now, cur_wait, cur_ctx = rt, m, now, nil, ctx
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

_M.serves = serves
_M.pick = pick
_M.class_of = class_of

return _M

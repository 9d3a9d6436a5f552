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
--     fallback_on: [error, timeout, 429, 5xx]
--     fallback: {group: cheap}      # or {response: "Busy, try later."} or {status: 503, retry_after: 5}
--
-- Calls go through sluice.ai.proxy (the ai-proxy runtime) in its defer_errors mode: a failure before anything
-- reached the client comes back here, and the next target (its own driver, so the body is re-translated for
-- its provider kind) gets the request. Balancing: sluice.ai.balancer; breakers, health verdicts, Retry-After
-- cool-downs: sluice.ai.breaker (shared dict `shared_dict`); concurrency limits and the priority queue:
-- sluice.ai.qos. See docs/ai-proxy-multi.md.
--
-- Files: this one (schema, check, access, init_worker); routing.lua (runtime per conf, rules, target pick);
-- attempts.lua (the upstream stage, taken over with sluice.upstream.take_over: attempts, fallback,
-- degradation); health.lua (active health checks).
local sluice = require("sluice")
local ai_proxy = require("sluice.ai.proxy")
local common = require("sluice.ai.common")
local routing = require("ai-proxy-multi.routing")
local attempts = require("ai-proxy-multi.attempts")
local health = require("ai-proxy-multi.health")

local request, response, re = sluice.request, sluice.response, sluice.re
local type, pairs, ipairs, tostring, pcall = type, pairs, ipairs, tostring, pcall
local sort = table.sort
local now_s = sluice.now
local runtime, match_rule, class_of, pick, serves = routing.runtime, routing.match_rule, routing.class_of,
    routing.pick, routing.serves

local str = { type = "string", minLength = 1 }
local strs = { type = "array", items = str }
local header_name = { type = "string", minLength = 1, format = "header_name" }
-- `ref`: names another config entity; the config checker refuses a name that is not defined
local group_refs = { type = "array", items = { type = "string", ref = "consumer_groups" } }
-- durations: seconds, or "500ms", "20s", "1m" (plain seconds after validation)
local pos = { type = "duration", exclusiveMinimum = 0, maximum = 3600 }
local function dur(lo, hi, default) return { type = "duration", minimum = lo, maximum = hi, default = default } end
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
        hash_header = { type = "string", minLength = 1, format = "header_name", default = "x-session-id" },
        targets = {
            type = "array", minItems = 1,
            items = {
                type = "object", required = { "provider" }, additionalProperties = false,
                properties = {
                    -- name: sent back in x-sluice-route-target
                    name = { type = "string", minLength = 1, format = "header_value" },
                    provider = { type = "string", minLength = 1, ref = "providers" }, model = str,
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
                    name = { type = "string", minLength = 1, format = "header_value" }, -- in x-sluice-rule
                    group = str,
                    models = strs,                                            -- requested model (alias) is one of
                    headers = { type = "object", additionalProperties = str,  -- header value matches regex
                                propertyNames = header_name },
                    consumers = { type = "array", items = { type = "string", ref = "consumers" } },
                    consumer_groups = group_refs,
                    prompt = str,                                             -- regex over the prompt text
                    keywords = strs,                                          -- any, case-insensitive
                    min_tokens = { type = "integer", minimum = 0 },           -- estimated prompt tokens
                    max_tokens = { type = "integer", minimum = 0 },
                },
            },
        },
        default_group = { type = "string", minLength = 1, default = "default" },
        retries = { type = "integer", minimum = 0, maximum = 10, default = 2 },
        -- error, timeout, a status (429 or "429": 429 after validation) or a class ("5xx")
        fallback_on = { type = "array", items = { anyOf = { { enum = { "error", "timeout" } },
                                                            { type = "status", classes = true } } },
                        default = { "error", "timeout", 429, "5xx" } },
        backoff = {
            type = "object", additionalProperties = false, default = {},
            properties = {
                base = dur(0, 60, 0.02),
                max = dur(0, 60, 1),
                retry_after_max = dur(0, 3600, 2),
                cooldown_max = dur(0, 3600, 60),
            },
        },
        timeout = timeout,
        -- the largest line or event accepted in a provider's stream (bytes); past it the stream ends with an error
        max_event_size = { type = "size", minimum = 1024, maximum = 1073741824, default = 1048576 },
        fallback = {
            type = "object", additionalProperties = false,
            properties = { group = str, response = { type = "string" },
                           status = { type = "status", enum = { 429, 502, 503, 504 } },
                           retry_after = dur(0, 86400) },
        },
        breaker = {
            type = "object", additionalProperties = false, default = {},
            properties = {
                failures = { type = "integer", minimum = 0, default = 5 },
                ratio = { type = "number", minimum = 0, maximum = 1, default = 0 },
                window = { type = "duration", exclusiveMinimum = 0, maximum = 86400, default = 10 },
                min_requests = { type = "integer", minimum = 1, default = 10 },
                open_for = { type = "duration", exclusiveMinimum = 0, maximum = 86400, default = 30 },
                half_open_requests = { type = "integer", minimum = 1, default = 1 },
                successes = { type = "integer", minimum = 1, default = 1 },
            },
        },
        health_check = {
            type = "object", additionalProperties = false,
            properties = {
                interval = { type = "duration", minimum = 0.1, maximum = 86400, default = 5 },
                timeout = { type = "duration", exclusiveMinimum = 0, maximum = 3600, default = 2 },
                -- GET this path on the provider's host instead of a 1-token chat request
                path = { type = "string", format = "uri_path" },
                healthy = { type = "integer", minimum = 1, default = 2 },
                unhealthy = { type = "integer", minimum = 1, default = 2 },
            },
        },
        qos = {
            type = "object", additionalProperties = false, default = {},
            properties = {
                default_class = { type = "integer", default = 1 },
                header = header_name, -- a trusted header carrying the class (an integer)
                consumer_groups = { type = "object", additionalProperties = { type = "integer" },
                                    propertyNames = { type = "string", ref = "consumer_groups" } },
                queue_timeout = { type = "duration", exclusiveMinimum = 0, maximum = 3600, default = 1 },
                max_queue = { type = "integer", minimum = 0, default = 100 },
                shed_status = { type = "status", enum = { 429, 503 }, default = 503 },
            },
        },
        shared_dict = { type = "string", minLength = 1, default = "sluice", ref = "shared_dicts" },
        response_headers = { type = "boolean", default = true }, -- x-sluice-route-target, x-sluice-rule
    },
}

local _M = { name = "ai-proxy-multi", version = "1.0", priority = 1040, schema = schema }

--- Config checks after the schema: unique target names, known groups, valid regexes (fallback_on: the schema).
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
    return true
end

_M.runtime = runtime
_M.prompt_text = routing.prompt_text
_M.match_rule = match_rule
_M.run = attempts.run

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
    names = sluice.consumer.filter("model", names, ctx) -- the consumer's roles
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
    sluice.upstream.take_over(attempts.run, ctx)
end

function _M.init_worker()
    if sluice.worker_id() ~= 0 then
        return
    end
    sluice.timer.every(0.1, health.tick)
end

return _M

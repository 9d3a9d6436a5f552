-- ai-proxy-multi.attempts: the upstream stage of a request (sluice.upstream.take_over): tries targets through
-- sluice.ai.proxy.run in defer_errors mode (retries with backoff, the fallback group, Retry-After cool-downs,
-- breaker verdicts, QoS slots), then degrades when nothing answered: a static answer or an error.
local sluice = require("sluice")
local ai_proxy = require("sluice.ai.proxy")
local common = require("sluice.ai.common")
local routing = require("ai-proxy-multi.routing")

local response, request = sluice.response, sluice.request
local ipairs, tostring, pcall, error, next = ipairs, tostring, pcall, error, next
local min, max, huge, ceil, floor, random = math.min, math.max, math.huge, math.ceil, math.floor, math.random
local concat = table.concat
local now_s = sluice.now
local pick = routing.pick

local _M = {}

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
                          read = min(o.timeout.read or 60, left) },
              keepalive = o.keepalive, tls = o.tls, proxy = o.proxy }
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

local function static_answer(ctx, ai, text)
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
        return response.send(200, common.json_encode(resp) or "{}", { ["content-type"] = "application/json" }, ctx)
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
    if response.stream_start(200, { ["content-type"] = "text/event-stream", ["cache-control"] = "no-cache" }, ctx) then
        response.stream_write(concat(out), ctx)
        response.stream_finish(ctx)
    end
end

local function degrade(ctx, ai, rt, last, wait)
    local fb = rt.conf.fallback or {}
    local rec = ai.usage
    if request.client_gone(ctx) then
        return ai_proxy.finish_usage(ctx, ai, nil, 499)
    end
    if fb.response and ai.op ~= "embeddings" then
        rec.degraded = "static"
        if rt.conf.response_headers then response.set_header("x-sluice-route-target", "static", ctx) end
        return static_answer(ctx, ai, fb.response)
    end
    local status = fb.status or 503
    local ra = fb.retry_after or max(1, ceil(wait or (last and last.retry_after) or 1))
    local msg = "no provider could answer: " .. (last and (last.message or ("status " .. tostring(last.status)))
        or "every target is unavailable")
    rec.degraded = "error"
    ai_proxy.finish_usage(ctx, ai, nil, status)
    rec.error = msg
    ai_proxy.send_error(ctx, ai, status, msg, nil, nil, ra)
end

local function note_failure(rec, t, fail)
    local list = rec.attempts
    if not list then
        list = {}
        rec.attempts = list
    end
    list[#list + 1] = { target = t.name, status = fail.status, kind = fail.kind, error = fail.message }
end

local function run(ctx)
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
    local attempts, first, last, wait = 0, nil, nil, nil
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
            if now >= deadline or request.client_gone(ctx) then break end
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
                    local got, why = rt.qos:acquire(t.key, t.max_concurrency, m.class,
                        min(deadline, now + q.queue_timeout))
                    rec.qos_wait = (rec.qos_wait or 0) + (now_s() - now) -- for the metrics (prometheus)
                    if not got then
                        rec.shed = why
                        ai_proxy.finish_usage(ctx, ai, nil, q.shed_status)
                        rec.error = "shed (" .. why .. ")"
                        return ai_proxy.send_error(ctx, ai, q.shed_status,
                            "the service is busy, retry later (priority class " .. m.class .. ")", nil, nil, 1)
                    end
                    slot = true
                end
                t.inflight = t.inflight + 1
                local started, started_wall = now_s(), sluice.time()
                local pok, res, fail = pcall(ai_proxy.run, ctx)
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
                    return ai_proxy.send_error(ctx, ai, st, fail.message, fail.type, fail.code,
                        fail.retry_after)
                end
                rt.br:record(t.key, false, done, m.probe)
                g.bal:failed(t, done)
                last = fail
                t = nil
            end
        end
    end
    degrade(ctx, ai, rt, last, wait)
end

_M.run = run

return _M

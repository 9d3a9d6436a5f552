-- ai-proxy-multi.health: active health checks. Worker 0 probes every target of every route using the plugin
-- with `health_check` (a 1-token chat request, or GET `path`); verdicts go to the breaker's shared state
-- (set_down), so every worker sees them.
local sluice = require("sluice")
local ai_proxy = require("sluice.ai.proxy")
local routing = require("ai-proxy-multi.routing")

local NAME = "ai-proxy-multi" -- the plugin, whose confs sluice.each_conf walks
local log = sluice.log.named(NAME)
local type, ipairs = type, ipairs
local now_s = sluice.now
local runtime = routing.runtime

local _M = {}

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

--- One round (every 0.1 s from the plugin's init_worker on worker 0): starts the probes that are due.
local function tick()
    local now = now_s()
    local seen = {}
    for conf, cfg in sluice.each_conf(NAME) do
        local hc = conf.health_check
        if hc then
            local rt = runtime(conf, cfg)
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
_M.tick = tick

return _M

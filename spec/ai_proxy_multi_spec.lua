-- ai-proxy-multi through the real gateway against several tests/mock/providers.js instances, each steered with
-- its /__config knobs (latency, error status with Retry-After, streams failing before/after the first byte,
-- down): strategies, rules, retries and fallback (also across provider kinds), breaker, health checks, QoS,
-- degradation. Every loop is bounded in count and time; every port is a free one.
local helpers = require("helpers")
local cjson = require("cjson.safe")
local socket = require("socket")

local ROOT = helpers.ROOT

local PROBE = [[
local cjson = require("cjson.safe")
return { name = "ai-usage-probe", version = "1", priority = 1,
  log = function(conf, ctx)
    local f = io.open(conf.file, "a")
    f:write((cjson.encode(ctx.ai and ctx.ai.usage or { none = true }) or "{}") .. "\n")
    f:close()
  end }
]]

local CHAT = { model = "m", messages = { { role = "user", content = "Say hello" } } }

describe("ai-proxy-multi (gateway + mock providers)", function()
    local gw, usage_file
    local mocks = {} -- name -> {port, url}

    local function start_mock(dir, name)
        local port = helpers.free_port()
        local p = helpers.spawn("node " .. helpers.shell_quote(ROOT .. "/tests/mock/providers.js") .. " " .. port
            .. " >" .. helpers.shell_quote(dir .. "/mock-" .. name .. ".log") .. " 2>&1")
        assert(helpers.wait_port(port, p, 10))
        mocks[name] = { port = port, url = "http://127.0.0.1:" .. port }
    end
    local function knobs(name, k)
        local res = assert(helpers.http("POST", mocks[name].url .. "/__config", { body = k or {} }))
        assert.equal(200, res.status)
    end
    local function mock_requests(name)
        return assert(helpers.http("GET", mocks[name].url .. "/__requests")).json
    end
    local function reset_mocks()
        for name in pairs(mocks) do
            knobs(name, {})
            helpers.http("POST", mocks[name].url .. "/__reset")
        end
    end
    local function usages()
        local out = {}
        for line in (helpers.read_file(usage_file) or ""):gmatch("[^\n]+") do
            out[#out + 1] = cjson.decode(line)
        end
        return out
    end
    local function last_usage()
        return helpers.wait_until(function()
            local u = usages()
            return #u > 0 and u[#u]
        end, 5, "no usage record")
    end
    local function post(route, body, headers, path)
        helpers.write_file(usage_file, "")
        return assert(helpers.http("POST", gw.url("/" .. route .. (path or "/v1/chat/completions")),
            { body = body or CHAT, headers = headers, timeout = 10 }))
    end
    local function target_of(route, body, headers)
        local res = post(route, body, headers)
        assert.equal(200, res.status, res.body)
        return res.headers["x-sluice-route-target"], res
    end

    setup(function()
        local dir = helpers.tmpdir()
        helpers.write_file(dir .. "/ai-usage-probe.lua", PROBE)
        usage_file = dir .. "/usage.jsonl"
        for _, n in ipairs({ "m1", "m2", "m3", "m4", "m5", "m6" }) do start_mock(dir, n) end
        local dead = "http://127.0.0.1:" .. helpers.free_port()
        local providers = {}
        local function oa(name, mock) providers[name] = { kind = "openai", endpoint = mocks[mock] and mocks[mock].url or mock, api_key = "k" } end
        local function an(name, mock) providers[name] = { kind = "anthropic", endpoint = mocks[mock].url, api_key = "k" } end
        oa("w1", "m1"); oa("w2", "m2")
        oa("p1", "m3"); oa("p2", "m1")
        oa("l1", "m3"); oa("l2", "m4")
        oa("r1", "m3"); oa("r2", "m4")
        oa("e1", "m3"); oa("e2", "m4")
        oa("s1", "m3"); oa("s2", "m4")
        oa("b1", "m3"); oa("b2", "m4")
        oa("h1", "m5"); oa("h2", "m6") -- own mocks: their probes must not show in the counts of others
        oa("q1", "m4")
        oa("x1", "m3"); an("x2", "m4")
        oa("d1", dead); oa("d2", dead); oa("d3", "m1")
        oa("t1", "m3"); oa("t2", "m4")
        oa("k1", "m1"); oa("k2", "m2"); oa("k3", "m3")
        oa("g1", "m1"); oa("g2", "m2")
        providers.cheap = { kind = "openai", endpoint = mocks.m1.url, api_key = "k", price = { m = { input = 0.1, output = 0.2 } } }
        providers.dear = { kind = "openai", endpoint = mocks.m2.url, api_key = "k", price = { m = { input = 5, output = 15 } } }
        local probe = { file = usage_file }
        local routes = {}
        local function route(id, conf)
            routes[#routes + 1] = { id = id, paths = { "/" .. id .. "/v1/*" },
                                    plugins = { ["ai-proxy-multi"] = conf, ["ai-usage-probe"] = probe } }
        end
        local fast_breaker = { failures = 1000 }
        route("weighted", { targets = { { provider = "w1", weight = 3 }, { provider = "w2", weight = 1 } } })
        route("prio", { strategy = "priority", breaker = { failures = 2, open_for = 0.5 },
            targets = { { provider = "p1", priority = 1 }, { provider = "p2", priority = 0 } } })
        route("latency", { strategy = "latency", breaker = fast_breaker,
            targets = { { provider = "l1" }, { provider = "l2" } } })
        route("r429", { strategy = "priority", breaker = fast_breaker,
            targets = { { provider = "r1", priority = 1 }, { provider = "r2" } } })
        route("r500", { strategy = "priority", breaker = fast_breaker,
            targets = { { provider = "e1", priority = 1 }, { provider = "e2" } } })
        route("stream", { strategy = "priority", breaker = fast_breaker,
            targets = { { provider = "s1", priority = 1 }, { provider = "s2" } } })
        route("breaker", { strategy = "priority", breaker = { failures = 2, open_for = 0.6 },
            targets = { { provider = "b1", priority = 1 }, { provider = "b2" } } })
        route("health", { breaker = fast_breaker, health_check = { interval = 0.2, timeout = 0.5, unhealthy = 2, healthy = 1 },
            targets = { { provider = "h1" }, { provider = "h2" } } })
        route("qos", { qos = { header = "x-priority", queue_timeout = 1.5, max_queue = 4, shed_status = 503 },
            breaker = fast_breaker, targets = { { provider = "q1", max_concurrency = 2 } } })
        route("xlate", { strategy = "priority", breaker = fast_breaker,
            targets = { { provider = "x1", priority = 1 }, { provider = "x2", model = "claude-haiku" } } })
        route("static", { breaker = fast_breaker, retries = 1, fallback = { response = "We are busy, please retry." },
            targets = { { provider = "d1" } } })
        route("down503", { breaker = fast_breaker, retries = 1, targets = { { provider = "d2" } } })
        route("fbgroup", { breaker = fast_breaker, retries = 0, fallback = { group = "backup" },
            targets = { { provider = "d1" }, { provider = "d3", groups = { "backup" } } } })
        route("ttft", { strategy = "priority", breaker = fast_breaker, timeout = { ttft = 0.3 },
            targets = { { provider = "t1", priority = 1 }, { provider = "t2" } } })
        route("rules", {
            targets = { { provider = "k1" }, { provider = "k2", model = "fast-model", groups = { "fast" } },
                        { provider = "k3", model = "coder", groups = { "code" } } },
            rules = { { name = "alias", models = { "fast" }, group = "fast" },
                      { name = "code", prompt = "(?i)\\b(python|stack trace)\\b", group = "code" },
                      { name = "hdr", headers = { ["x-task"] = "^summar" }, group = "fast" },
                      { name = "long", min_tokens = 2000, group = "code" } } })
        route("hash", { strategy = "hash", hash_on = "header", hash_header = "x-session-id",
            targets = { { provider = "g1" }, { provider = "g2" } } })
        route("cost", { strategy = "cost", targets = { { provider = "dear" }, { provider = "cheap" } } })
        route("least", { strategy = "least-inflight", targets = { { provider = "w1" }, { provider = "w2" } } })
        gw = helpers.start_gateway({
            node = { plugin_paths = { ROOT .. "/plugins", dir }, workers = 1, log_level = "error" },
            providers = providers,
            routes = routes,
        })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    before_each(function()
        reset_mocks()
    end)

    it("weighted: 3:1 weights observed over 40 requests", function()
        local n = { w1 = 0, w2 = 0 }
        for _ = 1, 40 do
            local t = target_of("weighted")
            n[t] = n[t] + 1
        end
        assert.is_true(n.w1 >= 27 and n.w1 <= 33, "w1 got " .. n.w1)
        assert.equal(40, n.w1 + n.w2)
        local u = last_usage()
        assert.truthy(u.route_target == "w1" or u.route_target == "w2")
        assert.equal("default", u.group)
    end)

    it("priority: fails over to the lower group, recovers when the top one is back", function()
        assert.equal("p1", (target_of("prio")))
        knobs("m3", { status = 500 })
        assert.equal("p2", (target_of("prio"))) -- retried on the lower group
        assert.equal("p2", (target_of("prio"))) -- breaker opens after 2 failures
        local before = #mock_requests("m3")
        assert.equal("p2", (target_of("prio")))
        assert.equal(before, #mock_requests("m3"), "an open breaker keeps traffic away")
        knobs("m3", {})
        helpers.wait_until(function() return target_of("prio") == "p1" end, 5, "top group not back")
        assert.equal("p1", (target_of("prio")))
    end)

    it("latency: traffic moves away from a mock that slows down", function()
        for _ = 1, 6 do target_of("latency") end
        knobs("m3", { latency_ms = 250 })
        local n = { l1 = 0, l2 = 0 }
        for _ = 1, 20 do
            local t = target_of("latency")
            n[t] = n[t] + 1
        end
        assert.is_true(n.l2 >= 18, "l2 got " .. n.l2 .. " of 20")
    end)

    it("429 with Retry-After: falls back, and the target cools down for that long", function()
        knobs("m3", { status = 429, retry_after = 3 })
        local t, res = target_of("r429")
        assert.equal("r2", t)
        assert.equal("Hello from the mock.", res.json.choices[1].message.content)
        local u = last_usage()
        assert.equal(1, u.retries)
        assert.equal(1, u.fallbacks)
        assert.equal(429, u.attempts[1].status)
        assert.equal(1, #mock_requests("m3"))
        assert.equal("r2", (target_of("r429")))
        assert.equal(1, #mock_requests("m3"), "cooling target skipped")
    end)

    it("500: retried on another target", function()
        knobs("m3", { status = 500 })
        local t = target_of("r500")
        assert.equal("e2", t)
        assert.equal(1, #mock_requests("m3"))
        assert.equal(1, #mock_requests("m4"))
        assert.equal(500, last_usage().attempts[1].status)
        assert.equal(200, last_usage().status)
    end)

    it("a stream failing before the first byte falls back; one failing after it is not repeated", function()
        knobs("m3", { stream_fail = "before" })
        local body = { model = "m", stream = true, messages = CHAT.messages }
        local res = post("stream", body)
        assert.equal(200, res.status)
        assert.equal("s2", res.headers["x-sluice-route-target"])
        local _, hellos = res.body:gsub('"Hello"', "")
        assert.equal(1, hellos, res.body)
        local _, dones = res.body:gsub("data: %[DONE%]", "")
        assert.equal(1, dones)
        assert.equal(1, #mock_requests("m4"))

        reset_mocks()
        knobs("m3", { stream_fail = "after" })
        res = post("stream", body)
        assert.equal(200, res.status)
        assert.equal("s1", res.headers["x-sluice-route-target"])
        local _, h2 = res.body:gsub('"Hello"', "")
        assert.equal(1, h2) -- the part that went out is not sent again
        assert.truthy(res.body:find('"error"', 1, true))
        assert.is_nil(res.body:find("[DONE]", 1, true))
        assert.equal(0, #mock_requests("m4"), "no second provider after the first byte")
    end)

    it("breaker: opens after consecutive failures, half-opens after open_for, closes on a good probe", function()
        knobs("m3", { status = 500 })
        assert.equal("b2", (target_of("breaker")))
        assert.equal("b2", (target_of("breaker")))
        local n = #mock_requests("m3")
        assert.equal(2, n)
        for _ = 1, 3 do assert.equal("b2", (target_of("breaker"))) end
        assert.equal(n, #mock_requests("m3"), "open: b1 not called")
        socket.sleep(0.7)
        -- half-open, still failing: one probe, open again
        assert.equal("b2", (target_of("breaker")))
        assert.equal(n + 1, #mock_requests("m3"))
        assert.equal("b2", (target_of("breaker")))
        assert.equal(n + 1, #mock_requests("m3"))
        knobs("m3", {})
        socket.sleep(0.7)
        assert.equal("b1", (target_of("breaker"))) -- the probe succeeds: closed
        for _ = 1, 3 do assert.equal("b1", (target_of("breaker"))) end
    end)

    it("health checks take a dead target out and put it back", function()
        knobs("m5", { down = true })
        helpers.wait_until(function()
            for _ = 1, 6 do
                local t = target_of("health")
                if t ~= "h2" or last_usage().attempts then return false end
            end
            return true
        end, 8, "h1 still used")
        knobs("m5", {})
        helpers.wait_until(function() -- back in rotation: h1 among a few picks (h2 shares the traffic)
            for _ = 1, 4 do
                if target_of("health") == "h1" then return true end
            end
            return false
        end, 8, "h1 not back")
    end)

    it("QoS: with 2 slots and a flood of low-priority requests, high ones finish in time, low ones are shed", function()
        knobs("m4", { latency_ms = 200 })
        local body = helpers.json(CHAT)
        local url = gw.url("/qos/v1/chat/completions")
        local function curl(prio, tag)
            return "curl -s -m 8 -o /dev/null -w '" .. tag .. " %{http_code} %{time_total}\\n' -H 'content-type: application/json' -H 'x-priority: "
                .. prio .. "' -d " .. helpers.shell_quote(body) .. " " .. url .. " &"
        end
        local lines = {}
        for _ = 1, 20 do lines[#lines + 1] = curl(1, "low") end
        lines[#lines + 1] = "sleep 0.15"
        for _ = 1, 3 do lines[#lines + 1] = curl(9, "high") end
        lines[#lines + 1] = "wait"
        local code, out = helpers.exec(table.concat(lines, "\n"), 20)
        assert.equal(0, code, out)
        local high, low_ok, low_shed = {}, 0, 0
        for tag, status, t in out:gmatch("(%a+) (%d+) ([%d%.]+)") do
            if tag == "high" then
                high[#high + 1] = { tonumber(status), tonumber(t) }
            elseif status == "200" then
                low_ok = low_ok + 1
            elseif status == "503" then
                low_shed = low_shed + 1
            end
        end
        assert.equal(3, #high, out)
        for _, h in ipairs(high) do
            assert.equal(200, h[1], out)
            assert.is_true(h[2] < 1.5, "high priority took " .. h[2] .. " s")
        end
        assert.is_true(low_shed >= 10, "low shed: " .. low_shed .. "\n" .. out)
        assert.is_true(low_ok >= 2, out)
        assert.equal(20, low_ok + low_shed, out)
    end)

    it("translation on fallback: OpenAI target fails, Anthropic target answers, client keeps OpenAI format", function()
        knobs("m3", { status = 500 })
        local t, res = target_of("xlate")
        assert.equal("x2", t)
        assert.equal("chat.completion", res.json.object)
        assert.equal("Hello from the mock.", res.json.choices[1].message.content)
        local up = mock_requests("m4")
        assert.equal(1, #up)
        assert.truthy(up[1].path:find("/v1/messages", 1, true))
        assert.equal("claude-haiku", up[1].body.model)
        local u = last_usage()
        assert.equal("anthropic", u.provider_kind)
        assert.equal(25, u.prompt_tokens) -- Anthropic input + cache reads, counted as OpenAI does
        -- streaming, and an Anthropic client
        res = post("xlate", { model = "m", stream = true, messages = CHAT.messages })
        assert.equal(200, res.status)
        assert.truthy(res.body:find('"content":"Hello"', 1, true))
        assert.truthy(res.body:find("data: [DONE]", 1, true))
        res = post("xlate", { model = "m", max_tokens = 10, messages = CHAT.messages },
            { ["anthropic-version"] = "2023-06-01" }, "/v1/messages")
        assert.equal(200, res.status)
        assert.equal("message", res.json.type)
    end)

    it("degradation: static answer, fallback group, 503 with Retry-After in the client's shape", function()
        local res = post("static")
        assert.equal(200, res.status)
        assert.equal("We are busy, please retry.", res.json.choices[1].message.content)
        assert.equal("static", last_usage().degraded)
        res = post("static", { model = "m", stream = true, messages = CHAT.messages })
        assert.truthy(res.body:find("We are busy", 1, true))
        assert.truthy(res.body:find("data: [DONE]", 1, true))
        res = post("static", { model = "m", max_tokens = 5, messages = CHAT.messages }, nil, "/v1/messages")
        assert.equal("We are busy, please retry.", res.json.content[1].text)

        res = post("fbgroup")
        assert.equal(200, res.status)
        assert.equal("d3", res.headers["x-sluice-route-target"])
        assert.equal("group", last_usage().degraded)

        res = post("down503")
        assert.equal(503, res.status)
        assert.truthy(tonumber(res.headers["retry-after"]) >= 1)
        assert.truthy(res.json.error.message:find("no provider could answer", 1, true))
        assert.equal(2, #last_usage().attempts)
        res = post("down503", { model = "m", max_tokens = 5, messages = CHAT.messages }, nil, "/v1/messages")
        assert.equal(503, res.status)
        assert.equal("error", res.json.type)
        assert.equal("overloaded_error", res.json.error.type)
    end)

    it("time to first token bound: a slow head moves on to the next target", function()
        knobs("m3", { latency_ms = 1000 })
        -- no wall-clock check (noise on a loaded machine): the first attempt ending as a timeout, not as the
        -- answer the mock sends after 1 s, is what shows the bound fired
        local t = target_of("ttft")
        assert.equal("t2", t)
        assert.equal("timeout", last_usage().attempts[1].kind)
    end)

    it("rules: model alias, prompt regex, header, token count; decision in header and usage", function()
        local t, res = target_of("rules", { model = "fast", messages = CHAT.messages })
        assert.equal("k2", t)
        assert.equal("alias", res.headers["x-sluice-rule"])
        assert.equal("fast-model", mock_requests("m2")[1].body.model)
        local u = last_usage()
        assert.equal("alias", u.rule)
        assert.equal("fast", u.group)
        t, res = target_of("rules", { model = "m", messages = { { role = "user", content = "Fix this Python stack trace" } } })
        assert.equal("k3", t)
        assert.equal("code", res.headers["x-sluice-rule"])
        t = target_of("rules", CHAT, { ["x-task"] = "summarize" })
        assert.equal("k2", t)
        t = target_of("rules", { model = "m", messages = { { role = "user", content = string.rep("lorem ipsum dolor ", 1000) } } })
        assert.equal("k3", t)
        t, res = target_of("rules", CHAT)
        assert.equal("k1", t)
        assert.is_nil(res.headers["x-sluice-rule"])
    end)

    it("hash: the same session sticks to one target, sessions spread", function()
        local seen = {}
        for i = 1, 12 do
            local s = "session-" .. i
            local a = target_of("hash", CHAT, { ["x-session-id"] = s })
            for _ = 1, 2 do assert.equal(a, (target_of("hash", CHAT, { ["x-session-id"] = s }))) end
            seen[a] = true
        end
        assert.truthy(seen.g1 and seen.g2)
    end)

    it("cost: the cheapest target for the request; least-inflight spreads sequential requests", function()
        for _ = 1, 4 do assert.equal("cheap", (target_of("cost"))) end
        local n = {}
        for _ = 1, 6 do
            local t = target_of("least")
            n[t] = (n[t] or 0) + 1
        end
        assert.equal(3, n.w1)
        assert.equal(3, n.w2)
    end)

    it("GET /models lists every target's models and the aliases", function()
        local res = assert(helpers.http("GET", gw.url("/rules/v1/models")))
        assert.equal(200, res.status)
        local ids = {}
        for _, m in ipairs(res.json.data) do ids[m.id] = true end
        assert.truthy(ids.fast and ids["fast-model"] and ids.coder)
    end)
end)

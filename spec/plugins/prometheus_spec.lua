-- prometheus plugin, sluice.metrics and the usage reports through the real gateway (2 workers) against
-- tests/mock/providers.js: the numbers /metrics and /admin/usage show are the ones sent, summed over workers,
-- with bounded labels, behind the admin key, and the usage survives a reload.
local helpers = require("helpers")
local unit = require("unit_helpers")

local ROOT = helpers.ROOT

-- value of one series in a Prometheus text exposition: name and labels as a Lua table (all must match)
local function value(text, name, labels)
    local sum, found = 0, false
    for line in text:gmatch("[^\n]+") do
        local n, l, v = line:match("^([%w_:]+){(.-)} (%S+)$")
        if not n then
            n, v = line:match("^([%w_:]+) (%S+)$")
            l = ""
        end
        if n == name then
            local ok = true
            for k, want in pairs(labels or {}) do
                if not l:find(k .. '="' .. want:gsub("%p", "%%%0") .. '"', 1, false) then ok = false end
            end
            if ok then
                sum, found = sum + tonumber(v), true
            end
        end
    end
    return found and sum or nil
end

describe("prometheus plugin", function()
    local gw, mock_url

    local function metrics_text()
        local res = assert(helpers.http("GET", gw.admin_url("/metrics"), { headers = { authorization = "Bearer " .. gw.admin_key } }))
        assert.equal(200, res.status)
        return res.body
    end

    local function chat(key, path)
        return assert(helpers.http("POST", gw.url(path or "/v1/chat/completions"), {
            headers = { authorization = "Bearer " .. key },
            body = { model = "gpt-4o-mini", messages = { { role = "user", content = "hello" } } } }))
    end

    setup(function()
        local dir = helpers.tmpdir()
        local port = helpers.free_port()
        local p = helpers.spawn("node " .. helpers.shell_quote(ROOT .. "/tests/mock/providers.js") .. " " .. port
            .. " >" .. helpers.shell_quote(dir .. "/mock.log") .. " 2>&1")
        assert(helpers.wait_port(port, p, 10))
        mock_url = "http://127.0.0.1:" .. port
        gw = helpers.start_gateway({
            node = { workers = 2 },
            providers = {
                oai = { kind = "openai", endpoint = mock_url, api_key = "sk-test",
                        price = { ["gpt-4o-mini"] = { input = 0.15, output = 0.6 } } },
                broken = { kind = "openai", endpoint = mock_url .. "/s/500/v1", api_key = "sk-test" },
            },
            consumers = { { name = "alice", keys = { "alice-key" } }, { name = "bob", keys = { "bob-key" } },
                          { name = "carol", keys = { "carol-key" } } },
            routes = {
                { id = "chat", paths = { "/v1/chat/completions" },
                  plugins = { ["key-auth"] = {}, ["ai-proxy"] = { provider = "oai" } } },
                { id = "broken", paths = { "/broken/v1/chat/completions" },
                  plugins = { ["key-auth"] = {}, ["ai-proxy"] = { provider = "broken" } } },
            },
            global_plugins = { prometheus = { max_consumers = 2, usage = { bucket = 60 } } },
        })
    end)
    teardown(helpers.stop_all)

    it("refuses /metrics and /admin/usage without the admin key", function()
        local res = helpers.http("GET", gw.admin_url("/metrics"))
        assert.equal(401, res.status)
        res = helpers.http("GET", gw.admin_url("/metrics"), { headers = { authorization = "Bearer wrong-key-123" } })
        assert.equal(401, res.status)
        res = helpers.http("GET", gw.admin_url("/admin/usage"))
        assert.equal(401, res.status)
        res = helpers.http("GET", gw.admin_url("/metrics"), { headers = { ["x-api-key"] = gw.admin_key } })
        assert.equal(200, res.status)
        assert.matches("^text/plain; version=0.0.4", res.headers["content-type"])
    end)

    it("counts requests, tokens and cost summed over workers, labels bounded", function()
        for _ = 1, 7 do assert.equal(200, chat("alice-key").status) end
        for _ = 1, 3 do assert.equal(200, chat("bob-key").status) end
        for _ = 1, 2 do assert.equal(200, chat("carol-key").status) end -- the third consumer: "other"
        local bres = chat("alice-key", "/broken/v1/chat/completions")
        assert.equal(500, bres.status, bres.body)
        local text = helpers.wait_until(function()
            local t = metrics_text()
            return (value(t, "sluice_ai_requests_total", { route = "chat" }) or 0) == 12
                and (value(t, "sluice_ai_requests_total", { route = "broken" }) or 0) == 1
                and value(t, "sluice_config_version") and t -- a gauge set once a second by worker 0
        end, 5, "metrics did not reach the sent numbers")
        assert.equal(7, value(text, "sluice_ai_requests_total", { route = "chat", consumer = "alice", status_class = "2xx" }))
        assert.equal(3, value(text, "sluice_ai_requests_total", { consumer = "bob" }))
        assert.equal(2, value(text, "sluice_ai_requests_total", { consumer = "other" }))
        assert.is_nil(value(text, "sluice_ai_requests_total", { consumer = "carol" }))
        -- the mock's OpenAI usage: 17 prompt (3 cached), 5 completion tokens per answer
        assert.equal(17 * 7, value(text, "sluice_gen_ai_client_token_usage_total", { consumer = "alice", token_type = "input" }))
        assert.equal(5 * 12, value(text, "sluice_gen_ai_client_token_usage_total", { route = "chat", token_type = "output" }))
        assert.equal(3 * 12, value(text, "sluice_gen_ai_client_token_usage_total", { route = "chat", token_type = "cached" }))
        local cost = value(text, "sluice_ai_cost_usd_total", { route = "chat" })
        assert.near(12 * (17 * 0.15 + 5 * 0.6) / 1e6, cost, 1e-12)
        assert.equal(1, value(text, "sluice_ai_errors_total", { route = "broken", type = "5xx" }))
        assert.equal(12, value(text, "sluice_http_requests_total", { route = "chat", status_class = "2xx" }))
        assert.equal(12, value(text, "sluice_gen_ai_client_operation_duration_seconds_count", { route = "chat" }))
        assert.equal(12, value(text, "sluice_gen_ai_client_operation_duration_seconds_bucket", { route = "chat", le = "+Inf" }))
        assert.equal(12, value(text, "sluice_http_request_duration_seconds_count", { route = "chat" }))
        assert.truthy(value(text, "sluice_config_version"))
        -- every metric family has HELP and TYPE, and no label holds a key, a path or prompt text
        assert.matches("# TYPE sluice_ai_requests_total counter", text, 1, true)
        assert.matches("# TYPE sluice_gen_ai_server_time_to_first_token_seconds histogram", text, 1, true)
        assert.falsy(text:find("alice-key", 1, true))
        assert.falsy(text:find("/v1/chat", 1, true))
        assert.falsy(text:find("hello", 1, true))
    end)

    it("shows connection states per worker", function()
        local c = helpers.client(gw.port)
        local res = c:request("GET", "/v1/nothing")
        assert.equal(404, res.status)
        local text = helpers.wait_until(function()
            local t = metrics_text()
            return (value(t, "sluice_http_connections", { state = "idle" }) or 0) >= 1 and t
        end, 5, "the idle keep-alive connection is not shown")
        assert.truthy(value(text, "sluice_http_connections", { state = "active" }) >= 1)
        c:close()
    end)

    it("reports usage by consumer, model, provider and route, as JSON and CSV, surviving a reload", function()
        local function report(q)
            local res = assert(gw:admin("GET", "/admin/usage?" .. q))
            assert.equal(200, res.status, res.body)
            return res
        end
        local rep = helpers.wait_until(function()
            local j = report("group_by=consumer").json
            return j.totals.requests == 13 and j
        end, 5, "usage did not reach the sent numbers")
        local by = {}
        for _, r in ipairs(rep.rows) do by[r.key] = r end
        assert.equal(8, by.alice.requests) -- 7 answered + 1 refused by the provider
        assert.equal(17 * 7, by.alice.input_tokens)
        assert.equal(3, by.bob.requests)
        assert.equal(2, by.other.requests)
        assert.near(7 * (17 * 0.15 + 5 * 0.6) / 1e6, by.alice.cost, 1e-12)
        rep = report("group_by=route").json
        by = {}
        for _, r in ipairs(rep.rows) do by[r.key] = r end
        assert.equal(12, by.chat.requests)
        assert.equal(1, by.broken.requests)
        rep = report("group_by=provider").json
        by = {}
        for _, r in ipairs(rep.rows) do by[r.key] = r end
        assert.equal(12, by.oai.requests)
        local csv = report("group_by=consumer&format=csv")
        assert.matches("^text/csv", csv.headers["content-type"])
        assert.matches("^consumer,requests,input_tokens,output_tokens,cached_tokens,cost_usd\r\n", csv.body)
        assert.matches("\r\nalice,8,119,35,21,0%.000039\r\n", csv.body)
        -- a range in the future is empty; bad parameters are refused
        local future = os.time() + 86400 * 30
        rep = report("group_by=model&from=" .. future .. "&to=" .. (future + 60)).json
        assert.same({}, rep.rows)
        assert.equal(0, rep.totals.requests)
        assert.equal(400, gw:admin("GET", "/admin/usage?group_by=path").status)
        assert.equal(400, gw:admin("GET", "/admin/usage?from=yesterday").status)
        assert.equal(400, gw:admin("GET", "/admin/usage?from=2&to=1").status)
        rep = report("group_by=consumer&from=2020-01-01T00:00:00Z").json
        assert.equal(13, rep.totals.requests)
        -- a reload keeps the store (shared dicts live as long as the process)
        gw:reload()
        helpers.wait_until(function() return gw:log():find("applied config version 2", 1, true)
            or gw:admin("GET", "/admin/status").json.config_version >= 2 end, 5)
        rep = report("group_by=consumer").json
        assert.equal(13, rep.totals.requests)
    end)
end)

describe("sluice.metrics", function()
    local metrics = require("sluice.pdk.metrics")
    it("refuses bad names, labels, buckets and a second registration of another shape", function()
        assert.has_error(function() metrics.counter("bad name", "x") end)
        assert.has_error(function() metrics.counter("ok_total", "x", { "le" }) end)
        assert.has_error(function() metrics.histogram("h_seconds", "x", {}, { 1, 0.5 }) end)
        local c = metrics.counter("spec_things_total", "x", { "a" })
        assert.equal(c, metrics.counter("spec_things_total", "x", { "a" }))
        assert.has_error(function() metrics.gauge("spec_things_total", "x", { "a" }) end)
        assert.has_error(function() c:inc(-1, "x") end)
    end)
    it("escapes label values and cuts them at 128 bytes", function()
        assert.truthy(unit) -- loads the FFI library for the PDK
        local c = metrics.counter("spec_escape_total", "x", { "a" })
        c:inc(1, 'say "hi"\n\\')
        local s
        for k in pairs(c.tree) do s = k end
        assert.equal('say "hi"\n\\', s)
    end)
    it("keeps label values valid UTF-8 for Prometheus", function()
        local c = metrics.counter("spec_utf8_total", "x", { "a" })
        local s = c:handle("caf\xc3\xa9 \xff")
        assert.matches('a="caf\xc3\xa9 %?"', s.key)
        s = c:handle(string.rep("x", 127) .. "\xc3\xa9") -- the cut at 128 bytes splits the last character
        assert.matches('a="' .. string.rep("x", 127) .. '"}$', s.key)
    end)
end)

describe("usage reports across nodes (memcached)", function()
    local MEMCACHED = "/usr/bin/memcached"
    if not io.open(MEMCACHED) then
        pending("memcached is not installed")
        return
    end
    teardown(helpers.stop_all)

    it("sums every node that published, and falls back to this node when memcached is gone", function()
        local port = helpers.free_port()
        local user = (io.popen("id -u"):read("*l") == "0") and " -u root" or ""
        local mc = helpers.spawn(string.format("%s -l 127.0.0.1 -p %d -U 0 -m 16%s", MEMCACHED, port, user))
        assert(helpers.wait_port(port, mc, 5))
        local dir = helpers.tmpdir()
        local mport = helpers.free_port()
        local p = helpers.spawn("node " .. helpers.shell_quote(ROOT .. "/tests/mock/providers.js") .. " " .. mport
            .. " >" .. helpers.shell_quote(dir .. "/mock.log") .. " 2>&1")
        assert(helpers.wait_port(mport, p, 10))
        local function node(id)
            return helpers.start_gateway({
                node = { workers = 1, memcached = { servers = { "127.0.0.1:" .. port }, timeout = 0.5 } },
                providers = { oai = { kind = "openai", endpoint = "http://127.0.0.1:" .. mport, api_key = "k" } },
                routes = { { id = "chat", paths = { "/v1/chat/completions" }, plugins = { ["ai-proxy"] = { provider = "oai" } } } },
                global_plugins = { prometheus = { usage = { node_id = id, publish_interval = 1 } } },
            })
        end
        local a, b = node("node-a"), node("node-b")
        local body = { model = "gpt-4o-mini", messages = { { role = "user", content = "hi" } } }
        for _ = 1, 3 do assert.equal(200, helpers.http("POST", a.url("/v1/chat/completions"), { body = body }).status) end
        for _ = 1, 5 do assert.equal(200, helpers.http("POST", b.url("/v1/chat/completions"), { body = body }).status) end
        local rep = helpers.wait_until(function()
            local j = a:admin("GET", "/admin/usage?group_by=route").json
            return j.nodes == 2 and j.totals.requests == 8 and j
        end, 10, "node-b's usage never reached node-a")
        assert.equal(8, rep.rows[1].requests)
        assert.equal(8 * 17, rep.rows[1].input_tokens)
        -- scope=node: this node alone
        assert.equal(3, a:admin("GET", "/admin/usage?group_by=route&scope=node").json.totals.requests)
        -- memcached gone: this node's numbers, marked partial
        mc:stop(2)
        rep = helpers.wait_until(function()
            local j = a:admin("GET", "/admin/usage?group_by=route").json
            return j.partial and j
        end, 10, "no partial report without memcached")
        assert.equal(3, rep.totals.requests)
        assert.matches("^memcached", rep.error)
    end)
end)

describe("node.metrics.listen", function()
    teardown(helpers.stop_all)

    local function sluice_t(node)
        local dir = helpers.tmpdir()
        local file = dir .. "/sluice.yaml"
        helpers.write_file(file, helpers.json({ node = node, routes = {} }) .. "\n")
        return helpers.exec(("env SLUICE_HOME=%s %s -t -c %s"):format(helpers.shell_quote(ROOT),
            helpers.shell_quote(helpers.BIN), helpers.shell_quote(file)), 15)
    end

    it("serves GET /metrics without a key on its own listener, and nothing else there", function()
        local mport = helpers.free_port()
        local gw = helpers.start_gateway({
            node = { workers = 2, metrics = { listen = "127.0.0.1:" .. mport } },
            routes = { { id = "r", paths = { "/*" }, upstream = { nodes = { "127.0.0.1:" .. helpers.free_port() } } } },
            global_plugins = { prometheus = {} },
        })
        assert(helpers.wait_port(mport, gw.proc, 10))
        for _ = 1, 4 do assert.equal(502, helpers.http("GET", gw.url("/nothing-behind")).status) end
        local url = "http://127.0.0.1:" .. mport
        local text = helpers.wait_until(function()
            local res = helpers.http("GET", url .. "/metrics")
            assert.equal(200, res.status)
            assert.matches("^text/plain; version=0.0.4", res.headers["content-type"])
            return (value(res.body, "sluice_http_requests_total", { route = "r" }) or 0) >= 4 and res.body
        end, 10, "the requests never showed on the metrics listener")
        assert.equal(4, value(text, "sluice_http_requests_total", { route = "r" }))
        -- the Admin API, usage and dashboard are not on this listener, not even with the key
        for _, p in ipairs({ "/admin/status", "/admin/routes", "/admin/usage?group_by=route", "/dashboard", "/" }) do
            local res = helpers.http("GET", url .. p, { headers = { ["x-api-key"] = gw.admin_key } })
            assert.equal(404, res.status, p)
        end
        assert.equal(405, helpers.http("POST", url .. "/metrics", { body = "x" }).status)
        -- on the proxy's listener /metrics is just a path of route r (nothing listens behind it: 502)
        local res = helpers.http("GET", gw.url("/metrics"))
        assert.equal(502, res.status)
        assert.falsy(res.body:find("sluice_http_requests_total", 1, true))
        -- the admin listener still wants its key
        assert.equal(401, helpers.http("GET", gw.admin_url("/metrics")).status)
    end)

    it("has a connection limit of its own: a flood there shuts out neither the Admin API nor traffic", function()
        local socket = require("socket")
        local LIMIT = 64 -- SL_ADMIN_MAX_CONNECTIONS (core/server/settings.h), per listener kind
        local mport = helpers.free_port()
        local gw = helpers.start_gateway({
            node = { workers = 1, metrics = { listen = "127.0.0.1:" .. mport } },
            routes = { { id = "r", paths = { "/*" }, upstream = { nodes = { "127.0.0.1:" .. helpers.free_port() } } } },
        })
        assert(helpers.wait_port(mport, gw.proc, 10))
        helpers.sleep(0.3) -- the probe connections are gone
        local flood = {}
        for i = 1, LIMIT + 5 do
            local c = socket.tcp()
            c:settimeout(5)
            assert(c:connect("127.0.0.1", mport))
            flood[i] = c
        end
        -- the 5 past the limit get a 503; the others stay open
        local refused = 0
        helpers.wait_until(function()
            for i, c in ipairs(flood) do
                if c ~= false then
                    c:settimeout(0)
                    local data, err, partial = c:receive("*a")
                    if (data or partial or ""):match("^HTTP/1%.1 503") or err == "closed" then
                        refused, flood[i] = refused + 1, false
                        c:close()
                    end
                end
            end
            return refused >= 5
        end, 5, "no refusal past the metrics listener's limit")
        helpers.sleep(0.2)
        assert.equal(200, gw:admin("GET", "/admin/routes").status)
        assert.equal(502, helpers.http("GET", gw.url("/x")).status)
        helpers.wait_until(function() return gw:log():find("metrics listener connection limit", 1, true) end, 3,
            "the refusals were not logged")
        for _, c in ipairs(flood) do if c then c:close() end end
        assert.equal(5, refused)
        helpers.wait_until(function()
            local res = helpers.http("GET", "http://127.0.0.1:" .. mport .. "/metrics")
            return res and res.status == 200
        end, 5, "/metrics not served after the flood left")
    end)

    it("refuses a metrics address that another listener has (SO_REUSEPORT would split it)", function()
        local p1, p2 = helpers.free_port(), helpers.free_port()
        local code, out = sluice_t({ listen = { "127.0.0.1:" .. p1 }, metrics = { listen = "127.0.0.1:" .. p1 } })
        assert.is_not.equal(0, code)
        assert.matches("node.metrics.listen: same address as node.listen%[1%]", out)
        code, out = sluice_t({ listen = { "127.0.0.1:" .. p1 }, metrics = { listen = "0.0.0.0:" .. p2 },
                               admin = { listen = "127.0.0.1:" .. p2, key = "spec-admin-key-0123456789" } })
        assert.is_not.equal(0, code)
        assert.matches("node.metrics.listen: same address as node.admin.listen", out)
        code, out = sluice_t({ listen = { "127.0.0.1:" .. p1 }, metrics = { listen = "localhost:x" } })
        assert.is_not.equal(0, code)
        assert.matches("node.metrics.listen: invalid address", out)
        code, out = sluice_t({ listen = { "127.0.0.1:" .. p1 }, metrics = { listen = "127.0.0.1:" .. p2, key = "k" } })
        assert.is_not.equal(0, code)
        assert.matches("node.metrics", out)
        code = sluice_t({ listen = { "127.0.0.1:" .. p1 }, metrics = { listen = "127.0.0.1:" .. p2 } })
        assert.equal(0, code)
    end)
end)

describe("refusals of the limiters", function()
    teardown(helpers.stop_all)

    it("counts each refusal of ai-rate-limit and limit-req by route, plugin and reason", function()
        local dir = helpers.tmpdir()
        local port = helpers.free_port()
        local p = helpers.spawn("node " .. helpers.shell_quote(ROOT .. "/tests/mock/providers.js") .. " " .. port
            .. " >" .. helpers.shell_quote(dir .. "/mock.log") .. " 2>&1")
        assert(helpers.wait_port(port, p, 10))
        local gw = helpers.start_gateway({
            node = { workers = 2 },
            providers = { oai = { kind = "openai", endpoint = "http://127.0.0.1:" .. port, api_key = "sk-test" } },
            consumers = { { name = "alice", keys = { "alice-key-0123456789" } } },
            routes = {
                { id = "lim", paths = { "/v1/chat/completions" },
                  plugins = { ["key-auth"] = {}, ["ai-proxy"] = { provider = "oai" },
                              ["ai-rate-limit"] = { limits = { { by = "consumer", metric = "requests", limit = 2,
                                                                 window = "1h" } } } } },
                { id = "req", paths = { "/other/v1/chat/completions" },
                  plugins = { ["ai-proxy"] = { provider = "oai" },
                              ["limit-req"] = { by = "ip", rate = 1, per = "1h", burst = 0 } } },
            },
            global_plugins = { prometheus = {} },
        })
        local body = { model = "gpt-4o-mini", messages = { { role = "user", content = "hi" } } }
        local codes = {}
        for _ = 1, 5 do
            local res = helpers.http("POST", gw.url("/v1/chat/completions"),
                { headers = { authorization = "Bearer alice-key-0123456789" }, body = body })
            codes[#codes + 1] = res.status
        end
        assert.same({ 200, 200, 429, 429, 429 }, codes)
        codes = {}
        for _ = 1, 3 do codes[#codes + 1] = helpers.http("POST", gw.url("/other/v1/chat/completions"), { body = body }).status end
        assert.same({ 200, 429, 429 }, codes)
        local text = helpers.wait_until(function()
            local res = helpers.http("GET", gw.admin_url("/metrics"), { headers = { ["x-api-key"] = gw.admin_key } })
            -- metrics are flushed per worker: wait until every count this test makes is in
            return value(res.body, "sluice_ai_refusals_total", { route = "req" }) == 2
                and value(res.body, "sluice_ai_refusals_total", { route = "lim" }) == 3
                and value(res.body, "sluice_http_requests_total", { status_class = "4xx" }) == 5 and res.body
        end, 10, "the refusals were not counted")
        assert.equal(3, value(text, "sluice_ai_refusals_total",
            { route = "lim", plugin = "ai-rate-limit", reason = "rate_limit_exceeded" }))
        assert.equal(2, value(text, "sluice_ai_refusals_total",
            { route = "req", plugin = "limit-req", reason = "rate_limit_exceeded" }))
        assert.equal(5, value(text, "sluice_http_requests_total", { status_class = "4xx" }))
    end)
end)

-- ai-context against the real gateway: the filled system prompt (consumer, headers, route, date in a zone, ctx
-- values) in both client formats, and session memory with the official openai SDK over ai-proxy (streamed and
-- not), isolation between consumers, trimming at the token budget, DELETE through the Admin API, and memcached
-- killed mid-way.
local helpers = require("helpers")
local unit = require("unit_helpers")
local cjson = require("cjson.safe")

local MEMCACHED = "/usr/bin/memcached"
-- the official SDK (tests/e2e/node_modules, scripts/deps.sh installs it); without it the SDK cases are pending
local has_sdk = io.open(helpers.ROOT .. "/tests/e2e/node_modules/openai/package.json") ~= nil
local it_sdk = has_sdk and it or pending
local ANSWER = "Hello from the mock."

describe("ai-context (gateway)", function()
    local gw, mock, provider_port, mc_port, mc

    local function start_mc()
        local user = io.popen("id -u"):read("*l") == "0" and " -u root" or ""
        mc = helpers.spawn(string.format("%s -l 127.0.0.1 -p %d -U 0 -m 16%s", MEMCACHED, mc_port, user))
        assert(helpers.wait_port(mc_port, mc, 5))
    end

    -- one SDK request: the answer's text (errors fail the test)
    local function sdk(route, key, session, stream, question)
        local code, out = helpers.exec(string.format("node %s %s %s %s %s %s",
            helpers.shell_quote(helpers.ROOT .. "/tests/e2e/session_client.mjs"),
            helpers.shell_quote(gw.url("/" .. route .. "/v1")), helpers.shell_quote(key),
            helpers.shell_quote(session or ""), stream and "1" or "0", helpers.shell_quote(question)), 30)
        local r = cjson.decode(out:match("({.*})") or "")
        assert(code == 0 and r and r.text, out)
        return r.text
    end

    -- the messages the provider got last
    local function upstream_messages()
        local res = assert(helpers.http("GET", "http://127.0.0.1:" .. provider_port .. "/__requests"))
        local all = assert(cjson.decode(res.body))
        return all[#all].body.messages
    end

    local function contents(msgs)
        local out = {}
        for i, m in ipairs(msgs) do out[i] = m.role .. ": " .. m.content end
        return out
    end

    setup(function()
        provider_port, mc_port = helpers.free_port(), helpers.free_port()
        local p = helpers.spawn(string.format("node %s %d > /dev/null 2>&1",
            helpers.shell_quote(helpers.ROOT .. "/tests/mock/providers.js"), provider_port))
        assert(helpers.wait_port(provider_port, p, 10))
        start_mc()
        mock = helpers.mock_upstream({ body = unit.chat_completion("ok"), headers = { ["content-type"] = "application/json" } })
        local session_route = function(id, session)
            return { id = id, paths = { "/" .. id .. "/v1/chat/completions", "/" .. id .. "/v1/messages" },
                     plugins = { ["key-auth"] = {}, ["ai-context"] = { session = session },
                                 ["ai-proxy"] = { provider = "oa" } } }
        end
        gw = helpers.start_gateway({
            node = { workers = 2, shared_dicts = { sluice = "4m" },
                     plugin_paths = { helpers.ROOT .. "/plugins", helpers.ROOT .. "/spec/fixtures/ctx_plugins" },
                     memcached = { servers = { "127.0.0.1:" .. mc_port }, timeout = 0.2, failure_threshold = 2,
                                   retry_after = 1 } },
            providers = { oa = { kind = "openai", endpoint = "http://127.0.0.1:" .. provider_port,
                                 api_key = "sk-mock-openai", models = { ["gpt-4o-mini"] = "gpt-4o-mini-2024-07-18" } } },
            consumers = {
                { name = "alice", keys = { "alice-key-0001" }, groups = { "staff", "admins" },
                  metadata = { team = "payments" } },
                { name = "bob", keys = { "bob-key-0002" } },
            },
            consumer_groups = { staff = { plugins = {} }, admins = { plugins = {} } },
            upstreams = { llm = { nodes = { mock.addr } } },
            routes = {
                session_route("mem", { store = "memcached", ttl = 600 }),
                session_route("shd", { store = "shared", budget_tokens = 60 }),
                { id = "tpl", paths = { "/tpl/v1/chat/completions", "/tpl/v1/messages" }, upstream = "llm",
                  plugins = { ["key-auth"] = {}, ["ctx-tagger"] = { plan = "gold" }, ["ai-context"] = {
                      timezone = "Asia/Kolkata", placement = "after",
                      template = "User {{consumer.name}} of {{consumer.metadata.team}} ({{consumer.groups}}), "
                          .. "tenant {{header.x-tenant}}, route {{route.id}}, plan {{ctx.plan}}, region "
                          .. "{{ctx.region}}, key '{{consumer.keys}}', cfg '{{ctx.config}}', {{date}} {{timezone}} {{utc_offset}}." } } },
            },
        })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    it("fills the template from the consumer, headers, route, ctx and the date in the zone (both formats)", function()
        local res = assert(helpers.http("POST", gw.url("/tpl/v1/chat/completions"), {
            headers = { authorization = "Bearer alice-key-0001", ["x-tenant"] = "acme" },
            body = { messages = { { role = "system", content = "client" }, { role = "user", content = "hi" } } } }))
        assert.equal(200, res.status, res.body)
        local got = assert(cjson.decode(mock:last().body), mock:last().body).messages
        assert.equal("client", got[1].content)
        local t = os.time() + 5 * 3600 + 1800
        local dates = { os.date("!%Y-%m-%d", t - 60), os.date("!%Y-%m-%d", t + 60) }
        local text = got[2].content
        assert.equal("system", got[2].role)
        assert.truthy(text == "User alice of payments (staff, admins), tenant acme, route tpl, plan gold, region "
            .. "eu-west, key '', cfg '', " .. dates[1] .. " Asia/Kolkata +05:30." or text:find(dates[2], 1, true), text)
        assert.falsy(text:find("alice-key", 1, true))

        res = assert(helpers.http("POST", gw.url("/tpl/v1/messages"), {
            headers = { ["x-api-key"] = "bob-key-0002" },
            body = { model = "c", max_tokens = 5, system = "client rules", messages = { { role = "user", content = "hi" } } } }))
        assert.equal(200, res.status, res.body)
        local sys = assert(cjson.decode(mock:last().body)).system
        assert.truthy(sys:find("^client rules\n\nUser bob of  %(%), tenant , route tpl"), sys)
    end)

    it("refuses an unknown time zone", function()
        local res = assert(gw:admin("PUT", "/admin/routes/badtz", { paths = { "/badtz" }, upstream = "llm",
            plugins = { ["ai-context"] = { template = "x", timezone = "Mars/Olympus_Mons" } } }))
        assert.equal(400, res.status)
        assert.truthy(res.body:find("unknown time zone Mars", 1, true), res.body)
        res = assert(gw:admin("PUT", "/admin/routes/badtz", { paths = { "/badtz" }, upstream = "llm",
            plugins = { ["ai-context"] = { template = "x", timezone = "../../etc/passwd" } } }))
        assert.equal(400, res.status)
    end)

    it_sdk("remembers a conversation across three SDK requests, not streamed and streamed", function()
        for _, stream in ipairs({ false, true }) do
            local sid = stream and "s-stream" or "s-plain"
            assert.equal(ANSWER, sdk("mem", "alice-key-0001", sid, stream, "first question"))
            assert.same({ "system: Be brief.", "user: first question" }, contents(upstream_messages()))
            assert.equal(ANSWER, sdk("mem", "alice-key-0001", sid, stream, "second question"))
            assert.equal(ANSWER, sdk("mem", "alice-key-0001", sid, stream, "third question"))
            assert.same({ "system: Be brief.", "user: first question", "assistant: " .. ANSWER,
                          "user: second question", "assistant: " .. ANSWER, "user: third question" },
                contents(upstream_messages()))
        end
    end)

    it("remembers a raw HTTP client's answers, not streamed, in the shared dict too", function()
        for _, route in ipairs({ "mem", "shd" }) do
            for i = 1, 2 do
                local res = assert(helpers.http("POST", gw.url("/" .. route .. "/v1/chat/completions"), {
                    headers = { authorization = "Bearer alice-key-0001", ["x-session-id"] = "raw-1" },
                    body = { model = "gpt-4o-mini", messages = { { role = "user", content = "raw " .. i } } } }))
                assert.equal(200, res.status, res.body)
            end
            assert.same({ "user: raw 1", "assistant: " .. ANSWER, "user: raw 2" }, contents(upstream_messages()), route)
        end
    end)

    it("remembers user and assistant text only (tool calls and results are not replayed)", function()
        local function send(messages)
            local res = assert(helpers.http("POST", gw.url("/mem/v1/chat/completions"), {
                headers = { authorization = "Bearer alice-key-0001", ["x-session-id"] = "tools-1" },
                body = { model = "gpt-4o-mini", messages = messages } }))
            assert.equal(200, res.status, res.body)
        end
        send({ { role = "user", content = "weather?" },
               { role = "assistant", content = cjson.null, tool_calls = { { id = "call_1", type = "function",
                   ["function"] = { name = "get_weather", arguments = "{}" } } } },
               { role = "tool", tool_call_id = "call_1", content = "sunny" },
               { role = "user", content = "so?" } })
        send({ { role = "user", content = "thanks" } })
        assert.same({ "user: weather?", "user: so?", "assistant: " .. ANSWER, "user: thanks" },
            contents(upstream_messages()))
    end)

    it("remembers an Anthropic client's streamed answers too", function()
        for i = 1, 2 do
            local res = assert(helpers.http("POST", gw.url("/mem/v1/messages"), {
                headers = { ["x-api-key"] = "alice-key-0001", ["x-session-id"] = "anthropic-1" },
                body = { model = "gpt-4o-mini", max_tokens = 50, stream = true, system = "sys",
                         messages = { { role = "user", content = { { type = "text", text = "turn " .. i } } } } } }))
            assert.equal(200, res.status, res.body)
            assert.truthy(res.body:find("content_block_delta", 1, true), res.body)
        end
        assert.same({ "system: sys", "user: turn 1", "assistant: " .. ANSWER, "user: turn 2" },
            contents(upstream_messages()))
    end)

    it_sdk("keeps sessions apart per consumer, and requests without a session id stateless", function()
        sdk("mem", "alice-key-0001", "same-id", false, "alice asks")
        sdk("mem", "bob-key-0002", "same-id", false, "bob asks")
        assert.same({ "system: Be brief.", "user: bob asks" }, contents(upstream_messages()))
        sdk("mem", "alice-key-0001", nil, false, "no session")
        assert.same({ "system: Be brief.", "user: no session" }, contents(upstream_messages()))
        sdk("mem", "bob-key-0002", "same-id", false, "bob again")
        assert.same({ "system: Be brief.", "user: bob asks", "assistant: " .. ANSWER, "user: bob again" },
            contents(upstream_messages()))
        local res = assert(helpers.http("POST", gw.url("/mem/v1/chat/completions"), {
            headers = { authorization = "Bearer bob-key-0002", ["x-session-id"] = "bad id!" },
            body = { model = "gpt-4o-mini", messages = { { role = "user", content = "x" } } } }))
        assert.equal(400, res.status)
    end)

    it_sdk("trims the memory to the token budget, oldest turns first, the system prompt kept", function()
        local long = " with quite a few extra words so that each turn costs a good number of tokens"
        for i = 1, 4 do sdk("shd", "alice-key-0001", "trim", false, "question " .. i .. long) end
        local got = contents(upstream_messages())
        assert.equal("system: Be brief.", got[1])
        assert.equal("user: question 4" .. long, got[#got])
        local joined = table.concat(got, "\n")
        assert.falsy(joined:find("question 1", 1, true), joined)
        assert.truthy(joined:find("question 3", 1, true), joined)
    end)

    it_sdk("deletes a session through the Admin API", function()
        local res = assert(gw:admin("DELETE", "/admin/sessions/alice/s-plain"))
        assert.equal(200, res.status, res.body)
        sdk("mem", "alice-key-0001", "s-plain", false, "after delete")
        assert.same({ "system: Be brief.", "user: after delete" }, contents(upstream_messages()))
        assert.equal(405, assert(gw:admin("GET", "/admin/sessions/alice/s-plain")).status)
        assert.equal(400, assert(gw:admin("DELETE", "/admin/sessions/alice/bad%20id")).status)
    end)

    it_sdk("serves without memory while memcached is down, and remembers again once it is back", function()
        sdk("mem", "alice-key-0001", "mc", false, "before the outage")
        mc:stop(5)
        for i = 1, 3 do
            assert.equal(ANSWER, sdk("mem", "alice-key-0001", "mc", i == 2, "during " .. i))
            assert.same({ "system: Be brief.", "user: during " .. i }, contents(upstream_messages()))
        end
        assert.truthy(gw:log():find("session memory unavailable", 1, true))
        start_mc() -- empty again: the old turns are gone with the process
        helpers.sleep(1.2) -- the circuit's retry_after
        helpers.wait_until(function()
            sdk("mem", "alice-key-0001", "mc2", false, "probe")
            sdk("mem", "alice-key-0001", "mc2", false, "back")
            local got = contents(upstream_messages())
            return #got == 4 and got[3] == "assistant: " .. ANSWER
        end, 10, "memory works again after memcached came back")
    end)
end)

-- ai-pii through the real gateway: what the provider gets is masked, what the client gets is restored, for JSON
-- answers and for streams in both client formats, with placeholders cut at every byte position across events; a
-- local (mock) provider and an OpenAI-wire one (spec/support/echo_llm.js, streams passed through as they come).
local helpers = require("helpers")
local sse_read = require("support.sse_read")
local cjson = require("cjson.safe")

local ORIGINAL = "Reach me at bob@example.com or +49 30 1234567; card 4111 1111 1111 1111."

describe("ai-pii (gateway)", function()
    local gw, echo_port

    setup(function()
        local dir = helpers.tmpdir()
        local pf = dir .. "/echo.port"
        local echo = helpers.spawn("node " .. helpers.shell_quote(helpers.ROOT .. "/spec/support/echo_llm.js") .. " "
            .. helpers.shell_quote(pf) .. " >" .. helpers.shell_quote(dir .. "/echo.log") .. " 2>&1")
        echo_port = helpers.wait_until(function() return tonumber(helpers.read_file(pf) or "") end, 10, "echo_llm port")
        assert(helpers.wait_port(echo_port, echo, 10))
        local ep = "http://127.0.0.1:" .. echo_port
        local function echo_provider(headers) return { kind = "openai-compatible", endpoint = ep, api_key = "k",
                                                        options = { headers = headers } } end
        local routes = {}
        local providers = {
            mock5 = { kind = "mock", options = { echo = true, chunk_chars = 5 } },
            mock1 = { kind = "mock", options = { echo = true, chunk_chars = 1 } },
            echo5 = echo_provider({ ["x-chunk"] = "5" }),
            echo1 = echo_provider({ ["x-chunk"] = "1" }),
            esc = echo_provider({ ["x-chunk"] = "3", ["x-escape"] = "1" }),
            tool = echo_provider({ ["x-chunk"] = "3" }),
            card = { kind = "mock", options = { text = "Noted: bob@example.com; your card 5500 0000 0000 0004 is on file.",
                                                chunk_chars = 3 } },
        }
        for name in pairs(providers) do
            routes[#routes + 1] = { id = name, paths = { "/" .. name .. "/v1/*" },
                                    plugins = { ["ai-pii"] = {}, ["ai-proxy"] = { provider = name } } }
        end
        routes[#routes + 1] = { id = "cardmask", paths = { "/cardmask/v1/*" }, plugins = {
            ["ai-pii"] = { response = { detectors = { "credit_card" } } }, ["ai-proxy"] = { provider = "card" } } }
        -- custom detectors are on with the default detectors (all), and by name in a list
        routes[#routes + 1] = { id = "custom", paths = { "/custom/v1/*" }, plugins = {
            ["ai-pii"] = { custom = { { name = "employee_id", pattern = [[EMP-\d{6}]], action = "redact" } } },
            ["ai-proxy"] = { provider = "echo5" } } }
        routes[#routes + 1] = { id = "custom2", paths = { "/custom2/v1/*" }, plugins = {
            ["ai-pii"] = { detectors = { "email", "ticket" }, custom = { { name = "ticket", pattern = [[TCK-\d{4}]] } } },
            ["ai-proxy"] = { provider = "echo5" } } }
        gw = helpers.start_gateway({ node = { workers = 1 }, providers = providers, routes = routes })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    local function upstream_requests()
        local res = assert(helpers.http("GET", "http://127.0.0.1:" .. echo_port .. "/_requests"))
        return cjson.decode(res.body)
    end

    local function chat(prefix, body)
        return assert(helpers.http("POST", gw.url("/" .. prefix .. "/v1/chat/completions"), { body = body }))
    end

    local function messages(prefix, body)
        return assert(helpers.http("POST", gw.url("/" .. prefix .. "/v1/messages"), { body = body,
            headers = { ["anthropic-version"] = "2023-06-01" } }))
    end

    it("masks what the provider gets and restores the JSON answer (OpenAI client)", function()
        for _, p in ipairs({ "mock5", "echo5" }) do
            local res = chat(p, { model = "m", messages = { { role = "user", content = ORIGINAL } } })
            assert.equal(200, res.status)
            assert.equal(ORIGINAL, res.json.choices[1].message.content)
        end
        local sent = upstream_requests()
        local last = sent[#sent].body.messages[1].content
        assert.equal("Reach me at <PII_EMAIL_1> or <PII_PHONE_1>; card <PII_CREDIT_CARD_1>.", last)
    end)

    it("applies custom detectors (with the default detectors, and named in a list)", function()
        local res = chat("custom", { model = "m", messages = { { role = "user", content = "EMP-123456 is bob@example.com" } } })
        assert.equal(200, res.status)
        local sent = upstream_requests()
        assert.equal("[EMPLOYEE_ID] is <PII_EMAIL_1>", sent[#sent].body.messages[1].content)
        assert.equal("[EMPLOYEE_ID] is bob@example.com", res.json.choices[1].message.content)
        res = chat("custom2", { model = "m", messages = { { role = "user", content = "TCK-1234 by bob@example.com" } } })
        assert.equal(200, res.status)
        sent = upstream_requests()
        assert.equal("<PII_TICKET_1> by <PII_EMAIL_1>", sent[#sent].body.messages[1].content)
        assert.equal("TCK-1234 by bob@example.com", res.json.choices[1].message.content)
    end)

    it("masks values nested deep in tool-call arguments and tool_use inputs before they leave", function()
        local v = { a = "bob@example.com" }
        for _ = 1, 60 do v = { x = v } end
        local res = chat("echo5", { model = "m", messages = {
            { role = "assistant", tool_calls = { { id = "c1", type = "function",
                ["function"] = { name = "f", arguments = cjson.encode(v) } } } },
            { role = "tool", tool_call_id = "c1", content = "ok" }, { role = "user", content = "hi" } } })
        assert.equal(200, res.status)
        local sent = upstream_requests()
        local args = sent[#sent].body.messages[1].tool_calls[1]["function"].arguments
        assert.not_matches("bob@example.com", args, 1, true)
        assert.matches("<PII_EMAIL_1>", args, 1, true)
        res = messages("echo5", { model = "m", max_tokens = 50, messages = {
            { role = "user", content = "look it up" },
            { role = "assistant", content = { { type = "tool_use", id = "t1", name = "f", input = v } } },
            { role = "user", content = { { type = "tool_result", tool_use_id = "t1", content = "ok" } } } } })
        assert.equal(200, res.status)
        sent = upstream_requests()
        local raw = cjson.encode(sent[#sent].body)
        assert.not_matches("bob@example.com", raw, 1, true)
        assert.matches("<PII_EMAIL_1>", raw, 1, true)
    end)

    it("restores the JSON answer for an Anthropic client", function()
        for _, p in ipairs({ "mock5", "echo5" }) do
            local res = messages(p, { model = "m", max_tokens = 50, messages = { { role = "user", content = ORIGINAL } } })
            assert.equal(200, res.status)
            assert.equal(ORIGINAL, res.json.content[1].text)
        end
    end)

    it("restores streams cut at every byte position of a placeholder (OpenAI client)", function()
        for _, p in ipairs({ "mock5", "echo5", "mock1", "echo1", "esc" }) do
            for pad = 0, 4 do
                local text = string.rep("x", pad) .. ORIGINAL
                local res = chat(p, { model = "m", stream = true, messages = { { role = "user", content = text } } })
                assert.equal(200, res.status)
                local r = sse_read.openai(sse_read.events(res.body))
                assert.equal(text, r.text, p .. " pad " .. pad)
                assert.equal("stop", r.finish_reason)
                assert.not_matches("PII_", res.body)
            end
        end
    end)

    it("restores streams cut at every byte position of a placeholder (Anthropic client)", function()
        for _, p in ipairs({ "mock5", "echo5", "mock1" }) do
            for pad = 0, 4 do
                local text = string.rep("y", pad) .. ORIGINAL
                local res = messages(p, { model = "m", max_tokens = 50, stream = true,
                                          messages = { { role = "user", content = text } } })
                assert.equal(200, res.status)
                local r = sse_read.anthropic(sse_read.events(res.body))
                assert.equal(text, r.text, p .. " pad " .. pad)
                assert.equal("end_turn", r.stop_reason)
            end
        end
    end)

    local tools = { { type = "function", ["function"] = { name = "notify", parameters = { type = "object" } } } }

    it("restores tool-call arguments as valid JSON (JSON and streamed, both client formats)", function()
        local res = chat("tool", { model = "m", tools = tools, messages = { { role = "user", content = ORIGINAL } } })
        assert.equal(200, res.status)
        assert.same({ text = ORIGINAL }, cjson.decode(res.json.choices[1].message.tool_calls[1]["function"].arguments))

        res = chat("tool", { model = "m", stream = true, tools = tools, messages = { { role = "user", content = ORIGINAL } } })
        local r = sse_read.openai(sse_read.events(res.body))
        assert.same({ text = ORIGINAL }, cjson.decode(r.tool_args))
        assert.equal("tool_calls", r.finish_reason)

        local atools = { { name = "notify", input_schema = { type = "object" } } }
        res = messages("tool", { model = "m", max_tokens = 50, tools = atools,
                                 messages = { { role = "user", content = ORIGINAL } } })
        assert.equal(200, res.status)
        assert.same({ text = ORIGINAL }, res.json.content[1].input)

        res = messages("tool", { model = "m", max_tokens = 50, stream = true, tools = atools,
                                 messages = { { role = "user", content = ORIGINAL } } })
        local a = sse_read.anthropic(sse_read.events(res.body))
        assert.same({ text = ORIGINAL }, cjson.decode(a.tool_json))
        assert.equal("tool_use", a.stop_reason)
    end)

    it("masks a card number the model writes itself (response option), never a restored original", function()
        local req = { model = "m", messages = { { role = "user", content = "I am bob@example.com" } } }
        local res = chat("cardmask", req)
        assert.equal("Noted: bob@example.com; your card [CREDIT_CARD] is on file.", res.json.choices[1].message.content)
        req.stream = true
        res = chat("cardmask", req)
        local r = sse_read.openai(sse_read.events(res.body))
        assert.equal("Noted: bob@example.com; your card [CREDIT_CARD] is on file.", r.text)
        assert.not_matches("5500", res.body)
        -- without the option the card goes through
        res = chat("card", { model = "m", messages = { { role = "user", content = "hi" } } })
        assert.matches("5500 0000 0000 0004", res.json.choices[1].message.content)
    end)

    it("logs counts per detector, never a value or a placeholder's original", function()
        chat("mock5", { model = "m", messages = { { role = "user", content = ORIGINAL } } })
        local line = helpers.wait_until(function()
            for l in gw:access_log():gmatch("[^\n]+") do
                local t = cjson.decode(l)
                if t and t.pii and t.pii.detected and t.route == "mock5" then return t end
            end
        end, 5, "an access log line with pii")
        assert.same({ email = 1, phone = 1, credit_card = 1 }, line.pii.detected)
        assert.equal(3, line.pii.restored)
        local logs = gw:access_log() .. gw:log()
        assert.not_matches("bob@example.com", logs, 1, true)
        assert.not_matches("4111 1111", logs, 1, true)
    end)
end)

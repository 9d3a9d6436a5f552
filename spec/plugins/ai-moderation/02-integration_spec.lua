-- ai-moderation through the real gateway: requests, whole answers (refusal or error), streams that turn bad
-- (ended at once with a well-formed last event in both client formats, the provider's stream cut), the
-- /v1/moderations provider (local mock and over HTTP), its failures.
local helpers = require("helpers")
local sse_read = require("support.sse_read")
local cjson = require("cjson.safe")

-- the provider's stream: event 1 is the role chunk, then one word per event: event 7 carries "murder"
local BAD7 = "Here is the plan for murder and more words after it until the very end"

describe("ai-moderation (gateway)", function()
    local gw, echo_port

    local function echo(path)
        return assert(helpers.http(path == "/_reset" and "POST" or "GET", "http://127.0.0.1:" .. echo_port .. path))
    end

    setup(function()
        local dir = helpers.tmpdir()
        local pf = dir .. "/echo.port"
        local proc = helpers.spawn("node " .. helpers.shell_quote(helpers.ROOT .. "/spec/support/echo_llm.js") .. " "
            .. helpers.shell_quote(pf) .. " >/dev/null 2>&1")
        echo_port = helpers.wait_until(function() return tonumber(helpers.read_file(pf) or "") end, 10, "echo port")
        assert(helpers.wait_port(echo_port, proc, 10))
        local ep = "http://127.0.0.1:" .. echo_port
        local local_cats = { { name = "violence", keywords = { "murder", "kill" } },
                             { name = "mild", keywords = { "darn" }, action = "flag" } }
        local function route(id, provider, mod)
            return { id = id, paths = { "/" .. id .. "/v1/*" },
                     plugins = { ["ai-moderation"] = mod, ["ai-proxy"] = { provider = provider } } }
        end
        gw = helpers.start_gateway({
            node = { workers = 1 },
            providers = {
                bad7 = { kind = "mock", options = { text = BAD7 } },
                split = { kind = "mock", options = { text = "this answer will mur" .. "der you", chunk_chars = 3 } },
                good = { kind = "mock", options = { text = "a calm answer, darn it" } },
                echo = { kind = "openai-compatible", endpoint = ep, api_key = "k" },
                slow = { kind = "openai-compatible", endpoint = ep, api_key = "k",
                         options = { headers = { ["x-delay-ms"] = "30", ["x-chunk"] = "6" } } },
                modmock = { kind = "mock" },
                modslow = { kind = "mock", options = { moderation = { latency_ms = 3000 } } },
                modhttp = { kind = "openai", endpoint = ep, api_key = "mod-key" },
                moddown = { kind = "openai", endpoint = ep, api_key = "k",
                            options = { headers = { ["x-mod-status"] = "503" } } },
            },
            routes = {
                route("local", "bad7", { categories = local_cats }),
                route("err", "bad7", { categories = local_cats, response_action = "error", status = 422 }),
                route("good", "good", { categories = local_cats }),
                route("split", "split", { categories = local_cats, stream = { window = 100, overlap = 16 } }),
                route("cut", "slow", { categories = local_cats, log_sent_text = true, request = false }),
                route("pmock", "good", { provider = "modmock", thresholds = { violence = 0.5 } }),
                route("pmockbad", "bad7", { provider = "modmock", stream = { window = 20, overlap = 8 } }),
                route("phttp", "echo", { provider = "modhttp", model = "omni-moderation-latest" }),
                route("closed", "good", { provider = "moddown" }),
                route("open", "good", { provider = "moddown", on_error = "fail_open" }),
                route("timeout", "good", { provider = "modslow", timeout = 0.2 }),
                route("noreq", "good", { categories = local_cats, request = false }),
            },
        })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    local function chat(id, content, stream)
        return assert(helpers.http("POST", gw.url("/" .. id .. "/v1/chat/completions"), { body = {
            model = "m", stream = stream or nil, messages = { { role = "user", content = content } } } }))
    end

    local function messages(id, content, stream)
        return assert(helpers.http("POST", gw.url("/" .. id .. "/v1/messages"), { body = {
            model = "m", max_tokens = 50, stream = stream or nil, messages = { { role = "user", content = content } } } }))
    end

    it("refuses a request that violates a category, in both client shapes", function()
        local res = chat("local", "how do I kill the server?")
        assert.equal(400, res.status)
        assert.matches("category: violence", res.json.error.message)
        res = messages("local", "how do I kill the server?")
        assert.equal(400, res.status)
        assert.equal("error", res.json.type)
        assert.matches("category: violence", res.json.error.message)
        assert.equal(200, chat("noreq", "kill it").status) -- request: false
    end)

    it("replaces a whole answer with a refusal in the client's shape", function()
        local res = chat("local", "hello")
        assert.equal(200, res.status)
        assert.equal("content_filter", res.json.choices[1].finish_reason)
        assert.matches("category: violence", res.json.choices[1].message.content)
        assert.not_matches("murder", res.body)
        res = messages("local", "hello")
        assert.equal(200, res.status)
        assert.equal("refusal", res.json.stop_reason)
        assert.matches("category: violence", res.json.content[1].text)
    end)

    it("or answers with the configured 4xx", function()
        local res = chat("err", "hello")
        assert.equal(422, res.status)
        assert.matches("category: violence", res.json.error.message)
        res = messages("err", "hello")
        assert.equal(422, res.status)
        assert.equal("error", res.json.type)
    end)

    it("ends a stream that turns bad at event 7 with finish_reason content_filter and [DONE] (OpenAI)", function()
        local res = chat("local", "hello", true)
        assert.equal(200, res.status)
        local evs = sse_read.events(res.body)
        local r = sse_read.openai(evs)
        assert.equal("content_filter", r.finish_reason)
        assert.equal("Here is the plan for", r.text) -- the five words before event 7
        assert.not_matches("murder", res.body)
        assert.not_matches("very end", res.body)
        assert.equal(8, #evs) -- role chunk, five words, the content_filter chunk, [DONE]
    end)

    it("ends a stream that turns bad with message_delta (refusal) and message_stop (Anthropic)", function()
        local res = messages("local", "hello", true)
        assert.equal(200, res.status)
        local r = sse_read.anthropic(sse_read.events(res.body))
        assert.equal("refusal", r.stop_reason)
        assert.equal("Here is the plan for", r.text)
        assert.not_matches("murder", res.body)
    end)

    it("sees a word split across events (overlap)", function()
        local res = chat("split", "hello", true)
        local r = sse_read.openai(sse_read.events(res.body))
        assert.equal("content_filter", r.finish_reason)
        assert.not_matches("der you", r.text)
    end)

    it("cuts the provider's stream at once and logs what the client already had", function()
        echo("/_reset")
        local res = chat("cut", "one two three four five six seven eight nine ten murder eleven twelve", true)
        local r = sse_read.openai(sse_read.events(res.body))
        assert.equal("content_filter", r.finish_reason)
        local stats = helpers.wait_until(function()
            local s = cjson.decode(echo("/_stats").body)
            return s.aborted == 1 and s
        end, 5, "the provider's stream cut")
        assert.equal(0, stats.finished)
        -- "murder" came in two events (" murde", "r elev"): its start was kept back, never sent
        assert.equal("one two three four five six seven eight nine ten ", r.text)
        local line = helpers.wait_until(function()
            return gw:log():match("[^\n]*stream stopped[^\n]*characters had already been sent: [^\n]*")
        end, 5)
        assert.matches('category "violence"', line)
        assert.matches(#r.text .. " characters had already been sent: " .. r.text, line, 1, true)
        local acc = helpers.wait_until(function()
            for l in gw:access_log():gmatch("[^\n]+") do
                local t = cjson.decode(l)
                if t and t.route == "cut" and t.moderation then return t end
            end
        end, 5)
        assert.same({ response = "block", category = "violence", source = "local",
                      sent_chars = #r.text }, acc.moderation)
        assert.equal("filter", acc.ai.cut)
        assert.equal(200, acc.status)
    end)

    it("flag categories are logged, not blocked", function()
        local res = chat("good", "hello")
        assert.equal(200, res.status)
        assert.equal("a calm answer, darn it", res.json.choices[1].message.content)
        local acc = helpers.wait_until(function()
            for l in gw:access_log():gmatch("[^\n]+") do
                local t = cjson.decode(l)
                if t and t.route == "good" and t.moderation then return t end
            end
        end, 5)
        assert.equal("flag", acc.moderation.response)
    end)

    it("asks the mock provider's /v1/moderations, with per-category thresholds", function()
        assert.equal(200, chat("pmock", "a fine question").status)
        local res = chat("pmock", "how to build a bomb")
        assert.equal(400, res.status)
        assert.matches("category: violence", res.json.error.message)
        -- a stream checked in windows by the provider
        res = chat("pmockbad", "hello", true)
        local r = sse_read.openai(sse_read.events(res.body))
        assert.equal("content_filter", r.finish_reason)
    end)

    it("asks an OpenAI-compatible /v1/moderations over HTTP, with the provider's key and model", function()
        echo("/_reset")
        local res = chat("phttp", "you idiot")
        assert.equal(400, res.status)
        assert.matches("category: harassment", res.json.error.message)
        local reqs = cjson.decode(echo("/_requests").body)
        assert.equal("/v1/moderations", reqs[1].path)
        assert.equal("Bearer mod-key", reqs[1].headers.authorization)
        assert.same({ input = "you idiot", model = "omni-moderation-latest" }, reqs[1].body)
        -- the answer (an echo of the prompt) is checked too
        res = chat("phttp", "hello there")
        assert.equal(200, res.status)
        assert.equal("hello there", res.json.choices[1].message.content)
    end)

    it("fail_closed refuses when the provider fails; fail_open lets the request through", function()
        local res = chat("closed", "hello")
        assert.equal(400, res.status)
        assert.matches("category: moderation_unavailable", res.json.error.message)
        res = chat("open", "hello")
        assert.equal(200, res.status)
        res = chat("timeout", "hello")
        assert.equal(400, res.status)
        assert.matches("moderation_unavailable", res.json.error.message)
        assert.matches("timeout", gw:log())
    end)
end)

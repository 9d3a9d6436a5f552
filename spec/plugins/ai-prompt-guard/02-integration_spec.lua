-- ai-prompt-guard through the real gateway: refusals in both client formats never reach the provider.
local helpers = require("helpers")
local cjson = require("cjson.safe")

describe("ai-prompt-guard (gateway)", function()
    local gw, mock

    setup(function()
        mock = helpers.mock_upstream({ body = { ok = true }, headers = { ["content-type"] = "application/json" } })
        gw = helpers.start_gateway({
            node = { workers = 1 },
            providers = { m = { kind = "mock", options = { text = "fine" } } },
            routes = {
                { id = "ai", paths = { "/v1/*" }, plugins = {
                    ["ai-prompt-guard"] = { deny = { { name = "no-secrets", pattern = [[(?i)\bpassword\b]] } },
                                            message = "Not here." },
                    ["ai-proxy"] = { provider = "m" } } },
                { id = "plain", paths = { "/plain/*" }, upstream = { nodes = { mock.addr } },
                  plugins = { ["ai-prompt-guard"] = { deny = { "password" } } } },
            },
        })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    it("OpenAI client: 400 in OpenAI shape with the configured message", function()
        local res = assert(helpers.http("POST", gw.url("/v1/chat/completions"), { body = { model = "x",
            messages = { { role = "user", content = "my Password is hunter2" } } } }))
        assert.equal(400, res.status)
        assert.equal("Not here.", res.json.error.message)
        assert.equal("prompt_blocked", res.json.error.code)
        local log = helpers.wait_until(function() return gw:log():match("[^\n]*no%-secrets[^\n]*") end, 5)
        assert.not_matches("hunter2", log)
        assert.not_matches("hunter2", gw:log() .. gw:access_log())
    end)

    it("Anthropic client: 400 in Anthropic shape", function()
        local res = assert(helpers.http("POST", gw.url("/v1/messages"), { body = { model = "x", max_tokens = 5,
            messages = { { role = "user", content = { { type = "text", text = "reset my PASSWORD" } } } } } }))
        assert.equal(400, res.status)
        assert.equal("error", res.json.type)
        assert.same({ type = "invalid_request_error", message = "Not here." }, res.json.error)
    end)

    it("lets other requests through", function()
        local res = assert(helpers.http("POST", gw.url("/v1/chat/completions"), { body = { model = "x",
            messages = { { role = "user", content = "hello" } } } }))
        assert.equal(200, res.status)
        assert.equal("fine", res.json.choices[1].message.content)
    end)

    it("guards a plain proxied route too: the upstream never sees a refused request", function()
        local res = assert(helpers.http("POST", gw.url("/plain/v1/chat/completions"), { body = {
            messages = { { role = "user", content = "password please" } } } }))
        assert.equal(400, res.status)
        assert.is_nil(mock:last())
        res = assert(helpers.http("POST", gw.url("/plain/v1/chat/completions"), { body = {
            messages = { { role = "user", content = "hi" } } } }))
        assert.equal(200, res.status)
        assert.equal("hi", cjson.decode(mock:last().body).messages[1].content)
    end)
end)

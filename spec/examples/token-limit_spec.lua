-- examples/plugins/token-limit.lua: unit (real PDK) and through the gateway.
local unit = require("unit_helpers")
local helpers = require("helpers")

local DIR = unit.ROOT .. "/examples/plugins"

describe("example token-limit", function()
    local plugin = unit.load_plugin("token-limit", DIR)

    local function call(conf, body, path)
        return unit.run(plugin, "access", conf, { path = path or "/v1/chat/completions", body = body })
    end

    it("requires max_tokens", function()
        local _, _, path = unit.validate(plugin, {})
        assert.equal("max_tokens", path)
        _, _, path = unit.validate(plugin, { max_tokens = 0 })
        assert.equal("max_tokens", path)
    end)

    it("estimates characters / 4 + 4 per message + requested completion tokens", function()
        local conf = assert(unit.validate(plugin, { max_tokens = 100 }))
        local body = { system = string.rep("s", 8), max_tokens = 10,
                       messages = { { role = "user", content = string.rep("a", 40) },
                                    { role = "user", content = { { type = "text", text = string.rep("b", 8) } } } } }
        assert.equal(math.ceil(56 / 4) + 8 + 10, plugin.estimate(conf, body))
        conf.count_completion = false
        assert.equal(math.ceil(56 / 4) + 8, plugin.estimate(conf, body))
        assert.is_nil(plugin.estimate(conf, { prompt = "x" }))
    end)

    it("lets a small request through and records the estimate", function()
        local res = call({ max_tokens = 100 }, { messages = { { role = "user", content = "hi" } } })
        assert.is_nil(res.status)
        assert.equal(5, res.ctx.token_estimate)
    end)

    it("answers 413 in OpenAI shape over the limit", function()
        local res = call({ max_tokens = 10 }, { messages = { { role = "user", content = string.rep("x", 100) } } })
        assert.equal(413, res.status)
        assert.equal("context_length_exceeded", res.body.error.code)
        assert.equal("invalid_request_error", res.body.error.type)
        assert.matches("about 29 tokens, this route allows 10", res.body.error.message, 1, true)
        assert.is_true(unit.logged(res, "request too large", "info"))
    end)

    it("answers 413 in Anthropic shape on /v1/messages", function()
        local res = call({ max_tokens = 10 }, { max_tokens = 1000, messages = { { role = "user", content = "x" } } }, "/v1/messages")
        assert.equal(413, res.status)
        assert.equal("error", res.body.type)
        assert.equal("request_too_large", res.body.error.type)
    end)

    it("stops the request at the gateway before the upstream", function()
        local mock = helpers.mock_upstream()
        finally(helpers.stop_all)
        local gw = helpers.start_gateway({
            node = { plugin_paths = { helpers.ROOT .. "/plugins", DIR } },
            routes = { { id = "r", paths = { "/v1/chat/completions" }, upstream = { nodes = { mock.addr } },
                         plugins = { ["token-limit"] = { max_tokens = 50 } } } },
        })
        local res = assert(helpers.http("POST", gw.url("/v1/chat/completions"),
            { body = { messages = { { role = "user", content = string.rep("word ", 100) } } } }))
        assert.equal(413, res.status)
        assert.equal("context_length_exceeded", res.json.error.code)
        assert.equal(0, #mock:requests())
        assert.equal(200, assert(helpers.http("POST", gw.url("/v1/chat/completions"),
            { body = { messages = { { role = "user", content = "short" } } } })).status)
    end)
end)

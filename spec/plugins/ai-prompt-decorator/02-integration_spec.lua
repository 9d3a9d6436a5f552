-- ai-prompt-decorator against the real gateway: what the upstream receives for OpenAI and Anthropic clients.
local helpers = require("helpers")
local unit = require("unit_helpers")
local cjson = require("cjson.safe")

describe("ai-prompt-decorator (gateway)", function()
    local mock, gw

    setup(function()
        mock = helpers.mock_upstream({ body = unit.chat_completion("ok"), headers = { ["content-type"] = "application/json" } })
        gw = helpers.start_gateway({
            upstreams = { llm = { nodes = { mock.addr } } },
            routes = {
                { id = "chat", paths = { "/v1/chat/completions", "/v1/messages" }, upstream = "llm",
                  plugins = { ["ai-prompt-decorator"] = {
                      prepend = { { role = "system", content = "You are terse." } },
                      append = { { role = "user", content = "Answer in English." } } } } },
                { id = "plain", paths = { "/plain/*" }, upstream = "llm" },
                { id = "off", paths = { "/off/v1/chat/completions" }, upstream = "llm",
                  plugins = { ["ai-prompt-decorator"] = { prepend = { { role = "system", content = "S" } },
                                                          _meta = { disable = true } } } },
            },
        })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    local function upstream_body()
        return assert(cjson.decode(mock:last().body))
    end

    it("decorates an OpenAI chat request", function()
        local res = assert(helpers.http("POST", gw.url("/v1/chat/completions"),
            { body = { model = "gpt-4o-mini", messages = { { role = "user", content = "hi" } } } }))
        assert.equal(200, res.status)
        assert.equal("ok", res.json.choices[1].message.content)
        local got = upstream_body()
        assert.equal("gpt-4o-mini", got.model)
        assert.same({
            { role = "system", content = "You are terse." },
            { role = "user", content = "hi" },
            { role = "user", content = "Answer in English." },
        }, got.messages)
        assert.equal(tostring(#mock:last().body), mock:last().headers["content-length"])
    end)

    it("puts system text into Anthropic's top-level system", function()
        local res = assert(helpers.http("POST", gw.url("/v1/messages"),
            { body = { model = "claude", max_tokens = 5, system = "client rules",
                       messages = { { role = "user", content = "hi" } } } }))
        assert.equal(200, res.status)
        local got = upstream_body()
        assert.equal("You are terse.\n\nclient rules", got.system)
        assert.same({ { role = "user", content = "hi" }, { role = "user", content = "Answer in English." } }, got.messages)
        assert.equal(5, got.max_tokens)
    end)

    it("passes a non-chat body through byte for byte", function()
        local raw = '{"prompt": "x",   "n": 1}'
        assert.equal(200, assert(helpers.http("POST", gw.url("/v1/chat/completions"),
            { body = raw, headers = { ["content-type"] = "application/json" } })).status)
        assert.equal(raw, mock:last().body)
    end)

    it("does nothing on routes without it, or where _meta.disable is set", function()
        local body = { messages = { { role = "user", content = "hi" } } }
        assert.equal(200, assert(helpers.http("POST", gw.url("/plain/x"), { body = body })).status)
        assert.same(body, upstream_body())
        assert.equal(200, assert(helpers.http("POST", gw.url("/off/v1/chat/completions"), { body = body })).status)
        assert.same(body, upstream_body())
    end)

    it("is enabled on a route through the Admin API", function()
        local res = assert(gw:admin("PUT", "/admin/routes/live", { paths = { "/live/v1/chat/completions" }, upstream = "llm",
            plugins = { ["ai-prompt-decorator"] = { append = { { role = "assistant", content = "Sure:" } } } } }))
        assert.equal(201, res.status)
        helpers.wait_until(function()
            local r = helpers.http("POST", gw.url("/live/v1/chat/completions"),
                { body = { messages = { { role = "user", content = "go" } } } })
            return r and r.status == 200
        end, 5, "route created through the Admin API")
        assert.same({ { role = "user", content = "go" }, { role = "assistant", content = "Sure:" } }, upstream_body().messages)

        res = assert(gw:admin("PUT", "/admin/routes/bad", { paths = { "/bad" }, upstream = "llm",
            plugins = { ["ai-prompt-decorator"] = { prepend = { { role = "robot", content = "x" } } } } }))
        assert.equal(400, res.status)
        assert.equal("plugins.ai-prompt-decorator.prepend[1].role", res.json.error.details[1].path)
    end)
end)

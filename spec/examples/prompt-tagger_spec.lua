-- examples/plugins/prompt-tagger.lua: unit (real PDK + sluice.re) and through the gateway.
local unit = require("unit_helpers")
local helpers = require("helpers")

local DIR = unit.ROOT .. "/examples/plugins"

describe("example prompt-tagger", function()
    local plugin = unit.load_plugin("prompt-tagger", DIR)
    local conf = { rules = {
        { pattern = [[(?i)\b(invoice|refund|billing)\b]], value = "billing" },
        { pattern = [[(?i)\border\s+#?(\d+)]], value = "order-$1" },
    }, default = "general" }

    local function tag(messages, c)
        return unit.run(plugin, "rewrite", c or conf, { path = "/v1/chat/completions", body = { messages = messages } })
    end

    it("rejects a bad regex at config time with the rule's path", function()
        local ok, errs = unit.validate(plugin, { rules = { { pattern = "(", value = "x" } } })
        assert.is_nil(ok)
        assert.matches("rules[1].pattern", errs[1].message, 1, true)
    end)

    it("sets the header of the first matching rule, captures filled in", function()
        local res = tag({ { role = "user", content = "Where is my REFUND?" } })
        assert.equal("billing", res.headers["x-prompt-topic"])
        res = tag({ { role = "user", content = { { type = "text", text = "status of order #4521" } } } })
        assert.equal("order-4521", res.headers["x-prompt-topic"])
        assert.equal("order-4521", res.ctx.prompt_tag)
    end)

    it("looks at the last user message only, unless scan: all", function()
        local msgs = { { role = "user", content = "invoice" }, { role = "assistant", content = "ok" },
                       { role = "user", content = "thanks" } }
        assert.equal("general", tag(msgs).headers["x-prompt-topic"])
        local c = unit.deep_copy(conf)
        c.scan = "all"
        assert.equal("billing", tag(msgs, c).headers["x-prompt-topic"])
    end)

    it("sets no header without a default and no match, or without a chat body", function()
        local c = unit.deep_copy(conf)
        c.default = nil
        assert.is_nil(tag({ { role = "user", content = "hello" } }, c).headers["x-prompt-topic"])
        local res = unit.run(plugin, "rewrite", c, { path = "/x", body = "plain" })
        assert.is_nil(res.headers["x-prompt-topic"])
    end)

    it("reaches the upstream through the gateway", function()
        local mock = helpers.mock_upstream()
        finally(helpers.stop_all)
        local gw = helpers.start_gateway({
            node = { plugin_paths = { helpers.ROOT .. "/plugins", DIR } },
            routes = { { id = "r", paths = { "/v1/chat/completions" }, upstream = { nodes = { mock.addr } },
                         plugins = { ["prompt-tagger"] = conf } } },
        })
        assert.equal(200, assert(helpers.http("POST", gw.url("/v1/chat/completions"),
            { body = { messages = { { role = "user", content = "billing question" } } } })).status)
        assert.equal("billing", mock:last().headers["x-prompt-topic"])
    end)
end)

-- examples/plugins/consumer-prompt.lua (the worked example of docs/plugins.md): unit and through the gateway.
local unit = require("unit_helpers")
local helpers = require("helpers")
local cjson = require("cjson.safe")

local DIR = unit.ROOT .. "/examples/plugins"

describe("example consumer-prompt", function()
    local plugin = unit.load_plugin("consumer-prompt", DIR)
    local conf = { text = "The user is {{name}} from the {{team}} team. Answer in {{locale}}.",
                   defaults = { locale = "en-US" } }
    local config = { consumers = {
        { name = "alice", keys = { "alice-key" }, metadata = { team = "payments", locale = "de-DE" } },
        { name = "bob", keys = { "bob-key" } },
    } }
    local chat = { messages = { { role = "user", content = "hi" } } }

    local function run(opts, c)
        opts.path = opts.path or "/v1/chat/completions"
        opts.body = opts.body or chat
        opts.config = config
        return unit.run(plugin, "rewrite", c or conf, opts)
    end

    it("prepends a system message with the consumer's metadata (Bearer key)", function()
        local res = run({ headers = { authorization = "Bearer alice-key" } })
        assert.same({ role = "system", content = "The user is alice from the payments team. Answer in de-DE." },
            res.json.messages[1])
        assert.equal("alice", res.ctx.consumer.name)
    end)

    it("finds the consumer from x-api-key, fills defaults and blanks", function()
        local res = run({ headers = { ["x-api-key"] = "bob-key" } })
        assert.equal("The user is bob from the  team. Answer in en-US.", res.json.messages[1].content)
    end)

    it("uses ctx.consumer when an auth plugin set it", function()
        local res = run({ consumer = { name = "carol", metadata = { team = "ops" } } })
        assert.matches("carol from the ops team", res.json.messages[1].content, 1, true)
    end)

    it("writes into Anthropic's system", function()
        local res = run({ path = "/v1/messages", headers = { ["x-api-key"] = "alice-key" },
                          body = { system = "rules", messages = chat.messages } })
        assert.equal("The user is alice from the payments team. Answer in de-DE.\n\nrules", res.json.system)
        assert.equal(1, #res.json.messages)
    end)

    it("leaves anonymous requests alone, or answers 401 with require_consumer", function()
        local res = run({ headers = { authorization = "Bearer wrong" } })
        assert.is_nil(res.status)
        assert.is_false(res.body_changed)
        local strict = unit.deep_copy(conf)
        strict.require_consumer = true
        res = run({}, strict)
        assert.equal(401, res.status)
        assert.equal("invalid_api_key", res.body.error.code)
    end)

    it("works end to end with consumers from the config", function()
        local mock = helpers.mock_upstream()
        finally(helpers.stop_all)
        local gw = helpers.start_gateway({
            node = { plugin_paths = { helpers.ROOT .. "/plugins", DIR } },
            consumers = config.consumers,
            routes = { { id = "chat", paths = { "/v1/chat/completions" }, upstream = { nodes = { mock.addr } },
                         plugins = { ["consumer-prompt"] = conf,
                                     ["ai-prompt-decorator"] = { prepend = { { role = "system", content = "Be brief." } } } } } },
        })
        local res = assert(helpers.http("POST", gw.url("/v1/chat/completions"),
            { body = chat, headers = { authorization = "Bearer alice-key" } }))
        assert.equal(200, res.status)
        local got = cjson.decode(mock:last().body)
        -- decorator (1070) runs first, consumer-prompt (1065) then puts its message in front
        assert.matches("^The user is alice", got.messages[1].content)
        assert.equal("Be brief.", got.messages[2].content)
        assert.equal("hi", got.messages[3].content)
    end)
end)

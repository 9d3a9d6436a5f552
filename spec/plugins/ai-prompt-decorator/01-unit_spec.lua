-- ai-prompt-decorator: the rewrite phase on fake requests, through the real PDK (spec/unit_helpers.lua).
local unit = require("unit_helpers")

local CHAT = "/v1/chat/completions"
local MESSAGES = "/v1/messages"

describe("ai-prompt-decorator", function()
    local plugin = unit.load_plugin("ai-prompt-decorator")
    local conf = {
        prepend = { { role = "system", content = "You are terse." }, { role = "user", content = "Context: X." } },
        append = { { role = "user", content = "Answer in English." } },
    }

    local function chat(path, body)
        return unit.run(plugin, "rewrite", conf, { method = "POST", path = path, body = body })
    end

    describe("OpenAI format", function()
        it("prepends and appends around the client's messages, in order", function()
            local res = chat(CHAT, { model = "m", messages = { { role = "user", content = "hi" } } })
            assert.is_nil(res.status)
            assert.is_nil(res.error)
            assert.is_true(res.body_changed)
            assert.same({
                { role = "system", content = "You are terse." },
                { role = "user", content = "Context: X." },
                { role = "user", content = "hi" },
                { role = "user", content = "Answer in English." },
            }, res.json.messages)
            assert.equal("m", res.json.model)
        end)

        it("keeps the client's own system message and message fields", function()
            local res = chat(CHAT, { messages = {
                { role = "system", content = "client system" },
                { role = "user", content = { { type = "text", text = "multi" } }, name = "bob" },
            } })
            assert.equal("You are terse.", res.json.messages[1].content)
            assert.equal("client system", res.json.messages[3].content)
            assert.same({ { type = "text", text = "multi" } }, res.json.messages[4].content)
            assert.equal("bob", res.json.messages[4].name)
        end)

        it("puts appended system messages at the end", function()
            local res = unit.run(plugin, "rewrite", { append = { { role = "system", content = "last" } } },
                { path = CHAT, body = { messages = { { role = "user", content = "q" } } } })
            assert.same({ role = "system", content = "last" }, res.json.messages[2])
        end)

        it("leaves requests without messages unchanged", function()
            for _, body in ipairs({ { prompt = "old completions API" }, "not json", "" }) do
                local res = chat(CHAT, body)
                assert.is_nil(res.status)
                assert.is_false(res.body_changed)
                assert.is_true(unit.logged(res, "not a chat request", "debug"))
            end
        end)

        it("makes get_json return the decorated table for later plugins", function()
            local ctx = unit.new_ctx({ path = CHAT, body = { messages = { { role = "user", content = "hi" } } } })
            unit.run(plugin, "rewrite", conf, { ctx_table = ctx })
            local request = require("sluice").request
            assert.equal(4, #request.get_json(ctx).messages)
        end)

        it("does not share the config's message tables with the body", function()
            local res = chat(CHAT, { messages = { { role = "user", content = "hi" } } })
            res.json.messages[1].content = "changed by a later plugin"
            local again = chat(CHAT, { messages = { { role = "user", content = "hi" } } })
            assert.equal("You are terse.", again.json.messages[1].content)
        end)
    end)

    describe("Anthropic format", function()
        it("puts prepended system messages into a new top-level system", function()
            local res = chat(MESSAGES, { model = "claude", max_tokens = 10, messages = { { role = "user", content = "hi" } } })
            assert.equal("You are terse.", res.json.system)
            assert.same({
                { role = "user", content = "Context: X." },
                { role = "user", content = "hi" },
                { role = "user", content = "Answer in English." },
            }, res.json.messages)
        end)

        it("joins with an existing system string: prepended before, appended after", function()
            local c = { prepend = { { role = "system", content = "A" } }, append = { { role = "system", content = "Z" } } }
            local res = unit.run(plugin, "rewrite", c, { path = MESSAGES,
                body = { system = "client", messages = { { role = "user", content = "hi" } } } })
            assert.equal("A\n\nclient\n\nZ", res.json.system)
            assert.same({ { role = "user", content = "hi" } }, res.json.messages)
        end)

        it("adds text blocks to a system given as blocks", function()
            local c = { prepend = { { role = "system", content = "A" } }, append = { { role = "system", content = "Z" } } }
            local blocks = { { type = "text", text = "client", cache_control = { type = "ephemeral" } } }
            local res = unit.run(plugin, "rewrite", c, { path = MESSAGES,
                body = { system = blocks, messages = { { role = "user", content = "hi" } } } })
            assert.same({ { type = "text", text = "A" }, blocks[1], { type = "text", text = "Z" } }, res.json.system)
        end)

        it("is chosen by format: anthropic whatever the path, and format: openai wins over the path", function()
            local body = { messages = { { role = "user", content = "hi" } } }
            local c = { prepend = { { role = "system", content = "S" } }, format = "anthropic" }
            assert.equal("S", unit.run(plugin, "rewrite", c, { path = "/custom", body = body }).json.system)
            c.format = "openai"
            local res = unit.run(plugin, "rewrite", c, { path = MESSAGES, body = body })
            assert.is_nil(res.json.system)
            assert.equal("system", res.json.messages[1].role)
        end)
    end)

    it("runs after ai-prompt-template in a chain", function()
        local template = unit.load_plugin("ai-prompt-template")
        local res = unit.run_chain({
            { plugin, { prepend = { { role = "system", content = "S" } } } },
            { template, { templates = { { name = "t", template = { messages = { { role = "user", content = "say {{w}}" } } } } } } },
        }, { path = CHAT, body = { template = "t", variables = { w = "hi" } } })
        assert.is_nil(res.status)
        assert.same({ { role = "system", content = "S" }, { role = "user", content = "say hi" } }, res.json.messages)
    end)
end)

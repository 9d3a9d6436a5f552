-- ai-prompt-decorator: config validation (schema + check), errors carry the path of the bad field.
local unit = require("unit_helpers")

describe("ai-prompt-decorator config", function()
    local plugin = unit.load_plugin("ai-prompt-decorator")

    it("has the plugin shape and runs in rewrite at priority 1070", function()
        assert.equal("ai-prompt-decorator", plugin.name)
        assert.equal(1070, plugin.priority)
        assert.is_function(plugin.rewrite)
    end)

    it("accepts prepend and/or append messages and fills the format default", function()
        local conf = assert(unit.validate(plugin, { prepend = { { role = "system", content = "Be brief." } } }))
        assert.equal("auto", conf.format)
        assert(unit.validate(plugin, { append = { { role = "user", content = "x" } } }))
        assert(unit.validate(plugin, { prepend = { { role = "assistant", content = "a" } },
                                       append = { { role = "system", content = "b" } }, format = "anthropic" }))
    end)

    it("rejects a config with nothing to add", function()
        local conf, errs = unit.validate(plugin, {})
        assert.is_nil(conf)
        assert.truthy(#errs > 0)
        assert.is_nil(unit.validate(plugin, { prepend = {}, append = {} }))
    end)

    it("rejects a bad role with its path", function()
        local conf, errs, path = unit.validate(plugin, { prepend = { { role = "tool", content = "x" } } })
        assert.is_nil(conf)
        assert.equal("prepend[1].role", path)
        assert.matches("system, user, assistant", errs[1].message, 1, true)
    end)

    it("rejects empty or missing content and unknown fields", function()
        local _, _, path = unit.validate(plugin, { append = { { role = "user", content = "" } } })
        assert.equal("append[1].content", path)
        _, _, path = unit.validate(plugin, { append = { { role = "user" } } })
        assert.equal("append[1].content", path)
        _, _, path = unit.validate(plugin, { append = { { role = "user", content = "x", name = "n" } } })
        assert.equal("append[1].name", path)
    end)

    it("rejects a message list that is not an array", function()
        local _, _, path = unit.validate(plugin, { prepend = "Be brief." })
        assert.equal("prepend", path)
    end)

    it("rejects an unknown format", function()
        local _, _, path = unit.validate(plugin, { prepend = { { role = "user", content = "x" } }, format = "gemini" })
        assert.equal("format", path)
    end)
end)

-- ai-prompt-guard, config: defaults, patterns compiled at load (a bad one names its rule).
local unit = require("unit_helpers")

describe("ai-prompt-guard config", function()
    local plugin = unit.load_plugin("ai-prompt-guard")

    it("has defaults: user role, last message, a message", function()
        local conf = assert(unit.validate(plugin, { deny = { "x" } }))
        assert.same({ "user" }, conf.roles)
        assert.is_false(conf.history)
        assert.matches("blocked", conf.message)
    end)

    it("refuses a pattern PCRE2 cannot compile, naming the rule", function()
        local _, errs = unit.validate(plugin, { deny = { { name = "ok", pattern = "fine" }, { name = "broken", pattern = "a(b" } } })
        assert.matches("deny%[2%] %(broken%)", errs[1].message)
        _, errs = unit.validate(plugin, { allow = { "[z-a]" } })
        assert.matches("allow%[1%]", errs[1].message)
    end)

    it("refuses unknown roles, flags and fields", function()
        local _, errs = unit.validate(plugin, { roles = { "admin" } })
        assert.equal("roles[1]", errs[1].path)
        _, errs = unit.validate(plugin, { deny = { { pattern = "x", flags = "g" } } })
        assert.equal("deny[1].flags", errs[1].path)
        _, errs = unit.validate(plugin, { deny = { { pattern = "x", nope = 1 } } })
        assert.equal("deny[1]", errs[1].path:match("^deny%[1%]"))
    end)
end)

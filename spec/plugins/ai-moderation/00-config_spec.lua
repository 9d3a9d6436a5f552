-- ai-moderation, config.
local unit = require("unit_helpers")

describe("ai-moderation config", function()
    local plugin = unit.load_plugin("ai-moderation")

    it("needs something to check with", function()
        local _, errs = unit.validate(plugin, {})
        assert.matches("give categories, a provider", errs[1].message)
    end)

    it("has defaults: fail_closed, refusal answers, windows of 1000 with 64 overlap", function()
        local conf = assert(unit.validate(plugin, { categories = { { name = "v", keywords = { "kill" } } } }))
        assert.equal("fail_closed", conf.on_error)
        assert.equal("refusal", conf.response_action)
        assert.same({ window = 1000, overlap = 64 }, conf.stream)
        assert.equal(1, conf.categories[1].threshold)
        assert.equal("block", conf.categories[1].action)
        assert.equal(5, conf.timeout)
    end)

    it("refuses bad patterns (naming the category), empty categories, an overlap as large as the window", function()
        local _, errs = unit.validate(plugin, { categories = { { name = "v", patterns = { "a(" } } } })
        assert.matches("categories%[1%] %(v%)%.patterns%[1%]", errs[1].message)
        _, errs = unit.validate(plugin, { categories = { { name = "v" } } })
        assert.matches("give keywords or patterns", errs[1].message)
        _, errs = unit.validate(plugin, { categories = { { name = "v", keywords = { "x" } } },
                                          stream = { window = 100, overlap = 100 } })
        assert.matches("overlap must be smaller", errs[1].message)
        _, errs = unit.validate(plugin, { categories = { { name = "v", keywords = { "x" } } }, status = 500 })
        assert.equal("status", errs[1].path)
    end)
end)

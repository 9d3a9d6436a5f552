-- ai-rate-limit config: defaults, natural window spellings, whole tokens, unique header names, key sources.
local unit = require("unit_helpers")

describe("ai-rate-limit config", function()
    local plugin = unit.load_plugin("ai-rate-limit")

    it("fills defaults and takes windows as people write them", function()
        local conf = assert(unit.validate(plugin, { limits = { { limit = 1000, window = "1m" },
                                                               { limit = 5, window = "1d", metric = "cost", by = { "consumer", "model" } } } }))
        assert.same({ "local", "sluice", "open", "route", true }, { conf.policy, conf.dict, conf.fail_mode, conf.scope, conf.headers })
        assert.same({ 60, "total_tokens", "consumer", "fixed" },
            { conf.limits[1].window, conf.limits[1].metric, conf.limits[1].by, conf.limits[1].type })
        assert.equal(86400, conf.limits[2].window)
        assert.equal(3600, assert(unit.validate(plugin, { limits = { { limit = 1, window = "1h" } } })).limits[1].window)
    end)

    it("refuses what cannot be counted, with the field's path", function()
        local function path_of(c) return select(3, unit.validate(plugin, c)) end
        assert.equal("limits", path_of({ limits = {} }))
        assert.equal("limits[1].window", path_of({ limits = { { limit = 1, window = "1x" } } }))
        assert.equal("limits[1].window", path_of({ limits = { { limit = 1, window = "0s" } } }))
        assert.equal("limits[1].limit", path_of({ limits = { { limit = 0, window = "1m" } } }))
        assert.equal("limits[1].metric", path_of({ limits = { { limit = 1, window = "1m", metric = "words" } } }))
        assert.equal("limits[1].by", path_of({ limits = { { limit = 1, window = "1m", by = "planet" } } }))
        assert.equal("limits[1].by", path_of({ limits = { { limit = 1, window = "1m", by = "header:bad name" } } }))
        assert.equal("policy", path_of({ policy = "redis", limits = { { limit = 1, window = "1m" } } }))
        local _, errs = unit.validate(plugin, { limits = { { limit = 1.5, window = "1m" } } })
        assert.matches("a whole number of tokens", errs[1].message)
        _, errs = unit.validate(plugin, { limits = { { limit = 1, window = "1m", name = "A" }, { limit = 2, window = "1d", name = "a" } } })
        assert.matches("limits%[2%].name: a is used twice", errs[1].message)
        _, errs = unit.validate(plugin, { limits = { { limit = 1, window = "1m" }, { limit = 2, window = "60s" } } })
        assert.matches("limits[2]: Tokens-1m is used twice (it names the X-RateLimit-* headers; set `name`)", errs[1].message, 1, true)
        assert(unit.validate(plugin, { limits = { { limit = 1, window = "1m" }, { limit = 2, window = "1d" } } }))
        assert(unit.validate(plugin, { limits = { { limit = 0.25, window = "1d", metric = "cost" } } })) -- USD
        assert(unit.validate(plugin, { limits = { { limit = 1, window = "1m", by = { "header:x-tenant", "var:tier", "ip" } } } }))
    end)
end)

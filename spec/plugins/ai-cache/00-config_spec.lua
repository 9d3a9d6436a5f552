-- ai-cache config: defaults, refusals with the field's path, and the config loader's reference checks (the shared
-- dict must be declared, the semantic provider must exist).
local unit = require("unit_helpers")
package.path = unit.ROOT .. "/plugins/?.lua;" .. unit.ROOT .. "/plugins/?/init.lua;" .. package.path
local helpers = require("helpers")

describe("ai-cache config", function()
    local plugin = unit.load_plugin("ai-cache")

    it("runs after ai-proxy and fills its defaults", function()
        assert.equal(1030, plugin.priority)
        assert.truthy(plugin.priority < unit.load_plugin("ai-proxy").priority)
        local conf = assert(unit.validate(plugin, {}))
        assert.same({ 3600, "consumer", 0, 1, "ai-cache", true, true, 1048576, 8192, true, 30, "x-sluice-cache" },
            { conf.ttl, conf.scope, conf.max_temperature, conf.default_temperature, conf.shared_dict, conf.l1, conf.l2,
              conf.max_entry_size, conf.compress_min, conf.coalesce, conf.coalesce_timeout, conf.header })
        assert.is_false(conf.cache_tool_calls)
        conf = assert(unit.validate(plugin, { ttl = "10m", max_entry_size = "256k", semantic = { provider = "p",
                                                                                               model = "e" } }))
        assert.same({ 600, 262144, 0.95, 1000, 1 }, { conf.ttl, conf.max_entry_size, conf.semantic.threshold,
                                                      conf.semantic.max_entries, conf.semantic.timeout })
    end)

    it("refuses bad values with their path", function()
        for _, c in ipairs({
            { { scope = "tenant" }, "scope" },
            { { ttl = 0 }, "ttl" },
            { { max_temperature = -1 }, "max_temperature" },
            { { namespace = "a b" }, "namespace" },
            { { header = "bad header" }, "header" },
            { { semantic = { provider = "p", model = "e", threshold = 1.5 } }, "semantic.threshold" },
            { { unknown = 1 }, "unknown" },
        }) do
            local conf, _, path = unit.validate(plugin, c[1])
            assert.is_nil(conf)
            assert.matches(c[2], path, 1, true)
        end
        local conf, errs = unit.validate(plugin, { semantic = { provider = "p" } })
        assert.is_nil(conf)
        assert.matches("semantic.model", errs[1].message, 1, true)
    end)

    it("needs its shared dict declared and the semantic provider configured (sluice -t)", function()
        local dir = helpers.tmpdir()
        local function check(extra)
            local cfg = {
                node = { listen = { "127.0.0.1:1" }, plugin_paths = { helpers.ROOT .. "/plugins" },
                         shared_dicts = extra.dicts or { sluice = "1m" } },
                providers = { demo = { kind = "mock" } },
                routes = { { id = "r", paths = { "/v1/*" },
                             plugins = { ["ai-proxy"] = { provider = "demo" }, ["ai-cache"] = extra.conf or {} } } },
            }
            helpers.write_file(dir .. "/c.yaml", helpers.json(cfg))
            return helpers.exec(helpers.BIN .. " -t -c " .. dir .. "/c.yaml")
        end
        local rc, out = check({})
        assert.not_equal(0, rc)
        assert.matches("ai-cache", out, 1, true)
        rc, out = check({ dicts = { ["ai-cache"] = "1m" } })
        assert.equal(0, rc, out)
        rc, out = check({ dicts = { ["ai-cache"] = "1m" }, conf = { semantic = { provider = "nope", model = "e" } } })
        assert.not_equal(0, rc)
        assert.matches("nope", out, 1, true)
    end)
end)

-- node.shared_dicts are created at startup and sluice.shared works from a plugin in the real gateway,
-- the same dict seen by every worker.
local helpers = require("helpers")
local cjson = require("cjson.safe")

describe("shared dicts in the gateway", function()
    local gw
    setup(function()
        gw = helpers.start_gateway({
            node = { workers = 4, shared_dicts = { counters = "1m" },
                     plugin_paths = { helpers.ROOT .. "/plugins", helpers.ROOT .. "/spec/fixtures/http_plugins" } },
            routes = { { id = "count", paths = { "/count" }, plugins = { ["shdict-probe"] = {} } } },
        })
    end)
    teardown(function() helpers.stop_all() end)

    it("counts across workers with one atomic counter", function()
        local workers, last, added = {}, 0, 0
        for i = 1, 60 do
            local r = assert(helpers.http("GET", gw.url("/count")))
            assert.equal(200, r.status, r.body)
            local j = cjson.decode(r.body)
            assert.equal(i, j.hits)
            assert.is_true(j.missing)
            assert.is_true(j.ttl > 0 and j.ttl <= 60)
            if j.added then added = added + 1 end
            workers[j.worker] = true
            last = j
        end
        assert.equal(60, last.hits)
        assert.equal(1, added) -- add succeeds once, whichever worker ran first
        local n = 0
        for _ in pairs(workers) do n = n + 1 end
        assert.is_true(n >= 2, "requests reached " .. n .. " worker(s)")
    end)
end)

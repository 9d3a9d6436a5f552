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
        -- which worker accepts a connection is the kernel's choice: on a busy machine one worker can take a long
        -- run of them, so go on (bounded) until a second worker has counted too
        local workers, nworkers, last, added, i = {}, 0, 0, 0, 0
        while i < 60 or (nworkers < 2 and i < 1000) do
            i = i + 1
            local r = assert(helpers.http("GET", gw.url("/count")))
            assert.equal(200, r.status, r.body)
            local j = cjson.decode(r.body)
            assert.equal(i, j.hits)
            assert.is_true(j.missing)
            assert.is_true(j.ttl > 0 and j.ttl <= 60)
            if j.added then added = added + 1 end
            if not workers[j.worker] then
                workers[j.worker], nworkers = true, nworkers + 1
            end
            last = j
        end
        assert.equal(i, last.hits)
        assert.equal(1, added) -- add succeeds once, whichever worker ran first
        assert.is_true(nworkers >= 2, "requests reached " .. nworkers .. " worker(s)")
    end)
end)

-- Weighted upstream nodes through the real gateway (smooth weighted round-robin, lua/sluice/wrr.lua), and the
-- picker itself.
local helpers = require("helpers")
local wrr = require("sluice.wrr")

describe("wrr.pick", function()
    it("spreads picks by weight, evenly interleaved, skipping what ok() refuses", function()
        local a, b, z = { weight = 2 }, { weight = 1 }, { weight = 0 }
        local list = { a, b, z }
        local function ok(n) return n.weight > 0 end
        local seq = {}
        for i = 1, 6 do seq[i] = wrr.pick(list, ok) end
        assert.same({ a, b, a, a, b, a }, seq)
        assert.is_nil(wrr.pick({ z }, ok))
    end)

    it("keeps to one priority when asked", function()
        local hi, lo = { weight = 1, priority = 1 }, { weight = 5, priority = 0 }
        for _ = 1, 4 do
            assert.equal(hi, wrr.pick({ hi, lo }, function() return true end, 1))
        end
    end)
end)

describe("weighted upstream nodes", function()
    teardown(function()
        helpers.stop_all()
    end)

    it("sends requests by weight and none to a node of weight 0", function()
        local m1, m2, m0 = helpers.mock_upstream(), helpers.mock_upstream(), helpers.mock_upstream()
        local gw = helpers.start_gateway({
            node = { workers = 1 },
            upstreams = { up = { nodes = { [m1.addr] = 3, [m2.addr] = 1, [m0.addr] = 0 } } },
            routes = { { id = "r", paths = { "/*" }, upstream = "up" } },
        })
        local c = helpers.client(gw.port)
        for _ = 1, 40 do
            assert.equal(200, c:request("GET", "/x").status)
        end
        c:close()
        assert.equal(30, #m1:requests())
        assert.equal(10, #m2:requests())
        assert.equal(0, #m0:requests())
    end)
end)

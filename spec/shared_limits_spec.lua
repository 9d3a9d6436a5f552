-- Shared state limits through the real gateway: a shared dict refuses an entry larger than one shard with an
-- error naming the limit (instead of "no memory" while free_space() says megabytes are free), and memcached
-- failures come back as fixed texts (no libmemcached message with source locations or addresses).
local helpers = require("helpers")
local cjson = require("cjson.safe")

local PLUGINS = { helpers.ROOT .. "/plugins", helpers.ROOT .. "/spec/fixtures/http_plugins" }

describe("shared dict item size limit", function()
    local gw
    setup(function()
        gw = helpers.start_gateway({
            node = { workers = 1, plugin_paths = PLUGINS }, -- default dicts: {sluice: 10m}
            routes = { { id = "big", paths = { "/big" }, plugins = { ["shdict-size"] = {} } } },
        })
    end)
    teardown(function() helpers.stop_all() end)

    local function try(n)
        local res = assert(helpers.http("GET", gw.url("/big?n=" .. n)))
        assert.equal(200, res.status, res.body)
        return assert(cjson.decode(res.body))
    end

    it("refuses one value over the item limit of an empty 10m dict with an error naming the limit", function()
        local r = try(700 * 1024)
        assert.is_false(r.ok)
        assert.matches("^value too large %(716800 bytes, limit %d+ for this dict%)$", r.err)
        -- the dict is empty and says so: free space is not the limit for one value
        assert.is_true(r.free_space > 9 * 1024 * 1024)
        assert.equal(0, r.stored)
        local limit = tonumber(r.err:match("limit (%d+)"))
        assert.equal(r.max_item_size - #"big", limit)
    end)

    it("stores a value of exactly the limit, and not one byte more", function()
        local limit = try(10).max_item_size - #"big"
        assert.is_true(limit > 600 * 1024 and limit < 700 * 1024, tostring(limit))
        local r = try(limit)
        assert.is_true(r.ok, tostring(r.err))
        assert.equal(limit, r.stored)
        r = try(limit + 1)
        assert.is_false(r.ok)
        assert.equal(("value too large (%d bytes, limit %d for this dict)"):format(limit + 1, limit), r.err)
    end)
end)

local MEMCACHED = "/usr/bin/memcached"
local describe_mc = io.open(MEMCACHED) and describe or pending

describe_mc("memcached error texts", function()
    it("are fixed texts per failure, without source locations or addresses", function()
        local port = helpers.free_port() -- nothing listens there
        local gw = helpers.start_gateway({
            node = { workers = 1, plugin_paths = PLUGINS,
                     memcached = { servers = { "127.0.0.1:" .. port }, timeout = 0.2, failure_threshold = 100 } },
            routes = { { id = "mc", paths = { "/mc" }, plugins = { ["mc-probe"] = {} } } },
        })
        local res = assert(helpers.http("POST", gw.url("/mc"), { timeout = 10,
            body = helpers.json({ { "get", "a" }, { "set", "a", "1" }, { "incr", "n", 1, 0 }, { "delete", "a" } }) }))
        assert.equal(200, res.status, res.body)
        local results = cjson.decode(res.body).results
        for i, r in ipairs(results) do
            assert.is_string(r.b, "call " .. i)
            assert.matches("^[a-z ()]+ %(code %d+%)$", r.b)
            assert.is_nil(r.b:find("0x", 1, true), r.b)
            assert.is_nil(r.b:find("->", 1, true), r.b)
        end
        assert.matches("^connection failed", results[1].b)
        assert.is_nil(gw:log():find("0x%x%x%x%x"), gw:log())
        gw:stop()
    end)
end)

-- sluice.vector through the gateway (a test plugin runs the calls): one store per name for every worker, top-k by
-- cosine, replace, remove, eviction of the oldest when full (bounded memory), groups, TTL, and misuse refused.
local helpers = require("helpers")
local cjson = require("cjson.safe")

describe("sluice.vector store (gateway)", function()
    local gw

    local function run(body)
        local res = assert(helpers.http("POST", gw.url("/vec"), { body = body }))
        assert.equal(200, res.status, res.body)
        return assert(cjson.decode(res.body))
    end

    setup(function()
        gw = helpers.start_gateway({
            node = { workers = 2, plugin_paths = { helpers.ROOT .. "/plugins", helpers.ROOT .. "/spec/fixtures/vector_plugins" } },
            routes = { { id = "vec", paths = { "/vec" }, plugins = { ["vec-probe"] = {} } } },
        })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    it("adds, searches by cosine, replaces and removes", function()
        local r = run({ store = "a", dims = 3, capacity = 10, calls = {
            { "add", "x", { 1, 0, 0 } }, { "add", "y", { 0, 1, 0 } }, { "add", "xy", { 1, 1, 0 } },
            { "search", { 1, 0.1, 0 }, 2 }, { "search", { 0, 0, 1 }, 3, 0.5 },
            { "add", "x", { 0, 0, 1 } }, { "search", { 0, 0, 1 }, 1 }, { "remove", "y" }, { "remove", "y" } } }).results
        assert.same({ "x", "xy" }, { r[4].a[1].key, r[4].a[2].key })
        assert.truthy(r[4].a[1].score > 0.99 and r[4].a[2].score < 0.8)
        assert.same({}, r[5].a == cjson.null and {} or r[5].a) -- nothing over 0.5
        assert.equal("x", r[7].a[1].key)
        assert.same({ true, false }, { r[8].a, r[9].a })
    end)

    it("is one store for every worker", function()
        run({ store = "shared", dims = 2, capacity = 100, calls = { { "add", "k1", { 1, 0 } } } })
        local workers, n = {}, 0
        for _ = 1, 300 do -- bounded: until both workers answered (new connections spread over them)
            local r = run({ store = "shared", dims = 2, capacity = 100, calls = { { "search", { 1, 0 }, 1 } } })
            assert.equal("k1", r.results[1].a[1].key)
            if not workers[r.worker] then workers[r.worker], n = true, n + 1 end
            if n == 2 then break end
        end
        assert.equal(2, n)
    end)

    it("evicts the oldest entry when full and expires entries", function()
        local r = run({ store = "small", dims = 2, capacity = 3, calls = {
            { "add", "a", { 1, 0 } }, { "add", "b", { 0.9, 0.1 } }, { "add", "c", { 0.8, 0.2 } },
            { "add", "d", { 0.7, 0.3 } }, { "search", { 1, 0 }, 10 }, { "add", "t", { 1, 0 }, 1 } } })
        assert.equal("a", r.results[4].b) -- the evicted key
        local keys = {}
        for _, h in ipairs(r.results[5].a) do keys[#keys + 1] = h.key end
        assert.same({ "b", "c", "d" }, keys)
        assert.equal(3, r.count)
        assert.equal("b", r.results[6].b) -- t pushed b out
        helpers.sleep(1.2)
        r = run({ store = "small", dims = 2, capacity = 3, calls = { { "search", { 1, 0 }, 1 } } })
        assert.equal("c", r.results[1].a[1].key) -- t, nearer, expired
    end)

    it("bounds a group of keys (a key prefix) and searches one group alone", function()
        local r = run({ store = "grp", dims = 2, capacity = 10, calls = {
            { "add", "p1/a", { 1, 0 }, 0, 3, 2 }, { "add", "p2/a", { 1, 0 }, 0, 3, 2 },
            { "add", "p1/b", { 0.9, 0.1 }, 0, 3, 2 }, { "add", "p1/c", { 0.8, 0.2 }, 0, 3, 2 },
            { "search", { 1, 0 }, 10, -1, "exact", "p1/" }, { "search", { 1, 0 }, 10, -1, "exact", "p2/" },
            { "add", "p1/d", { 1, 0 }, 0, 9, 2 } } }).results
        assert.equal("p1/a", r[4].b) -- p1 full: its oldest went, not p2's older entry
        assert.same({ "p1/b", "p1/c" }, { r[5].a[1].key, r[5].a[2].key })
        assert.equal(2, #r[5].a)
        assert.same({ "p2/a" }, { r[6].a[1].key })
        assert.equal(1, #r[6].a)
        assert.truthy(r[7].error:find("group_len", 1, true), r[7].error) -- a group longer than the key
    end)

    it("refuses misuse with clear errors", function()
        local r = run({ store = "a", dims = 3, capacity = 10, calls = {
            { "add", "z", { 0, 0, 0 } }, { "add", "w", { 1, 2 } }, { "search", { 1, 2, 3 }, 0 },
            { "add", string.rep("k", 251), { 1, 0, 0 } } } }).results
        assert.equal(cjson.null, r[1].a)
        assert.truthy(r[1].b:find("zero", 1, true))
        assert.truthy(r[2].b:find("2 dimensions, expected 3", 1, true))
        assert.truthy(r[3].error:find("k must be an integer", 1, true), r[3].error)
        assert.truthy(r[4].error:find("key must be a string of 1 to 250 bytes", 1, true), r[4].error)
        assert.truthy(run({ store = "big", dims = 3, capacity = 1e9 }).error:find("capacity", 1, true))
    end)
end)

-- limit-req: config, and the leaky bucket through the gateway on one node (the cluster is in
-- spec/limits_cluster_spec.lua): burst + 1 at once with nodelay, a burst spaced out at the rate without it,
-- refusals with Retry-After in the client's shape, keys per consumer.
local unit = require("unit_helpers")
local helpers = require("helpers")

describe("limit-req", function()
    local plugin = unit.load_plugin("limit-req")

    it("validates its config", function()
        local conf = assert(unit.validate(plugin, { rate = 10 }))
        assert.same({ 1, 0, false, "consumer", "Rate", 429, "local" },
            { conf.per, conf.burst, conf.nodelay, conf.by, conf.name, conf.status, conf.policy })
        assert.equal(60, assert(unit.validate(plugin, { rate = 100, per = "1m" })).per)
        for _, bad in ipairs({ { rate = 0 }, { rate = 1, per = "0s" }, { rate = 1, burst = -1 }, { rate = 1, status = 500 },
                               { rate = 1, by = "nope" }, {} }) do
            assert.is_nil((unit.validate(plugin, bad)))
        end
    end)

    describe("through the gateway", function()
        local gw

        setup(function()
            local mock = helpers.mock_upstream({ body = { ok = true } })
            gw = helpers.start_gateway({
                consumers = { { name = "a", keys = { "ka" } }, { name = "b", keys = { "kb" } } },
                routes = {
                    { id = "fast", paths = { "/fast/*" }, upstream = { nodes = { mock.addr } }, plugins = {
                        ["key-auth"] = {}, ["limit-req"] = { rate = 1, per = "1m", burst = 2, nodelay = true } } },
                    { id = "spaced", paths = { "/spaced/*" }, upstream = { nodes = { mock.addr } }, plugins = {
                        ["key-auth"] = {}, ["limit-req"] = { rate = 20, burst = 3, by = "route" } } },
                    { id = "ai", paths = { "/ai/*" }, upstream = { nodes = { mock.addr } }, plugins = {
                        ["limit-req"] = { rate = 1, per = "1h", by = "ip", status = 503 } } },
                },
            })
        end)

        teardown(helpers.stop_all)

        local function get(path, key)
            return assert(helpers.http("POST", gw.url(path), { headers = { authorization = key and ("Bearer " .. key) },
                body = { messages = {} } }))
        end

        it("takes burst + 1 at once per consumer, then refuses with Retry-After", function()
            for i = 1, 3 do
                local res = get("/fast/x", "ka")
                assert.equal(200, res.status)
                assert.equal(tostring(3 - i), res.headers["x-ratelimit-remaining-rate"])
            end
            local res = get("/fast/x", "ka")
            assert.equal(429, res.status)
            assert.equal("rate_limit_exceeded", res.json.error.code)
            assert.matches("Too many requests for a: at most 1 per 1m with a burst of 2", res.json.error.message, 1, true)
            local ra = tonumber(res.headers["retry-after"])
            assert.is_true(ra >= 1 and ra <= 60)
            assert.equal(200, get("/fast/x", "kb").status) -- another consumer has its own bucket
            res = get("/fast/v1/messages", "ka")
            assert.equal(429, res.status)
            assert.equal("rate_limit_error", res.json.error.type) -- Anthropic's shape on /messages
        end)

        it("serves a burst within its size without refusing (spaced at the rate)", function()
            for _ = 1, 4 do
                assert.equal(200, get("/spaced/x", "ka").status)
            end
        end)

        it("answers the configured status", function()
            assert.equal(200, get("/ai/x").status)
            local res = get("/ai/x")
            assert.equal(503, res.status)
            assert.is_truthy(res.headers["retry-after"])
        end)
    end)
end)

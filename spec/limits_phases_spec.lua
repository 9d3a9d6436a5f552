-- Limits on routes whose other plugins fail or answer early (the limiter must not go silently inactive), and the
-- X-RateLimit-* headers on every response of a limited route: proxied answers, the 429 itself, another plugin's
-- answer, a plugin's failure, the gateway's own errors, answers the AI runtime makes itself (GET /v1/models).
local helpers = require("helpers")

local ROOT = helpers.ROOT
local FIX = ROOT .. "/spec/fixtures/limits_plugins"

describe("limits whatever the other plugins do", function()
    local gw, mock

    local function req(path, key, method)
        return assert(helpers.http(method or "POST", gw.url(path), { headers = { authorization = "Bearer " .. (key or "k1") },
            body = method ~= "GET" and { model = "m", messages = { { role = "user", content = "hi" } } } or nil }))
    end

    setup(function()
        mock = helpers.mock_upstream({ body = { ok = true } })
        local function consumer(n) return { name = n, keys = { n } } end
        local per_hour = { rate = 1, per = "1h", burst = 2, nodelay = true }
        gw = helpers.start_gateway({
            node = { plugin_paths = { ROOT .. "/plugins", FIX } },
            consumers = { consumer("k1"), consumer("k2"), consumer("k3"), consumer("k4"), consumer("k5"), consumer("k6") },
            providers = { m = { kind = "mock", models = { m = "m" } } },
            routes = {
                -- a plugin that fails in access, after limit-req and ai-rate-limit ran
                { id = "fails", paths = { "/fails/*" }, upstream = { nodes = { mock.addr } }, plugins = {
                    ["key-auth"] = {}, ["limit-req"] = per_hour, boom = { _meta = { priority = 900 } } } },
                -- a plugin that answers from access (a cache hit) after ai-rate-limit reserved
                { id = "early", paths = { "/early/v1/*" }, plugins = {
                    ["key-auth"] = {}, ["ai-proxy"] = { provider = "m" }, early = {},
                    ["ai-rate-limit"] = { limits = { { metric = "requests", limit = 2, window = "1h" } } },
                    ["limit-conn"] = { conn = 1 } } },
                -- a plugin whose log phase fails before limit-conn's: the count still goes back
                { id = "logfail", paths = { "/logfail/*" }, upstream = { nodes = { mock.addr } }, plugins = {
                    ["key-auth"] = {}, ["limit-conn"] = { conn = 1 }, boom = { phase = "log", _meta = { priority = 3000 } } } },
                -- a plain proxied route, and one whose upstream is down
                { id = "plain", paths = { "/plain/*" }, upstream = { nodes = { mock.addr } }, plugins = {
                    ["key-auth"] = {}, ["limit-req"] = per_hour } },
                { id = "down", paths = { "/down/*" }, upstream = { nodes = { "127.0.0.1:" .. helpers.free_port() } },
                  plugins = { ["key-auth"] = {}, ["limit-req"] = per_hour } },
                -- an AI route: GET /v1/models is answered by ai-proxy before ai-rate-limit's access
                { id = "ai", paths = { "/ai/v1/*" }, plugins = {
                    ["key-auth"] = {}, ["ai-proxy"] = { provider = "m" },
                    ["ai-rate-limit"] = { limits = { { metric = "total_tokens", limit = 1000, window = "1h" } } } } },
            },
        })
    end)

    teardown(helpers.stop_all)

    it("counts requests a later plugin fails (500), and refuses once over, with the headers on the 500s", function()
        for _ = 1, 3 do
            local res = req("/fails/x")
            assert.equal(500, res.status)
            assert.equal("3", res.headers["x-ratelimit-limit-rate"])
        end
        local res = req("/fails/x")
        assert.equal(429, res.status)
        assert.equal("0", res.headers["x-ratelimit-remaining-rate"])
        assert.is_truthy(res.headers["retry-after"])
    end)

    -- limit-conn gives its slot back in the log phase, just after a response went out: a request that follows at
    -- once may find it still taken (a 429 naming the requests in flight); it comes back, unless it leaked
    local function past_conn(path, key)
        return helpers.wait_until(function()
            local res = req(path, key)
            if res.status == 429 and res.json.error.message:find("in flight", 1, true) then
                return nil
            end
            return res
        end, 5, "the limit-conn slot came back")
    end

    it("counts requests another plugin answers early; their tokens are given back, their slot released", function()
        assert.equal(200, past_conn("/early/v1/chat/completions", "k2").status)
        local res = past_conn("/early/v1/chat/completions", "k2")
        assert.equal(200, res.status)
        assert.same({ cached = true }, res.json)
        assert.equal("0", res.headers["x-ratelimit-remaining-requests"])
        assert.equal("1", res.headers["x-ratelimit-limit-concurrent"])
        res = past_conn("/early/v1/chat/completions", "k2")
        assert.equal(429, res.status)
        assert.matches("on requests per 1h", res.json.error.message, 1, true)
    end)

    it("releases a limit-conn slot even when another plugin's log phase fails first", function()
        for _ = 1, 4 do
            assert.equal(200, past_conn("/logfail/x", "k3").status)
        end
        assert.matches("boom in log", gw:log(), 1, true)
    end)

    it("puts the headers on proxied answers and on the gateway's own errors", function()
        local res = req("/plain/x", "k4")
        assert.equal(200, res.status)
        assert.same({ "3", "2" }, { res.headers["x-ratelimit-limit-rate"], res.headers["x-ratelimit-remaining-rate"] })
        res = req("/down/x", "k4")
        assert.equal(502, res.status)
        assert.equal("3", res.headers["x-ratelimit-limit-rate"])
    end)

    it("puts the headers on the 401 of key-auth (an answer before the limiter ran)", function()
        local res = assert(helpers.http("POST", gw.url("/plain/x"), { body = "{}" }))
        assert.equal(401, res.status)
        assert.equal("3", res.headers["x-ratelimit-limit-rate"]) -- header_filter runs on every response
    end)

    it("puts ai-rate-limit's headers on answers ai-proxy makes itself (GET /v1/models)", function()
        local res = req("/ai/v1/chat/completions", "k5")
        assert.equal(200, res.status)
        local left = tonumber(res.headers["x-ratelimit-remaining-tokens"])
        res = req("/ai/v1/models", "k5", "GET")
        assert.equal(200, res.status)
        assert.equal("1000", res.headers["x-ratelimit-limit-tokens"]) -- header_filter runs on every response
        assert.is_true(tonumber(res.headers["x-ratelimit-remaining-tokens"]) <= left)
    end)
end)

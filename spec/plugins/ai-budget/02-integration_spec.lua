-- ai-budget through the gateway: spend at the provider's price charged after each call (the real usage), a
-- consumer's own budget and its group's shared one, the refusal in the client's shape saying which budget, a
-- call whose estimate does not fit, GET /admin/consumers/{name}/usage.
local helpers = require("helpers")

describe("ai-budget", function()
    local gw

    local function chat(key, extra, path)
        local b = { model = "m", messages = { { role = "user", content = "hi" } } }
        for k, v in pairs(extra or {}) do b[k] = v end
        return assert(helpers.http("POST", gw.url(path or "/v1/chat/completions"),
            { headers = { authorization = "Bearer " .. key }, body = b }))
    end

    local function usage(name)
        local res = assert(gw:admin("GET", "/admin/consumers/" .. name .. "/usage"))
        assert.equal(200, res.status, res.body)
        local by = {}
        for _, b in ipairs(res.json.budgets) do by[b.owner .. " " .. b.period] = b end
        return by, res.json
    end

    setup(function()
        -- every call: 1000 prompt + 1000 completion tokens at $1 / $2 per million = $0.003
        gw = helpers.start_gateway({
            consumers = {
                { name = "alice", keys = { "k-alice" }, budget = { daily = 0.01 } },
                { name = "bob", keys = { "k-bob" }, groups = { "team" } },
                { name = "carol", keys = { "k-carol" }, groups = { "team" } },
                { name = "dan", keys = { "k-dan" }, budget = { monthly = 1 } },
            },
            consumer_groups = { team = { budget = { monthly = 0.005 } } },
            providers = { m = { kind = "mock", models = { m = "m" }, price = { m = { input = 1, output = 2 } },
                                options = { prompt_tokens = 1000, completion_tokens = 1000 } } },
            routes = {
                { id = "chat", paths = { "/v1/*" }, plugins = { ["key-auth"] = {}, ["ai-proxy"] = { provider = "m" },
                                                               ["ai-budget"] = {} } },
                { id = "strict", paths = { "/strict/v1/*" }, plugins = { ["key-auth"] = {}, ["ai-proxy"] = { provider = "m" },
                                                                      ["ai-budget"] = { status = 403 } } },
            },
        })
    end)

    teardown(helpers.stop_all)

    -- A call is charged in its log phase, just after its response went out: wait for the charge before the next.
    local function spent(owner_period, name, usd)
        helpers.wait_until(function()
            return math.abs(usage(name)[owner_period].spent_usd - usd) < 1e-9
        end, 5, owner_period .. " spent " .. usd)
    end

    it("charges each call's real cost and refuses once the day's budget is spent, saying so", function()
        for i = 1, 4 do
            assert.equal(200, chat("k-alice").status) -- spent before each: 0, .003, .006, .009 (< .01)
            spent("consumer alice daily", "alice", 0.003 * i)
        end
        local res = chat("k-alice")
        assert.equal(429, res.status)
        assert.equal("insufficient_quota", res.json.error.code)
        assert.matches("Budget exceeded: consumer alice has spent $0.012 of its daily budget of $0.01", res.json.error.message, 1, true)
        assert.equal("false", res.headers["x-should-retry"])
        res = chat("k-alice", { max_tokens = 10 }, "/v1/messages")
        assert.equal(429, res.status)
        assert.equal("rate_limit_error", res.json.error.type)
        res = chat("k-alice", nil, "/strict/v1/chat/completions")
        assert.equal(403, res.status)
        assert.equal("permission_error", res.json.error.type)
        local u = usage("alice")
        local d = u["consumer alice daily"]
        assert.same({ 0.01, 0.012, 0 }, { d.limit_usd, d.spent_usd, d.remaining_usd })
        assert.is_true(d.resets_in > 0 and d.resets_in <= 86400)
        assert.matches("^%d%d%d%d%-%d%d%-%d%d$", d.period_label)
    end)

    it("shares a group's budget among its members", function()
        assert.equal(200, chat("k-bob").status)
        spent("group team monthly", "bob", 0.003)
        assert.equal(200, chat("k-carol").status) -- .003 spent before: still under .005
        spent("group team monthly", "bob", 0.006)
        local res = chat("k-bob")
        assert.equal(429, res.status)
        assert.matches("group team has spent $0.006 of its monthly budget of $0.005", res.json.error.message, 1, true)
        local u = usage("carol")
        assert.equal(0.006, u["group team monthly"].spent_usd)
    end)

    it("refuses a call whose estimate does not fit what is left (max_tokens at the output price)", function()
        local res = chat("k-dan", { max_tokens = 600000 }) -- up to $1.2 against $1
        assert.equal(429, res.status)
        assert.matches("this call may cost up to $1.2", res.json.error.message, 1, true)
        assert.equal(200, chat("k-dan", { max_tokens = 1000 }).status)
        spent("consumer dan monthly", "dan", 0.003) -- the estimate was replaced by the real cost
    end)

    it("answers 404 for an unknown consumer and never shows a key", function()
        assert.equal(404, assert(gw:admin("GET", "/admin/consumers/nobody/usage")).status)
        assert.equal(405, assert(gw:admin("POST", "/admin/consumers/alice/usage")).status)
        local res = assert(gw:admin("GET", "/admin/consumers/alice/usage"))
        assert.equal("local", res.json.store)
        assert.is_nil(res.body:find("k-alice", 1, true))
    end)
end)

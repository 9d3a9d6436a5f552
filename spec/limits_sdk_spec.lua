-- The official SDKs (openai, @anthropic-ai/sdk from tests/e2e/node_modules) against rate-limited routes of the real
-- gateway: they see a RateLimitError they recognise, their retry waits the gateway's Retry-After and then gets
-- through, and an over-budget refusal is not retried. The checks are tests/e2e/sdk_limits/limits.mjs.
local helpers = require("helpers")

local ROOT = helpers.ROOT
local has_sdks = io.open(ROOT .. "/tests/e2e/node_modules/openai/package.json") ~= nil
    and io.open(ROOT .. "/tests/e2e/node_modules/@anthropic-ai/sdk/package.json") ~= nil

describe("official SDKs against limits", function()
    teardown(helpers.stop_all)

    it("recognise the 429 and honour Retry-After", function()
        assert.is_true(has_sdks, "npm ci --prefix tests/e2e (scripts/deps.sh) installs the SDKs")
        local consumers = {}
        for _, n in ipairs({ "oa1", "oa2", "an1", "an2", "poor" }) do
            consumers[#consumers + 1] = { name = n, keys = { "key-" .. n } }
        end
        consumers[#consumers].budget = { daily = 0.000001 }
        local gw = helpers.start_gateway({
            consumers = consumers,
            providers = { m = { kind = "mock", models = { m = "m" }, price = { m = { input = 1, output = 1 } } } },
            routes = {
                { id = "chat", paths = { "/v1/*" }, plugins = { ["key-auth"] = {}, ["ai-proxy"] = { provider = "m" },
                    ["ai-rate-limit"] = { limits = { { metric = "requests", limit = 1, window = "5s" } } } } },
                { id = "budget", paths = { "/budget/v1/*" }, plugins = { ["key-auth"] = {}, ["ai-proxy"] = { provider = "m" },
                    ["ai-budget"] = {} } },
            },
        })
        local code, out = helpers.exec("cd " .. helpers.shell_quote(ROOT) .. " && GATEWAY=" .. gw.url(""):gsub("/$", "")
            .. " node --test --test-reporter=spec tests/e2e/sdk_limits/limits.mjs", 120)
        assert.equal(0, code, out)
        assert.matches("pass 5", out, 1, true)
    end)
end)

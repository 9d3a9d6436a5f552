-- sluice.limits (the library the limit plugins share) on a real shared dict: reservations in fixed and sliding
-- windows, the leaky bucket, keys, the estimates of a call. The cluster behaviour (memcached, several gateways,
-- outages) is in spec/limits_cluster_spec.lua.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path

local C = require("sluice.core")
local shared = require("sluice.pdk.shared")
local limits = require("sluice.limits")
local call = require("sluice.limits.call")
local cjson = require("cjson.safe")
local budget = require("sluice.limits.budget")
local unit = require("unit_helpers")

describe("sluice.limits", function()
    local st

    setup(function()
        local rc = C.sl_shdict_create("sluice", 1024 * 1024)
        assert(rc == 0 or rc == -17)
        st = assert(limits.store({ policy = "local", dict = "sluice" }, "spec"))
    end)

    before_each(function()
        shared.sluice:flush_all()
    end)

    it("admits exactly `limit` units in a fixed window, then refuses with the time to the window's end", function()
        local spec = { limit = 5, window = 60 }
        local now = 6000 + 15 -- 15 s into a window
        local ok = 0
        for i = 1, 8 do
            local r = assert(limits.reserve(st, "t:a:", spec, 1, now))
            if r.ok then
                ok = ok + 1
                assert.equal(5 - i, r.remaining)
            else
                assert.equal(0, r.remaining)
                assert.equal(45, r.retry_after)
            end
            assert.equal(45, r.reset)
        end
        assert.equal(5, ok)
        assert.equal(5, shared.sluice:get("t:a:100")) -- refused requests gave their unit back
        -- the next window starts from zero
        assert.is_true(assert(limits.reserve(st, "t:a:", spec, 1, now + 60)).ok)
    end)

    it("reserves amounts: refuses one that does not fit, one over the limit can never fit, 0 only while not spent", function()
        local spec = { limit = 100, window = 60 }
        local now = 120
        assert.is_true(limits.reserve(st, "t:b:", spec, 60, now).ok)
        local r = limits.reserve(st, "t:b:", spec, 50, now)
        assert.is_false(r.ok)
        assert.equal(40, r.remaining)
        assert.is_nil(r.never)
        assert.is_true(limits.reserve(st, "t:b:", spec, 40, now).ok)
        assert.is_true(limits.reserve(st, "t:c:", spec, 0, now).ok)
        r = limits.reserve(st, "t:b:", spec, 0, now) -- spent: even a 0 reservation is refused
        assert.is_false(r.ok)
        r = limits.reserve(st, "t:c:", spec, 101, now)
        assert.is_false(r.ok)
        assert.is_true(r.never)
        assert.equal(0, shared.sluice:get("t:c:2"))
    end)

    it("charges what was used after the fact: refunds and overshoots", function()
        local spec = { limit = 100, window = 60 }
        local r = assert(limits.reserve(st, "t:d:", spec, 50, 120))
        limits.adjust(st, r, -30, 60) -- used 20
        assert.equal(20, shared.sluice:get("t:d:2"))
        local r2 = assert(limits.reserve(st, "t:d:", spec, 10, 120))
        limits.adjust(st, r2, 90, 60) -- used 100: over the limit, counted
        assert.equal(120, shared.sluice:get("t:d:2"))
        assert.is_false(limits.reserve(st, "t:d:", spec, 0, 120).ok)
        limits.adjust(st, r, -500, 60) -- never below zero
        assert.equal(0, shared.sluice:get("t:d:2"))
    end)

    it("weighs the previous window in a sliding window, and says when a request would fit", function()
        local spec = { limit = 10, window = 60, sliding = true }
        for _ = 1, 10 do assert.is_true(limits.reserve(st, "t:s:", spec, 1, 60 + 50).ok) end
        -- 15 s into the next window 3/4 of the previous 10 still count: 7.5, so 2 fit
        local now = 120 + 15
        assert.is_true(limits.reserve(st, "t:s:", spec, 1, now).ok)
        assert.is_true(limits.reserve(st, "t:s:", spec, 1, now).ok)
        local r = limits.reserve(st, "t:s:", spec, 1, now)
        assert.is_false(r.ok)
        -- 7.5 + 2 + 1 <= 10 once the previous weight is down to 7: at 18 s, 3 s from now
        assert.equal(3, r.retry_after)
        assert.equal(0, r.remaining)
    end)

    it("runs a leaky bucket: burst + 1 at once, then one per 1/rate; delays within the burst", function()
        local now = 1000
        local admitted = 0
        for i = 1, 5 do
            local r = assert(limits.leaky(st, "t:l", 2, 2, now)) -- 2 per second, burst 2
            if r.ok then
                admitted = admitted + 1
                assert.near((i - 1) * 0.5, r.delay, 1e-6)
                assert.equal(3, r.limit)
                assert.equal(3 - i, r.remaining)
            else
                assert.equal(1, r.retry_after)
            end
        end
        assert.equal(3, admitted)
        assert.is_false(limits.leaky(st, "t:l", 2, 2, now + 0.2).ok)
        assert.is_true(limits.leaky(st, "t:l", 2, 2, now + 0.5).ok) -- leaked one
        assert.is_true(limits.leaky(st, "t:l", 2, 2, now + 10).ok) -- empty again after idling
        local peek = limits.leaky_peek(st, "t:l", 2, 2, now + 10)
        assert.equal(2, peek.remaining)
    end)

    it("builds keys from consumers, groups (one key per group), headers, variables; long values as digests", function()
        local by = limits.compile_by({ "consumer_group", "header:X-Tenant" })
        local ctx = unit.new_ctx({ headers = { ["x-tenant"] = "acme" }, consumer = { name = "alice", groups = { "a", "b" } } })
        local keys = limits.keys(by, ctx)
        assert.same({ { "a|acme", "a|acme" }, { "b|acme", "b|acme" } }, keys)
        ctx = unit.new_ctx({ headers = { ["x-tenant"] = string.rep("x", 100) .. " y" } })
        keys = limits.keys(limits.compile_by("header:x-tenant"), ctx)
        assert.matches("^#%x+$", keys[1][1])
        assert.equal(33, #keys[1][1])
        assert.same({ { "-", "-" } }, limits.keys(limits.compile_by("consumer"), ctx)) -- no consumer: one shared key
        ctx = unit.new_ctx({})
        ctx.var.tier = "gold"
        assert.same({ { "gold", "gold" } }, limits.keys(limits.compile_by("var:tier"), ctx))
        assert.same({ { "m1", "m1" } }, limits.keys(limits.compile_by("model"), ctx, { model = "m1" }))
    end)

    it("estimates a call: prompt counted locally, max_tokens reserved, cost at the price in nano-USD", function()
        local cl = { op = "chat", request = { max_tokens = 100, messages = { { role = "user", content = "hello world" } } },
                     price = { input = 2.5, output = 10 } }
        local p, c = call.estimate(cl, true, true)
        assert.is_true(p > 3 and p < 20)
        assert.equal(100, c)
        assert.equal(math.ceil((p * 2.5 + 100 * 10) * 1000), call.cost_nano(cl.price, p, c))
        cl.request.max_tokens, cl.request.max_completion_tokens = nil, 7
        assert.equal(7, select(2, call.estimate(cl, true, true)))
        cl.request.max_completion_tokens = -1
        assert.equal(0, select(2, call.estimate(cl, true, true)))
        assert.same({ 0, 0 }, { call.estimate({ op = "chat" }, true, true) })
    end)

    it("estimates prompt tokens as bytes / 4, 4 per message, 3 for the reply, 85 per image", function()
        -- "hello world": 11 bytes -> 3, one message 4, the reply 3
        assert.equal(10, call.prompt_tokens("chat", { messages = { { role = "user", content = "hello world" } } }))
        local img = { type = "image_url", image_url = { url = "data:image/png;base64," .. string.rep("A", 4000) } }
        assert.equal(3 + 4 + 85 + 2, call.prompt_tokens("chat", { messages = { { role = "user",
            content = { { type = "text", text = "look at " }, img } } } }))
        local args = string.rep("x", 40)
        assert.equal(3 + 4 + 10, call.prompt_tokens("chat", { messages = { { role = "assistant", content = cjson.null,
            tool_calls = { { type = "function", ["function"] = { name = "f", arguments = args } } } } } }))
        local tools = { { type = "function", ["function"] = { name = "get_weather", parameters = { type = "object" } } } }
        assert.equal(3 + math.ceil(#cjson.encode(tools) / 4), call.prompt_tokens("chat", { messages = {}, tools = tools }))
        assert.equal(3, call.prompt_tokens("embeddings", { input = "0123456789" }))
        assert.equal(2 + 2, call.prompt_tokens("embeddings", { input = { "01234567", 17, 42, false } }))
        assert.equal(2, call.prompt_tokens("completions", { prompt = "say hi" }))
        -- hostile shapes count what they can and never fail
        assert.equal(3 + 4 + 4 + 1, call.prompt_tokens("chat", { messages = { "x", { content = { 1, "a", { text = 5 } } },
            { content = "abc", tool_calls = { 1, { ["function"] = "f" } } } } }))
        assert.equal(0, call.prompt_tokens("chat", "nope"))
        assert.equal(3, call.prompt_tokens("chat", { messages = "nope", tools = "nope" }))
    end)

    it("knows budget periods: UTC days and calendar months", function()
        local t = 1764547200 + 3600 -- 2025-12-01T01:00:00Z
        local id, label, reset, len = budget.period("monthly", t)
        assert.same({ "m202512", "2025-12", 31 * 86400 - 3600, 31 * 86400 }, { id, label, reset, len })
        id, label, reset, len = budget.period("daily", t)
        assert.same({ "d20423", "2025-12-01", 86400 - 3600, 86400 }, { id, label, reset, len })
        id, label = budget.period("monthly", 1709251200 - 1) -- 2024-02-29T23:59:59Z
        assert.same({ "m202402", "2024-02" }, { id, label })
        assert.equal(29 * 86400, select(4, budget.period("monthly", 1709251200 - 1)))
    end)
end)

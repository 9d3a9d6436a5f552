-- sluice.limits.counters (core/shared/counters.c), the one-call path of ai-rate-limit on a shared dict, against
-- sluice.limits.reserve_all, the general path: the same requests on both must get the same verdicts, remaining,
-- resets and retry times, and leave the same counts, in fixed and sliding windows, with refusals (all or
-- nothing), refunds and overshoots.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path

local C = require("sluice.core")
local shared = require("sluice.pdk.shared")
local limits = require("sluice.limits")
local counters = require("sluice.limits.counters")

describe("sluice.limits.counters", function()
    local st, d

    setup(function()
        local rc = C.sl_shdict_create("sluice", 1024 * 1024)
        assert(rc == 0 or rc == -17)
        st = assert(limits.store({ policy = "local", dict = "sluice" }, "spec"))
        d = shared.sluice
    end)

    before_each(function()
        d:flush_all()
    end)

    -- Both paths over the same limits (specs), each on its own keys ("g:" general, "c:" counters).
    local function pair(specs)
        local items = counters.items(#specs)
        local prefixes = {}
        for i, s in ipairs(specs) do
            prefixes[i] = "c:" .. i .. ":"
            counters.set(items, i - 1, prefixes[i], s.window, s.limit, s.sliding)
        end
        local p = { items = items, prefixes = prefixes, specs = specs }
        function p.reserve(amounts, now)
            local list = {}
            for i, s in ipairs(specs) do
                list[i] = { prefix = "g:" .. i .. ":", spec = s, amount = amounts[i] }
                items[i - 1].amount = amounts[i]
            end
            local res, grefused = assert(limits.reserve_all(st, list, now))
            local crefused = assert(counters.reserve(d, items, #specs, now))
            assert.equal(grefused or 0, crefused)
            for i = 1, #specs do
                local r, it = res[i], items[i - 1]
                assert.equal(r.remaining, it.remaining)
                assert.equal(r.reset, it.reset)
                if crefused > 0 and not r.ok then
                    assert.equal(r.never and 2 or 0, it.ok)
                    if not r.never then assert.equal(r.retry_after, it.retry_after) end
                end
            end
            return res, crefused
        end
        function p.counts(now)
            for i, s in ipairs(specs) do
                local idx = math.floor(now / s.window)
                assert.equal(d:get("g:" .. i .. ":" .. idx), d:get("c:" .. i .. ":" .. idx))
            end
        end
        return p
    end

    it("gives the general path's verdicts in fixed windows, refusals taking every amount back", function()
        local p = pair({ { limit = 100, window = 60 }, { limit = 250, window = 3600 } })
        local now = 7200 + 10
        local admitted = 0
        for i = 1, 40 do
            local _, refused = p.reserve({ i % 7 + 1, 9 }, now + i)
            if refused == 0 then admitted = admitted + 1 end
            p.counts(now + i)
        end
        assert.is_true(admitted > 5 and admitted < 40) -- some refused by the hour's limit
        -- a request over a limit never fits; a zero amount fits only while the window is not spent
        local _, refused = p.reserve({ 101, 1 }, now + 50)
        assert.equal(1, refused)
        assert.equal(2, p.items[0].ok)
        p.counts(now + 50)
    end)

    it("weighs the previous window like the general path in sliding windows", function()
        local p = pair({ { limit = 10, window = 60, sliding = true }, { limit = 1000, window = 60 } })
        for _ = 1, 10 do p.reserve({ 1, 1 }, 60 + 50) end
        local results = {}
        for k = 1, 6 do
            local res, refused = p.reserve({ 1, 1 }, 120 + 15)
            results[k] = refused
            if refused > 0 then assert.is_false(res[1].ok) end
        end
        assert.same({ 0, 0, 1, 1, 1, 1 }, results) -- 7.5 of the previous 10 still count: 2 fit
        assert.equal(3, p.items[0].retry_after)
        p.counts(120 + 15)
    end)

    it("charges deltas to the window the reservation counted in, never below zero", function()
        local p = pair({ { limit = 100, window = 60 } })
        p.reserve({ 50 }, 120)
        local idx = p.items[0].idx
        assert.equal(2, idx)
        counters.deltas[0] = -30
        counters.adjust(d, p.items, 1)
        assert.equal(20, d:get("c:1:2"))
        counters.deltas[0] = 95 -- an overshoot is counted, and refuses what comes next
        counters.adjust(d, p.items, 1)
        assert.equal(115, d:get("c:1:2"))
        p.items[0].amount = 0
        assert.equal(1, counters.reserve(d, p.items, 1, 130))
        p.items[0].idx = idx
        counters.deltas[0] = -500
        counters.adjust(d, p.items, 1)
        assert.equal(0, d:get("c:1:2"))
        -- a counter gone meanwhile comes back for a positive delta, with its window's ttl
        d:delete("c:1:2")
        counters.deltas[0] = 7
        counters.adjust(d, p.items, 1)
        assert.equal(7, d:get("c:1:2"))
        assert.is_true(d:ttl("c:1:2") > 0 and d:ttl("c:1:2") <= 61)
    end)

    it("refuses a prefix too long for a key, taking back what it counted", function()
        local items = counters.items(2)
        local long = string.rep("k", 600)
        counters.set(items, 0, "c:ok:", 60, 10, false)
        counters.set(items, 1, long, 60, 10, false)
        items[0].amount, items[1].amount = 3, 3
        local refused, err = counters.reserve(d, items, 2, 120)
        assert.is_nil(refused)
        assert.is_string(err)
        assert.equal(0, d:get("c:ok:2"))
    end)
end)

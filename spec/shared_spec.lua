package.path = "lua/?.lua;lua/?/init.lua;" .. package.path

local shared = require("sluice.pdk.shared")
local C = require("sluice.core") -- the cdef comes from sluice.pdk.shared
local ffi = require("ffi")

pcall(ffi.cdef, "int usleep(unsigned int usec);")
local function sleep(s)
    ffi.C.usleep(s * 1e6)
end

describe("sluice.shared", function()
    setup(function()
        -- dicts are created once per process; tolerate a re-run in the same process
        local rc = C.sl_shdict_create("spec", 1024 * 1024)
        assert(rc == 0 or rc == -17)
        rc = C.sl_shdict_create("spec_small", 4096)
        assert(rc == 0 or rc == -17)
    end)

    before_each(function()
        shared.spec:flush_all()
        shared.spec_small:flush_all()
    end)

    it("finds dicts by name and by field", function()
        assert.equal(shared.get("spec"), shared.spec)
        local d, err = shared.get("missing")
        assert.is_nil(d)
        assert.matches("missing", err)
        assert.is_nil(shared.missing)
        assert.equal(1024 * 1024, shared.spec:capacity())
    end)

    it("stores strings, numbers, booleans and flags", function()
        local d = shared.spec
        assert.same({ true, nil, false }, { d:set("s", "hello") })
        assert.equal("hello", d:get("s"))
        d:set("n", 3.25)
        assert.equal(3.25, d:get("n"))
        d:set("t", true)
        d:set("f", false, 0, 7)
        assert.is_true(d:get("t"))
        assert.same({ false, 7 }, { d:get("f") })
        assert.is_nil(d:get("absent"))
        d:set(12, "numeric key")
        assert.equal("numeric key", d:get("12"))
        d:set("s", nil)
        assert.is_nil(d:get("s"))
        assert.same({ false, "bad value type", false }, { d:set("x", {}) })
        assert.same({ nil, "empty key" }, { d:get("") })
        assert.has_error(function() d:get(nil) end)
        assert.has_error(function() d:set("x", 1, -1) end)
    end)

    it("grows its scratch buffer for big values", function()
        local big = string.rep("abcdefgh", 4096)
        assert.is_true(shared.spec:set("big", big))
        assert.equal(big, shared.spec:get("big"))
    end)

    it("implements add, replace and delete", function()
        local d = shared.spec
        assert.is_true(d:add("a", 1))
        assert.same({ false, "exists", false }, { d:add("a", 2) })
        assert.same({ false, "not found", false }, { d:replace("b", 2) })
        assert.is_true(d:replace("a", "two"))
        assert.equal("two", d:get("a"))
        assert.is_true(d:delete("a"))
        assert.is_nil(d:get("a"))
    end)

    it("increments atomically with init", function()
        local d = shared.spec
        assert.same({ nil, "not found" }, { d:incr("c", 1) })
        assert.equal(11, d:incr("c", 1, 10))
        assert.equal(8, d:incr("c", -3))
        d:set("str", "x")
        assert.same({ nil, "not a number" }, { d:incr("str", 1) })
    end)

    it("compare-and-sets a number (cas)", function()
        local d = shared.spec
        assert.same({ false, "changed" }, { d:cas("t", 1, 2) }) -- absent, but 1 expected
        assert.is_true(d:cas("t", nil, 5, 60)) -- absent: created
        assert.same({ false, "changed", 5 }, { d:cas("t", nil, 6) }) -- there now: the live value comes back
        assert.same({ false, "changed", 5 }, { d:cas("t", 4, 6) })
        assert.is_true(d:cas("t", 5, 6.5))
        assert.equal(6.5, d:get("t"))
        d:set("s", "text")
        assert.same({ false, "changed" }, { d:cas("s", nil, 1) }) -- a string is not a number: no current
        assert.equal("text", d:get("s"))
        assert.has_error(function() d:cas("t", "5", 6) end)
        assert.has_error(function() d:cas("t", 5, "6") end)
    end)

    it("expires entries", function()
        local d = shared.spec
        d:set("short", "v", 0.05)
        d:set("long", "v", 100)
        d:set("none", "v")
        local ttl = d:ttl("long")
        assert.is_true(ttl > 99 and ttl <= 100)
        assert.equal(0, d:ttl("none"))
        assert.is_true(d:expire("none", 0.05))
        assert.same({ nil, "not found" }, { d:expire("absent", 1) })
        sleep(0.1)
        assert.is_nil(d:get("short"))
        assert.is_nil(d:get("none"))
        assert.same({ nil, "not found" }, { d:ttl("none") })
        assert.same({ "long" }, d:get_keys())
        d:set("gone", "v", 0.01)
        sleep(0.05)
        assert.equal(1, d:flush_expired())
    end)

    it("lists keys", function()
        local d = shared.spec
        for i = 1, 2000 do
            d:set("key" .. i, i)
        end
        assert.equal(1024, #d:get_keys())
        assert.equal(2000, #d:get_keys(0))
        assert.equal(10, #d:get_keys(10))
    end)

    it("evicts LRU entries and refuses an entry over the item size limit, naming it", function()
        local d = shared.spec_small
        local before = d:free_space()
        local forced = false
        for i = 1, 100 do
            local ok, err, forcible = d:set("k" .. i, string.rep("x", 100))
            assert.is_true(ok, err)
            forced = forced or forcible
        end
        assert.is_true(forced)
        assert.is_true(d:free_space() < before)
        assert.is_nil(d:get("k1"))
        assert.is_not_nil(d:get("k100"))
        local ok, err = d:set("huge", string.rep("x", 8192))
        assert.is_false(ok)
        local limit = d:max_item_size() - #"huge"
        assert.equal("value too large (8192 bytes, limit " .. limit .. " for this dict)", err)
        assert.is_not_nil(d:get("k100")) -- a hopeless set evicts nothing
        -- the limit is exact: a value of `limit` bytes fits, one byte more does not
        assert.is_true((d:set("huge", string.rep("y", limit))))
        assert.equal(limit, #d:get("huge"))
        assert.is_false((d:set("huge", string.rep("y", limit + 1))))
        assert.equal(limit, #d:get("huge")) -- the old value stays
    end)
end)

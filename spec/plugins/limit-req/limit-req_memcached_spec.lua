-- limit-req with policy memcached on one hot key: a gateway of 2 workers and a memcached started here, reached
-- through a proxy that adds 5 ms each way (a memcached on the network, not on loopback: a gets/cas cycle then
-- takes long enough for the others to collide with it), 200 requests at once on one bucket. The coroutines of a worker on one key must not race each other's gets/cas (they
-- used to, and a request within the bucket was refused with 429 once its 64 CAS attempts ran out): within the
-- bucket every request goes through, over it exactly the bucket's size does, and no contention is counted. The
-- bucket leaks once an hour, so GCRA timing does not matter.
local helpers = require("helpers")
local cluster = require("support.cluster")
local cjson = require("cjson.safe")

local BURST = helpers.ROOT .. "/spec/support/burst.js"
local describe_mc = io.open(cluster.MEMCACHED) and describe or pending

-- n requests, c at a time (spec/support/burst.js); the decoded summary.
local function burst(url, n, c)
    local spec = { urls = { url }, n = n, concurrency = c, method = "POST", body = { messages = {} },
                   timeout_ms = 30000 }
    local code, out = helpers.exec("node " .. helpers.shell_quote(BURST) .. " " .. helpers.shell_quote(cjson.encode(spec)), 120)
    assert.equal(0, code, out)
    return assert(cjson.decode(out), out)
end

local function count(r, status)
    return r.by_status[tostring(status)] or 0
end

describe_mc("limit-req on memcached, one hot key", function()
    local gw

    setup(function()
        local mc = cluster.memcached()
        local proxy = cluster.tcp_proxy(mc.port, 5)
        local mock = helpers.mock_upstream({ body = { ok = true } })
        local function route(id, burst_size)
            return { id = id, paths = { "/" .. id .. "/*" }, upstream = { nodes = { mock.addr } }, plugins = {
                ["limit-req"] = { policy = "memcached", rate = 1, per = "1h", burst = burst_size, nodelay = true,
                                  by = "global" } } }
        end
        local function losing(id, mode)
            local r = route(id, 99)
            r.plugins["limit-req"].fail_mode = mode
            r.plugins["cas-loser"] = { fail_mode = mode }
            return r
        end
        gw = helpers.start_gateway({
            node = { workers = 2, plugin_paths = { helpers.ROOT .. "/plugins", helpers.ROOT .. "/spec/fixtures/limits_plugins" },
                     memcached = { servers = { "127.0.0.1:" .. proxy.port }, timeout = 1 } },
            routes = { route("within", 299), route("over", 99), losing("open", "open"), losing("closed", "closed") },
        })
    end)

    teardown(helpers.stop_all)

    local function contention()
        return assert(gw:admin("GET", "/admin/limits")).json.stats.contention
    end

    it("admits every one of 200 requests at once within the bucket (300), counting no contention", function()
        local r = burst(gw.url("/within/x"), 200, 200)
        assert.equal(0, r.errors, cjson.encode(r.samples))
        assert.equal(200, count(r, 200), cjson.encode(r.by_status) .. " " .. cjson.encode(r.samples))
        assert.equal(0, contention())
    end)

    it("admits exactly the bucket (100) of 200 requests at once and refuses the rest", function()
        local r = burst(gw.url("/over/x"), 200, 200)
        assert.equal(0, r.errors, cjson.encode(r.samples))
        assert.equal(100, count(r, 200), cjson.encode(r.by_status))
        assert.equal(100, count(r, 429), cjson.encode(r.by_status))
        assert.equal(0, contention())
        -- the first bucket has 100 left of its 300: exactly 100 of 150 more
        r = burst(gw.url("/within/x"), 150, 150)
        assert.equal(100, count(r, 200), cjson.encode(r.by_status))
        assert.equal(50, count(r, 429), cjson.encode(r.by_status))
        assert.equal(0, contention())
    end)

    -- Out of compare-and-set attempts (here every cas loses, as if other nodes always moved the bucket first), the
    -- store could not decide: the request goes by fail_mode, as when memcached is down, and is counted.
    it("out of compare-and-set attempts, serves (fail_mode open) or answers 503 (closed), counting contention", function()
        local before = contention()
        local res = assert(helpers.http("POST", gw.url("/open/x"), { body = { messages = {} }, timeout = 30 }))
        assert.equal(200, res.status, res.body)
        assert.equal(before + 1, contention())
        res = assert(helpers.http("POST", gw.url("/closed/x"), { body = { messages = {} }, timeout = 30 }))
        assert.equal(503, res.status, res.body)
        assert.matches("rate limit store unavailable: memcached: the bucket kept changing (64 compare-and-set attempts)",
            res.json.error.message, 1, true)
        assert.equal(before + 2, contention())
        assert.matches("kept changing under 64 compare-and-set attempts", gw:log(), 1, true)
    end)
end)

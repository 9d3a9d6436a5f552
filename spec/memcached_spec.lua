-- sluice.memcached against real memcached servers (/usr/bin/memcached) started here: values round-trip, keys
-- spread over two servers (ketama), a stopped server fails fast and its circuit opens, its keys (only its keys)
-- move to the other server and come back with it; every server down: calls fail at once.
local helpers = require("helpers")
local socket = require("socket")
local cjson = require("cjson.safe")

local MEMCACHED = "/usr/bin/memcached"

local function start_mc(port)
    local user = (os.getenv("USER") == "root" or io.popen("id -u"):read("*l") == "0") and " -u root" or ""
    local p = helpers.spawn(string.format("%s -l 127.0.0.1 -p %d -U 0 -m 16%s", MEMCACHED, port, user))
    assert(helpers.wait_port(port, p, 5))
    return p
end

-- Text-protocol look-up straight on one server: true when it holds key.
local function holds(port, key)
    local c = socket.tcp()
    c:settimeout(2)
    assert(c:connect("127.0.0.1", port))
    c:send("get " .. key .. "\r\n")
    local found = false
    while true do
        local line = c:receive("*l")
        if not line or line == "END" then break end
        if line:match("^VALUE ") then found = true end
    end
    c:close()
    return found
end

local has_memcached = io.open(MEMCACHED) ~= nil
local describe_mc = has_memcached and describe or pending

describe_mc("sluice.memcached", function()
    local gw, port1, port2, mc1, mc2

    local function run(calls)
        local res = assert(helpers.http("POST", gw.url("/mc"), { body = helpers.json(calls), timeout = 10 }))
        assert.equal(200, res.status, res.body)
        return assert(cjson.decode(res.body))
    end

    setup(function()
        port1, port2 = helpers.free_port(), helpers.free_port()
        mc1, mc2 = start_mc(port1), start_mc(port2)
        gw = helpers.start_gateway({
            node = { workers = 2,
                     memcached = { servers = { "127.0.0.1:" .. port1, "127.0.0.1:" .. port2 }, timeout = 0.2,
                                   failure_threshold = 3, retry_after = 1 },
                     plugin_paths = { helpers.ROOT .. "/plugins", helpers.ROOT .. "/spec/fixtures/http_plugins" } },
            routes = { { id = "mc", paths = { "/mc" }, plugins = { ["mc-probe"] = {} } },
                       { id = "count", paths = { "/count" }, plugins = { ["mc-count"] = {} } } },
        })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    it("sets, gets, adds, counts and deletes", function()
        local r = run({ { "set", "a", "1", 60 }, { "get", "a" }, { "add", "a", "2" }, { "get", "a" },
                        { "get", "missing" }, { "incr", "n", 5, 10 }, { "incr", "n", 5, 10 }, { "decr", "n", 3 },
                        { "incr", "nope", 1 }, { "delete", "a" }, { "get", "a" }, { "delete", "a" },
                        { "set", "f", "v", 0, 7 }, { "get", "f" } }).results
        assert.same({ true, "1", false, "1" }, { r[1].a, r[2].a, r[3].a, r[4].a })
        assert.equal("exists", r[3].b)
        assert.equal(cjson.null, r[5].a)
        assert.is_nil(r[5].b) -- a miss is not an error
        assert.same({ 10, 15, 12 }, { r[6].a, r[7].a, r[8].a })
        assert.equal("not found", r[9].b)
        assert.same({ true, cjson.null, false }, { r[10].a, r[11].a, r[12].a })
        assert.same({ "v", 7 }, { r[14].a, r[14].b })
    end)

    it("reads cas uniques and stores only over an unchanged item (gets, cas)", function()
        local r = run({ { "set", "c", "1", 60 }, { "gets", "c" }, { "gets", "nope" } }).results
        assert.equal("1", r[2].a)
        local cas = r[2].b
        assert.is_number(cas)
        assert.equal(cjson.null, r[3].a)
        assert.is_nil(r[3].b)
        r = run({ { "cas", "c", "2", cas, 60 }, { "cas", "c", "3", cas, 60 }, { "get", "c" },
                  { "cas", "gone", "x", cas } }).results
        assert.is_true(r[1].a)
        assert.same({ false, "exists" }, { r[2].a, r[2].b }) -- changed since that gets
        assert.equal("2", r[3].a)
        assert.same({ false, "not found" }, { r[4].a, r[4].b })
    end)

    it("sends calls without waiting for them (send) and several at once (batch)", function()
        local r = run({ { "send", { { "incr", "sent", 5, 5, 60 }, { "decr", "sent-missing", 1 } } } }).results
        assert.is_true(r[1].ms < 100) -- it did not wait
        helpers.wait_until(function()
            return run({ { "get", "sent" } }).results[1].a == "5"
        end, 5, "the sent incr arrived")
        r = run({ { "batch", { { "incr", "sent", 2 }, { "get", "sent" }, { "decr", "nope", 1 }, { "get", "nope" } } } }).results
        assert.same({ { 7 }, { "7" }, { cjson.null, "not found" }, {} }, r[1].a)
    end)

    it("counts every call when many first calls race to create a counter (incr with an initial value)", function()
        -- memcached answers NOT_STORED to a creation that lost the race, without counting it: the bridge calls again
        local spec = { urls = { gw.url("/count") }, n = 1200, concurrency = 40, method = "GET", collect = "x-count",
                       seq_header = "x-seq", seq_every = 40 }
        local code, out = helpers.exec("node " .. helpers.shell_quote(helpers.ROOT .. "/spec/support/burst.js") .. " "
            .. helpers.shell_quote(cjson.encode(spec)), 60)
        assert.equal(0, code, out)
        local r = assert(cjson.decode(out))
        assert.equal(1200, r.by_status["200"])
        local values = {}
        for _, v in ipairs(r.collected["200"]) do values[v] = (values[v] or 0) + 1 end
        for i = 1, 40 do
            assert.equal(30, values[tostring(i)], "value " .. i .. " came back " .. tostring(values[tostring(i)])
                .. " times (30 counters of 40 calls each): " .. cjson.encode(values))
        end
    end)

    it("expires values", function()
        run({ { "set", "short", "x", 1 } })
        helpers.sleep(2.1)
        assert.equal(cjson.null, run({ { "get", "short" } }).results[1].a)
    end)

    it("spreads keys over both servers (consistent hashing)", function()
        local calls = {}
        for i = 1, 40 do calls[i] = { "set", "dist:" .. i, tostring(i), 60 } end
        run(calls)
        local on1, on2 = 0, 0
        for i = 1, 40 do
            local a, b = holds(port1, "dist:" .. i), holds(port2, "dist:" .. i)
            assert.is_true(a ~= b, "each key on exactly one server")
            if a then on1 = on1 + 1 else on2 = on2 + 1 end
        end
        assert.is_true(on1 >= 5 and on2 >= 5, on1 .. " / " .. on2)
    end)

    it("moves only a stopped server's keys: its circuit opens, its keys go to the other server, and come back", function()
        -- keys that live on each server
        local on1, on2 = {}, {}
        for i = 1, 40 do
            if holds(port2, "dist:" .. i) then on2[#on2 + 1] = "dist:" .. i else on1[#on1 + 1] = "dist:" .. i end
        end
        assert.is_true(#on1 >= 3 and #on2 >= 4)
        mc2:stop()
        -- the first calls to server 2 fail, fast; threshold 3: then its circuit opens
        local calls = {}
        for i = 1, 3 do calls[i] = { "get", on2[i] } end
        local r = run(calls)
        for i = 1, 3 do
            assert.equal(cjson.null, r.results[i].a)
            assert.is_string(r.results[i].b)
            assert.is_true(r.results[i].ms < 500, "took " .. r.results[i].ms .. " ms")
        end
        assert.equal("degraded", r.circuit)
        -- server 2's keys now go to server 1 (a miss there, not an error), server 1's keys never stopped working
        r = run({ { "get", on2[4] }, { "set", on2[4], "moved", 60 }, { "get", on2[4] }, { "get", on1[1] } })
        assert.equal(cjson.null, r.results[1].a)
        assert.is_nil(r.results[1].b)
        assert.same({ true, "moved", tostring(on1[1]:match("%d+")) },
            { r.results[2].a, r.results[3].a, r.results[4].a })
        assert.is_true(holds(port1, on2[4]), "the moved key is on server 1")
        local st = helpers.http("GET", gw.admin_url("/admin/status"), { headers = { ["x-api-key"] = gw.admin_key } })
        local servers = {}
        for _, sv in ipairs(st.json.memcached.servers) do servers[sv.address] = sv.state end
        assert.same({ ["127.0.0.1:" .. port1] = "up", ["127.0.0.1:" .. port2] = "down" }, servers)
        -- the server comes back: after retry_after one probe goes to it and closes its circuit; its keys move back
        mc2 = start_mc(port2)
        helpers.wait_until(function()
            local x = run({ { "set", on2[1], "back", 60 } })
            return x.results[1].a == true and x.circuit == "closed"
        end, 5, "circuit did not close")
        assert.equal("back", run({ { "get", on2[1] } }).results[1].a)
        assert.is_true(holds(port2, on2[1]), "server 2 holds its key again")
    end)

    it("fails at once when every server is down", function()
        mc1:stop()
        mc2:stop()
        local calls = {}
        for i = 1, 12 do calls[i] = { "get", "dist:" .. i } end
        local r = run(calls)
        for i = 1, 12 do
            assert.equal(cjson.null, r.results[i].a)
            assert.is_true(r.results[i].ms < 500, "took " .. r.results[i].ms .. " ms")
        end
        assert.equal("circuit open", r.results[12].b) -- both circuits open: nothing reaches the network
        assert.equal("open", r.circuit)
        mc1, mc2 = start_mc(port1), start_mc(port2)
        -- a circuit closes when a call of one of its keys probes it: keys enough for both servers (which keys
        -- live where depends on the ports, chosen afresh each run)
        local sets = {}
        for i = 1, 20 do sets[i] = { "set", "dist:" .. i, "v", 60 } end
        helpers.wait_until(function() return run(sets).circuit == "closed" end, 6, "circuits did not close")
    end)

    it("reports an error without servers configured", function()
        local gw2 = helpers.start_gateway({
            node = { workers = 1,
                     plugin_paths = { helpers.ROOT .. "/plugins", helpers.ROOT .. "/spec/fixtures/http_plugins" } },
            routes = { { id = "mc", paths = { "/mc" }, plugins = { ["mc-probe"] = {} } } },
        })
        local res = assert(helpers.http("POST", gw2.url("/mc"), { body = helpers.json({ { "get", "a" } }) }))
        assert.matches("not configured", cjson.decode(res.body).results[1].b)
        gw2:stop()
    end)
end)

-- Process lifecycle through the real binary: SIGTERM drains in-flight requests, the drain deadline is kept,
-- SIGQUIT stops at once, -d runs as a daemon with a pid file.
local helpers = require("helpers")
local socket = require("socket")

local function send_raw(port, data)
    local c = assert(socket.tcp())
    c:settimeout(10)
    assert(c:connect("127.0.0.1", port))
    assert(c:send(data))
    return c
end

local function read_all(c)
    local out, err, partial = c:receive("*a")
    c:close()
    return out or partial or "", err
end

describe("lifecycle", function()
    local mock

    setup(function()
        mock = helpers.mock_upstream({ paths = { ["/slow"] = { delay = 1.5, body = "slow done" },
                                                 ["/stuck"] = { delay = 30, body = "never" } } })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    local function gateway(extra)
        local node = { workers = 1, drain_timeout = 5 }
        for k, v in pairs(extra or {}) do node[k] = v end
        return helpers.start_gateway({ node = node, upstreams = { up = { nodes = { mock.addr } } },
                                       routes = { { id = "all", paths = { "/*" }, upstream = "up" } } })
    end

    it("SIGTERM lets an in-flight request finish, refuses new connections, then exits 0", function()
        local gw = gateway()
        local c = send_raw(gw.port, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        helpers.wait_until(function() return #mock:requests() > 0 and mock:last().path == "/slow" end, 5)
        gw.proc:signal(15)
        helpers.wait_until(function()
            local t = socket.tcp()
            t:settimeout(0.5)
            local ok = t:connect("127.0.0.1", gw.port)
            t:close()
            return not ok
        end, 5, "listener still accepting after SIGTERM")
        local resp = read_all(c)
        assert.truthy(resp:find("^HTTP/1.1 200"), resp)
        assert.truthy(resp:find("slow done", 1, true))
        assert.truthy(resp:lower():find("connection: close", 1, true), "a draining gateway closes keep-alive")
        assert.is_true(gw.proc:wait(5))
        assert.equal(0, gw.proc:exit_code())
    end)

    it("keeps the drain deadline when a request never finishes", function()
        local gw = gateway({ drain_timeout = 1 })
        local c = send_raw(gw.port, "GET /stuck HTTP/1.1\r\nHost: x\r\n\r\n")
        helpers.wait_until(function() return mock:last() and mock:last().path == "/stuck" end, 5)
        local t0 = socket.gettime()
        gw.proc:signal(15)
        assert.is_true(gw.proc:wait(5), "gateway did not exit")
        assert.is_true(socket.gettime() - t0 < 4)
        assert.truthy(gw:log():find("drain timeout", 1, true))
        c:close()
    end)

    it("SIGQUIT stops at once", function()
        local gw = gateway()
        local c = send_raw(gw.port, "GET /stuck HTTP/1.1\r\nHost: x\r\n\r\n")
        helpers.wait_until(function() return mock:last() and mock:last().path == "/stuck" end, 5)
        local t0 = socket.gettime()
        gw.proc:signal(3)
        assert.is_true(gw.proc:wait(3))
        assert.is_true(socket.gettime() - t0 < 2)
        c:close()
    end)

    it("runs as a daemon with a pid file", function()
        local dir = helpers.tmpdir()
        local port = helpers.free_port()
        local conf = dir .. "/d.yaml"
        helpers.write_file(conf, helpers.json({ node = { listen = { "127.0.0.1:" .. port }, workers = 1,
            access_log = { path = "off" }, error_log = dir .. "/error.log" },
            upstreams = { up = { nodes = { mock.addr } } },
            routes = { { id = "all", paths = { "/*" }, upstream = "up" } } }))
        local pidfile = dir .. "/sluice.pid"
        local ok = os.execute(string.format("%s -d -c %s -g %s", helpers.BIN, conf, pidfile))
        assert.truthy(ok == 0 or ok == true)
        local pid = helpers.wait_until(function() return tonumber(helpers.read_file(pidfile)) end, 5)
        helpers.wait_until(function() return helpers.http("GET", "http://127.0.0.1:" .. port .. "/d").status == 200 end, 5)
        os.execute("kill -TERM " .. pid)
        helpers.wait_until(function() return helpers.read_file(pidfile) == nil end, 10, "pid file not removed")
    end)
end)

-- A client that leaves while its request is served: at every point of the response (before the head, after the
-- head, mid-body, mid-stream), by closing normally (FIN) or abruptly (RST), on a plain route (PASS: the body
-- streams in C) and on a route with a body_filter plugin (FILTER: Lua sees each chunk). As nginx does, the
-- request ends at once: the upstream call is cancelled, pipelined requests not yet started are dropped, the
-- access log says 499; the gateway's descriptors return to where they were and it goes on serving.
local helpers = require("helpers")
local cf = require("support.conn_faults")

local REQ = "GET %s HTTP/1.1\r\nHost: x\r\n\r\n"

-- Where the client leaves: the upstream path (long enough that the natural end is far away) and what the client
-- reads before it goes.
local POINTS = {
    { name = "before the head", path = "/head?ms=20000", read = function(c) end },
    { name = "after the head", path = "/stream?n=5&ms=20000", read = function(c)
        assert(c:receive("*l"):match("^HTTP/1%.1 200"))
    end },
    { name = "mid-body", path = "/body?n=200&ms=100&size=1000", read = function(c)
        assert(c:receive("*l"):match("^HTTP/1%.1 200"))
        repeat local l = assert(c:receive("*l")) until l == ""
        assert(c:receive(1500)) -- a piece and a half of a Content-Length body
    end },
    { name = "mid-stream", path = "/stream?n=200&ms=100&size=100", read = function(c)
        assert(c:receive("*l"):match("^HTTP/1%.1 200"))
        repeat local l = assert(c:receive("*l")) until l == ""
        assert(c:receive(250)) -- two events and then some, in chunked framing
    end },
}

describe("a client that leaves mid-request", function()
    local up, gw, base
    local seq = 0
    local function tag()
        seq = seq + 1
        return "tag=t" .. seq .. "x"
    end

    setup(function()
        up = cf.stream_upstream()
        local pdir = helpers.tmpdir()
        helpers.write_file(pdir .. "/conn-passthrough.lua", cf.FILTER_PLUGIN)
        local dir = helpers.tmpdir()
        gw = helpers.start_gateway({
            node = { workers = 1, plugin_paths = { helpers.ROOT .. "/plugins", pdir },
                     access_log = cf.access_log_conf(dir) },
            routes = {
                { id = "pass", paths = { "/pass/*" }, strip_prefix = true, upstream = { nodes = { up.addr } } },
                { id = "filter", paths = { "/filter/*" }, strip_prefix = true, upstream = { nodes = { up.addr } },
                  plugins = { ["conn-passthrough"] = {} } },
            },
        }, { dir = dir })
        -- one exchange each way first: the upstream pool then holds what it holds from here on
        assert.equal(200, helpers.http("GET", gw.url("/pass/quick")).status)
        assert.equal(200, helpers.http("GET", gw.url("/filter/quick")).status)
        helpers.sleep(0.2)
        base = cf.fds(gw.pid)
    end)

    teardown(function()
        helpers.stop_all()
    end)

    for _, mode in ipairs({ "pass", "filter" }) do
        for _, point in ipairs(POINTS) do
            for _, how in ipairs({ "FIN", "RST" }) do
                it(("%s, %s (%s): the upstream call is cancelled, 499 is logged"):format(point.name, how,
                    mode:upper()), function()
                    up.reset()
                    local t = tag()
                    local c = cf.send_raw(gw.port, REQ:format("/" .. mode .. point.path .. "&" .. t))
                    helpers.wait_until(function() return up.stats().started == 1 end, 5, "upstream not reached")
                    point.read(c)
                    if how == "FIN" then
                        assert.is_true(cf.leave_fin(c, 5), "the gateway kept the connection open")
                    else
                        cf.leave_rst(c)
                    end
                    helpers.wait_until(function()
                        local s = up.stats()
                        return s.aborted == 1 and s.open == 0
                    end, 5, "the upstream call was not cancelled")
                    assert.equal(0, up.stats().finished)
                    assert.equal(499, cf.wait_logged(gw, t).status)
                    cf.wait_fds(gw, base)
                    assert.equal(200, helpers.http("GET", gw.url("/" .. mode .. "/quick")).status)
                end)
            end
        end
    end

    it("curl -N -m 1 on a slow stream: the stream upstream ends when curl does", function()
        up.reset()
        local t = tag()
        local code = helpers.exec("curl -sN -m 1 -o /dev/null '" .. gw.url("/pass/stream?n=100&ms=100&" .. t) .. "'", 10)
        assert.equal(28, code) -- curl's timeout
        helpers.wait_until(function()
            local s = up.stats()
            return s.aborted == 1 and s.open == 0
        end, 5, "the upstream stream went on after the client left")
        assert.equal(499, cf.wait_logged(gw, t).status)
        cf.wait_fds(gw, base)
    end)

    it("50 streaming clients that leave together: every upstream stream is cancelled", function()
        up.reset()
        local clients = {}
        for i = 1, 50 do
            clients[i] = cf.send_raw(gw.port, REQ:format(i % 2 == 0 and "/pass/stream?n=100&ms=100"
                or "/filter/stream?n=100&ms=100"))
        end
        helpers.wait_until(function() return up.stats().started == 50 end, 10, "not every stream started")
        for _, c in ipairs(clients) do c:shutdown("send") end
        helpers.wait_until(function()
            local s = up.stats()
            return s.aborted == 50 and s.open == 0
        end, 8, "upstream streams went on after their clients left")
        for _, c in ipairs(clients) do c:close() end
        cf.wait_fds(gw, base)
        assert.equal(200, helpers.http("GET", gw.url("/pass/quick")).status)
    end)

    for _, mode in ipairs({ "pass", "filter" }) do
        it(("a write that finds the client gone ends the request (%s; the client is not being read)"):format(
            mode:upper()), function()
            up.reset()
            local t = tag()
            -- 100 KiB of pipelined requests behind the stream: more than the gateway reads ahead, so it stops
            -- reading this client and only a failed write can tell it the client left
            local c = cf.send_raw(gw.port, REQ:format("/" .. mode .. "/stream?n=300&ms=50&" .. t) ..
                REQ:format("/" .. mode .. "/quick"):rep(3000))
            assert(c:receive("*l"):match("^HTTP/1%.1 200"))
            repeat local l = assert(c:receive("*l")) until l == ""
            assert(c:receive(20))
            helpers.sleep(0.2)
            c:settimeout(0)
            repeat local _, err = c:receive(65536) until err -- nothing unread: the close is a FIN
            c:close()
            helpers.wait_until(function()
                local s = up.stats()
                return s.aborted == 1 and s.open == 0
            end, 5, "the upstream stream went on after the client left")
            assert.equal(1, up.stats().started) -- none of the pipelined requests
            assert.equal(499, cf.wait_logged(gw, t).status)
            cf.wait_fds(gw, base)
        end)
    end

    for _, mode in ipairs({ "pass", "filter" }) do
        it(("a client not being read that leaves before the head is noticed all the same (%s)"):format(
            mode:upper()), function()
            up.reset()
            local t = tag()
            -- no write will fail (nothing to write yet) and no read will see the FIN (reading is stopped)
            local c = cf.send_raw(gw.port, REQ:format("/" .. mode .. "/head?ms=20000&" .. t) ..
                REQ:format("/" .. mode .. "/quick"):rep(3000))
            helpers.wait_until(function() return up.stats().started == 1 end, 5, "upstream not reached")
            helpers.sleep(0.3)
            c:close() -- nothing was sent to it: a FIN
            helpers.wait_until(function()
                local s = up.stats()
                return s.aborted == 1 and s.open == 0
            end, 5, "the upstream call went on after the client left")
            assert.equal(1, up.stats().started)
            assert.equal(499, cf.wait_logged(gw, t).status)
            cf.wait_fds(gw, base)
        end)
    end

    it("pipelining clients that leave: requests not yet started are dropped", function()
        up.reset()
        local clients = {}
        for i = 1, 20 do
            clients[i] = cf.send_raw(gw.port, REQ:format("/pass/head?ms=300"):rep(50))
        end
        helpers.wait_until(function() return up.stats().started >= 1 end, 5, "upstream not reached")
        for _, c in ipairs(clients) do cf.leave_fin(c, 5) end
        helpers.wait_until(function() return up.stats().open == 0 end, 5, "upstream calls still running")
        helpers.sleep(1) -- what would have come next (one request each 0.3 s) had the gateway gone on
        local s = up.stats()
        assert.is_true(s.started <= 20, "upstream requests after the clients left: " .. s.started)
        assert.equal(0, s.open)
        cf.wait_fds(gw, base)
    end)

    it("a client that half-closes after a complete exchange is closed, its request logged as answered", function()
        local t = tag()
        local c = cf.send_raw(gw.port, REQ:format("/pass/quick?" .. t))
        assert(c:receive("*l"):match("^HTTP/1%.1 200"))
        repeat local l = assert(c:receive("*l")) until l == ""
        assert.equal("ok", c:receive(2))
        assert.is_true(cf.leave_fin(c, 5))
        assert.equal(200, cf.wait_logged(gw, t).status)
        cf.wait_fds(gw, base)
    end)
end)

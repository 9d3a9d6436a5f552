-- Clients that send faster than they read, or read slowly, or not at all: the gateway's memory per connection
-- stays bounded (pipelined input is read ahead only a little while answers wait; a response waits for a slow
-- reader instead of piling up), a stalled reader is timed out, and what they leave behind is given back.
local helpers = require("helpers")
local socket = require("socket")
local cf = require("support.conn_faults")

local PIPELINED = "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n" -- answered by the gateway itself (404)

-- Pushes up to `budget` bytes of pipelined requests into each client without reading, for at most `secs` (less
-- once a whole second goes by in which no client could send anything). Returns the bytes sent in all.
local function push(clients, budget, secs)
    local block = PIPELINED:rep(math.floor(65536 / #PIPELINED))
    local sent, total = {}, 0
    for i, c in ipairs(clients) do
        c:settimeout(0)
        sent[i] = 0
    end
    local deadline, progress = socket.gettime() + secs, socket.gettime()
    while socket.gettime() < deadline and socket.gettime() - progress < 1 do
        local round = 0
        for i, c in ipairs(clients) do
            if sent[i] < budget then
                local last, err, partial = c:send(block)
                assert(err == nil or err == "timeout", err)
                local n = last or partial or 0
                sent[i], round = sent[i] + n, round + n
            end
        end
        total = total + round
        if round > 0 then progress = socket.gettime() else socket.sleep(0.05) end
    end
    return total
end

describe("back-pressure on the client side", function()
    local up

    setup(function()
        up = cf.stream_upstream()
    end)

    teardown(function()
        helpers.stop_all()
    end)

    it("20 clients pipelining without reading: the gateway reads ahead only a little for each", function()
        local gw = helpers.start_gateway({
            node = { workers = 1 },
            routes = { { id = "slow", paths = { "/head" }, upstream = { nodes = { up.addr } } } },
        })
        assert.equal(404, helpers.http("GET", gw.url("/nope")).status)
        local base_rss, base_fds = cf.rss_kb(gw.pid), cf.fds(gw.pid)
        up.reset()
        -- each begins with a request that takes 20 s, then keeps sending requests and reads nothing
        local clients = {}
        for i = 1, 20 do
            clients[i] = cf.send_raw(gw.port, "GET /head?ms=20000 HTTP/1.1\r\nHost: x\r\n\r\n")
        end
        helpers.wait_until(function() return up.stats().started == 20 end, 5, "upstream not reached")
        local sent = push(clients, 8 * 1024 * 1024, 6)
        -- the kernel's socket buffers take some megabytes per client; the gateway itself must not
        assert.is_true(sent > 20 * 1024 * 1024, "the spec could not push enough: " .. sent)
        local grown = cf.rss_kb(gw.pid) - base_rss
        assert.is_true(grown < 40 * 1024, ("gateway RSS grew by %d KiB for 20 pipelining clients"):format(grown))
        for _, c in ipairs(clients) do cf.leave_rst(c) end
        helpers.wait_until(function() return up.stats().open == 0 end, 5, "upstream calls went on")
        assert.equal(20, up.stats().started) -- none of the pipelined requests (they were /nope anyway)
        cf.wait_fds(gw, base_fds)
        assert.equal(404, helpers.http("GET", gw.url("/nope")).status)
        gw:stop()
    end)

    it("pipelined requests held back are all answered once the client reads", function()
        local gw = helpers.start_gateway({ node = { workers = 1 }, routes = {} })
        local n = 6000 -- about 200 KiB of requests: several times what is read ahead
        local c = cf.send_raw(gw.port)
        -- write and read in turns, so neither side's buffers decide the outcome
        local data = PIPELINED:rep(n)
        local pos, got, buf = 1, 0, ""
        local deadline = socket.gettime() + 30
        while got < n and socket.gettime() < deadline do
            if pos <= #data then
                c:settimeout(0)
                local last, err, partial = c:send(data, pos, math.min(#data, pos + 65535))
                assert(err == nil or err == "timeout", err)
                pos = (last or partial or pos - 1) + 1
            end
            c:settimeout(0.05)
            local chunk, err, partial = c:receive(65536)
            assert(err == nil or err == "timeout", err)
            buf = buf .. (chunk or partial or "")
            local last_end = 1
            for _, e in buf:gmatch("()HTTP/1%.1 404()") do
                got, last_end = got + 1, e
            end
            buf = buf:sub(math.max(last_end, #buf - 11)) -- a status line cut in two is counted once whole
        end
        c:close()
        assert.equal(n, got)
        gw:stop()
    end)

    it("a client that stops reading a big response is timed out and its upstream call cancelled", function()
        local gw = helpers.start_gateway({
            node = { workers = 1, limits = { send_timeout = 1 } },
            routes = { { id = "big", paths = { "/big" }, upstream = { nodes = { up.addr } } } },
        })
        assert.equal(200, helpers.http("GET", gw.url("/big?len=10")).status)
        helpers.sleep(0.2)
        local base = cf.fds(gw.pid)
        up.reset()
        local c = socket.tcp()
        pcall(c.setoption, c, "recv-buffer-size", 32768)
        c:settimeout(5)
        assert(c:connect("127.0.0.1", gw.port))
        assert(c:send("GET /big?len=1073741824 HTTP/1.1\r\nHost: x\r\n\r\n"))
        helpers.wait_until(function() return gw:log():find("send timeout", 1, true) end, 10,
            "a client that reads nothing was not timed out")
        helpers.wait_until(function()
            local s = up.stats()
            return s.aborted == 1 and s.open == 0
        end, 5, "the upstream call went on")
        c:close()
        cf.wait_fds(gw, base)
        assert.equal(200, helpers.http("GET", gw.url("/big?len=10")).status)
        gw:stop()
    end)

    it("10 slow readers of a large body cost bounded memory, and leaving cancels their upstream calls", function()
        local gw = helpers.start_gateway({
            node = { workers = 1 },
            routes = { { id = "big", paths = { "/big" }, upstream = { nodes = { up.addr } } } },
        })
        assert.equal(200, helpers.http("GET", gw.url("/big?len=10")).status)
        helpers.sleep(0.2)
        local base_fds, base_rss = cf.fds(gw.pid), cf.rss_kb(gw.pid)
        up.reset()
        local clients = {}
        for i = 1, 10 do
            clients[i] = cf.send_raw(gw.port, "GET /big?len=1073741824 HTTP/1.1\r\nHost: x\r\n\r\n")
        end
        -- each reads 16 KiB now and then, for 3 s: far slower than the upstream sends
        local got = 0
        local deadline = socket.gettime() + 3
        while socket.gettime() < deadline do
            for _, c in ipairs(clients) do
                c:settimeout(0.01)
                local d, _, partial = c:receive(16384)
                got = got + #(d or partial or "")
            end
            socket.sleep(0.05)
        end
        assert.is_true(got > 0)
        local grown = cf.rss_kb(gw.pid) - base_rss
        assert.is_true(grown < 40 * 1024, ("gateway RSS grew by %d KiB for 10 slow readers"):format(grown))
        assert.equal(10, up.stats().open)
        for _, c in ipairs(clients) do cf.leave_rst(c) end
        helpers.wait_until(function()
            local s = up.stats()
            return s.aborted == 10 and s.open == 0
        end, 5, "upstream calls went on after their clients left")
        cf.wait_fds(gw, base_fds)
        gw:stop()
    end)
end)

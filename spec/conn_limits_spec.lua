-- Connection limits and descriptor exhaustion: the open-files limit is raised and max_connections kept below
-- it at start; a worker that runs out of descriptors pauses accepting instead of spinning on accept4, keeps
-- serving the connections it has, recovers when they close and stops on SIGTERM; over max_connections a client
-- gets a 503 and the refusals are logged once a second with a count; the Admin API has a limit of its own.
local helpers = require("helpers")
local socket = require("socket")
local cf = require("support.conn_faults")

local ADMIN_LIMIT = 64 -- SL_ADMIN_MAX_CONNECTIONS (core/server/settings.h)

-- n connections that send nothing (each is connected when returned; the gateway may not have accepted it).
local function idle_clients(port, n)
    local out = {}
    for i = 1, n do
        local c = socket.tcp()
        c:settimeout(5)
        assert(c:connect("127.0.0.1", port))
        out[i] = c
    end
    return out
end

-- What each client got within `secs`: "503" (the refusal), "closed" (closed without a word), "open" (still
-- open, nothing received: being served).
local function outcomes(clients, secs)
    local res, left, deadline = {}, #clients, socket.gettime() + secs
    while left > 0 and socket.gettime() < deadline do
        for i, c in ipairs(clients) do
            if not res[i] then
                c:settimeout(0)
                local data, err, partial = c:receive("*a")
                local got = data or partial or ""
                if got:match("^HTTP/1%.1 503") then
                    res[i], left = "503", left - 1
                elseif err == "closed" then
                    res[i], left = "closed", left - 1
                end
            end
        end
        socket.sleep(0.05)
    end
    local count = { ["503"] = 0, closed = 0, open = 0 }
    for i = 1, #clients do
        local r = res[i] or "open"
        count[r] = count[r] + 1
    end
    return count
end

-- After start: the helpers' probe connections are closed and forgotten by the gateway (they count until then).
local function settle(gw)
    assert.equal(404, helpers.http("GET", gw.url("/nope")).status)
    helpers.sleep(0.3)
end

local function close_all(clients)
    for _, c in ipairs(clients) do c:close() end
end

local function count_lines(text, needle)
    local n = 0
    for line in text:gmatch("[^\n]+") do
        if line:find(needle, 1, true) then n = n + 1 end
    end
    return n
end

local function limits_of(pid)
    local s = helpers.read_file("/proc/" .. pid .. "/limits") or ""
    local soft, hard = s:match("Max open files%s+(%d+)%s+(%d+)")
    return tonumber(soft), tonumber(hard)
end

describe("connection limits", function()
    teardown(function()
        helpers.stop_all()
    end)

    it("raises the open-files soft limit to the hard limit at start", function()
        local gw = helpers.start_gateway({ node = { workers = 1 }, routes = {} },
            { wrap = "sh -c 'ulimit -S -n 256; exec \"$@\"' sh" })
        local soft, hard = limits_of(gw.pid)
        assert.is_number(soft)
        assert.equal(hard, soft)
        assert.is_true(soft > 256)
        gw:stop()
    end)

    it("keeps max_connections below the descriptor limit, refuses the rest with 503 and keeps serving",
        function()
        -- 256 descriptors, 2 workers and the Admin API: (256 - 64 - 32 - 64) / 2 = 48 connections
        local gw = helpers.start_gateway({ node = { workers = 2 }, routes = {} },
            { wrap = "sh -c 'ulimit -n 256; exec \"$@\"' sh" })
        assert.truthy(gw:log():find("limits.max_connections 10000 is more than the open-files limit (256) " ..
            "allows: using 48", 1, true), gw:log())
        settle(gw)
        local base = cf.fds(gw.pid)
        local clients = idle_clients(gw.port, 120)
        local got = outcomes(clients, 3)
        assert.equal(0, got.closed)
        assert.is_true(got.open <= 48 and got.open >= 24, "served: " .. got.open)
        assert.equal(120 - got.open, got["503"])
        -- a connection being served still is
        local served
        for _, c in ipairs(clients) do
            c:settimeout(0)
            local _, err = c:receive(0)
            if err == "timeout" then served = c break end
        end
        assert.truthy(served)
        served:settimeout(5)
        assert(served:send("GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"))
        assert.truthy(assert(served:receive("*l")):match("^HTTP/1%.1 404"))
        close_all(clients)
        cf.wait_fds(gw, base)
        assert.equal(404, helpers.http("GET", gw.url("/nope")).status)
        -- once a second with a count, not one line per refusal
        helpers.wait_until(function() return gw:log():find("refused", 1, true) end, 3, "refusals not logged")
        local lines = count_lines(gw:log(), "max_connections reached")
        assert.is_true(lines >= 1 and lines <= 8, "refusal log lines: " .. lines)
        local refused = 0
        for n in gw:log():gmatch("refused (%d+) connection") do refused = refused + tonumber(n) end
        assert.equal(got["503"], refused)
        assert.is_true(gw:stop(10), "the gateway did not stop on SIGTERM")
    end)

    it("out of descriptors: accepting pauses, the worker goes on serving, recovers, and stops on SIGTERM",
        function()
        local gw = helpers.start_gateway({ node = { workers = 2 }, routes = {} })
        local keep = assert(helpers.client(gw.port, { timeout = 5 }))
        assert.equal(404, assert(keep:request("GET", "/nope")).status)
        local base = cf.fds(gw.pid)
        -- the limit drops under the gateway's feet (max_connections was sized for the old one): accept4 fails
        local limit = base + 30
        local code, out = helpers.exec(("prlimit --pid %d --nofile=%d:%d"):format(gw.pid, limit, limit), 10)
        assert.equal(0, code, out)
        local clients = idle_clients(gw.port, 150)
        helpers.wait_until(function() return gw:log():find("accepting paused", 1, true) end, 5,
            "accept4 never failed: " .. cf.fds(gw.pid) .. " descriptors")
        -- not spinning: a second and a half of the worker's time costs (almost) no CPU
        local t0 = cf.cpu_ticks(gw.pid)
        helpers.sleep(1.5)
        local spent = cf.cpu_ticks(gw.pid) - t0
        assert.is_true(spent < 50, "CPU ticks spent while out of descriptors: " .. spent)
        -- a connection it had is still served
        assert.equal(404, assert(keep:request("GET", "/nope")).status)
        close_all(clients)
        helpers.wait_until(function() return cf.fds(gw.pid) <= base end, 15,
            "descriptors did not come back: " .. cf.fds(gw.pid))
        assert.equal(404, assert(keep:request("GET", "/nope")).status)
        local res = helpers.wait_until(function()
            local r = helpers.http("GET", gw.url("/nope"), { timeout = 2 })
            return r and r.status == 404 and r
        end, 10, "no new connection served after the clients left")
        assert.equal(404, res.status)
        assert.is_true(count_lines(gw:log(), "accepting paused") <= 20, gw:log())
        keep:close()
        assert.is_true(gw:stop(10), "the gateway did not stop on SIGTERM")
    end)

    it("the Admin API has its own limit: traffic at max_connections does not shut it out", function()
        local gw = helpers.start_gateway({ node = { workers = 1, limits = { max_connections = 4 } }, routes = {} })
        settle(gw)
        local traffic = idle_clients(gw.port, 10)
        local got = outcomes(traffic, 3)
        assert.equal(4, got.open)
        assert.equal(6, got["503"])
        local res = gw:admin("GET", "/admin/routes")
        assert.equal(200, res.status)
        -- and the Admin API's limit is its own
        local admins = idle_clients(gw.admin_port, ADMIN_LIMIT + 5)
        got = outcomes(admins, 3)
        assert.equal(ADMIN_LIMIT, got.open)
        assert.equal(5, got["503"])
        close_all(admins)
        close_all(traffic)
        helpers.wait_until(function()
            local r = gw:admin("GET", "/admin/routes")
            return r and r.status == 200
        end, 5, "Admin API not served after its clients left")
        helpers.wait_until(function() return gw:log():find("Admin API connection limit", 1, true) end, 3,
            "admin refusals not logged")
        gw:stop()
    end)

    it("a flood of refused connections is logged once a second with a count", function()
        local gw = helpers.start_gateway({ node = { workers = 1, limits = { max_connections = 2 } }, routes = {} })
        settle(gw)
        local held = idle_clients(gw.port, 2)
        assert.equal(2, outcomes(held, 1).open)
        local refused = 0
        local deadline = socket.gettime() + 2
        while socket.gettime() < deadline and refused < 400 do
            local batch = idle_clients(gw.port, 20)
            refused = refused + outcomes(batch, 2)["503"]
            close_all(batch)
        end
        assert.is_true(refused >= 100, "refused: " .. refused)
        helpers.sleep(1.2) -- the last second's count
        local lines = count_lines(gw:log(), "max_connections reached")
        assert.is_true(lines >= 1 and lines <= 5, "log lines for " .. refused .. " refusals: " .. lines)
        local logged = 0
        for n in gw:log():gmatch("refused (%d+) connection") do logged = logged + tonumber(n) end
        assert.equal(refused, logged)
        close_all(held)
        gw:stop()
    end)
end)

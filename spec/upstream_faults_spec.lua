-- Upstream faults through the real gateway (spec/support/bad_upstream.js misbehaves on purpose): heads that
-- trickle or never end, interim (1xx) responses in a loop or past the header cap, status and version garbage,
-- bodies that stall, resets before the head, in it and in the body, upstreams that answer before reading the
-- body, kept-alive connections that went stale; for PASS routes, FILTER routes (a body_filter plugin) and
-- sluice.http. After each fault the client has a clear 502/504 (or a cut connection once the head went out),
-- the gateway still serves, and its file descriptors come back to where they were.
local helpers = require("helpers")
local socket = require("socket")
local cjson = require("cjson.safe")
local lfs = require("lfs")

-- sluice.http as the request's headers say; answers with what it got.
local HTTP_PLUGIN = [[
local sluice = require("sluice")
local request = sluice.request
return {
    name = "fault-http",
    priority = 1000,
    schema = { type = "object" },
    access = function(conf, ctx)
        local o = { url = request.get_header("x-target"), timeout = tonumber(request.get_header("x-timeout")) or 3,
                    method = request.get_header("x-method"), body = request.get_header("x-body"),
                    keepalive = { idle_timeout = tonumber(request.get_header("x-idle")) or 0.3 },
                    timeouts = { read = tonumber(request.get_header("x-read")) } }
        local n = 0
        if request.get_header("x-stream") then
            o.stream = function(chunk) n = n + #chunk end
        end
        local res, err, detail = sluice.http.request(o)
        if not res then
            return 200, { err = err, detail = detail }
        end
        return 200, { status = res.status, body = res.body, bytes = n, reused = res.reused,
                      header = res.headers[request.get_header("x-header") or ""] }
    end,
}
]]

local function start_bad()
    local dir = helpers.tmpdir()
    local proc = helpers.spawn(string.format("node %s %s >%s 2>&1",
        helpers.shell_quote(helpers.ROOT .. "/spec/support/bad_upstream.js"), helpers.shell_quote(dir .. "/port"),
        helpers.shell_quote(dir .. "/out.log")))
    local port = helpers.wait_until(function() return tonumber(helpers.read_file(dir .. "/port")) end, 10,
        "bad upstream did not start")
    local b = { proc = proc, port = port, addr = "127.0.0.1:" .. port }
    b.url = function(p) return "http://127.0.0.1:" .. port .. p end
    b.get = function(p) return cjson.decode(assert(helpers.http("GET", b.url(p))).body) end
    return b
end

local function nfds(pid)
    local n = 0
    for _ in lfs.dir("/proc/" .. pid .. "/fd") do n = n + 1 end
    return n - 2 -- "." and ".."
end

local function plugin_dir()
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/fault-http.lua", HTTP_PLUGIN)
    return { helpers.ROOT .. "/plugins", helpers.ROOT .. "/spec/fixtures/plugins", dir }
end

-- A request whose answer may be a cut connection: res, or nil and the error.
local function get(gw, path, opts)
    opts = opts or {}
    opts.timeout = opts.timeout or 15
    return helpers.http(opts.method or "GET", gw.url(path), opts)
end

describe("upstream faults", function()
    local gw, bad, base

    setup(function()
        bad = start_bad()
        local up = { nodes = { bad.addr }, timeout = { connect = 2, send = 5, read = 1, header = 2 },
                     keepalive = { idle_timeout = 0.3 } }
        gw = helpers.start_gateway({
            node = { workers = 1, plugin_paths = plugin_dir() },
            upstreams = { bad = up },
            routes = {
                { id = "pass", paths = { "/p/*" }, upstream = "bad", strip_prefix = true },
                { id = "filter", paths = { "/f/*" }, upstream = "bad", strip_prefix = true,
                  plugins = { ["spec-tagger"] = {} } },
                { id = "http", paths = { "/h" }, plugins = { ["fault-http"] = {} } },
            },
        })
        assert.equal(200, get(gw, "/p/ok").status)
        helpers.sleep(0.6) -- the pooled connection idles out
        base = nfds(gw.pid)
    end)

    teardown(function()
        helpers.stop_all()
    end)

    -- The gateway still serves, and every connection of the fault is gone.
    local function healthy()
        local r = assert(get(gw, "/p/ok"))
        assert.equal(200, r.status, r.body)
        helpers.wait_until(function() return nfds(gw.pid) == base end, 5,
            "gateway fds back to the baseline of " .. base .. " (now " .. nfds(gw.pid) .. ")")
    end

    local function expect_status(path, status, match)
        local r, err = get(gw, path)
        assert.is_not_nil(r, "no response for " .. path .. ": " .. tostring(err))
        assert.equal(status, r.status, path .. ": " .. tostring(r.body))
        if match then
            assert.matches(match, r.json.error.message, 1, true)
        end
    end

    local function expect_cut(path)
        local r, err = get(gw, path)
        assert.is_nil(r, path .. " looked complete: " .. tostring(r and r.status))
        assert.matches("^body: closed", tostring(err):gsub("^chunk [%w ]+:", "body:")) -- cut, whatever the framing
    end

    for _, m in ipairs({ { name = "PASS", pre = "/p" }, { name = "FILTER", pre = "/f" } }) do
        local pre = m.pre
        describe(m.name, function()
            it("a head trickled a byte at a time ends at the header deadline with 504", function()
                expect_status(pre .. "/slowhdr?ms=200", 504, "timed out")
                assert.matches("response head not complete", gw:log(), 1, true)
                healthy()
            end)

            it("100 Continue in a loop ends at the header deadline with 504", function()
                expect_status(pre .. "/continue-loop?ms=200", 504, "timed out")
                healthy()
            end)

            it("too many interim responses, or their headers past the cap together, are a 502", function()
                expect_status(pre .. "/interim?n=100", 502, "invalid response")
                expect_status(pre .. "/interim?n=4&size=20000", 502, "invalid response")
                -- a few are fine
                assert.equal("ok", assert(get(gw, pre .. "/interim?n=3&size=100")).body)
                healthy()
            end)

            it("a status outside 100-599 is a 502", function()
                expect_status(pre .. "/status?code=600", 502, "invalid response")
                expect_status(pre .. "/status?code=999", 502, "invalid response")
                expect_status(pre .. "/status?code=099", 502, "invalid response")
                assert.equal(599, assert(get(gw, pre .. "/status?code=599")).status)
                healthy()
            end)

            it("a version other than HTTP/1.0 and HTTP/1.1 is a 502", function()
                expect_status(pre .. "/version?v=HTTP/2.0", 502, "invalid response")
                expect_status(pre .. "/version?v=HTTP/0.9", 502, "invalid response")
                expect_status(pre .. "/version?v=HTTP/3.0", 502, "invalid response")
                assert.equal("ok", assert(get(gw, pre .. "/version?v=HTTP/1.0")).body)
                healthy()
            end)

            it("a header field without a name is a 502 (its value is never copied to the client)", function()
                expect_status(pre .. "/noname", 502, "invalid response")
                expect_status(pre .. "/noname2", 502, "invalid response")
                assert.matches("without a name", gw:log(), 1, true)
                expect_status(pre .. "/badname", 502, "invalid response") -- nor one that is not a token
                assert.matches("response header name is not a token", gw:log(), 1, true)
                healthy()
            end)

            it("trailer fields after a chunked body are dropped, within the head's cap", function()
                local r = assert(get(gw, pre .. "/trailers"))
                assert.equal(200, r.status)
                assert.equal("hello", r.body)
                assert.equal("a", r.headers["x-multi"])
                assert.is_nil(r.headers["x-trailer-1"])
                expect_cut(pre .. "/hugetrailers") -- the head went out: past the cap the body is cut
                healthy()
            end)

            it("an empty body ends the response at once (the head ending where a read ends)", function()
                local before = #gw:log()
                for _ = 1, 3 do -- kept-alive upstream connection: nothing more arrives after the head
                    local r, err = get(gw, pre .. "/empty", { timeout = 5 })
                    assert.is_not_nil(r, tostring(err))
                    assert.equal(200, r.status)
                    assert.equal("", r.body)
                    assert.equal("yes", r.headers["x-empty-body"])
                end
                assert.is_nil(gw:log():sub(before + 1):find("timed out", 1, true))
                -- the same with the body delimited by the connection's end
                local r, err = get(gw, pre .. "/eofempty", { timeout = 5 })
                assert.is_not_nil(r, tostring(err))
                assert.equal(200, r.status, r.body)
                assert.equal("", r.body)
                assert.equal("yes", r.headers["x-eof"])
                healthy()
            end)

            it("a reset before the head or in it is a 502", function()
                expect_status(pre .. "/rst-head", 502, "connection reset")
                expect_status(pre .. "/rst-midhead", 502, "connection reset")
                healthy()
            end)

            it("a body that stalls or resets after the head went out cuts the connection", function()
                expect_cut(pre .. "/stall")
                expect_cut(pre .. "/reset")
                healthy()
            end)

            it("an upstream that answers before reading the body", function()
                local body = string.rep("b", 1024 * 1024) -- streamed: larger than the body buffer
                local r = assert(get(gw, pre .. "/early", { method = "POST", body = body }))
                assert.equal(200, r.status)
                assert.equal("early", r.body)
                local r2 = assert(get(gw, pre .. "/early", { method = "POST", body = "small" }))
                assert.equal("early", r2.body)
                healthy()
            end)
        end)
    end

    describe("sluice.http", function()
        local function call(path, extra)
            local h = { ["x-target"] = bad.url(path) }
            for k, v in pairs(extra or {}) do h[k] = v end
            local r = assert(get(gw, "/h", { headers = h }))
            assert.equal(200, r.status, r.body)
            return assert(cjson.decode(r.body))
        end

        it("fails each fault with its error class", function()
            local cases = {
                { "/slowhdr?ms=200", "timeout" }, { "/continue-loop?ms=200", "timeout" },
                { "/interim?n=100", "bad_response" }, { "/interim?n=4&size=20000", "bad_response" },
                { "/status?code=600", "bad_response" }, { "/status?code=099", "bad_response" },
                { "/version?v=HTTP/2.0", "bad_response" }, { "/version?v=HTTP/0.9", "bad_response" },
                { "/rst-head", "reset" }, { "/rst-midhead", "reset" }, { "/stall", "timeout" },
                { "/noname", "bad_response" }, { "/noname2", "bad_response" }, { "/hugetrailers", "bad_response" },
                { "/badname", "bad_response" },
                { "/reset", "reset" },
            }
            for _, c in ipairs(cases) do
                local out = call(c[1], { ["x-timeout"] = "2", ["x-read"] = "1" })
                assert.equal(c[2], out.err, c[1] .. ": " .. cjson.encode(out))
            end
            local s = call("/slowhdr?ms=200", { ["x-timeout"] = "2", ["x-stream"] = "1" })
            assert.equal("timeout", s.err)
            assert.equal("ok", call("/interim?n=3&size=100").body)
            assert.equal(599, call("/status?code=599").status)
            assert.equal("ok", call("/version?v=HTTP/1.0").body)
            -- trailers are dropped: the headers read after the body are still the head's
            local t = call("/trailers", { ["x-header"] = "x-multi" })
            assert.equal("hello", t.body)
            assert.equal("a", t.header)
            assert.equal(200, call("/empty").status)
            assert.equal(200, call("/eofempty").status)
            healthy()
        end)

        it("takes an answer given before the body was read", function()
            local out = call("/early", { ["x-method"] = "POST", ["x-body"] = string.rep("b", 4000) })
            assert.equal(200, out.status, cjson.encode(out))
            assert.equal("early", out.body)
            healthy()
        end)
    end)
end)

describe("upstream faults: a client that is slow to read", function()
    local gw, bad
    local SIZE = 64 * 1024 * 1024

    setup(function()
        bad = start_bad()
        local up = { nodes = { bad.addr }, timeout = { read = 1 } }
        gw = helpers.start_gateway({
            node = { workers = 1, plugin_paths = plugin_dir() },
            upstreams = { bad = up },
            routes = {
                { id = "pass", paths = { "/p/*" }, upstream = "bad", strip_prefix = true },
                { id = "filter", paths = { "/f/*" }, upstream = "bad", strip_prefix = true,
                  plugins = { ["spec-tagger"] = {} } },
            },
        })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    -- Reads the head and about 1 MB, pauses for pause seconds (the gateway stops reading the upstream
    -- meanwhile), then reads the rest; returns the number of body bytes received (chunked or not).
    local function download(path, pause)
        local c = socket.tcp()
        c:settimeout(10)
        pcall(c.setoption, c, "recv-buffer-size", 65536)
        assert(c:connect("127.0.0.1", gw.port))
        assert(c:send("GET " .. path .. " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
        local len, chunked
        repeat
            local line = assert(c:receive("*l"))
            len = len or tonumber(line:match("^[Cc]ontent%-[Ll]ength:%s*(%d+)"))
            chunked = chunked or line:lower():find("^transfer%-encoding:%s*chunked") ~= nil
        until line == ""
        local got, paused = 0, false
        local function read(n)
            if got >= 1024 * 1024 and not paused then
                paused = true
                socket.sleep(pause)
            end
            local data = c:receive(n)
            if data then got = got + #data end
            return data
        end
        if chunked then
            while true do
                local line = c:receive("*l")
                local size = line and tonumber(line, 16)
                if not size or size == 0 or not read(size) or not c:receive("*l") then break end
            end
        else
            assert.equal(SIZE, len)
            while got < SIZE and read(math.min(65536, SIZE - got)) do end
        end
        c:close()
        return got
    end

    for _, pre in ipairs({ "/p", "/f" }) do
        it((pre == "/p" and "PASS" or "FILTER") .. ": the upstream read timeout waits while the client is", function()
            assert.equal(SIZE, download(pre .. "/big?n=" .. SIZE, 3))
            assert.is_nil(gw:log():find("timed out", 1, true), gw:log())
        end)
    end
end)

describe("upstream faults: stale kept-alive connections", function()
    local gw, bad

    setup(function()
        bad = start_bad()
        gw = helpers.start_gateway({
            node = { workers = 1, plugin_paths = plugin_dir() },
            upstreams = { bad = { nodes = { bad.addr }, keepalive = { size = 64, idle_timeout = 60 } } },
            routes = {
                { id = "pass", paths = { "/p/*" }, upstream = "bad", strip_prefix = true },
                { id = "filter", paths = { "/f/*" }, upstream = "bad", strip_prefix = true,
                  plugins = { ["spec-tagger"] = {} } },
                { id = "http", paths = { "/h" }, plugins = { ["fault-http"] = {} } },
            },
        })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    -- n requests at once, so the gateway opens n upstream connections and pools them; then all go stale.
    local function pool_then_stale(n, pre)
        local socks = {}
        for i = 1, n do
            local c = socket.tcp()
            c:settimeout(10)
            assert(c:connect("127.0.0.1", gw.port))
            assert(c:send("GET " .. pre .. "/ok?ms=300 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
            socks[i] = c
        end
        for i = 1, n do
            local data, _, partial = socks[i]:receive("*a")
            assert.matches("^HTTP/1.1 200", data or partial)
            socks[i]:close()
        end
        assert.equal(200, assert(helpers.http("GET", bad.url("/stale"))).status)
    end

    for _, pre in ipairs({ "/p", "/f" }) do
        it(pre .. ": a retry after a stale connection takes a fresh one", function()
            pool_then_stale(20, pre)
            for i = 1, 6 do
                local r = assert(get(gw, pre .. "/ok"))
                assert.equal(200, r.status, "request " .. i .. ": " .. tostring(r.body))
            end
        end)
    end

    it("a POST is replayed for its Idempotency-Key header only, never for its body", function()
        pool_then_stale(3, "/p")
        local before = bad.get("/seen?p=/echo").n
        local r = assert(get(gw, "/p/echo", { method = "POST", body = "x\r\nIdempotency-Key: 1\r\n\r\n" }))
        assert.equal(502, r.status)
        assert.equal(before + 1, bad.get("/seen?p=/echo").n, "a POST without Idempotency-Key was sent twice")
        pool_then_stale(3, "/p")
        local r2 = assert(get(gw, "/p/echo", { method = "POST", body = "y", headers = { ["idempotency-key"] = "k1" } }))
        assert.equal(200, r2.status, r2.body)
        assert.equal(before + 3, bad.get("/seen?p=/echo").n)
    end)

    it("sluice.http: a retry after a stale connection takes a fresh one", function()
        local function call(path)
            local h = { ["x-target"] = bad.url(path), ["x-idle"] = "60" }
            local r = assert(get(gw, "/h", { headers = h }))
            return assert(cjson.decode(r.body))
        end
        -- sluice.http.multi would open them at once; sequential calls on parallel client connections do too
        local socks = {}
        for i = 1, 20 do
            local c = socket.tcp()
            c:settimeout(10)
            assert(c:connect("127.0.0.1", gw.port))
            assert(c:send("GET /h HTTP/1.1\r\nHost: x\r\nConnection: close\r\nx-idle: 60\r\nx-target: " ..
                bad.url("/ok?ms=300") .. "\r\n\r\n"))
            socks[i] = c
        end
        for i = 1, 20 do
            local data, _, partial = socks[i]:receive("*a")
            assert.matches("\"status\":200", data or partial)
            socks[i]:close()
        end
        assert.equal(200, assert(helpers.http("GET", bad.url("/stale"))).status)
        for i = 1, 6 do
            local out = call("/ok")
            assert.equal(200, out.status, "call " .. i .. ": " .. cjson.encode(out))
        end
    end)
end)

describe("upstream faults: a client that leaves while the head is awaited", function()
    teardown(function()
        helpers.stop_all()
    end)

    it("closes the upstream connection (streamed upload)", function()
        local bad = start_bad()
        local gw = helpers.start_gateway({
            node = { workers = 1 },
            routes = { { id = "p", paths = { "/*" }, upstream = { nodes = { bad.addr },
                         timeout = { read = 30, header = 30 } } } },
        })
        local c = socket.tcp()
        c:settimeout(5)
        assert(c:connect("127.0.0.1", gw.port))
        assert(c:send("POST /slowhdr HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" .. string.rep("u", 200000)))
        helpers.wait_until(function() return bad.get("/open").open == 1 end, 5, "the upstream connection opened")
        c:close()
        helpers.wait_until(function() return bad.get("/open").open == 0 end, 5,
            "the upstream connection was not closed when the client left")
        assert.equal(200, assert(helpers.http("GET", gw.url("/ok"))).status)
    end)
end)

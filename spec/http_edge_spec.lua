-- HTTP/1.1 edge cases against the real gateway (core/http/conn.c, response.c, upstream/proxy.c): malformed
-- input, limits, timeouts, pipelining, 100-continue, chunked bodies, keep-alive, HEAD, upstream failures and
-- a large response. Small limits are configured so every case is cheap.
local helpers = require("helpers")
local socket = require("socket")
local cjson = require("cjson.safe")

local format, concat, rep = string.format, table.concat, string.rep

local LIMITS = { max_header_size = 1024, max_url_length = 256, max_body_size = 1024, header_timeout = 1,
                 body_timeout = 2, keepalive_timeout = 5 }

-- A raw connection: send bytes, read with a deadline, see whether the server closed.
local Raw = {}
Raw.__index = Raw

local function connect(port, timeout)
    local s = socket.tcp()
    s:settimeout(timeout or 3)
    assert(s:connect("127.0.0.1", port))
    return setmetatable({ sock = s, buf = "", closed = false }, Raw)
end

function Raw:send(bytes)
    return assert(self.sock:send(bytes))
end

-- Reads until the peer closes or timeout seconds pass; returns everything received so far.
function Raw:read_all(timeout)
    self.sock:settimeout(timeout or 3)
    local data, err, partial = self.sock:receive("*a")
    self.buf = self.buf .. (data or partial or "")
    self.closed = data ~= nil or err == "closed" or err == "connection reset by peer"
    return self.buf
end

-- Reads what is available (waiting up to timeout for the first bytes) into self.buf; false when the peer
-- closed or nothing came. (receive(n) alone would wait for all n bytes.)
function Raw:fill(timeout)
    local deadline = socket.gettime() + (timeout or 3)
    repeat
        self.sock:settimeout(0.02)
        local data, err, partial = self.sock:receive(65536)
        local got = data or partial or ""
        self.buf = self.buf .. got
        if err == "closed" or err == "connection reset by peer" then
            self.closed = true
        end
        if #got > 0 then
            return true
        end
    until self.closed or socket.gettime() > deadline
    return false
end

-- Parses one response off the front of self.buf, reading more as needed. Returns {status, headers, body}.
function Raw:response(method, timeout)
    local deadline = socket.gettime() + (timeout or 5)
    local function need(pred)
        while not pred() do
            if socket.gettime() > deadline or (not self:fill(deadline - socket.gettime()) and self.closed) then
                return false
            end
        end
        return true
    end
    local head_end
    if not need(function() head_end = self.buf:find("\r\n\r\n", 1, true); return head_end end) then
        return nil, "no complete response head in " .. format("%q", self.buf:sub(1, 300))
    end
    local head = self.buf:sub(1, head_end - 1)
    self.buf = self.buf:sub(head_end + 4)
    local status = tonumber(head:match("^HTTP/1%.%d (%d%d%d)"))
    local res = { status = status, headers = {}, head = head }
    for k, v in head:gmatch("\r\n([^:\r\n]+):%s*([^\r\n]*)") do
        res.headers[k:lower()] = v
    end
    if method == "HEAD" or status == 204 or status == 304 or status < 200 then
        res.body = ""
        return res
    end
    local te = res.headers["transfer-encoding"]
    if te and te:lower():find("chunked", 1, true) then
        local parts = {}
        while true do
            local line_end
            if not need(function() line_end = self.buf:find("\r\n", 1, true); return line_end end) then
                return nil, "truncated chunked body"
            end
            local size = tonumber(self.buf:sub(1, line_end - 1):match("^(%x+)"), 16)
            if not size then
                return nil, "bad chunk size"
            end
            if not need(function() return #self.buf >= line_end + 1 + size + 2 end) then
                return nil, "truncated chunk"
            end
            parts[#parts + 1] = self.buf:sub(line_end + 2, line_end + 1 + size)
            self.buf = self.buf:sub(line_end + 2 + size + 2)
            if size == 0 then
                break
            end
        end
        res.body = concat(parts)
    else
        local len = tonumber(res.headers["content-length"])
        if len then
            if not need(function() return #self.buf >= len end) then
                return nil, format("body truncated: %d of %d bytes", #self.buf, len)
            end
        else
            need(function() return self.closed end)
            len = #self.buf
        end
        res.body = self.buf:sub(1, len)
        self.buf = self.buf:sub(len + 1)
    end
    res.json = cjson.decode(res.body)
    return res
end

function Raw:close()
    self.sock:close()
end

-- True when the server closes the connection within timeout seconds (after what was already read).
function Raw:closes_within(timeout)
    local t0 = socket.gettime()
    self:read_all(timeout)
    return self.closed and socket.gettime() - t0 < timeout
end

local function req(method, path, headers, body)
    local lines = { format("%s %s HTTP/1.1", method, path), "Host: 127.0.0.1" }
    for k, v in pairs(headers or {}) do
        lines[#lines + 1] = k .. ": " .. v
    end
    return concat(lines, "\r\n") .. "\r\n\r\n" .. (body or "")
end

local function chunked(pieces)
    local out = {}
    for _, p in ipairs(pieces) do
        out[#out + 1] = format("%x\r\n%s\r\n", #p, p)
    end
    out[#out + 1] = "0\r\n\r\n"
    return concat(out)
end

-- 20 MiB of numbered lines, so a lost or repeated block shows.
local function big_body()
    local lines = {}
    local line = rep("abcdefghij", 9) .. "\n" -- 91 bytes + 9 digits = 100 per line
    for i = 1, 20 * 1024 * 1024 / 100 do
        lines[i] = format("%09d", i) .. line
    end
    return concat(lines)
end

describe("HTTP edge cases", function()
    local mock, slow, gw, port, BIG

    setup(function()
        mock = helpers.mock_upstream()
        BIG = big_body()
        -- a second upstream for the slow and the huge answers, so the echo mock stays fast
        slow = helpers.mock_upstream({ paths = { ["/slow"] = { delay = 3, body = "late" },
                                                 ["/big"] = { body = BIG, headers = { ["content-type"] = "text/plain" } },
                                                 ["/chunks"] = { chunks = { "one,", "two,", "three" }, chunk_delay = 0.05 } } })
        gw = helpers.start_gateway({
            node = { limits = LIMITS },
            upstreams = { echo = { nodes = { mock.addr } },
                          slow = { nodes = { slow.addr }, timeout = { connect = 1, send = 2, read = 1 } },
                          down = { nodes = { "127.0.0.1:" .. helpers.free_port() }, timeout = { connect = 1 } },
                          bigup = { nodes = { slow.addr } } },
            routes = {
                { id = "slow", paths = { "/slow" }, upstream = "slow" },
                { id = "big", paths = { "/big" }, upstream = "bigup" },
                { id = "chunks", paths = { "/chunks" }, upstream = "bigup" },
                { id = "down", paths = { "/down" }, upstream = "down" },
                { id = "echo", paths = { "/*" }, upstream = "echo" },
            },
        })
        port = gw.port
    end)

    teardown(function()
        helpers.stop_all()
    end)

    describe("malformed input and limits", function()
        it("answers a bad request line with 400 and closes", function()
            local c = connect(port)
            c:send("GARBAGE\r\n\r\n")
            local res = assert(c:response())
            assert.equal(400, res.status)
            assert.equal("close", res.headers.connection)
            assert.is_true(c:closes_within(1.5))
            c:close()
        end)

        it("answers a header block over max_header_size with 431", function()
            local c = connect(port)
            c:send(req("GET", "/h", { ["x-big"] = rep("a", 2000) }))
            local res = assert(c:response())
            assert.equal(431, res.status)
            assert.is_true(c:closes_within(1.5))
            c:close()
        end)

        it("answers many small headers adding up over the limit with 431", function()
            local h = {}
            for i = 1, 60 do
                h["x-h" .. i] = rep("b", 20)
            end
            local c = connect(port)
            c:send(req("GET", "/h", h))
            local res = assert(c:response())
            assert.equal(431, res.status)
            c:close()
        end)

        it("answers a URL over max_url_length with 414", function()
            local c = connect(port)
            c:send(req("GET", "/" .. rep("u", 400)))
            local res = assert(c:response())
            assert.equal(414, res.status)
            assert.is_true(c:closes_within(1.5))
            c:close()
        end)

        it("answers a Content-Length body over max_body_size with 413", function()
            local c = connect(port)
            c:send(req("POST", "/b", { ["content-length"] = "2048" }, rep("x", 2048)))
            local res = assert(c:response())
            assert.equal(413, res.status)
            assert.equal("request body too large", res.json.error.message)
            c:close()
        end)

        it("answers a Content-Length over max_body_size with 413 before the body arrives", function()
            local c = connect(port)
            c:send(req("POST", "/b", { ["content-length"] = "100000000" }))
            local res = assert(c:response(nil, 2))
            assert.equal(413, res.status)
            c:close()
        end)

        it("answers a chunked body over max_body_size with 413", function()
            local c = connect(port)
            c:send(req("POST", "/b", { ["transfer-encoding"] = "chunked" },
                chunked({ rep("x", 600), rep("y", 600) })))
            local res = assert(c:response())
            assert.equal(413, res.status)
            c:close()
        end)

        it("answers a bad chunk size with 400", function()
            local c = connect(port)
            c:send(req("POST", "/b", { ["transfer-encoding"] = "chunked" }, "zz\r\nhello\r\n0\r\n\r\n"))
            local res = assert(c:response())
            assert.equal(400, res.status)
            assert.is_true(c:closes_within(1.5))
            c:close()
        end)

        it("refuses Content-Length together with Transfer-Encoding (request smuggling) with 400", function()
            local c = connect(port)
            c:send(req("POST", "/b", { ["content-length"] = "5", ["transfer-encoding"] = "chunked" },
                "0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"))
            local res = assert(c:response())
            assert.equal(400, res.status)
            assert.is_true(c:closes_within(1.5))
            c:close()
        end)

        it("refuses two different Content-Length headers with 400", function()
            local c = connect(port)
            c:send("POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd")
            local res = assert(c:response())
            assert.equal(400, res.status)
            c:close()
        end)

        it("drops pipelined requests queued behind an error and closes", function()
            mock:clear()
            local c = connect(port)
            c:send(req("GET", "/" .. rep("u", 400)) .. req("GET", "/after-error"))
            local res = assert(c:response())
            assert.equal(414, res.status)
            assert.is_true(c:closes_within(1.5))
            assert.equal("", c.buf)
            c:close()
            for _, r in ipairs(mock:requests()) do
                assert.is_not.equal("/after-error", r.path)
            end
        end)

        it("answers slow headers with 408 after header_timeout and closes", function()
            local c = connect(port)
            local t0 = socket.gettime()
            c:send("GET /slowheaders HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Half: ")
            local res = assert(c:response(nil, 4))
            local waited = socket.gettime() - t0
            assert.equal(408, res.status)
            assert.is_true(waited >= 0.9 and waited < 3, "408 after " .. waited .. " s")
            assert.is_true(c:closes_within(1.5))
            c:close()
        end)

        it("closes an idle connection that sends nothing after header_timeout", function()
            local c = connect(port)
            assert.is_true(c:closes_within(3))
            c:close()
        end)
    end)

    describe("connections", function()
        it("answers three pipelined requests in order on one connection", function()
            local c = connect(port)
            c:send(req("GET", "/p/1") .. req("POST", "/p/2", { ["content-length"] = "3" }, "two") .. req("GET", "/p/3"))
            for i = 1, 3 do
                local res = assert(c:response())
                assert.equal(200, res.status)
                assert.equal("/p/" .. i, res.json.path)
                if i == 2 then
                    assert.equal("two", res.json.body)
                end
            end
            c:close()
        end)

        it("sends 100 Continue for Expect: 100-continue, then the response", function()
            local c = connect(port)
            c:send(req("POST", "/expect", { ["content-length"] = "5", expect = "100-continue" }))
            local cont = assert(c:response())
            assert.equal(100, cont.status)
            c:send("hello")
            local res = assert(c:response())
            assert.equal(200, res.status)
            assert.equal("hello", res.json.body)
            c:close()
        end)

        it("sends no 100 Continue without Expect", function()
            local c = connect(port)
            c:send(req("POST", "/noexpect", { ["content-length"] = "2" }, "ok"))
            local res = assert(c:response())
            assert.equal(200, res.status)
            c:close()
        end)

        it("forwards a chunked request body to the upstream with the right content", function()
            local c = connect(port)
            c:send(req("POST", "/chunked", { ["transfer-encoding"] = "chunked" },
                chunked({ "hello ", "chunked ", "world" })))
            local res = assert(c:response())
            assert.equal(200, res.status)
            assert.equal("hello chunked world", res.json.body)
            assert.equal("19", res.json.headers["content-length"])
            assert.is_nil(res.json.headers["transfer-encoding"])
            c:close()
        end)

        it("serves several requests on one keep-alive connection", function()
            local c = assert(helpers.client(port))
            local sock = c.sock
            for i = 1, 5 do
                local res = assert(c:request("GET", "/ka/" .. i))
                assert.equal(200, res.status)
                assert.equal("/ka/" .. i, res.json.path)
                assert.is_nil(res.headers.connection)
            end
            assert.equal(sock, c.sock)
            c:close()
        end)

        it("closes an HTTP/1.0 connection without keep-alive after the response", function()
            local c = connect(port)
            c:send("GET /ten HTTP/1.0\r\n\r\n")
            local res = assert(c:response())
            assert.equal(200, res.status)
            assert.matches("^HTTP/1%.0 200", res.head)
            assert.is_true(c:closes_within(1.5))
            c:close()
        end)

        it("keeps an HTTP/1.0 connection with Connection: keep-alive open", function()
            local c = connect(port)
            c:send("GET /ten1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            local res = assert(c:response())
            assert.equal(200, res.status)
            assert.equal("keep-alive", (res.headers.connection or ""):lower())
            c:send("GET /ten2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            res = assert(c:response())
            assert.equal("/ten2", res.json.path)
            c:close()
        end)

        it("sends no body for HEAD, and the connection stays usable", function()
            local c = connect(port)
            c:send(req("HEAD", "/head"))
            local res = assert(c:response("HEAD"))
            assert.equal(200, res.status)
            assert.is_truthy(tonumber(res.headers["content-length"]))
            c:send(req("GET", "/after-head"))
            res = assert(c:response())
            assert.equal(200, res.status)
            assert.equal("/after-head", res.json and res.json.path) -- no stray HEAD body before it
            c:close()
        end)
    end)

    describe("upstream failures and large responses", function()
        it("answers 502 with a JSON error when the upstream is down", function()
            local res = assert(helpers.http("GET", gw.url("/down")))
            assert.equal(502, res.status)
            assert.matches("json", res.headers["content-type"])
            assert.equal("server_error", res.json.error.type)
            assert.equal(502, res.json.error.code)
        end)

        it("answers 504 with a JSON error when the upstream does not answer in time", function()
            local t0 = socket.gettime()
            local res = assert(helpers.http("GET", gw.url("/slow"), { timeout = 5 }))
            assert.equal(504, res.status)
            assert.matches("json", res.headers["content-type"])
            assert.equal(504, res.json.error.code)
            assert.is_true(socket.gettime() - t0 < 2.5)
        end)

        it("passes a chunked upstream response through, and stays usable after it", function()
            local c = connect(port)
            c:send(req("GET", "/chunks"))
            local res = assert(c:response())
            assert.equal(200, res.status)
            assert.equal("chunked", res.headers["transfer-encoding"])
            assert.equal("one,two,three", res.body)
            c:send(req("GET", "/after-chunks"))
            res = assert(c:response())
            assert.equal("/after-chunks", res.json.path)
            c:close()
        end)

        it("survives a client that goes away in the middle of a large response", function()
            for _ = 1, 3 do
                local c = connect(port)
                c:send(req("GET", "/big"))
                assert.is_true(c:fill(5))
                c:close()
            end
            local res = assert(helpers.http("GET", gw.url("/still-alive")))
            assert.equal(200, res.status)
            assert.truthy(gw.proc:alive())
        end)

        it("passes a 20 MiB upstream response intact", function()
            local res = assert(helpers.http("GET", gw.url("/big"), { timeout = 30 }))
            assert.equal(200, res.status)
            assert.equal(#BIG, #res.body)
            assert.is_true(res.body == BIG, "body differs from what the upstream sent")
        end)

        it("passes a 20 MiB response to a slow reader intact", function()
            local c = connect(port, 30)
            c:send(req("GET", "/big"))
            socket.sleep(1) -- let the gateway fill the socket buffers and apply back-pressure
            -- the deadline is the reader's own (a loaded machine reads 20 MiB slowly); it reports "truncated"
            local res = assert(c:response(nil, 120))
            assert.equal(200, res.status)
            assert.is_true(res.body == BIG, "body differs from what the upstream sent")
            c:close()
        end)
    end)
end)

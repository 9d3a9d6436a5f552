-- The request head and body framing as a client sends them, through the real gateway with raw sockets
-- (core/http/parser.c): trailer fields, Host and version checks, header syntax llhttp lets through, the total
-- body deadline and chunk sizes over max_body_size.
local helpers = require("helpers")
local socket = require("socket")

local rep, format = string.rep, string.format

-- A raw connection with a read buffer: responses are read off it one at a time.
local function connect(port)
    local s = socket.tcp()
    s:settimeout(5)
    assert(s:connect("127.0.0.1", port))
    return { sock = s, buf = "" }
end

-- Reads one response (Content-Length framed: the gateway's own answers and the mock's are) off conn within
-- timeout seconds; nil, why when none came.
local function response(conn, timeout)
    local deadline = socket.gettime() + (timeout or 5)
    local function fill()
        conn.sock:settimeout(math.max(0.01, math.min(0.2, deadline - socket.gettime())))
        local data, err, partial = conn.sock:receive(65536)
        conn.buf = conn.buf .. (data or partial or "")
        if err == "closed" or err == "connection reset by peer" then conn.closed = true end
    end
    while not conn.buf:find("\r\n\r\n", 1, true) do
        if conn.closed or socket.gettime() > deadline then return nil, "no response head: " .. format("%q", conn.buf) end
        fill()
    end
    local e = conn.buf:find("\r\n\r\n", 1, true)
    local head = conn.buf:sub(1, e - 1)
    local len = tonumber(head:lower():match("\r\ncontent%-length:%s*(%d+)")) or 0
    while #conn.buf < e + 3 + len do
        if conn.closed or socket.gettime() > deadline then return nil, "short body" end
        fill()
    end
    local body = conn.buf:sub(e + 4, e + 3 + len)
    conn.buf = conn.buf:sub(e + 4 + len)
    return { status = tonumber(head:match("^HTTP/1%.%d (%d%d%d)")), head = head, body = body }
end

-- True when the server closed the connection (waits up to timeout seconds).
local function closed(conn, timeout)
    conn.sock:settimeout(timeout or 3)
    local data, err = conn.sock:receive(1)
    return data == nil and (err == "closed" or err == "connection reset by peer")
end

-- One request on its own connection: the response, and whether the connection was closed after it.
local function exchange(port, bytes, timeout)
    local c = connect(port)
    c.sock:send(bytes)
    local res, err = response(c, timeout)
    if res then res.closed = closed(c, 2) end
    c.sock:close()
    return res, err
end

describe("request head and body framing", function()
    local mock, gw

    setup(function()
        mock = helpers.mock_upstream()
        gw = helpers.start_gateway({
            node = { limits = { max_header_size = 2048, max_body_size = 4096, body_buffer_size = 1024,
                                body_timeout = 2, body_deadline = 3, header_timeout = 5 } },
            routes = { { id = "plain", paths = { "/plain/*" }, upstream = { nodes = { mock.addr } } } } })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    before_each(function()
        mock:clear()
    end)

    local function assert_alive()
        assert.is_true(gw.proc:alive(), "the gateway died:\n" .. gw:log())
        local res = assert(helpers.http("GET", gw.url("/plain/alive")))
        assert.equal(200, res.status)
    end

    describe("trailer fields", function()
        it("serves a chunked request with a trailer field (once a crash of every worker)", function()
            local c = connect(gw.port)
            c.sock:send("GET /plain/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: 1\r\n\r\n")
            local res = assert(response(c))
            assert.equal(200, res.status)
            -- the same connection goes on
            c.sock:send("GET /plain/y HTTP/1.1\r\nHost: x\r\n\r\n")
            res = assert(response(c))
            assert.equal(200, res.status)
            c.sock:close()
            local got = mock:requests()
            assert.equal(2, #got)
            assert.equal("/plain/x", got[1].path)
            assert.is_nil(got[1].headers["x-t"]) -- trailers are dropped, as nginx does
            assert_alive()
        end)

        it("forwards the body of a chunked request with trailers and drops the trailers", function()
            local res = assert(exchange(gw.port, "POST /plain/t HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" ..
                "Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\nX-U: 2\r\n\r\n"))
            assert.equal(200, res.status)
            local got = mock:last()
            assert.equal("abcde", got.body)
            assert.is_nil(got.headers["x-t"])
            assert.is_nil(got.headers["x-u"])
        end)

        it("drops the trailers of a body streamed to the upstream", function()
            local body = rep("z", 3000) -- over body_buffer_size: streamed as it arrives
            local res = assert(exchange(gw.port, "POST /plain/big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" ..
                "Transfer-Encoding: chunked\r\n\r\n" .. format("%x", #body) .. "\r\n" .. body ..
                "\r\n0\r\nX-T: 1\r\n\r\n"))
            assert.equal(200, res.status)
            assert.equal(body, mock:last().body)
            assert.is_nil(mock:last().headers["x-t"])
            assert_alive()
        end)

        it("answers trailers over max_header_size with 431", function()
            local res = assert(exchange(gw.port, "POST /plain/t HTTP/1.1\r\nHost: x\r\n" ..
                "Transfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-T: " .. rep("t", 3000) .. "\r\n\r\n"))
            assert.equal(431, res.status)
            assert.is_true(res.closed)
            assert.equal(0, #mock:requests())
            assert_alive()
        end)
    end)

    describe("Host and version", function()
        for _, case in ipairs({ { "empty", "Host:" }, { "with a space", "Host: a b" }, { "with a slash", "Host: a/b" },
                                { "with userinfo", "Host: u@h" }, { "with a bad port", "Host: h:8o" },
                                { "with a broken IPv6 literal", "Host: [::1" } }) do
            it("answers a Host header " .. case[1] .. " with 400 and forwards nothing", function()
                local res = assert(exchange(gw.port, "GET /plain/h HTTP/1.1\r\n" .. case[2] .. "\r\n\r\n"))
                assert.equal(400, res.status)
                assert.matches("Host", res.body, 1, true)
                assert.is_true(res.closed)
                assert.equal(0, #mock:requests())
            end)
        end

        it("takes a Host with a port, an IPv6 literal, trailing whitespace", function()
            for _, h in ipairs({ "Example.com:8080", "[::1]:9", "127.0.0.1", "h \t" }) do
                local res = assert(exchange(gw.port, "GET /plain/h HTTP/1.1\r\nConnection: close\r\nHost: " .. h .. "\r\n\r\n"))
                assert.equal(200, res.status)
                assert.equal((h:gsub("%s+$", "")), mock:last().headers.host)
            end
        end)

        for _, v in ipairs({ "2.0", "1.2", "0.9", "3.0" }) do
            it("answers an HTTP/" .. v .. " request line with 505 and closes", function()
                local res = assert(exchange(gw.port, "GET /plain/v HTTP/" .. v .. "\r\nHost: x\r\n\r\n"))
                assert.equal(505, res.status)
                assert.matches("^HTTP/1%.1 505 HTTP Version Not Supported", res.head)
                assert.is_true(res.closed)
                assert.equal(0, #mock:requests())
            end)
        end

        it("answers a request line without a version (HTTP/0.9) with 505", function()
            local res = assert(exchange(gw.port, "GET /plain/v\r\n\r\n"))
            assert.equal(505, res.status)
            assert.equal(0, #mock:requests())
        end)

        it("serves HTTP/1.0 and HTTP/1.1", function()
            local res = assert(exchange(gw.port, "GET /plain/v HTTP/1.0\r\n\r\n"))
            assert.equal(200, res.status)
            res = assert(exchange(gw.port, "GET /plain/v HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
            assert.equal(200, res.status)
        end)
    end)

    describe("header syntax llhttp lets through", function()
        it("answers whitespace between a header name and the colon with 400 (RFC 9112 5.1)", function()
            -- llhttp refuses this one itself; a name it does not know goes through it
            local res = assert(exchange(gw.port, "POST /plain/s HTTP/1.1\r\nHost: x\r\n" ..
                "Transfer-Encoding : chunked\r\nContent-Length: 3\r\n\r\nabc"))
            assert.equal(400, res.status)
            res = assert(exchange(gw.port, "GET /plain/s HTTP/1.1\r\nHost: x\r\nX-A : 1\r\n\r\n"))
            assert.equal(400, res.status)
            assert.matches("whitespace in a header name", res.body, 1, true)
            assert.equal(0, #mock:requests())
        end)

        it("answers a transfer coding other than chunked with 501", function()
            local res = assert(exchange(gw.port, "POST /plain/s HTTP/1.1\r\nHost: x\r\n" ..
                "Transfer-Encoding: gzip, chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"))
            assert.equal(501, res.status)
            assert.equal(0, #mock:requests())
        end)

        it("answers a tab in the request target with 400", function()
            local res = assert(exchange(gw.port, "GET /plain/a\tb HTTP/1.1\r\nHost: x\r\n\r\n"))
            assert.equal(400, res.status)
            assert.matches("control character in the request target", res.body, 1, true)
            assert.equal(0, #mock:requests())
        end)

        it("answers CONNECT with 501", function()
            local res = assert(exchange(gw.port, "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n"))
            assert.equal(501, res.status)
        end)
    end)

    describe("body limits", function()
        it("cuts a body that trickles in slower than body_deadline allows, gaps under body_timeout", function()
            local c = connect(gw.port)
            c.sock:send("POST /plain/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
            local res
            for _ = 1, 25 do -- a byte every 0.4 s (body_timeout is 2 s), 10 s at most; body_deadline is 3 s
                if not c.sock:send("a") then break end
                c.sock:settimeout(0.4)
                local data, err, partial = c.sock:receive(65536)
                c.buf = c.buf .. (data or partial or "")
                if c.buf:find("\r\n\r\n", 1, true) or err == "closed" then break end
            end
            res = response(c, 1)
            c.sock:close()
            assert.is_truthy(res, "the body was never cut")
            assert.equal(408, res.status)
            assert.equal(0, #mock:requests())
        end)

        it("answers a chunk size over max_body_size with 413 at once", function()
            local c = connect(gw.port)
            c.sock:send("POST /plain/c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n")
            local res = response(c, 1.5) -- well under body_timeout: no waiting for bytes that cannot come
            c.sock:close()
            assert.is_truthy(res, "no answer before body_timeout")
            assert.equal(413, res.status)
        end)

        it("answers a chunk that would take the body over max_body_size with 413 before its bytes", function()
            local c = connect(gw.port)
            c.sock:send("POST /plain/c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" ..
                "800\r\n" .. rep("a", 0x800) .. "\r\n801\r\n")
            local res = response(c, 1.5)
            c.sock:close()
            assert.is_truthy(res, "no answer before body_timeout")
            assert.equal(413, res.status)
            assert.equal(0, #mock:requests())
        end)

        it("takes a chunked body of exactly max_body_size", function()
            local body = rep("b", 4096)
            local res = assert(exchange(gw.port, "POST /plain/c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" ..
                "Transfer-Encoding: chunked\r\n\r\n1000\r\n" .. body .. "\r\n0\r\n\r\n"))
            assert.equal(200, res.status)
            assert.equal(body, mock:last().body)
        end)
    end)
end)

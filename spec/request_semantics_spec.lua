-- RFC 9112 request rules (Host, targets, hop-by-hop fields) as the gateway follows them.
local helpers = require("helpers")

describe("HTTP/1.1 request semantics", function()
    local mock, gw

    setup(function()
        mock = helpers.mock_upstream()
        gw = helpers.start_gateway({
            node = { workers = 1 },
            routes = { { id = "echo", paths = { "/echo" }, upstream = { nodes = { mock.addr } } } },
        })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    local function statuses(bytes)
        local out = helpers.raw(gw.port, bytes, { timeout = 1.5 }) or ""
        local list = {}
        for s in out:gmatch("HTTP/1%.%d (%d%d%d) ") do list[#list + 1] = tonumber(s) end
        return list, out
    end

    -- RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status code to any HTTP/1.1 request
    -- message that lacks a Host header field and to any request message that contains more than one Host
    -- header field line"
    it("answers 400 to an HTTP/1.1 request with two Host header lines", function()
        local before = #mock:requests()
        local list, out = statuses("GET /echo HTTP/1.1\r\nHost: public.example\r\nHost: internal.example\r\n" ..
            "Connection: close\r\n\r\n")
        assert.same({ 400 }, list, out)
        assert.equal(before, #mock:requests(), "the request reached the upstream")
    end)

    it("answers 400 to an HTTP/1.1 request without Host", function()
        local list, out = statuses("GET /echo HTTP/1.1\r\nConnection: close\r\n\r\n")
        assert.same({ 400 }, list, out)
    end)

    -- An Upgrade the gateway ignores leaves llhttp in upgrade mode: the next pipelined request is answered
    -- with an HTTP/1.0 501 although the 404/200 before it promised keep-alive.
    it("answers a request pipelined after an (ignored) Upgrade request", function()
        local list, out = statuses("GET /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n" ..
            "GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert.same({ 200, 200 }, list, out)
    end)
end)

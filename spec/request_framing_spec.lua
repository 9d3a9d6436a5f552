-- Request framing the gateway must refuse (request smuggling vectors, RFC 9112 §6.3, §11.2) and
-- framing it must normalise before the upstream sees the request.
local helpers = require("helpers")

describe("request framing", function()
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

    local function status_of(bytes)
        local out = helpers.raw(gw.port, bytes, { timeout = 2 }) or ""
        return tonumber(out:match("^HTTP/1%.%d (%d%d%d)")), out
    end

    local refused = {
        ["Content-Length with Transfer-Encoding"] =
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ["two different Content-Lengths"] =
            "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        ["Transfer-Encoding whose last coding is not chunked"] =
            "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        ["space before the colon"] =
            "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        ["a bad chunk size"] =
            "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n\r\n",
    }
    for name, bytes in pairs(refused) do
        it("answers 400 and closes on " .. name, function()
            local before = #mock:requests()
            local status = status_of(bytes)
            assert.equal(400, status)
            assert.equal(before, #mock:requests(), "nothing may reach the upstream")
        end)
    end

    it("sends a chunked request body upstream with Content-Length and no Transfer-Encoding", function()
        local status = status_of("POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" ..
            "Transfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n2\r\nef\r\n0\r\n\r\n")
        assert.equal(200, status)
        local seen = mock:last()
        assert.equal("abcdef", seen.body)
        assert.equal("6", seen.headers["content-length"])
        assert.is_nil(seen.headers["transfer-encoding"])
    end)

    it("answers HEAD with the GET length and no body", function()
        local out = helpers.raw(gw.port, "HEAD /echo HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n" ..
            "Connection: close\r\n\r\n", { timeout = 2 }) or ""
        local first, rest = out:match("^(.-\r\n\r\n)(.*)$")
        assert.truthy(first and first:find("Content%-Length: %d+"), out)
        assert.truthy(rest:match("^HTTP/1%.1 404"), "the next response must follow the HEAD head directly:\n" .. out)
    end)
end)

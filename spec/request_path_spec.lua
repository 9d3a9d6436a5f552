-- The request target, normalised once before routing (core/http/path.c, parser.c): what routes match, what
-- plugins see and what goes upstream is the same normalised path, so "/pub/../private" cannot be served by
-- the /pub route while the upstream resolves it to /private. Absolute-form targets (RFC 9112 3.2.2) route by
-- their authority. Driven through the real gateway with curl --path-as-is and raw sockets.
local helpers = require("helpers")
local cjson = require("cjson.safe")

local q = helpers.shell_quote

-- A plugin answering with what a plugin sees of the request.
local SEE = [[
local sluice = require("sluice")
return { name = "see-path", version = "1.0", priority = 100, schema = { type = "object" },
    access = function(conf, ctx)
        return 200, { path = sluice.request.get_path(ctx), ctx_path = ctx.path, host = ctx.host or "",
                      query = sluice.request.get_raw_query(ctx), host_header = sluice.request.get_header("host", ctx) }
    end }
]]

-- Sends raw bytes; returns status, body (the gateway answers with Content-Length and closes on Connection:
-- close or after an error).
local function raw(port, request)
    local out = helpers.raw(port, request, { timeout = 3 }) or ""
    return tonumber(out:match("^HTTP/1%.%d (%d%d%d)")), out:match("\r\n\r\n(.*)$") or ""
end

local function get(port, target, host, extra)
    return raw(port, "GET " .. target .. " HTTP/1.1\r\nHost: " .. (host or "x") .. "\r\nConnection: close\r\n" ..
        (extra or "") .. "\r\n")
end

local function start(mock, node)
    local dir = helpers.tmpdir()
    helpers.write_file(dir .. "/see-path.lua", SEE)
    node = node or {}
    node.plugin_paths = { helpers.ROOT .. "/plugins", dir }
    return helpers.start_gateway({
        node = node,
        consumers = { { name = "alice", keys = { "alice-key" } } },
        routes = {
            { id = "pub", paths = { "/pub/*" }, upstream = { nodes = { mock.addr } } },
            { id = "private", paths = { "/private/*" }, upstream = { nodes = { mock.addr } },
              plugins = { ["key-auth"] = {} } },
            { id = "see", paths = { "/see/*" }, plugins = { ["see-path"] = {} } },
            { id = "api", paths = { "/v/*" }, hosts = { "api.example" }, upstream = { nodes = { mock.addr } } },
            { id = "strip", paths = { "/strip/*" }, strip_prefix = true, upstream = { nodes = { mock.addr } } },
        },
    })
end

describe("request path normalisation", function()
    local mock, gw

    setup(function()
        mock = helpers.mock_upstream()
        gw = start(mock)
    end)

    teardown(function()
        helpers.stop_all()
    end)

    before_each(function()
        mock:clear()
    end)

    describe("a public route cannot reach a protected one", function()
        it("answers curl --path-as-is /pub/../private/x with the private route's 401", function()
            local code, out = helpers.exec(("curl -sS --max-time 5 --path-as-is -o /dev/null -w '%%{http_code}' %s")
                :format(q(gw.url("/pub/../private/x"))), 10)
            assert.equal(0, code, out)
            assert.equal("401", out)
            assert.equal(0, #mock:requests())
        end)

        for _, target in ipairs({ "/pub/../private/x", "/pub/%2e%2e/private/x", "/pub/%2E%2E/private/x",
                                  "/pub/.%2e/private/x", "/pub/./../private/x", "/pub/%2e/../private/x",
                                  "//pub//..//private/x", "/pub/a/../../private/x", "/%70ub/../private/x",
                                  "/%70rivate/x" }) do
            it("routes " .. target .. " as /private/x", function()
                local status = get(gw.port, target)
                assert.equal(401, status)
                assert.equal(0, #mock:requests())
                status = get(gw.port, target, nil, "Authorization: Bearer alice-key\r\n")
                assert.equal(200, status)
                assert.equal("/private/x", mock:last().path)
            end)
        end
    end)

    describe("the one normalised path", function()
        it("is what the upstream gets, the query string as sent", function()
            local cases = {
                { "/pub/a/./b/../c?x=/../y&z=%2e%2E", "/pub/a/c?x=/../y&z=%2e%2E" },
                { "/pub//a///b/", "/pub/a/b/" },
                { "/pub/%7Euser/%61%2Db%5f", "/pub/~user/a-b_" },
                { "/pub/a%3fb%2a%20c", "/pub/a%3Fb%2A%20c" },
                { "/pub/%252e%252e/x", "/pub/%252e%252e/x" },
                { "/pub/caf%c3%a9", "/pub/caf%C3%A9" },
                { "/pub/.", "/pub/" },
                { "/pub/x/..", "/pub/" },
            }
            for _, c in ipairs(cases) do
                local status = get(gw.port, c[1])
                assert.equal(200, status, c[1])
                assert.equal(c[2], mock:last().path, c[1])
            end
        end)

        it("is what plugins see (sluice.request.get_path, ctx.path)", function()
            local status, body = get(gw.port, "/see/a/%2E%2e/b//c?q=1/../2")
            assert.equal(200, status)
            local j = assert(cjson.decode(body))
            assert.equal("/see/b/c", j.path)
            assert.equal("/see/b/c", j.ctx_path)
            assert.equal("q=1/../2", j.query)
        end)

        it("is what strip_prefix strips", function()
            assert.equal(200, (get(gw.port, "/pub/../strip/a/../b")))
            assert.equal("/b", mock:last().path)
        end)

        it("is what the access log records", function()
            assert.equal(200, (get(gw.port, "/pub/q/../logged")))
            local line = helpers.wait_until(function()
                return gw:access_log():match('[^\n]*"path":"/pub/logged"[^\n]*')
            end, 5, "no access log line for the normalised path")
            assert.is_truthy(line)
        end)
    end)

    describe("refused paths", function()
        for _, target in ipairs({ "/../x", "/pub/../../x", "/pub/%2e%2e/%2e%2e/x", "/pub/..%2f..%2fx",
                                  "/pub/a%2Fb", "/pub/a%00", "/pub/a%00b", "/pub/%zz", "/pub/%4", "/pub/a#frag",
                                  "pub/x", "*" }) do
            it("answers " .. target .. " with 400 and forwards nothing", function()
                local status = get(gw.port, target)
                assert.equal(400, status)
                assert.equal(0, #mock:requests())
            end)
        end

        it("takes * for OPTIONS (no route matches it)", function()
            local status = raw(gw.port, "OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert.equal(404, status)
        end)
    end)

    describe("absolute-form targets", function()
        it("routes http://authority/path by its path, normalised", function()
            local status = get(gw.port, "http://127.0.0.1:" .. gw.port .. "/pub/a/../b?x=1", "other.example")
            assert.equal(200, status)
            assert.equal("/pub/b?x=1", mock:last().path)
            -- the authority replaces Host for what goes upstream
            assert.equal("127.0.0.1:" .. gw.port, mock:last().headers.host)
        end)

        it("routes by the authority's host, not the Host header", function()
            local status = get(gw.port, "http://api.example/v/x", "other.example")
            assert.equal(200, status)
            assert.equal("/v/x", mock:last().path)
            assert.equal("api.example", mock:last().headers.host)
            assert.equal(404, (get(gw.port, "/v/x", "other.example")))
            assert.equal(200, (get(gw.port, "HTTPS://API.EXAMPLE:8443/v/y", "other.example")))
            assert.equal("API.EXAMPLE:8443", mock:last().headers.host)
        end)

        it("applies path normalisation to it too", function()
            assert.equal(401, (get(gw.port, "http://x/pub/%2e%2e/private/x")))
            assert.equal(400, (get(gw.port, "http://x/../x")))
            assert.equal(0, #mock:requests())
        end)

        it("gives plugins the authority as host and Host header", function()
            local status, body = get(gw.port, "http://Api.Example:81/see/x?y", "other.example")
            assert.equal(200, status)
            local j = assert(cjson.decode(body))
            assert.equal("Api.Example", j.host)
            assert.equal("Api.Example:81", j.host_header)
            assert.equal("/see/x", j.path)
            assert.equal("y", j.query)
        end)

        it("gives an HTTP/1.0 request without Host the authority as Host", function()
            local status = raw(gw.port, "GET http://h.example:9/pub/x HTTP/1.0\r\n\r\n")
            assert.equal(200, status)
            assert.equal("h.example:9", mock:last().headers.host)
        end)

        it("takes //x/pub/x as a path (merged slashes), not an authority", function()
            assert.equal(404, (get(gw.port, "//x/pub/x")))
            assert.equal(200, (get(gw.port, "//pub/x")))
            assert.equal("/pub/x", mock:last().path)
        end)

        it("takes an authority without a path as /", function()
            local status, body = raw(gw.port, "GET http://x?a=b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert.equal(404, status)
            assert.equal("no route matches /", cjson.decode(body).error.message)
        end)

        for _, target in ipairs({ "ftp://x/pub/x", "http://u:p@x/pub/x", "http:///pub/x", "http://x y/pub/x",
                                  "httpx://x/pub/x" }) do
            it("answers " .. target .. " with 400", function()
                assert.equal(400, (get(gw.port, target)))
                assert.equal(0, #mock:requests())
            end)
        end
    end)
end)

describe("request path normalisation with node.allow_encoded_slashes", function()
    local mock, gw

    setup(function()
        mock = helpers.mock_upstream()
        gw = start(mock, { allow_encoded_slashes = true })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    it("keeps %2F encoded, never a separator", function()
        assert.equal(200, (get(gw.port, "/pub/a%2fb/../c%2F")))
        assert.equal("/pub/c%2F", mock:last().path)
        assert.equal(200, (get(gw.port, "/pub/..%2F..%2Fprivate/x")))
        assert.equal("/pub/..%2F..%2Fprivate/x", mock:last().path)
    end)

    it("still refuses %00 and paths above the root", function()
        mock:clear()
        assert.equal(400, (get(gw.port, "/pub/a%00")))
        assert.equal(400, (get(gw.port, "/pub/%2e%2e/..")))
        assert.equal(0, #mock:requests())
    end)
end)

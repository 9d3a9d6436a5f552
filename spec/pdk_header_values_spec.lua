-- Header values set through the PDK (sluice.request.set_header / sluice.response.set_header): CR, LF and NUL
-- are refused where they are set (error(msg, 2): the plugin's error is the request's 500 with an error id), so a
-- plugin that copies a (decoded) query argument or JSON field into a header cannot let a client inject header
-- lines, or a whole second request on the kept-alive upstream connection. (OpenResty's ngx.req.set_header /
-- ngx.header escape CR/LF for the same reason.) The C check where heads are written (core/http/field.c) is the
-- second line: spec/header_injection_spec.lua.
local helpers = require("helpers")

local PLUGIN = [[
local sluice = require("sluice")
return {
    name = "copy-arg",
    priority = 10,
    schema = { type = "object" },
    access = function(conf, ctx)
        local v = sluice.request.get_query_arg("user")
        if type(v) == "string" then
            sluice.request.set_header("x-user", v)
            sluice.response.set_header("x-user", v)
        end
    end,
}
]]

describe("header values set through the PDK", function()
    local mock, gw

    setup(function()
        local dir = helpers.tmpdir()
        helpers.write_file(dir .. "/copy-arg.lua", PLUGIN)
        mock = helpers.mock_upstream({ body = "ok" })
        gw = helpers.start_gateway({
            node = { workers = 1, plugin_paths = { dir } },
            routes = { { id = "r", paths = { "/r" }, upstream = { nodes = { mock.addr } },
                         plugins = { ["copy-arg"] = {} } } },
        })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    it("go through when clean", function()
        mock:clear()
        local res = assert(helpers.http("GET", gw.url("/r?user=alice")))
        assert.equal(200, res.status, res.body)
        assert.equal("alice", res.headers["x-user"])
        assert.equal("alice", mock:last().headers["x-user"])
    end)

    it("with CR/LF are refused: a 500 with an error id, nothing sent upstream, no injected line", function()
        mock:clear()
        local res = assert(helpers.http("GET", gw.url("/r?user=alice%0d%0aX-Admin:%20true")))
        assert.equal(500, res.status, res.body)
        local id = res.json.error.message:match("id (%x+)")
        assert.truthy(id, res.body)
        assert.is_nil(res.headers["x-admin"])
        assert.is_nil(res.headers["x-user"])
        assert.equal(0, #mock:requests(), "the upstream got a request")
        helpers.wait_until(function()
            local log = gw:log()
            return log:find(id, 1, true) and log:find("copy-arg", 1, true)
        end, 5, "the refusal in the log with its id")
    end)

    it("cannot be used to smuggle a second request to the upstream", function()
        mock:clear()
        local res = assert(helpers.http("GET", gw.url(
            "/r?user=a%0d%0aContent-Length:%200%0d%0a%0d%0aGET%20/smuggled%20HTTP/1.1%0d%0aHost:%20x%0d%0aX-A:%20b")))
        assert.equal(500, res.status, res.body)
        -- the gateway still serves on this upstream, and never sent the smuggled request
        assert.equal(200, assert(helpers.http("GET", gw.url("/r?user=bob"))).status)
        for _, r in ipairs(mock:requests()) do
            assert.are_not.equal("/smuggled", r.path, "the upstream received a request the client never sent")
        end
        assert.equal(1, #mock:requests())
    end)
end)

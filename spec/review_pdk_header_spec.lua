-- Review: sluice.request.set_header / sluice.response.set_header pass CR and LF through into the upstream request
-- head and the client response head. A plugin that copies a (decoded) query argument or JSON field into a header
-- lets a client inject header lines — or a whole second request on the kept-alive upstream connection.
-- (OpenResty's ngx.req.set_header / ngx.header escape CR/LF for this reason.)
local helpers = require("helpers")

local PLUGIN = [[
local sluice = require("sluice")
return {
    name = "review-copy-arg",
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

describe("review: header values set through the PDK", function()
    local mock, gw

    setup(function()
        local dir = helpers.tmpdir()
        helpers.write_file(dir .. "/review-copy-arg.lua", PLUGIN)
        mock = helpers.mock_upstream({ body = "ok" })
        gw = helpers.start_gateway({
            node = { workers = 1, plugin_paths = { dir } },
            routes = { { id = "r", paths = { "/r" }, upstream = { nodes = { mock.addr } },
                         plugins = { ["review-copy-arg"] = {} } } },
        })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    it("cannot be used to add request header lines upstream", function()
        local res = helpers.http("GET", gw.url("/r?user=alice%0d%0aX-Admin:%20true"))
        assert.is_nil(mock:last() and mock:last().headers["x-admin"], "x-admin was injected into the upstream request")
        assert.is_nil(res and res.headers["x-admin"], "x-admin was injected into the client response")
    end)

    it("cannot be used to smuggle a second request to the upstream", function()
        mock:clear()
        helpers.http("GET", gw.url("/r?user=a%0d%0aContent-Length:%200%0d%0a%0d%0aGET%20/smuggled%20HTTP/1.1%0d%0aHost:%20x%0d%0aX-A:%20b"))
        helpers.sleep(0.3)
        for _, r in ipairs(mock:requests()) do
            assert.are_not.equal("/smuggled", r.path, "the upstream received a request the client never sent")
        end
    end)
end)

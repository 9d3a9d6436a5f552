package.path = "lua/?.lua;lua/?/init.lua;" .. package.path

local router = require("sluice.router")

describe("sluice.router", function()
    local routes = {
        { id = "models", paths = { "/v1/models" }, methods = { "GET" } },
        { id = "chat", paths = { "/v1/chat/completions", "/v1/messages" }, methods = { "post" } },
        { id = "user-posts", paths = { "/users/:id/posts/:post" } },
        { id = "files", paths = { "/files/*path" } },
        { id = "api", paths = { "/api/*" } },
        { id = "api-hi", paths = { "/api/*" }, priority = 10 },
        { id = "tenant", paths = { "/v1/models" }, hosts = { "*.tenant.io", "tenant.io" } },
        { id = "root", paths = { "/*" } },
    }
    local r = assert(router.new(routes))

    it("matches exact paths and methods", function()
        local route, params = r:match("GET", "/v1/models")
        assert.equal("models", route.id)
        assert.is_nil(params)
        assert.equal("chat", r:match("POST", "/v1/messages").id)
        assert.equal("chat", r:match("POST", "/v1/chat/completions").id)
    end)

    it("reports 405 and 404", function()
        assert.equal("root", r:match("DELETE", "/v1/chat/completions").id) -- the catch-all allows any
        local r2 = assert(router.new({ { id = "x", paths = { "/x" } }, { id = "p", paths = { "/p" }, methods = { "POST" } } }))
        local route, err = r2:match("GET", "/p")
        assert.is_nil(route)
        assert.equal("method_not_allowed", err)
        assert.same({ nil, "not_found" }, { r2:match("GET", "/y") })
        assert.equal("x", r2:match("BREW", "/x").id)
    end)

    it("extracts parameters", function()
        local route, params = r:match("GET", "/users/7/posts/a%20b")
        assert.equal("user-posts", route.id)
        assert.same({ id = "7", post = "a%20b" }, params)
        route, params = r:match("GET", "/files/a/b/c.txt")
        assert.equal("files", route.id)
        assert.same({ path = "a/b/c.txt" }, params)
    end)

    it("applies prefix priority and the catch-all", function()
        assert.equal("api-hi", r:match("GET", "/api").id)
        assert.equal("api-hi", r:match("GET", "/api/x/y").id)
        assert.equal("root", r:match("GET", "/other").id)
    end)

    it("prefers host-specific routes", function()
        assert.equal("tenant", r:match("GET", "/v1/models", "a.tenant.io").id)
        assert.equal("tenant", r:match("PUT", "/v1/models", "TENANT.io:443").id)
        assert.equal("models", r:match("GET", "/v1/models", "other.io").id)
    end)

    it("rejects bad input with an error naming the route", function()
        local r2, err = router.new({ { id = "bad", paths = { "/a/*/b" } } })
        assert.is_nil(r2)
        assert.matches("bad", err)
        r2, err = router.new({ { id = "m", paths = { "/a" }, methods = { "FETCH" } } })
        assert.is_nil(r2)
        assert.matches("unknown method", err)
        r2, err = router.new({ { id = "d", paths = { "/a" } }, { id = "d", paths = { "/b" } } })
        assert.is_nil(r2)
        assert.matches("duplicate", err)
        assert.has_error(function() router.new("x") end)
    end)

    it("handles many routes", function()
        local many = {}
        for i = 1, 1000 do
            many[i] = { id = "r" .. i, paths = { "/svc" .. i .. "/:x" } }
        end
        local r3 = assert(router.new(many))
        local route, params = r3:match("GET", "/svc777/abc")
        assert.equal("r777", route.id)
        assert.same({ x = "abc" }, params)
        collectgarbage()
    end)
end)

-- Header names and values on their way to the wire: whatever produced them (config through the Admin API,
-- plugins through the PDK or around it, sluice.http), CR, LF or NUL in a value, or a name that is not a token,
-- never reaches the upstream or the client. The PDK raises at the call (a plugin's mistake); what gets past it
-- is refused in C where the head is written (core/http/field.c): the client gets a 500 with an error id and
-- the error log names the header.
local helpers = require("helpers")
local cjson = require("cjson.safe")

-- Does what the x-case request header says.
local PLUGIN = [[
local sluice = require("sluice")
local request, response = sluice.request, sluice.response
local INJ = "v\r\nX-Injected: 1\r\n\r\nGET /SMUGGLED HTTP/1.1\r\nHost: y"
return {
    name = "inject",
    priority = 10,
    schema = { type = "object" },
    access = function(conf, ctx)
        local case = request.get_header("x-case")
        if case == "req-value" then
            request.set_header("x-a", INJ)
        elseif case == "req-nul" then
            request.set_header("x-a", "a\0b")
        elseif case == "req-name" then
            request.set_header("x a", "v")
        elseif case == "resp-value" then
            response.set_header("x-b", "v\r\nSet-Cookie: a=b")
        elseif case == "resp-name" then
            response.set_header("x:b", "v")
        elseif case == "path" then
            request.set_path("/a HTTP/1.1\r\nX-Injected: 1\r\n\r\nGET /SMUGGLED")
        elseif case == "around-req" then -- around the PDK: C still refuses
            ctx.set_headers = { ["x-c"] = INJ }
        elseif case == "around-req-line" then -- an added line that looks like any other header
            ctx.set_headers = { ["x-c"] = "v\r\nX-Injected: 1" }
        elseif case == "around-path" then
            ctx.upstream_path = "/a\r\nX-Injected: 1\r\n\r\nGET /SMUGGLED"
        elseif case == "around-resp-name" then
            ctx.resp_headers = { ["x e"] = "v" }
        elseif case == "exit-header" then
            return response.exit(200, "x", { ["x-d"] = "v\r\nSet-Cookie: a=b" })
        elseif case == "http" or case == "http-line" or case == "http-nul" or case == "http-name" then
            local h = case == "http" and { ["x-f"] = INJ } or case == "http-line" and { ["x-f"] = "v\r\nX-Injected: 1" }
                      or case == "http-nul" and { ["x-f"] = "a\0b" } or { ["x f"] = "1" }
            local ok, err = pcall(sluice.http.request, { url = request.get_header("x-target"), headers = h, timeout = 2 })
            return 200, { ok = ok, err = tostring(err) }
        end
    end,
    header_filter = function(conf, ctx)
        if request.get_header("x-case") == "around-resp" then
            ctx.response.headers["x-d"] = "v\r\nSet-Cookie: a=b"
        end
    end,
}
]]

describe("header injection", function()
    local gw, mock

    setup(function()
        local dir = helpers.tmpdir()
        helpers.write_file(dir .. "/inject.lua", PLUGIN)
        mock = helpers.mock_upstream({ body = "ok" })
        gw = helpers.start_gateway({
            node = { workers = 1, plugin_paths = { helpers.ROOT .. "/plugins", dir } },
            routes = { { id = "r", paths = { "/r/*" }, upstream = { nodes = { mock.addr } },
                         plugins = { inject = {} } } },
        })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    local function nothing_smuggled()
        helpers.sleep(0.2)
        for _, r in ipairs(mock:requests()) do
            assert.is_nil(r.headers["x-injected"], "a header was injected upstream")
            assert.are_not.equal("/SMUGGLED", r.path, "a second request reached the upstream")
        end
    end

    -- The response a case gets: a 500 naming an error id, found in the error log with what.
    local function refused(case, what)
        mock:clear()
        local res = assert(helpers.http("GET", gw.url("/r/x"), { headers = { ["x-case"] = case } }))
        assert.equal(500, res.status, case .. ": " .. tostring(res.body))
        assert.is_nil(res.headers["x-injected"])
        assert.is_nil(res.headers["set-cookie"])
        local id = res.body:match("id (%x+)")
        assert.is_not_nil(id, "no error id in " .. res.body)
        local log, line = gw:log(), nil
        for l in log:gmatch("[^\n]+") do
            if l:find("request " .. id, 1, true) then line = l end
        end
        assert.is_not_nil(line, "the error log has nothing for request " .. id .. ":\n" .. log)
        assert.matches(what, line, 1, true)
        nothing_smuggled()
        return line
    end

    it("the PDK raises at the plugin's call for CR, LF, NUL in a value or a name that is not a token", function()
        refused("req-value", 'invalid value for header "x-a": CR, LF or NUL')
        refused("req-nul", 'invalid value for header "x-a"')
        refused("req-name", 'invalid header name "x a"')
        refused("resp-value", 'invalid value for header "x-b"')
        refused("resp-name", 'invalid header name "x:b"')
        refused("path", "path must be a string starting with / without spaces or control characters")
        -- error(msg, 2): the plugin's own line is named
        assert.matches("inject.lua:%d+: invalid value for header", gw:log())
    end)

    it("what gets around the PDK is refused in C where the head is written", function()
        refused("around-req", 'upstream request (port ' .. mock.port .. ') not sent: header "": blank line inside the head')
        refused("around-req-line", 'not sent: header lines "Host", "x-c", "X-Injected": more lines than headers were set')
        refused("around-path", "not sent: request line")
        refused("around-resp", 'response head not sent: header lines')
        assert.matches('"Set-Cookie": more lines than headers were set (a value holds CR LF)', gw:log(), 1, true)
        refused("around-resp-name", 'response head not sent: header "x e": name is not a token')
        refused("exit-header", 'response head not sent: header lines')
        -- the gateway still serves, and good headers still pass
        local res = assert(helpers.http("GET", gw.url("/r/x")))
        assert.equal(200, res.status)
    end)

    it("sluice.http raises for such a header and sends nothing", function()
        for _, case in ipairs({ "http", "http-line", "http-nul", "http-name" }) do
            mock:clear()
            local res = assert(helpers.http("GET", gw.url("/r/x"),
                { headers = { ["x-case"] = case, ["x-target"] = mock.url("/called") } }))
            assert.equal(200, res.status)
            local out = cjson.decode(res.body)
            assert.is_false(out.ok, case)
            assert.matches("invalid request header", out.err, 1, true)
            helpers.sleep(0.2)
            assert.equal(0, #mock:requests(), case .. ": the request was sent")
        end
    end)

    it("a host with CR/LF set through the Admin API never reaches the upstream", function()
        local host = "evil\r\nX-Injected: 1\r\n\r\nGET /SMUGGLED HTTP/1.1\r\nHost: y"
        local put = assert(gw:admin("PUT", "/admin/routes/inj", { paths = { "/inj/*" },
            upstream = { nodes = { mock.addr }, pass_host = "rewrite", host = host } }))
        if put.status >= 400 then
            -- refused by config validation already: the config in place keeps serving
            assert.equal(400, put.status, put.body)
            assert.equal(200, assert(helpers.http("GET", gw.url("/r/x"))).status)
            return
        end
        assert.is_true(put.status == 200 or put.status == 201, put.body)
        helpers.wait_until(function()
            local r = helpers.http("GET", gw.url("/inj/x"))
            return r and r.status ~= 404
        end, 5, "route inj applied")
        mock:clear()
        local res = assert(helpers.http("GET", gw.url("/inj/x")))
        assert.equal(500, res.status, res.body)
        local id = assert(res.body:match("id (%x+)"), res.body)
        assert.matches('request ' .. id .. ': upstream request %(port %d+%) not sent: header "": blank line inside the head',
            gw:log())
        nothing_smuggled()
        assert.equal(0, #mock:requests())
    end)
end)

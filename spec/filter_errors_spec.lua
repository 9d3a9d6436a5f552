-- An error in a response filter, through the real gateway (docs/plugins.md, "Errors in phases"):
--   header_filter (the head is not sent yet): the client gets a 500 with an error id, also in the log; the other
--     filters do not run on that 500 (no loop, none of their headers or body bytes);
--   body_filter once the head is out: the error is logged and the stream is cut (the connection closes without
--     the last chunk), never a truncated body that looks complete.
-- Both for a plain upstream (FILTER mode of the proxy) and for an AI route (whole and streamed responses).
local helpers = require("helpers")
local cjson = require("cjson.safe")

-- Fails where the request asks (x-fail: head | body | eof); body fails on the chunk that contains "two", or on
-- chunk number x-fail-at.
local FAILING = [[
local sluice = require("sluice")
return {
    name = "spec-failing", priority = 200,
    header_filter = function(conf, ctx)
        sluice.response.set_header("x-failing-ran", "yes", ctx)
        if sluice.request.get_header("x-fail", ctx) == "head" then error("spec: header_filter blew up") end
    end,
    body_filter = function(conf, ctx, chunk, eof)
        local mode = sluice.request.get_header("x-fail", ctx)
        ctx.var.n = (ctx.var.n or 0) + (chunk ~= "" and 1 or 0)
        local at = tonumber(sluice.request.get_header("x-fail-at", ctx))
        if mode == "body" and chunk ~= "" and (at and ctx.var.n == at or not at and chunk:find("two", 1, true)) then
            error("spec: body_filter blew up")
        end
        if mode == "eof" and eof then error("spec: body_filter blew up at eof") end
    end,
}
]]

-- Runs after spec-failing: its marks must never be on a response a failing filter made.
local MARKER = [[
local sluice = require("sluice")
return {
    name = "spec-marker", priority = 100,
    header_filter = function(conf, ctx) sluice.response.set_header("x-marker", "1", ctx) end,
    body_filter = function(conf, ctx, chunk, eof) if eof then return "[marker]" end end,
}
]]

local function request(port, path, fail, extra)
    return helpers.raw(port, "GET " .. path .. " HTTP/1.1\r\nHost: x\r\nx-fail: " .. fail .. "\r\n" .. (extra or "")
        .. "\r\n", { timeout = 5 })
end

describe("filter errors", function()
    local mock, gw

    setup(function()
        local dir = helpers.tmpdir()
        helpers.write_file(dir .. "/spec-failing.lua", FAILING)
        helpers.write_file(dir .. "/spec-marker.lua", MARKER)
        mock = helpers.mock_upstream({ chunks = { "one,", "two,", "three" }, chunk_delay = 0.1 })
        local both = { ["spec-failing"] = {}, ["spec-marker"] = {} }
        gw = helpers.start_gateway({
            node = { plugin_paths = { helpers.ROOT .. "/plugins", dir } },
            providers = { m = { kind = "mock", options = { text = "alpha beta gamma delta", chunk_delay_ms = 30 } } },
            routes = {
                { id = "up", paths = { "/up/*" }, upstream = { nodes = { mock.addr } }, plugins = both },
                { id = "ai", paths = { "/ai/*" }, plugins = { ["spec-failing"] = {}, ["spec-marker"] = {},
                                                              ["ai-proxy"] = { provider = "m" } } },
            },
        })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    local function check_500(res)
        assert.equal(500, res.status, res.body)
        local id = res.json.error.message:match("^internal error %(id (%x+)%)$")
        assert.is_string(id, res.body)
        assert.is_nil(res.headers["x-marker"])
        assert.is_nil(res.headers["x-failing-ran"])
        assert.not_matches("[marker]", res.body, 1, true)
        helpers.wait_until(function()
            for line in gw:log():gmatch("[^\n]+") do
                if line:find("plugin spec-failing header_filter failed (id " .. id .. "): ", 1, true)
                    and line:find("spec: header_filter blew up", 1, true) then
                    return true
                end
            end
        end, 5, "the error with its id in the log")
    end

    it("turns a header_filter error into a 500 with an error id (upstream route)", function()
        local res = assert(helpers.http("GET", gw.url("/up/x"), { headers = { ["x-fail"] = "head" } }))
        check_500(res)
        assert.not_matches("one,", res.body, 1, true)
        -- the same route without the error: both filters ran
        res = assert(helpers.http("GET", gw.url("/up/x"), { headers = { ["x-fail"] = "none" } }))
        assert.equal(200, res.status)
        assert.equal("1", res.headers["x-marker"])
        assert.equal("one,two,three[marker]", res.body)
    end)

    it("turns a header_filter error into a 500 on an AI route, whole and streamed", function()
        local body = { model = "x", messages = { { role = "user", content = "hi" } } }
        check_500(assert(helpers.http("POST", gw.url("/ai/v1/chat/completions"),
            { headers = { ["x-fail"] = "head" }, body = body })))
        body.stream = true
        check_500(assert(helpers.http("POST", gw.url("/ai/v1/chat/completions"),
            { headers = { ["x-fail"] = "head" }, body = body })))
    end)

    it("cuts the stream when body_filter fails after the head went out", function()
        local raw = request(gw.port, "/up/x", "body")
        assert.matches("^HTTP/1.1 200", raw)
        assert.matches("transfer-encoding: chunked", raw:lower(), 1, true)
        assert.matches("one,", raw, 1, true)
        assert.not_matches("three", raw, 1, true)
        assert.not_matches("\r\n0\r\n\r\n", raw, 1, true) -- no last chunk: the client sees the body is incomplete
        assert.not_matches("[marker]", raw, 1, true)
        assert.matches("plugin spec-failing body_filter failed (id ", gw:log(), 1, true)
        assert.matches("spec: body_filter blew up", gw:log(), 1, true)
    end)

    it("cuts the stream when body_filter fails at the end", function()
        local raw = request(gw.port, "/up/x", "eof")
        assert.matches("^HTTP/1.1 200", raw)
        assert.matches("three", raw, 1, true)
        assert.not_matches("\r\n0\r\n\r\n", raw, 1, true)
        assert.not_matches("[marker]", raw, 1, true)
    end)

    it("gives a 500 for a body_filter error in a whole AI response, and cuts an AI stream", function()
        local body = { model = "x", messages = { { role = "user", content = "hi" } } }
        local res = assert(helpers.http("POST", gw.url("/ai/v1/chat/completions"),
            { headers = { ["x-fail"] = "body", ["x-fail-at"] = "1" }, body = body }))
        assert.equal(500, res.status, res.body)
        assert.matches("^internal error %(id %x+%)$", res.json.error.message)
        assert.is_nil(res.headers["x-marker"])
        body.stream = true
        local json = cjson.encode(body)
        local raw = helpers.raw(gw.port, "POST /ai/v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-fail: body\r\nx-fail-at: 2\r\n"
            .. "content-type: application/json\r\ncontent-length: " .. #json .. "\r\n\r\n" .. json, { timeout = 5 })
        assert.matches("^HTTP/1.1 200", raw)
        assert.matches("data: ", raw, 1, true)
        assert.not_matches("[DONE]", raw, 1, true)
        assert.not_matches("\r\n0\r\n\r\n", raw, 1, true)
    end)
end)

-- The PDK doors the bundled plugins use instead of reaching into the runtime: sluice.upstream.take_over (a
-- plugin that makes the upstream stage itself), sluice.request.client_gone, sluice.each_conf (per-conf work
-- outside requests), and the check that no bundled plugin reaches past the PDK.
local helpers = require("helpers")
local cjson = require("cjson.safe")

local ROOT = helpers.ROOT

-- Takes over the upstream stage: conf.how = "send" answers with sluice.response.send, "stream" with
-- stream_start/write/finish, "raise" raises in the handler, "nothing" sends nothing.
local TAKER = [[
local sluice = require("sluice")
return { name = "taker", version = "1", priority = 1000, schema = { type = "object" },
  access = function(conf, ctx)
    sluice.upstream.take_over(function(c)
      if conf.how == "raise" then error("taker handler failed") end
      if conf.how == "raise-mid-stream" then
        sluice.response.stream_start(200, { ["content-type"] = "text/plain" }, c)
        sluice.response.stream_write("partial", c)
        error("taker handler failed mid-stream")
      end
      if conf.how == "nothing" then return end
      if conf.how == "exit" then return sluice.response.exit(409, "taken, then refused", nil, c) end
      if conf.how == "stream" then
        if sluice.response.stream_start(200, { ["content-type"] = "text/plain" }, c) then
          sluice.response.stream_write("one,", c)
          sluice.response.stream_write("two", c)
          sluice.response.stream_finish(c)
        end
        return
      end
      sluice.response.send(201, { taken = sluice.upstream.taken_over(c), gone = sluice.request.client_gone(c) },
        { ["x-taker"] = "yes" }, c)
    end, ctx)
  end }
]]

-- Adds x-filtered to every response and appends "|eof" to every body: shows the answers went through filters.
local MARK = [[
local sluice = require("sluice")
return { name = "mark", version = "1", priority = 1, schema = { type = "object" },
  header_filter = function(conf, ctx) sluice.response.set_header("x-filtered", "1", ctx) end,
  body_filter = function(conf, ctx, chunk, eof) if eof then return "|eof" end end }
]]

-- Every 0.1 s on worker 0: writes the `tag` of every conf it runs with (sluice.each_conf) to conf.file.
local LISTER = [[
local sluice = require("sluice")
return { name = "lister", version = "1", priority = 1, schema = { type = "object" },
  init_worker = function()
    if sluice.worker_id() ~= 0 then return end
    sluice.timer.every(0.1, function()
      local tags, file = {}, nil
      for conf, config in sluice.each_conf("lister") do
        tags[#tags + 1] = conf.tag .. (config.routes and "" or "?")
        file = conf.file
      end
      table.sort(tags)
      if file then
        local f = io.open(file .. ".tmp", "w")
        f:write(table.concat(tags, ","))
        f:close()
        os.rename(file .. ".tmp", file)
      end
    end)
  end }
]]

describe("PDK doors for plugins", function()
    local gw, list_file

    setup(function()
        local dir = helpers.tmpdir()
        helpers.write_file(dir .. "/taker.lua", TAKER)
        helpers.write_file(dir .. "/mark.lua", MARK)
        helpers.write_file(dir .. "/lister.lua", LISTER)
        list_file = dir .. "/tags"
        local function lister(tag, extra)
            local c = { tag = tag, file = list_file }
            for k, v in pairs(extra or {}) do c[k] = v end
            return c
        end
        local shared = lister("shared")
        gw = helpers.start_gateway({
            node = { plugin_paths = { ROOT .. "/plugins", dir }, workers = 2 },
            global_plugins = { lister = shared },
            routes = {
                { id = "send", paths = { "/send" }, plugins = { taker = { how = "send" }, mark = {} } },
                { id = "stream", paths = { "/stream" }, plugins = { taker = { how = "stream" }, mark = {} } },
                { id = "raise", paths = { "/raise" }, plugins = { taker = { how = "raise" }, mark = {} } },
                { id = "nothing", paths = { "/nothing" }, plugins = { taker = { how = "nothing" } } },
                { id = "midraise", paths = { "/midraise" }, plugins = { taker = { how = "raise-mid-stream" } } },
                { id = "exit", paths = { "/exit" }, plugins = { taker = { how = "exit" }, mark = {} } },
                { id = "a", paths = { "/a" }, plugins = { lister = lister("a"), taker = { how = "send" } } },
                { id = "b", paths = { "/b" }, plugins = { lister = lister("b"), taker = { how = "send" } } },
                { id = "off", paths = { "/off" },
                  plugins = { lister = lister("off", { _meta = { disable = true } }), taker = { how = "send" } } },
            },
        })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    it("take_over: the handler answers a route without upstream, through the route's filters", function()
        local res = assert(helpers.http("GET", gw.url("/send")))
        assert.equal(201, res.status, res.body)
        assert.equal("yes", res.headers["x-taker"])
        assert.equal("1", res.headers["x-filtered"])
        local body = res.body:gsub("|eof$", "")
        assert.same({ taken = true, gone = false }, cjson.decode(body))
        assert.truthy(res.body:find("|eof$"))
    end)

    it("take_over: a streamed answer goes through body_filter piece by piece", function()
        local res = assert(helpers.http("GET", gw.url("/stream")))
        assert.equal(200, res.status)
        assert.equal("1", res.headers["x-filtered"])
        assert.equal("one,two|eof", res.body)
    end)

    it("take_over: a handler that raises gives a 500 with an error id; one that sends nothing a 502", function()
        local res = assert(helpers.http("GET", gw.url("/raise")))
        assert.equal(500, res.status)
        assert.equal("1", res.headers["x-filtered"])
        assert.truthy(res.body:find("internal error (id ", 1, true))
        helpers.wait_until(function() return gw:log():find("plugin taker upstream stage failed (id ", 1, true) end, 5,
            "the handler's failure is not logged")
        res = assert(helpers.http("GET", gw.url("/nothing")))
        assert.equal(502, res.status)
        assert.truthy(res.json.error.message:find("sent no response", 1, true))
    end)

    it("take_over: a handler that raises mid-stream: the stream is cut, not ended as if whole", function()
        local data = helpers.raw(gw.port, "GET /midraise HTTP/1.1\r\nHost: x\r\n\r\n", { timeout = 5 })
        assert.truthy(data and data:find("^HTTP/1.1 200"), data)
        assert.truthy(data:find("partial", 1, true))
        assert.is_nil(data:find("\r\n0\r\n\r\n", 1, true), "a cut stream ended like a complete one:\n" .. data)
    end)

    it("take_over: a handler may end with sluice.response.exit", function()
        local res = assert(helpers.http("GET", gw.url("/exit")))
        assert.equal(409, res.status)
        assert.equal("taken, then refused|eof", res.body)
    end)

    it("each_conf: every conf a plugin runs with, once each, disabled ones left out", function()
        local got = helpers.wait_until(function()
            local s = helpers.read_file(list_file)
            return s and s ~= "" and s
        end, 5, "the lister never wrote")
        assert.equal("a,b,shared", got)
    end)

    it("no bundled plugin reaches past the PDK (ctx.req, sluice.worker, sluice.proxy, upstream_override)", function()
        local _, out = helpers.exec("grep -rnE 'ctx\\.req\\b|sluice\\.worker\\b|\"sluice\\.proxy\"|upstream_override|"
            .. "ctx\\.ai\\.usage' " .. helpers.shell_quote(ROOT .. "/plugins") .. " || true")
        assert.equal("", out)
    end)
end)

describe("sluice.ai content helpers", function()
    package.path = ROOT .. "/lua/?.lua;" .. ROOT .. "/lua/?/init.lua;" .. package.path
    local ai = require("sluice.pdk.ai")

    it("text_of: a string, the text parts of a list joined by newlines, nil without text", function()
        assert.equal("hi", ai.text_of("hi"))
        assert.equal("a\nb", ai.text_of({ { type = "text", text = "a" }, { type = "image_url", image_url = {} },
                                          { type = "text", text = "b" } }))
        assert.is_nil(ai.text_of({ { type = "tool_use", id = "t" } }))
        assert.is_nil(ai.text_of({}))
        assert.is_nil(ai.text_of(42))
        assert.is_nil(ai.text_of({ { type = "text", text = 5 } }))
    end)

    it("add_anthropic_system: absent, string and blocks, before and after", function()
        local b = {}
        ai.add_anthropic_system(b, "ctx", true)
        assert.equal("ctx", b.system)
        b = { system = "be brief" }
        ai.add_anthropic_system(b, "ctx", true)
        assert.equal("ctx\n\nbe brief", b.system)
        b = { system = "be brief" }
        ai.add_anthropic_system(b, "ctx", false)
        assert.equal("be brief\n\nctx", b.system)
        b = { system = { { type = "text", text = "s" } } }
        ai.add_anthropic_system(b, "ctx", true)
        assert.same({ { type = "text", text = "ctx" }, { type = "text", text = "s" } }, b.system)
        ai.add_anthropic_system(b, "end", false)
        assert.same("end", b.system[3].text)
    end)
end)

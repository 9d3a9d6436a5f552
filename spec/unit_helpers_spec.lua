-- spec/unit_helpers.lua itself: fake requests read through the real PDK, captured changes, exits, logs, errors.
local unit = require("unit_helpers")
local sluice = require("sluice")

describe("unit_helpers", function()
    it("builds a request the PDK reads like a real one", function()
        local seen
        local p = { name = "probe", priority = 1, access = function(_, ctx)
            local r = sluice.request
            seen = { r.get_method(), r.get_path(), r.get_raw_query(), r.get_query_arg("a"), r.get_header("X-Multi"),
                     r.get_client_ip(), r.get_json().n, sluice.ctx() == ctx, ctx.consumer.name, ctx.config.marker }
        end }
        unit.run(p, "access", {}, { method = "PUT", path = "/p", query = "a=1&b", headers = { ["x-multi"] = { "v1", "v2" } },
                                    body = { n = 3 }, consumer = { name = "c" }, config = { marker = "m" } })
        assert.same({ "PUT", "/p", "a=1&b", "1", "v1", "127.0.0.1", 3, true, "c", "m" }, seen)
    end)

    it("returns changes, early exits, response headers and logs", function()
        local p = { name = "p", priority = 1, rewrite = function(_, ctx)
            sluice.request.set_header("x-a", "1", ctx)
            sluice.request.set_path("/new", ctx)
            sluice.response.set_header("x-r", "2", ctx)
            sluice.log.warn("[p] warned ", 42)
            return sluice.response.exit(418, { error = { message = "teapot" } }, { ["x-e"] = "3" }, ctx)
        end }
        local res = unit.run(p, "rewrite", {}, { path = "/old" })
        assert.equal(418, res.status)
        assert.equal("teapot", res.body.error.message)
        assert.equal("3", res.exit_headers["x-e"])
        assert.equal("1", res.headers["x-a"])
        assert.equal("/new", res.path)
        assert.equal("2", res.response_headers["x-r"])
        assert.same({ { level = "warn", message = "[p] warned 42" } }, res.logs)
    end)

    it("reports a phase that raised", function()
        local res = unit.run({ name = "b", priority = 1, access = function() error("boom") end }, "access", {}, {})
        assert.matches("boom", res.error)
        assert.is_nil(res.status)
    end)

    it("runs body_filter over chunks, with the eof call", function()
        local p = { name = "up", priority = 1, body_filter = function(_, ctx, chunk, eof)
            if eof then return "[end]" end
            return chunk:upper()
        end }
        local res = unit.run(p, "body_filter", {}, { response = { status = 200 }, chunks = { "a", "b" } })
        assert.same({ "A", "B", "[end]" }, res.chunks)
    end)

    it("refuses an invalid config in run and reports it in validate", function()
        local p = { name = "s", priority = 1, schema = { type = "object", properties = { n = { type = "integer" } } },
                    access = function() end }
        assert.has_error(function() unit.run(p, "access", { n = "x" }, {}) end)
        local conf, errs, path = unit.validate(p, { n = "x" })
        assert.is_nil(conf)
        assert.equal("n", path)
        assert.equal("n: expected integer, got string", unit.format_errors(errs))
    end)

    it("runs a chain by priority and stops at the first exit", function()
        local order = {}
        local a = { name = "a", priority = 10, access = function() order[#order + 1] = "a" return 403 end }
        local b = { name = "b", priority = 20, rewrite = function() order[#order + 1] = "b" end }
        local c = { name = "c", priority = 5, access = function() order[#order + 1] = "c" end }
        local res = unit.run_chain({ { a, {} }, { c, {} }, { b, {} } }, {})
        assert.equal(403, res.status)
        assert.same({ "b", "a" }, order)
    end)
end)

-- Plugin reload tells the truth (Admin API and SIGHUP, two workers): new code is checked against the live config
-- before anything is published; the answer says what happened (non-2xx when nothing changed, the errors per
-- plugin, the plugin code version each worker serves); workers never run other code than the Admin API reports.
-- The plugin stamps every response with its code tag and the worker that ran it, so each claim is checked against
-- what requests actually ran.
local helpers = require("helpers")

local V1_SCHEMA = '{ type = "object", properties = { tag = { type = "string" } } }'
local INT_SCHEMA = '{ type = "object", properties = { tag = { type = "integer" } } }' -- rejects the live tag = "r"

-- tag: the code's name in responses; fail_on: a worker id where this file refuses to load (nil: none)
local function source(tag, schema, fail_on)
    return ([[
local sluice = require("sluice")
local fail_on = %s
if fail_on and sluice.worker_id() == fail_on then error("spec: %s does not load on worker " .. fail_on) end
return {
    name = "spec-live", version = "%s", priority = 100,
    schema = %s,
    header_filter = function(conf, ctx)
        sluice.response.set_header("x-code", "%s", ctx)
        sluice.response.set_header("x-worker", tostring(sluice.worker_id()), ctx)
    end,
}
]]):format(fail_on and tostring(fail_on) or "nil", tag, tag, schema or V1_SCHEMA, tag)
end

describe("plugin reload", function()
    local mock, gw, dir, file

    setup(function()
        mock = helpers.mock_upstream()
        dir = helpers.tmpdir()
        file = dir .. "/spec-live.lua"
        helpers.write_file(file, source("v1"))
        gw = helpers.start_gateway({
            node = { workers = 2, plugin_paths = { helpers.ROOT .. "/plugins", dir } },
            upstreams = { up = { nodes = { mock.addr } } },
            routes = { { id = "live", paths = { "/live/*" }, upstream = "up", plugins = { ["spec-live"] = { tag = "r" } } } },
        })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    -- code tag per worker id over fresh connections (the kernel spreads them over the workers), until both
    -- workers answered or 80 requests were made
    local function codes()
        local seen, n = {}, 0
        for _ = 1, 80 do
            local res = assert(helpers.http("GET", gw.url("/live/x")))
            assert.equal(200, res.status)
            local w = res.headers["x-worker"]
            if seen[w] and seen[w] ~= res.headers["x-code"] then
                error("worker " .. w .. " ran both " .. seen[w] .. " and " .. res.headers["x-code"])
            end
            if not seen[w] then seen[w], n = res.headers["x-code"], n + 1 end
            if n == 2 then break end
        end
        assert.equal(2, n, "both workers answered")
        return seen
    end

    local function status()
        return assert(gw:admin("GET", "/admin/status")).json
    end

    local function plugin_entry()
        local res = assert(gw:admin("GET", "/admin/plugins"))
        assert.equal(200, res.status)
        for _, p in ipairs(res.json.list) do
            if p.name == "spec-live" then return p, res.json end
        end
        error("spec-live not listed")
    end

    local function reload()
        return assert(gw:admin("POST", "/admin/plugins/reload"))
    end

    it("refuses new code whose schema rejects the live config, and nothing changes", function()
        assert.same({ ["0"] = "v1", ["1"] = "v1" }, codes())
        local before = status()
        helpers.write_file(file, source("v2-int", INT_SCHEMA))
        local res = reload()
        assert.equal(422, res.status, res.body)
        assert.is_false(res.json.reloaded)
        assert.equal(before.plugin_version, res.json.plugin_version)
        assert.equal(1, #res.json.errors)
        assert.same({ plugin = "spec-live", path = "routes[1].plugins.spec-live.tag",
                      message = "expected integer, got string" }, res.json.errors[1])
        -- the Admin API shows what runs
        local p, list = plugin_entry()
        assert.equal("v1", p.version)
        assert.equal("string", p.schema.properties.tag.type)
        assert.equal(before.plugin_version, list.plugin_version)
        assert.equal(before.config_version, status().config_version)
        assert.same({ ["0"] = "v1", ["1"] = "v1" }, codes())
        -- an unrelated change later does not switch code either
        local put = assert(gw:admin("PUT", "/admin/routes/other", { paths = { "/other" }, upstream = "up" }))
        assert.equal(201, put.status, put.body)
        helpers.wait_until(function()
            return assert(helpers.http("GET", gw.url("/other"))).status == 200
        end, 5, "route other applied")
        assert.same({ ["0"] = "v1", ["1"] = "v1" }, codes())
        assert.equal("v1", (plugin_entry()).version)
    end)

    it("answers 422 with the plugin's error when the new file does not load, logged once", function()
        local before = status()
        helpers.write_file(file, "return { name = 'spec-live', priority = ")
        local res = reload()
        assert.equal(422, res.status, res.body)
        assert.is_false(res.json.reloaded)
        assert.equal("spec-live", res.json.errors[1].plugin)
        assert.matches("spec-live.lua", res.json.errors[1].message, 1, true)
        assert.equal(before.plugin_version, status().plugin_version)
        assert.equal(before.config_version, status().config_version)
        assert.same({ ["0"] = "v1", ["1"] = "v1" }, codes())
        local _, n = gw:log():gsub("spec%-live%.lua:%d+: unexpected symbol", "")
        assert.equal(1, n, gw:log())
    end)

    it("does not publish a reload that changes nothing", function()
        helpers.write_file(file, source("v1"))
        local before = status()
        local res = reload()
        assert.equal(200, res.status, res.body)
        assert.is_false(res.json.reloaded)
        assert.same({}, res.json.changed)
        assert.equal(before.plugin_version, res.json.plugin_version)
        assert.equal(before.config_version, status().config_version)
    end)

    it("publishes good code: every worker runs it when the answer comes, with the new version", function()
        local before = status()
        helpers.write_file(file, source("v2"))
        local res = reload()
        assert.equal(200, res.status, res.body)
        assert.is_true(res.json.reloaded)
        assert.same({ "spec-live" }, res.json.changed)
        assert.equal(before.plugin_version + 1, res.json.plugin_version)
        assert.equal(2, #res.json.workers)
        for _, w in ipairs(res.json.workers) do
            assert.equal(res.json.plugin_version, w.plugin_version)
            assert.is_nil(w.error)
        end
        assert.same({ ["0"] = "v2", ["1"] = "v2" }, codes()) -- no waiting: the answer came after the workers
        assert.equal("v2", (plugin_entry()).version)
    end)

    it("reports a worker that cannot load the validated code; it keeps its code and the API says so", function()
        local before = status()
        helpers.write_file(file, source("v3", nil, 1))
        local res = reload()
        assert.equal(500, res.status, res.body)
        assert.equal(before.plugin_version + 1, res.json.plugin_version)
        local by_id = {}
        for _, w in ipairs(res.json.workers) do by_id[w.id] = w end
        assert.equal(res.json.plugin_version, by_id[0].plugin_version)
        assert.is_nil(by_id[0].error)
        assert.equal(before.plugin_version, by_id[1].plugin_version)
        assert.matches("v3 does not load on worker 1", by_id[1].error, 1, true)
        assert.same({ ["0"] = "v3", ["1"] = "v2" }, codes())
        local _, list = plugin_entry()
        local listed = {}
        for _, w in ipairs(list.workers) do listed[w.id] = w.plugin_version end
        assert.same({ [0] = res.json.plugin_version, [1] = before.plugin_version }, listed)
        assert.matches("worker 1", gw:log(), 1, true)

        -- code that loads everywhere brings the workers together again
        helpers.write_file(file, source("v4"))
        res = reload()
        assert.equal(200, res.status, res.body)
        for _, w in ipairs(res.json.workers) do
            assert.equal(res.json.plugin_version, w.plugin_version)
        end
        assert.same({ ["0"] = "v4", ["1"] = "v4" }, codes())
    end)

    it("SIGHUP refuses new code that rejects the config; the running code stays", function()
        local before = status()
        helpers.write_file(file, source("v5-int", INT_SCHEMA))
        gw:reload()
        helpers.wait_until(function()
            return gw:log():find("routes[1].plugins.spec-live.tag: expected integer, got string", 1, true)
        end, 5, "SIGHUP rejected")
        helpers.sleep(0.3)
        assert.same({ ["0"] = "v4", ["1"] = "v4" }, codes())
        assert.equal(before.plugin_version, status().plugin_version)
        assert.equal("v4", (plugin_entry()).version)
        -- and a good file on SIGHUP is taken by every worker
        helpers.write_file(file, source("v6"))
        gw:reload()
        helpers.wait_until(function()
            local s = status()
            return s.plugin_version > before.plugin_version and s
        end, 5, "SIGHUP applied")
        helpers.wait_until(function()
            local c = codes()
            return c["0"] == "v6" and c["1"] == "v6"
        end, 5, "both workers on v6")
        -- a SIGHUP that changes no plugin publishes the config, not a new plugin code version
        local now = status()
        gw:reload()
        helpers.wait_until(function() return status().config_version > now.config_version end, 5, "SIGHUP applied")
        assert.equal(now.plugin_version, status().plugin_version)
        assert.same({ ["0"] = "v6", ["1"] = "v6" }, codes())
    end)
end)

-- Admin API against the real gateway (build/sluice): auth, CRUD applied live, validation, persistence, plugins.
local helpers = require("helpers")

-- A plugin written into a temp plugin path, so the reload spec can change its code.
local function tag_plugin(version, tag)
    return ([[
local request = require("sluice.pdk.request")
return {
    name = "spec-tag", version = "%s", priority = 100,
    schema = { type = "object", properties = { tag = { type = "string", default = "t" } } },
    access = function(conf, ctx) request.set_header("x-tag", conf.tag .. "-%s", ctx) end,
}
]]):format(version, tag)
end

describe("Admin API", function()
    local mock, gw, plugin_dir

    -- Retries a request through the gateway until it gives the wanted status (changes apply asynchronously).
    local function eventually(path, status)
        return helpers.wait_until(function()
            local res = helpers.http("GET", gw.url(path))
            return res and res.status == status and res
        end, 5, "GET " .. path .. " -> " .. status)
    end

    setup(function()
        mock = helpers.mock_upstream()
        plugin_dir = helpers.tmpdir()
        helpers.write_file(plugin_dir .. "/spec-tag.lua", tag_plugin("1.0", "v1"))
        gw = helpers.start_gateway({
            node = { plugin_paths = { plugin_dir } },
            upstreams = { up = { nodes = { mock.addr } } },
            providers = { p1 = { kind = "mock", api_key = "sk-secret" } },
            routes = { { id = "base", paths = { "/base/*" }, upstream = "up" } },
            consumers = { { name = "alice", keys = { "alice-key" } } },
        })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    describe("auth", function()
        it("answers 401 without a key", function()
            local res = assert(helpers.http("GET", gw.admin_url("/admin/routes")))
            assert.equal(401, res.status)
            assert.is_string(res.json.error.message)
        end)

        it("answers 401 with a wrong key, also one that is a prefix of the right one", function()
            for _, key in ipairs({ "nope", gw.admin_key:sub(1, -2), gw.admin_key .. "x", "" }) do
                local res = assert(helpers.http("GET", gw.admin_url("/admin/routes"), { headers = { ["x-api-key"] = key } }))
                assert.equal(401, res.status)
            end
        end)

        it("accepts the configured key", function()
            assert.equal(200, assert(gw:admin("GET", "/admin/routes")).status)
        end)
    end)

    describe("reads", function()
        it("lists entities as written", function()
            local res = assert(gw:admin("GET", "/admin/routes"))
            assert.equal(200, res.status)
            assert.equal(1, res.json.total)
            assert.same({ id = "base", paths = { "/base/*" }, upstream = "up" }, res.json.list[1])
            local ups = assert(gw:admin("GET", "/admin/upstreams")).json
            assert.same({ nodes = { mock.addr }, id = "up" }, ups.list[1])
        end)

        it("returns an empty list as []", function()
            local res = assert(gw:admin("GET", "/admin/consumer_groups"))
            assert.equal(200, res.status)
            assert.matches('"list":%[%]', res.body)
        end)

        it("redacts secrets", function()
            local p = assert(gw:admin("GET", "/admin/providers/p1")).json.item
            assert.equal("***", p.api_key)
            assert.equal("mock", p.kind)
            local c = assert(gw:admin("GET", "/admin/consumers/alice")).json.item
            assert.same({ "***" }, c.keys)
        end)

        it("answers 404 for a missing entity or path, 405 for a wrong method", function()
            assert.equal(404, assert(gw:admin("GET", "/admin/routes/nope")).status)
            assert.equal(404, assert(gw:admin("GET", "/admin/nothing")).status)
            assert.equal(404, assert(gw:admin("GET", "/other")).status)
            assert.equal(405, assert(gw:admin("POST", "/admin/routes/base")).status)
            assert.equal(405, assert(gw:admin("DELETE", "/admin/routes")).status)
        end)

        it("reports status", function()
            local s = assert(gw:admin("GET", "/admin/status")).json
            assert.is_string(s.version)
            assert.is_number(s.config_version)
            assert.equal(2, s.workers)
            -- without a config center the cluster is this node alone
            assert.equal(1, #s.cluster.nodes)
            local me = s.cluster.nodes[1]
            assert.is_true(me.self)
            assert.equal(s.node_id, me.id)
            assert.equal(s.version, me.version)
            assert.is_number(me.pid)
            assert.is_true(me.started_at <= os.time() and me.started_at > os.time() - 600)
            assert.same({ "127.0.0.1:" .. gw.port }, me.listen)
            assert.is_nil(s.cluster.lease)
        end)
    end)

    describe("changes", function()
        it("creates a route that serves at once and deletes it", function()
            local res = assert(gw:admin("PUT", "/admin/routes/live", { paths = { "/live" }, upstream = "up" }))
            assert.equal(201, res.status)
            assert.equal("live", res.json.item.id)
            eventually("/live", 200)
            assert.equal("/live", mock:last().path)
            assert.equal("live", assert(gw:admin("GET", "/admin/routes/live")).json.item.id)

            res = assert(gw:admin("PUT", "/admin/routes/live", { paths = { "/live", "/live2" }, upstream = "up" }))
            assert.equal(200, res.status)
            eventually("/live2", 200)

            assert.equal(200, assert(gw:admin("DELETE", "/admin/routes/live")).status)
            eventually("/live", 404)
            assert.equal(404, assert(gw:admin("DELETE", "/admin/routes/live")).status)
        end)

        it("applies a change on every worker", function()
            assert.equal(201, assert(gw:admin("PUT", "/admin/routes/everywhere", { paths = { "/everywhere" }, upstream = "up" })).status)
            eventually("/everywhere", 200)
            for _ = 1, 20 do -- new connections spread over both workers
                assert.equal(200, assert(helpers.http("GET", gw.url("/everywhere"))).status)
            end
        end)

        it("keeps every one of several changes made back to back", function()
            for i = 1, 5 do
                assert.equal(201, assert(gw:admin("PUT", "/admin/routes/quick" .. i, { paths = { "/quick" .. i }, upstream = "up" })).status)
            end
            for i = 1, 5 do
                eventually("/quick" .. i, 200)
                assert.equal(200, assert(gw:admin("DELETE", "/admin/routes/quick" .. i)).status)
            end
            for i = 1, 5 do eventually("/quick" .. i, 404) end
        end)

        it("creates upstreams and consumers", function()
            assert.equal(201, assert(gw:admin("PUT", "/admin/upstreams/up2", { nodes = { mock.addr } })).status)
            assert.equal(201, assert(gw:admin("PUT", "/admin/routes/via2", { paths = { "/via2" }, upstream = "up2" })).status)
            eventually("/via2", 200)
            assert.equal(201, assert(gw:admin("PUT", "/admin/consumers/bob", { keys = { "bob-key" } })).status)
            assert.equal("bob", assert(gw:admin("GET", "/admin/consumers/bob")).json.item.name)
        end)

        it("keeps a secret when a redacted entity is written back", function()
            local p = assert(gw:admin("GET", "/admin/providers/p1")).json.item
            p.models = { m = "m" }
            assert.equal(200, assert(gw:admin("PUT", "/admin/providers/p1", p)).status)
            local state = helpers.read_file(gw.dir .. "/sluice.yaml.state.json")
            assert.matches("sk-secret", state, 1, true)
        end)

        it("refuses to delete an upstream a route uses (409 naming the route)", function()
            local res = assert(gw:admin("DELETE", "/admin/upstreams/up"))
            assert.equal(409, res.status)
            assert.matches("base", res.json.error.message)
            eventually("/base/x", 200)
        end)

        it("deletes map entities (consumer groups, plugin metadata)", function()
            assert.equal(201, assert(gw:admin("PUT", "/admin/consumer_groups/staff", { desc = "staff" })).status)
            local list = assert(gw:admin("GET", "/admin/consumer_groups")).json
            assert.same({ { desc = "staff", name = "staff" } }, list.list)
            assert.equal(200, assert(gw:admin("DELETE", "/admin/consumer_groups/staff")).status)
            assert.equal(0, assert(gw:admin("GET", "/admin/consumer_groups")).json.total)
        end)

        it("rejects an invalid entity with the field path and keeps the old config", function()
            local res = assert(gw:admin("PUT", "/admin/routes/base", { paths = { "no-slash" }, upstream = "up" }))
            assert.equal(400, res.status)
            assert.equal("invalid route", res.json.error.message)
            assert.equal("paths[1]", res.json.error.details[1].path)

            res = assert(gw:admin("PUT", "/admin/routes/bad", { paths = { "/bad" }, upstream = "missing" }))
            assert.equal(400, res.status)
            assert.equal("upstream", res.json.error.details[1].path)

            res = assert(gw:admin("PUT", "/admin/routes/bad", { paths = { "/bad" }, upstream = "up",
                                                                plugins = { ["spec-tag"] = { tag = 5 } } }))
            assert.equal(400, res.status)
            assert.equal("plugins.spec-tag.tag", res.json.error.details[1].path)

            res = assert(gw:admin("PUT", "/admin/routes/bad", { paths = { "/bad" }, plugins = { ["no-such-plugin"] = {} } }))
            assert.equal(400, res.status)
            assert.equal("plugins.no-such-plugin", res.json.error.details[1].path)

            assert.equal(404, assert(gw:admin("GET", "/admin/routes/bad")).status)
            assert.equal(200, assert(helpers.http("GET", gw.url("/base/x"))).status)
            assert.same({ "/base/*" }, assert(gw:admin("GET", "/admin/routes/base")).json.item.paths)
        end)

        it("answers 400 for a body that is not a JSON object, or an id mismatch", function()
            local res = assert(helpers.http("PUT", gw.admin_url("/admin/routes/x"),
                { headers = { ["x-api-key"] = gw.admin_key }, body = "{not json" }))
            assert.equal(400, res.status)
            assert.matches("JSON", res.json.error.message)
            assert.equal(400, assert(gw:admin("PUT", "/admin/routes/x", { 1, 2 })).status)
            res = assert(gw:admin("PUT", "/admin/routes/x", { id = "y", paths = { "/x" } }))
            assert.equal(400, res.status)
            assert.equal("id", res.json.error.details[1].path)
        end)

        it("reads and replaces global plugins", function()
            assert.same({}, assert(gw:admin("GET", "/admin/global_plugins")).json.global_plugins)
            local res = assert(gw:admin("PUT", "/admin/global_plugins", { ["spec-tag"] = { tag = "g" } }))
            assert.equal(200, res.status)
            helpers.wait_until(function()
                assert(helpers.http("GET", gw.url("/base/g")))
                return mock:last().headers["x-tag"] == "g-v1"
            end, 5, "global plugin applied")
            assert.equal(200, assert(gw:admin("PUT", "/admin/global_plugins", {})).status)
            helpers.wait_until(function()
                assert(helpers.http("GET", gw.url("/base/g")))
                return mock:last().headers["x-tag"] == nil
            end, 5, "global plugin removed")
        end)
    end)

    describe("plugins", function()
        it("lists available plugins with priority, version, schema and phases", function()
            local res = assert(gw:admin("GET", "/admin/plugins"))
            assert.equal(200, res.status)
            local found
            for _, p in ipairs(res.json.list) do
                if p.name == "spec-tag" then found = p end
            end
            assert.is_table(found)
            assert.equal(100, found.priority)
            assert.equal("1.0", found.version)
            assert.same({ "access" }, found.phases)
            assert.equal("string", found.schema.properties.tag.type)
        end)

        it("reloads plugin code on every worker; a broken plugin keeps its old version", function()
            assert.equal(201, assert(gw:admin("PUT", "/admin/routes/tagged",
                { paths = { "/tagged" }, upstream = "up", plugins = { ["spec-tag"] = { tag = "r" } } })).status)
            helpers.wait_until(function()
                local res = helpers.http("GET", gw.url("/tagged"))
                return res and res.status == 200 and mock:last().headers["x-tag"] == "r-v1"
            end, 5, "route with plugin applied")

            helpers.write_file(plugin_dir .. "/spec-tag.lua", tag_plugin("2.0", "v2"))
            local res = assert(gw:admin("POST", "/admin/plugins/reload"))
            assert.equal(200, res.status)
            assert.is_true(res.json.reloaded)
            assert.same({ "spec-tag" }, res.json.changed)
            for _ = 1, 10 do -- both workers run the new code (the answer came once they did)
                assert(helpers.http("GET", gw.url("/tagged")))
                assert.equal("r-v2", mock:last().headers["x-tag"])
            end

            helpers.write_file(plugin_dir .. "/spec-tag.lua", "return {")
            finally(function() helpers.write_file(plugin_dir .. "/spec-tag.lua", tag_plugin("2.0", "v2")) end)
            res = assert(gw:admin("POST", "/admin/plugins/reload"))
            assert.equal(422, res.status)
            assert.is_false(res.json.reloaded)
            assert.equal(1, #res.json.errors)
            assert.equal("spec-tag", res.json.errors[1].plugin)
            assert.matches("spec-tag.lua", res.json.errors[1].message, 1, true)
            assert.equal(200, assert(helpers.http("GET", gw.url("/tagged"))).status)
            assert.equal("r-v2", mock:last().headers["x-tag"])
            assert.equal(405, assert(gw:admin("GET", "/admin/plugins/reload")).status)
        end)
    end)

    describe("persistence", function()
        it("keeps changes made through the API across a restart", function()
            assert.equal(201, assert(gw:admin("PUT", "/admin/routes/kept", { paths = { "/kept" }, upstream = "up" })).status)
            assert.equal(200, assert(gw:admin("DELETE", "/admin/consumers/alice")).status)
            eventually("/kept", 200)
            assert.is_true(gw:stop())
            gw = gw:restart()
            assert.equal(200, assert(helpers.http("GET", gw.url("/kept"))).status)
            assert.equal("kept", assert(gw:admin("GET", "/admin/routes/kept")).json.item.id)
            assert.equal(404, assert(gw:admin("GET", "/admin/consumers/alice")).status)
            assert.equal(200, assert(helpers.http("GET", gw.url("/base/x"))).status)
        end)

        it("keeps API changes across SIGHUP (the state file is overlaid on the file)", function()
            gw:reload()
            helpers.sleep(0.5)
            assert.equal(200, assert(helpers.http("GET", gw.url("/kept"))).status)
        end)
    end)
end)

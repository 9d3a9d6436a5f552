-- The Admin API audit trail (sluice.admin.audit): named admin keys, one JSON line per change with who, what,
-- before and after (secrets redacted); a change that cannot be audited is not made.
local helpers = require("helpers")
local cjson = require("cjson.safe")

describe("admin audit log", function()
    local gw

    setup(function()
        gw = helpers.start_gateway({
            node = { workers = 1, admin = { listen = "127.0.0.1:" .. helpers.free_port(), key = "main-admin-key-0001",
                     keys = { { name = "ci-deploy", key = "ci-deploy-key-0002" }, { name = "alice", key = "alice-key-0003" } } } },
            routes = { { id = "seed", paths = { "/seed" }, upstream = { nodes = { "127.0.0.1:1" } } } },
        })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    local function admin(key, method, path, body)
        return assert(helpers.http(method, gw.admin_url(path), { headers = { ["x-api-key"] = key }, body = body }))
    end

    local function lines()
        local out = {}
        for l in (helpers.read_file(gw.dir .. "/sluice.yaml.state.audit.jsonl") or ""):gmatch("[^\n]+") do
            out[#out + 1] = assert(cjson.decode(l))
        end
        return out
    end

    it("every named key opens /metrics and /admin/usage (X-API-KEY or Bearer); a wrong key does not", function()
        for _, k in ipairs({ "main-admin-key-0001", "ci-deploy-key-0002", "alice-key-0003" }) do
            assert.equal(200, admin(k, "GET", "/metrics").status)
            assert.equal(200, assert(helpers.http("GET", gw.admin_url("/admin/usage?group_by=model"),
                { headers = { authorization = "Bearer " .. k } })).status)
        end
        assert.equal(401, admin("not-a-key-0000", "GET", "/metrics").status)
        assert.equal(401, admin("not-a-key-0000", "GET", "/admin/usage?group_by=model").status)
    end)

    it("the dashboard opens a session with any admin key; a wrong key or an unknown token is a 401", function()
        for _, k in ipairs({ "main-admin-key-0001", "ci-deploy-key-0002", "alice-key-0003" }) do
            local res = assert(helpers.http("POST", gw.admin_url("/dashboard/login"), { body = { key = k } }))
            assert.equal(200, res.status)
            local tok = assert(cjson.decode(res.body)).token
            assert.matches("^%x+$", tok)
            res = assert(helpers.http("GET", gw.admin_url("/dashboard/data"),
                { headers = { authorization = "Bearer " .. tok } }))
            assert.equal(200, res.status)
            assert.is_table(cjson.decode(res.body))
        end
        local res = assert(helpers.http("POST", gw.admin_url("/dashboard/login"), { body = { key = "not-a-key-0000" } }))
        assert.equal(401, res.status)
        res = assert(helpers.http("GET", gw.admin_url("/dashboard/data"),
            { headers = { authorization = "Bearer " .. string.rep("ab", 32) } }))
        assert.equal(401, res.status)
    end)

    it("names who made each change; before and after, secrets redacted", function()
        assert.equal(201, admin("ci-deploy-key-0002", "PUT", "/admin/providers/oa",
            { kind = "openai", api_key = "sk-AUDIT-SECRET-1" }).status)
        assert.equal(200, admin("alice-key-0003", "PUT", "/admin/providers/oa",
            { kind = "openai", api_key = "sk-AUDIT-SECRET-2", models = { m = "m" } }).status)
        assert.equal(200, admin("main-admin-key-0001", "DELETE", "/admin/providers/oa").status)
        local l = lines()
        assert.equal(3, #l)
        assert.same({ "ci-deploy", "create", "providers", "oa" }, { l[1].who, l[1].action, l[1].kind, l[1].id })
        assert.is_nil(l[1].before)
        assert.same({ kind = "openai", api_key = "***" }, l[1].after)
        assert.same({ "alice", "update" }, { l[2].who, l[2].action })
        assert.same({ kind = "openai", api_key = "***" }, l[2].before)
        assert.same({ kind = "openai", api_key = "***", models = { m = "m" } }, l[2].after)
        assert.same({ "admin", "delete" }, { l[3].who, l[3].action })
        assert.is_nil(l[3].after)
        assert.equal("127.0.0.1", l[1].client)
        assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", l[1].time)
        local raw = helpers.read_file(gw.dir .. "/sluice.yaml.state.audit.jsonl")
        assert.not_matches("AUDIT-SECRET", raw)
    end)

    it("refuses unknown keys and audits nothing for reads or refused changes", function()
        local n = #lines()
        assert.equal(401, admin("nope-nope-nope", "PUT", "/admin/providers/x", { kind = "openai" }).status)
        assert.equal(200, admin("alice-key-0003", "GET", "/admin/routes").status)
        assert.equal(400, admin("alice-key-0003", "PUT", "/admin/providers/x", { kind = "nope" }).status)
        assert.equal(n, #lines())
    end)

    it("audits plugin reloads", function()
        local dir = helpers.tmpdir()
        helpers.write_file(dir .. "/audited-plugin.lua", 'return {name = "audited-plugin", version = "1", priority = 1}')
        local g2 = helpers.start_gateway({ node = { workers = 1, plugin_paths = { helpers.ROOT .. "/plugins", dir } },
            routes = { { id = "r", paths = { "/r" }, upstream = { nodes = { "127.0.0.1:1" } },
                         plugins = { ["audited-plugin"] = {} } } } })
        helpers.write_file(dir .. "/audited-plugin.lua", 'return {name = "audited-plugin", version = "2", priority = 1}')
        local res = g2:admin("POST", "/admin/plugins/reload")
        assert.equal(200, res.status)
        local l = cjson.decode(helpers.read_file(g2.dir .. "/sluice.yaml.state.audit.jsonl"):match("[^\n]+"))
        assert.same({ "admin", "reload", "plugins", { "audited-plugin" } }, { l.who, l.action, l.kind, l.changed })
    end)

    it("does not make a change it cannot audit", function()
        local dir = helpers.tmpdir()
        local g3 = helpers.start_gateway({ node = { workers = 1, admin = { listen = "127.0.0.1:" .. helpers.free_port(),
                key = "key-key-key-key", audit_log = dir } }, -- a directory: cannot be appended to
            routes = { { id = "seed", paths = { "/seed" }, upstream = { nodes = { "127.0.0.1:1" } } } } })
        local res = g3:admin("PUT", "/admin/providers/p", { kind = "openai", api_key = "k" })
        assert.equal(500, res.status)
        assert.matches("change not applied", res.json.error.message)
        assert.equal(404, g3:admin("GET", "/admin/providers/p").status)
        assert.is_nil(helpers.read_file(g3.dir .. "/sluice.yaml.state.json"))
    end)

    it("checks admin key names and keys at load", function()
        local dir = helpers.tmpdir()
        helpers.write_file(dir .. "/c.yaml", 'node: {admin: {key: "same-key-1234", keys: [{name: admin, key: "same-key-1234"}]}}\n')
        local code, out = helpers.exec("SLUICE_HOME=" .. helpers.shell_quote(helpers.ROOT) .. " "
            .. helpers.shell_quote(helpers.BIN) .. " -t -c " .. helpers.shell_quote(dir .. "/c.yaml"))
        assert.are_not.equal(0, code)
        assert.matches('name "admin" is already used', out)
        assert.matches('the same key as "admin"', out)
        assert.not_matches("same%-key%-1234", out)
    end)
end)

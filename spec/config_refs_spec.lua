-- Dangling references are config errors, found by one checker (sluice.config.resolve_refs, fed by `ref`
-- annotations in core and plugin schemas) for `sluice -t`, the config at start, Admin API writes and the
-- delete-in-use 409: a provider named by ai-proxy or by an ai-proxy-multi target, an upstream, a consumer group,
-- a consumer, a shared dict.
local helpers = require("helpers")

local function sluice(args)
    return helpers.exec(("env SLUICE_HOME=%s %s %s"):format(helpers.shell_quote(helpers.ROOT),
        helpers.shell_quote(helpers.BIN), args), 15)
end

-- Line numbers below are part of the expectations.
local DANGLING = [[
node: {plugin_paths: ["${SLUICE_HOME}/plugins"]}
providers:
  real: {kind: mock}
consumer_groups:
  staff: {}
consumers:
  - {name: alice, keys: [k1], groups: [staff, ghosts]}
routes:
  - {id: r2, paths: ["/v1/chat"], plugins: {ai-proxy: {provider: nope}}}
  - id: multi
    paths: ["/v1/multi"]
    plugins:
      ai-proxy-multi:
        targets:
          - {provider: real}
          - {provider: gone}
        rules: [{group: default, consumer_groups: [staff, phantom], consumers: [alice, nobody]}]
        qos: {consumer_groups: {spooks: 2}}
        shared_dict: nodict
  - {id: r3, paths: ["/r3"], upstream: missing}
global_plugins:
  ai-proxy: {provider: globalnope}
]]

describe("references between entities", function()
    local dir

    setup(function()
        dir = helpers.tmpdir()
    end)

    teardown(function()
        helpers.stop_all()
    end)

    it("sluice -t reports each dangling reference with file:line and its YAML path", function()
        local file = helpers.write_file(dir .. "/dangling.yaml", DANGLING)
        local code, out = sluice("-t -c " .. file)
        assert.is_not.equal(0, code)
        for _, want in ipairs({
            ":7: consumers[1].groups[2]: unknown consumer group \"ghosts\" (not defined under consumer_groups)",
            ":9: routes[1].plugins.ai-proxy.provider: unknown provider \"nope\" (not defined under providers)",
            ":16: routes[2].plugins.ai-proxy-multi.targets[2].provider: unknown provider \"gone\"",
            ":17: routes[2].plugins.ai-proxy-multi.rules[1].consumer_groups[2]: unknown consumer group \"phantom\"",
            ":17: routes[2].plugins.ai-proxy-multi.rules[1].consumers[2]: unknown consumer \"nobody\"",
            ":18: routes[2].plugins.ai-proxy-multi.qos.consumer_groups.spooks: unknown consumer group \"spooks\"",
            ":19: routes[2].plugins.ai-proxy-multi.shared_dict: unknown shared dict \"nodict\" (not defined under node.shared_dicts)",
            ":20: routes[3].upstream: unknown upstream \"missing\"",
            ":22: global_plugins.ai-proxy.provider: unknown provider \"globalnope\"",
        }) do
            assert.matches(file .. want, out, 1, true)
        end
        -- what is defined is not reported
        assert.is_nil(out:find("\"real\"", 1, true), out)
        assert.is_nil(out:find("\"staff\"", 1, true), out)
        assert.is_nil(out:find("\"alice\"", 1, true), out)
    end)

    it("the repro from the issue: an ai-proxy route naming no provider is refused at start", function()
        local file = helpers.write_file(dir .. "/r2.yaml", 'node: {plugin_paths: ["${SLUICE_HOME}/plugins"]}\n' ..
            'routes: [{id: r2, paths: ["/v1/chat"], plugins: {ai-proxy: {provider: nope}}}]\n')
        local code, out = sluice("-t -c " .. file)
        assert.is_not.equal(0, code)
        assert.matches(file .. ":2: routes[1].plugins.ai-proxy.provider: unknown provider \"nope\"", out, 1, true)
        code, out = sluice("-c " .. file) -- the gateway itself does not start on it
        assert.is_not.equal(0, code)
        assert.matches("unknown provider \"nope\"", out, 1, true)
    end)
end)

describe("references through the Admin API", function()
    local gw

    local function chat(path)
        return helpers.http("POST", gw.url(path), { headers = { ["content-type"] = "application/json" },
            body = '{"model":"m","messages":[{"role":"user","content":"hi"}]}' })
    end

    setup(function()
        gw = helpers.start_gateway({
            node = { workers = 1 },
            providers = { p1 = { kind = "mock" }, p2 = { kind = "mock" }, pg = { kind = "mock" } },
            consumer_groups = { staff = {} },
            consumers = { { name = "alice", keys = { "alice-key" }, groups = { "staff" } } },
            routes = {
                { id = "chat", paths = { "/v1/chat/completions" }, plugins = { ["ai-proxy"] = { provider = "p1" } } },
                { id = "multi", paths = { "/multi/v1/chat/completions" },
                  plugins = { ["ai-proxy-multi"] = { targets = { { provider = "p1" }, { provider = "p2" } } } } },
            },
            global_plugins = {},
        })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    it("refuses a route naming a provider that does not exist (400 with the path), and keeps serving", function()
        local res = assert(gw:admin("PUT", "/admin/routes/r2",
            { paths = { "/v1/chat" }, plugins = { ["ai-proxy"] = { provider = "nope" } } }))
        assert.equal(400, res.status, res.body)
        assert.same({ path = "plugins.ai-proxy.provider", message = "unknown provider \"nope\" (not defined under providers)" },
            res.json.error.details[1])
        assert.equal(404, assert(gw:admin("GET", "/admin/routes/r2")).status)
        assert.equal(200, assert(chat("/v1/chat/completions")).status)
    end)

    it("refuses an ai-proxy-multi target naming a provider that does not exist", function()
        local res = assert(gw:admin("PUT", "/admin/routes/m2", { paths = { "/m2" },
            plugins = { ["ai-proxy-multi"] = { targets = { { provider = "p1" }, { provider = "nope" } } } } }))
        assert.equal(400, res.status, res.body)
        assert.equal("plugins.ai-proxy-multi.targets[2].provider", res.json.error.details[1].path)
    end)

    it("refuses a consumer in a group that does not exist, and global plugins naming no provider", function()
        local res = assert(gw:admin("PUT", "/admin/consumers/bob", { keys = { "bob-key" }, groups = { "ghosts" } }))
        assert.equal(400, res.status, res.body)
        assert.equal("groups[1]", res.json.error.details[1].path)
        res = assert(gw:admin("PUT", "/admin/global_plugins", { ["ai-proxy"] = { provider = "nope" } }))
        assert.equal(400, res.status, res.body)
        assert.equal("ai-proxy.provider", res.json.error.details[1].path)
    end)

    it("refuses to delete what is referenced (409 naming each user), with the same checker as writes", function()
        -- a provider used only by an ai-proxy-multi target
        local res = assert(gw:admin("DELETE", "/admin/providers/p2"))
        assert.equal(409, res.status, res.body)
        assert.matches("route multi (routes[2].plugins.ai-proxy-multi.targets[2].provider)", res.json.error.message, 1, true)
        -- a consumer group used by a consumer
        res = assert(gw:admin("DELETE", "/admin/consumer_groups/staff"))
        assert.equal(409, res.status, res.body)
        assert.matches("consumer alice (consumers[1].groups[1])", res.json.error.message, 1, true)
        -- a provider used only by a global plugin
        assert.equal(200, assert(gw:admin("PUT", "/admin/global_plugins", { ["ai-proxy"] = { provider = "pg" } })).status)
        res = assert(gw:admin("DELETE", "/admin/providers/pg"))
        assert.equal(409, res.status, res.body)
        assert.matches("global_plugins (global_plugins.ai-proxy.provider)", res.json.error.message, 1, true)
        assert.equal(200, assert(gw:admin("PUT", "/admin/global_plugins", {})).status)
        -- once nothing uses it, the delete goes through
        assert.equal(200, assert(gw:admin("DELETE", "/admin/providers/pg")).status)
        -- and everything refused is still there and serving
        assert.equal(200, assert(gw:admin("GET", "/admin/providers/p2")).status)
        assert.equal(200, assert(gw:admin("GET", "/admin/consumer_groups/staff")).status)
        helpers.wait_until(function() return chat("/multi/v1/chat/completions").status == 200 end, 5, "multi serves")
    end)
end)

-- key-auth: config, unit (real PDK) and through the gateway together with consumer-prompt.
local unit = require("unit_helpers")
local helpers = require("helpers")
local cjson = require("cjson.safe")

describe("key-auth", function()
    local plugin = unit.load_plugin("key-auth")
    local config = { consumers = {
        { name = "alice", keys = { "alice-key", "alice-2" }, metadata = { team = "payments" } },
        { name = "bob", keys = { "bob-key" } },
    } }

    local function run(headers, conf, path)
        return unit.run(plugin, "rewrite", conf or {}, { path = path or "/v1/chat/completions", headers = headers,
                                                          config = config })
    end

    it("validates its config", function()
        local conf = assert(unit.validate(plugin, {}))
        assert.is_false(conf.anonymous)
        assert.is_true(conf.hide_credentials)
        assert.is_true(assert(unit.validate(plugin, { anonymous = "yes" })).anonymous) -- YAML's yes/no/on/off
        local _, _, path = unit.validate(plugin, { anonymous = "maybe" })
        assert.equal("anonymous", path)
    end)

    it("sets ctx.consumer from a Bearer key or x-api-key and hides the key", function()
        local res = run({ authorization = "Bearer alice-2" })
        assert.is_nil(res.status)
        assert.equal("alice", res.ctx.consumer.name)
        assert.is_nil(res.headers.authorization)
        res = run({ ["x-api-key"] = "bob-key" })
        assert.equal("bob", res.ctx.consumer.name)
        assert.is_nil(res.headers["x-api-key"])
        res = run({ ["x-api-key"] = "bob-key" }, { hide_credentials = false })
        assert.equal("bob-key", res.headers["x-api-key"])
    end)

    it("reads the Bearer token as the pattern ^[Bb]earer%s+ would (spacing, case, empty token, no separator)",
        function()
        for _, c in ipairs({
            { "Bearer alice-2", "alice" }, { "bearer alice-2", "alice" }, { "Bearer \t  alice-2", "alice" },
            { "Bearer\talice-2", "alice" }, { "BEARER alice-2", nil }, { "Bearer", nil }, { "Bearer ", nil },
            { "Bearer    ", nil }, { "Beareralice-2", nil }, { "Basic alice-2", nil }, { "Bearer alice-2 ", nil },
        }) do
            local res = run({ authorization = c[1] })
            assert.equal(c[2], res.ctx.consumer and res.ctx.consumer.name, c[1])
        end
        -- an unusable Authorization falls through to x-api-key
        local res = run({ authorization = "Bearer   ", ["x-api-key"] = "bob-key" })
        assert.equal("bob", res.ctx.consumer.name)
    end)

    it("answers 401 in the client's API shape", function()
        local res = run({ authorization = "Bearer nope" })
        assert.equal(401, res.status)
        assert.same({ error = { message = "invalid API key", type = "invalid_request_error", code = "invalid_api_key" } },
            res.body)
        res = run({}, nil, "/v1/messages")
        assert.equal(401, res.status)
        assert.equal("authentication_error", res.body.error.type)
        assert.matches("missing API key", res.body.error.message, 1, true)
    end)

    it("finds keys kept as digests, never by the digest itself, and refuses a route the roles deny (403)", function()
        local crypto = require("sluice.crypto")
        local digest = "sha256:" .. crypto.sha256_hex("carol-key")
        local cfg = { consumers = { { name = "carol", keys = { digest }, deny = { routes = { "chat" } } },
                                    { name = "dave", keys = { "dave-key" } } } }
        local function go(key, route)
            return unit.run(plugin, "rewrite", {}, { path = "/v1/messages", config = cfg, route = route,
                                                    headers = { ["x-api-key"] = key } })
        end
        assert.is_nil(go("carol-key", { id = "other" }).status)
        assert.equal("carol", go("carol-key", { id = "other" }).ctx.consumer.name)
        assert.equal(401, go(digest, { id = "other" }).status)
        local res = go("carol-key", { id = "chat" })
        assert.equal(403, res.status)
        assert.same({ type = "error", error = { type = "permission_error",
                      message = "route chat is denied to consumer carol (consumer carol)" } }, res.body)
        assert.is_nil(go("dave-key", { id = "chat" }).status)
    end)

    it("lets anonymous requests on with anonymous: true", function()
        local res = run({}, { anonymous = true })
        assert.is_nil(res.status)
        assert.is_nil(res.ctx.consumer)
    end)

    it("feeds consumer-prompt through the gateway", function()
        local mock = helpers.mock_upstream()
        finally(helpers.stop_all)
        local gw = helpers.start_gateway({
            node = { plugin_paths = { helpers.ROOT .. "/plugins", helpers.ROOT .. "/examples/plugins" } },
            consumers = config.consumers,
            routes = { { id = "chat", paths = { "/v1/chat/completions" }, upstream = { nodes = { mock.addr } },
                         plugins = { ["key-auth"] = {}, ["consumer-prompt"] = { text = "team {{team}}" } } } },
        })
        local url = gw.url("/v1/chat/completions")
        local body = { messages = { { role = "user", content = "hi" } } }
        assert.equal(401, assert(helpers.http("POST", url, { body = body })).status)
        assert.equal(0, #mock:requests())
        local res = assert(helpers.http("POST", url, { body = body, headers = { authorization = "Bearer alice-key" } }))
        assert.equal(200, res.status)
        local got = mock:last()
        assert.is_nil(got.headers.authorization)
        assert.equal("team payments", cjson.decode(got.body).messages[1].content)
    end)
end)

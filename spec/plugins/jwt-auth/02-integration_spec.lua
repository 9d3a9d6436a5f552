-- jwt-auth through the gateway: tokens made by node's crypto (RS256, ES256 and ES384 from PEM keys and a JWKS,
-- HS256), the consumer and groups from claims, roles, the token never reaching the upstream, refusals in the
-- client's API shape.
local helpers = require("helpers")
local cjson = require("cjson.safe")

local TOOL = helpers.ROOT .. "/spec/support/jwt_tool.js"

describe("jwt-auth through the gateway", function()
    local dir, gw, mock

    local function sign(alg, key, claims, kid)
        local code, out = helpers.exec("node " .. helpers.shell_quote(TOOL) .. " sign " .. alg .. " "
            .. helpers.shell_quote(key) .. " " .. helpers.shell_quote(cjson.encode(claims)) .. (kid and (" " .. kid) or ""))
        assert.equal(0, code, out)
        return out
    end

    local function call(path, token, extra)
        local h = { authorization = token and ("Bearer " .. token) or nil }
        for k, v in pairs(extra or {}) do h[k] = v end
        return assert(helpers.http("POST", gw.url(path), { headers = h,
            body = { model = "m", max_tokens = 10, messages = { { role = "user", content = "hi" } } } }))
    end

    setup(function()
        dir = helpers.tmpdir()
        local code, out = helpers.exec("node " .. helpers.shell_quote(TOOL) .. " keys " .. dir)
        assert.equal(0, code, out)
        mock = helpers.mock_upstream()
        gw = helpers.start_gateway({
            consumers = {
                { name = "alice", groups = { "staff" } },
                { name = "bob", deny = { routes = { "secret" } } },
            },
            consumer_groups = { staff = {}, admins = {} },
            routes = {
                { id = "rs", paths = { "/rs/*" }, upstream = { nodes = { mock.addr } }, plugins = {
                    ["jwt-auth"] = { algorithms = { "RS256", "ES256", "ES384" }, public_key = helpers.read_file(dir .. "/ec384.pub.pem"),
                                     jwks = cjson.decode(helpers.read_file(dir .. "/jwks.json")),
                                     issuer = "https://idp.test/", audience = "sluice", groups_claim = "groups" } } },
                { id = "hs", paths = { "/hs/*" }, upstream = { nodes = { mock.addr } }, plugins = {
                    ["jwt-auth"] = { algorithms = { "HS256" }, secret = "a-shared-secret-of-enough-length",
                                     require_consumer = false } } },
                { id = "secret", paths = { "/secret/*" }, upstream = { nodes = { mock.addr } }, plugins = {
                    ["jwt-auth"] = { algorithms = { "HS256" }, secret = "a-shared-secret-of-enough-length" } } },
            },
        })
    end)

    teardown(helpers.stop_all)

    local function claims(sub, extra)
        local c = { sub = sub, iss = "https://idp.test/", aud = "sluice", exp = os.time() + 600, groups = { "admins", "nope" } }
        for k, v in pairs(extra or {}) do c[k] = v end
        return c
    end

    it("accepts RS256, ES256 (JWKS, chosen by kid) and ES384 (PEM) tokens and hides them from the upstream", function()
        for _, t in ipairs({ sign("RS256", dir .. "/rsa.pem", claims("alice"), "rsa1"),
                             sign("ES256", dir .. "/ec.pem", claims("alice"), "ec1"),
                             sign("ES384", dir .. "/ec384.pem", claims("alice")) }) do
            mock:clear()
            local res = call("/rs/v1/chat/completions", t)
            assert.equal(200, res.status, res.body)
            assert.is_nil(mock:last().headers.authorization)
        end
    end)

    it("refuses a token of another key, an expired one, a wrong issuer or audience, with the reason (401)", function()
        local other = helpers.tmpdir()
        assert.equal(0, (helpers.exec("node " .. helpers.shell_quote(TOOL) .. " keys " .. other)))
        mock:clear()
        local cases = {
            { sign("RS256", other .. "/rsa.pem", claims("alice"), "rsa1"), "invalid signature" },
            { sign("RS256", dir .. "/rsa.pem", claims("alice", { exp = os.time() - 60 }), "rsa1"), "token expired" },
            { sign("RS256", dir .. "/rsa.pem", claims("alice", { iss = "https://evil/" }), "rsa1"), "issuer not accepted" },
            { sign("RS256", dir .. "/rsa.pem", claims("alice", { aud = "other" }), "rsa1"), "audience not accepted" },
            { sign("RS256", dir .. "/rsa.pem", claims("mallory"), "rsa1"), "unknown consumer" },
            { sign("HS256", "a-shared-secret-of-enough-length", claims("alice")), "HS256 is not accepted" },
        }
        for _, c in ipairs(cases) do
            local res = call("/rs/v1/chat/completions", c[1])
            assert.equal(401, res.status)
            assert.equal("invalid_token", res.json.error.code)
            assert.matches(c[2], res.json.error.message, 1, true)
        end
        local res = call("/rs/v1/messages", nil)
        assert.equal(401, res.status)
        assert.same({ type = "error", error = { type = "authentication_error",
                      message = "missing token (authorization: Bearer <JWT>)" } }, res.json)
        assert.equal(0, #mock:requests())
    end)

    it("maps the consumer and its groups (only groups the config defines) from claims", function()
        local gw2 = helpers.start_gateway({
            node = { plugin_paths = { helpers.ROOT .. "/plugins", helpers.ROOT .. "/spec/fixtures/limits_plugins" } },
            consumers = { { name = "alice", groups = { "staff" } } },
            consumer_groups = { staff = {}, admins = {} },
            routes = { { id = "who", paths = { "/who" }, plugins = {
                ["jwt-auth"] = { algorithms = { "HS256" }, secret = "k", groups_claim = "groups", require_consumer = false },
                ["whoami"] = {} } } },
        })
        local res = assert(helpers.http("GET", gw2.url("/who"), { headers = {
            authorization = "Bearer " .. sign("HS256", "k", claims("alice")) } }))
        assert.equal(200, res.status, res.body)
        assert.same({ consumer = "alice", groups = { "staff", "admins" } }, res.json)
        res = assert(helpers.http("GET", gw2.url("/who"), { headers = {
            authorization = "Bearer " .. sign("HS256", "k", claims("carol", { groups = "admins staff other" })) } }))
        assert.same({ consumer = "carol", groups = { "admins", "staff" } }, res.json) -- not in the config: made from claims
        gw2:stop()
    end)

    it("answers 403 when the consumer's roles do not allow the route", function()
        local res = call("/secret/v1/chat/completions", sign("HS256", "a-shared-secret-of-enough-length", claims("bob")))
        assert.equal(403, res.status)
        assert.equal("route_not_allowed", res.json.error.code)
        assert.matches("route secret is denied to consumer bob", res.json.error.message, 1, true)
        res = call("/secret/v1/chat/completions", sign("HS256", "a-shared-secret-of-enough-length", claims("alice")))
        assert.equal(200, res.status)
    end)
end)

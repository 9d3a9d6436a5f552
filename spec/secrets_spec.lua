-- Secrets at rest (sluice.secrets): sealed in the state file with AES-256-GCM, opened at start, never shown in
-- Admin API answers or config errors; keys from the environment or a key file; `sluice secrets rotate`; a state
-- file from before still loads.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
local helpers = require("helpers")
local secrets = require("sluice.secrets")
local cjson = require("cjson.safe")

local KEY1 = string.rep("11", 32)
local KEY2 = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=" -- base64 of 32 bytes

describe("sluice.secrets (unit)", function()
    local kr = { current = { id = "abcd0001", key = string.rep("\1", 32) }, by_id = { abcd0001 = string.rep("\1", 32) } }

    it("parses keys: 64 hex digits, base64, 32 raw bytes; refuses others without echoing them", function()
        assert.equal(32, #assert(secrets.parse_key(KEY1)))
        assert.equal(32, #assert(secrets.parse_key(KEY2 .. "\n")))
        assert.equal(32, #assert(secrets.parse_key(string.rep("\0\255", 16))))
        local k, err = secrets.parse_key("my-secret-passphrase")
        assert.is_nil(k)
        assert.not_matches("passphrase", err)
    end)

    it("seals with a fresh nonce, opens only with the same key and the same place", function()
        local a = assert(secrets.seal(kr, "sluice-state|providers|p|api_key", "sk-1"))
        local b = assert(secrets.seal(kr, "sluice-state|providers|p|api_key", "sk-1"))
        assert.matches("^enc:v1:abcd0001:%x+$", a)
        assert.are_not.equal(a, b)
        assert.equal("sk-1", secrets.open(kr, "sluice-state|providers|p|api_key", a))
        assert.is_nil(secrets.open(kr, "sluice-state|providers|q|api_key", a)) -- moved to another entity
        local other = { current = { id = "abcd0001", key = string.rep("\2", 32) },
                        by_id = { abcd0001 = string.rep("\2", 32) } }
        assert.is_nil(secrets.open(other, "sluice-state|providers|p|api_key", a))
        local tampered = a:sub(1, -3) .. (a:sub(-2) == "00" and "01" or "00")
        assert.is_nil(secrets.open(kr, "sluice-state|providers|p|api_key", tampered))
    end)

    it("finds secret fields by schema: provider credentials and plugin fields marked secret", function()
        require("sluice.config") -- registers the provider schema
        local schema_of = function(name)
            if name == "p" then return { type = "object", properties = { salt = { type = "string", secret = true },
                list = { type = "array", items = { type = "string", secret = true } } } } end
        end
        local found = {}
        secrets.each_secret("routes", { id = "r", plugins = { p = { salt = "s", list = { "a", "b" }, other = "x" } } },
            schema_of, function(_, _, path) found[#found + 1] = path end)
        table.sort(found)
        assert.same({ "plugins.p.list[1]", "plugins.p.list[2]", "plugins.p.salt" }, found)
        local red = secrets.redact("providers", { kind = "openai", api_key = "a", secret_key = "b", region = "x" }, nil)
        assert.same({ kind = "openai", api_key = "***", secret_key = "***", region = "x" }, red)
    end)
end)

describe("secrets at rest (gateway)", function()
    local echo_port

    setup(function()
        local dir = helpers.tmpdir()
        local pf = dir .. "/echo.port"
        local proc = helpers.spawn("node " .. helpers.shell_quote(helpers.ROOT .. "/spec/support/echo_llm.js") .. " "
            .. helpers.shell_quote(pf) .. " >/dev/null 2>&1")
        echo_port = helpers.wait_until(function() return tonumber(helpers.read_file(pf) or "") end, 10, "echo port")
        assert(helpers.wait_port(echo_port, proc, 10))
    end)

    teardown(function()
        helpers.stop_all()
    end)

    local function last_upstream_auth()
        local res = assert(helpers.http("GET", "http://127.0.0.1:" .. echo_port .. "/_requests"))
        local list = cjson.decode(res.body)
        return list[#list].headers.authorization
    end

    local function config(extra)
        local c = { node = { workers = 1 },
                    routes = { { id = "seed", paths = { "/seed" }, upstream = { nodes = { "127.0.0.1:1" } } } } }
        for k, v in pairs(extra or {}) do c.node[k] = v end
        return c
    end

    local SECRET = "sk-live-TOPSECRET-4d1f9a"
    local function put_secrets(gw)
        local res = gw:admin("PUT", "/admin/providers/echo", { kind = "openai-compatible",
            endpoint = "http://127.0.0.1:" .. echo_port, api_key = SECRET })
        assert.equal(201, res.status)
        assert.equal("***", res.json.item.api_key)
        res = gw:admin("PUT", "/admin/providers/bedrock", { kind = "bedrock", region = "eu-west-1",
            access_key = "AKIDEXAMPLE", secret_key = "BEDROCK-SECRET-KEY-77", session_token = "SESSION-TOKEN-88" })
        assert.equal(201, res.status)
        assert.same({ "***", "***" }, { res.json.item.secret_key, res.json.item.session_token })
        res = gw:admin("PUT", "/admin/routes/chat", { paths = { "/v1/*" }, plugins = {
            ["ai-pii"] = { actions = { email = "hash" }, hash_salt = "PII-SALT-SECRET-99" },
            ["ai-proxy"] = { provider = "echo" } } })
        assert.equal(201, res.status)
        assert.equal("***", res.json.item.plugins["ai-pii"].hash_salt)
        -- a consumer's API key (key-auth) is a secret too
        res = gw:admin("PUT", "/admin/consumers/alice", { keys = { "ALICE-CONSUMER-KEY-55" } })
        assert.equal(201, res.status)
        assert.same({ "***" }, res.json.item.keys)
        res = gw:admin("PUT", "/admin/routes/authed", { paths = { "/authed/v1/*" }, plugins = {
            ["key-auth"] = {}, ["ai-proxy"] = { provider = "echo" } } })
        assert.equal(201, res.status)
    end

    local function plain_values()
        return { SECRET, "BEDROCK-SECRET-KEY-77", "SESSION-TOKEN-88", "PII-SALT-SECRET-99", "ALICE-CONSUMER-KEY-55" }
    end

    local function authed_status(gw, key)
        return assert(helpers.http("POST", gw.url("/authed/v1/chat/completions"), { headers = { ["x-api-key"] = key },
            body = { model = "m", messages = { { role = "user", content = "hi" } } } })).status
    end

    it("seals every secret in the state file, answers '***', and opens them after a restart", function()
        local gw = helpers.start_gateway(config(), { env = { SLUICE_MASTER_KEY = KEY1 } })
        put_secrets(gw)
        local state = assert(helpers.read_file(gw.dir .. "/sluice.yaml.state.json"))
        for _, v in ipairs(plain_values()) do assert.not_matches(v, state, 1, true) end
        assert.matches("enc:v1:", state, 1, true)
        assert.equal(200, assert(helpers.http("POST", gw.url("/v1/chat/completions"),
            { body = { model = "m", messages = { { role = "user", content = "hi" } } } })).status)
        assert.equal("Bearer " .. SECRET, last_upstream_auth())
        -- GET then PUT with "***": the stored secret stays
        local got = gw:admin("GET", "/admin/providers/echo")
        assert.equal("***", got.json.item.api_key)
        got.json.item.name = nil
        assert.equal(200, gw:admin("PUT", "/admin/providers/echo", got.json.item).status)
        gw:stop()
        gw = gw:restart({ env = { SLUICE_MASTER_KEY = KEY1 } })
        assert.equal(200, assert(helpers.http("POST", gw.url("/v1/chat/completions"),
            { body = { model = "m", messages = { { role = "user", content = "hi" } } } })).status)
        assert.equal("Bearer " .. SECRET, last_upstream_auth())
        assert.equal(200, authed_status(gw, "ALICE-CONSUMER-KEY-55")) -- the consumer key opened after the restart
        assert.equal(401, authed_status(gw, "not-alice"))
        local logs = gw:log() .. gw:access_log() .. (helpers.read_file(gw.dir .. "/sluice.yaml.state.audit.jsonl") or "")
        for _, v in ipairs(plain_values()) do assert.not_matches(v, logs, 1, true) end
        gw:stop()
        -- a wrong key: no start, a clear error naming the key id, no secret in it
        local dir = gw.dir
        local code, out = helpers.exec("SLUICE_MASTER_KEY=" .. string.rep("22", 32) .. " SLUICE_HOME="
            .. helpers.shell_quote(helpers.ROOT) .. " " .. helpers.shell_quote(helpers.BIN) .. " -t -c "
            .. helpers.shell_quote(dir .. "/sluice.yaml"))
        assert.are_not.equal(0, code)
        assert.matches("sealed with key %x+, which is not configured", out)
        for _, v in ipairs(plain_values()) do assert.not_matches(v, out, 1, true) end
    end)

    it("takes the key from node.secrets.key_file; rotates to a new key with `sluice secrets rotate`", function()
        local kdir = helpers.tmpdir()
        helpers.write_file(kdir .. "/old.key", KEY1 .. "\n")
        helpers.write_file(kdir .. "/new.key", KEY2 .. "\n")
        local gw = helpers.start_gateway(config({ secrets = { key_file = kdir .. "/old.key" } }))
        put_secrets(gw)
        gw:stop()
        local sp = gw.dir .. "/sluice.yaml.state.json"
        local before = helpers.read_file(sp)
        local function sluice(args)
            return helpers.exec("SLUICE_HOME=" .. helpers.shell_quote(helpers.ROOT) .. " " .. helpers.shell_quote(helpers.BIN)
                .. " -c " .. helpers.shell_quote(gw.dir .. "/sluice.yaml") .. " " .. args)
        end
        local code, out = sluice("secrets rotate --new-key-file " .. helpers.shell_quote(kdir .. "/new.key"))
        assert.equal(0, code, out)
        assert.matches("5 secret value%(s%) sealed with key " .. secrets.key_id(assert(secrets.parse_key(KEY2))), out)
        local after = helpers.read_file(sp)
        assert.are_not.equal(before, after)
        for _, v in ipairs(plain_values()) do assert.not_matches(v, after, 1, true) end
        -- the old key alone no longer opens it; the new one does
        code = sluice("-t")
        assert.are_not.equal(0, code)
        local c = helpers.read_file(gw.dir .. "/sluice.yaml"):gsub("old%.key", "new.key")
        helpers.write_file(gw.dir .. "/sluice.yaml", c)
        code, out = sluice("-t")
        assert.equal(0, code, out)
        gw = gw:restart()
        assert.equal(200, assert(helpers.http("POST", gw.url("/v1/chat/completions"),
            { body = { model = "m", messages = { { role = "user", content = "hi" } } } })).status)
        assert.equal("Bearer " .. SECRET, last_upstream_auth())
        code, out = sluice("secrets rotate --bogus")
        assert.equal(2, code)
        assert.matches("usage", out)
    end)

    it("loads a state file written before (secrets in the clear) and seals it once a key is set", function()
        local dir = helpers.tmpdir()
        helpers.write_file(dir .. "/sluice.yaml.state.json", cjson.encode({ version = 1, providers = {
            echo = { kind = "openai-compatible", endpoint = "http://127.0.0.1:" .. echo_port, api_key = "sk-legacy-PLAIN" } },
            routes = { chat = { id = "chat", paths = { "/v1/*" }, plugins = { ["ai-proxy"] = { provider = "echo" } } } } }))
        local gw = helpers.start_gateway(config(), { dir = dir })
        assert.equal(200, assert(helpers.http("POST", gw.url("/v1/chat/completions"),
            { body = { model = "m", messages = { { role = "user", content = "hi" } } } })).status)
        assert.equal("Bearer sk-legacy-PLAIN", last_upstream_auth())
        assert.matches("stored in the clear", gw:log())
        gw:stop()
        gw = gw:restart({ env = { SLUICE_MASTER_KEY = KEY1 } })
        assert.not_matches("sk-legacy-PLAIN", helpers.read_file(dir .. "/sluice.yaml.state.json"), 1, true)
        assert.equal(200, assert(helpers.http("POST", gw.url("/v1/chat/completions"),
            { body = { model = "m", messages = { { role = "user", content = "hi" } } } })).status)
        assert.equal("Bearer sk-legacy-PLAIN", last_upstream_auth())
    end)

    it("a legacy state file with plain consumer keys, started with a key: keys hashed, everything sealed", function()
        local dir = helpers.tmpdir()
        helpers.write_file(dir .. "/sluice.yaml.state.json", cjson.encode({ version = 1, providers = {
            echo = { kind = "openai-compatible", endpoint = "http://127.0.0.1:" .. echo_port, api_key = "sk-legacy-PLAIN2" } },
            consumers = { bob = { name = "bob", keys = { "BOB-LEGACY-KEY-42" } } },
            routes = { authed = { id = "authed", paths = { "/authed/v1/*" }, plugins = { ["key-auth"] = {},
                ["ai-proxy"] = { provider = "echo" } } } } }))
        local gw = helpers.start_gateway(config(), { dir = dir, env = { SLUICE_MASTER_KEY = KEY1 } })
        local state = helpers.read_file(dir .. "/sluice.yaml.state.json")
        assert.not_matches("sk-legacy-PLAIN2", state, 1, true)
        assert.not_matches("BOB-LEGACY-KEY-42", state, 1, true)
        assert.not_matches("sha256:", state, 1, true) -- the digest is sealed as well
        assert.equal(200, authed_status(gw, "BOB-LEGACY-KEY-42"))
        gw:stop()
        gw = gw:restart({ env = { SLUICE_MASTER_KEY = KEY1 } })
        assert.equal(200, authed_status(gw, "BOB-LEGACY-KEY-42"))
        assert.equal(401, authed_status(gw, "not-bob"))
        assert.equal("Bearer sk-legacy-PLAIN2", last_upstream_auth())
    end)

    it("never shows a secret in a config error", function()
        local gw = helpers.start_gateway(config(), { env = { SLUICE_MASTER_KEY = KEY1 } })
        local res = gw:admin("PUT", "/admin/providers/bad", { kind = "openai", api_key = "sk-SHOWN-NOT\r\nx: y" })
        assert.equal(400, res.status)
        assert.not_matches("SHOWN", res.body)
        assert.matches("a secret value, not shown", res.body)
        local dir = helpers.tmpdir()
        helpers.write_file(dir .. "/c.yaml", 'node: {listen: ["127.0.0.1:1"]}\nproviders: {p: {kind: openai, api_key: 123456789}}\n')
        local code, out = helpers.exec("SLUICE_HOME=" .. helpers.shell_quote(helpers.ROOT) .. " "
            .. helpers.shell_quote(helpers.BIN) .. " -t -c " .. helpers.shell_quote(dir .. "/c.yaml"))
        assert.are_not.equal(0, code)
        assert.matches("providers.p.api_key", out)
        assert.not_matches("123456789", out)
    end)
end)

-- Config written the way people write YAML: statuses as numbers (`fallback_on: [error, timeout, 429, 5xx]`),
-- durations and sizes with units, yes/no/on/off booleans. Loaded by the real binary (`-t` and a start), then
-- driven through the gateway: each spelling has to behave, not only parse. Wrong spellings are refused with
-- FILE:LINE and a message that says what is accepted; the Admin API takes the same spellings.
local helpers = require("helpers")

-- Line numbers of BAD are part of the expectations.
local NATURAL = [[
node:
  listen: ["127.0.0.1:${SLUICE_PORT}"]
  workers: 2
  admin: {listen: "127.0.0.1:${SLUICE_ADMIN_PORT}", key: "${SLUICE_ADMIN_KEY}"}
  plugin_paths: ["${SLUICE_HOME}/plugins"]
  shared_dicts: {sluice: 1m, extra: 256k}
  drain_timeout: 2s
  limits:
    max_body_size: 1k
    body_buffer_size: 1k
    header_timeout: 5s
    keepalive_timeout: 1m
    max_connections: "1000"
providers:
  busy: {kind: openai, endpoint: "http://127.0.0.1:${SPEC_MOCK}/s/429/v1", api_key: k,
         timeout: {connect: 2s, read: 30s}, proxy: off}
  busy2: {kind: openai, endpoint: "http://127.0.0.1:${SPEC_MOCK}/s/429/v1", api_key: k}
  fine: {kind: openai, endpoint: "http://127.0.0.1:${SPEC_MOCK}", api_key: k}
upstreams:
  echo:
    nodes: ["${SPEC_UPSTREAM}"]
    timeout: {connect: 500ms, send: 5s, read: 700ms}
    keepalive: {size: 8, idle_timeout: 1m30s}
consumers:
  - {name: alice, keys: [alice-key-1]}
routes:
  - id: multi
    paths: ["/multi/*"]
    plugins:
      ai-proxy-multi:
        strategy: priority
        targets: [{provider: busy, priority: 1}, {provider: fine}]
        fallback_on: [error, timeout, 429, 5xx]
        retries: 1
        backoff: {base: 10ms, max: 50ms}
        breaker: {failures: 1000, window: 10s, open_for: 30s}
        qos: {queue_timeout: 500ms, shed_status: "503"}
        response_headers: yes
  - id: nofallback
    paths: ["/nofallback/*"]
    plugins:
      ai-proxy-multi:
        strategy: priority
        targets: [{provider: busy2, priority: 1}, {provider: fine}]
        fallback_on: [error, timeout]
        breaker: {failures: 1000}
  - id: strip
    paths: ["/strip/*"]
    strip_prefix: yes
    upstream: echo
  - id: keep
    paths: ["/keep/*"]
    strip_prefix: off
    upstream: echo
  - id: auth
    paths: ["/auth/*"]
    upstream: echo
    plugins:
      key-auth: {anonymous: no, hide_credentials: on}
]]

local BAD = [[
node:
  shared_dicts: {sluice: 1k, other: 8 megs}
  drain_timeout: 5 minutes
  limits: {max_body_size: -1, header_timeout: 10x}
providers:
  p: {kind: openai, api_key: 12345678}
upstreams:
  u: {nodes: ["127.0.0.1:1"], timeout: {read: 0ms}}
routes:
  - id: r
    paths: ["/r"]
    strip_prefix: maybe
  - id: r2
    paths: ["/r2"]
    plugins:
      ai-proxy-multi:
        targets: [{provider: p}]
        fallback_on: [error, 42, 6xx]
        qos: {shed_status: 502}
]]

describe("config spellings", function()
    local mock_proc, mock_port, up, gw, dir

    local function sluice_t(file)
        return helpers.exec(("env SLUICE_HOME=%s SLUICE_PORT=1 SLUICE_ADMIN_PORT=2 SLUICE_ADMIN_KEY=key-key-key "
            .. "SPEC_MOCK=%d SPEC_UPSTREAM=%s %s -t -c %s"):format(helpers.shell_quote(helpers.ROOT), mock_port,
            up.addr, helpers.shell_quote(helpers.BIN), helpers.shell_quote(file)), 15)
    end

    setup(function()
        dir = helpers.tmpdir()
        mock_port = helpers.free_port()
        mock_proc = helpers.spawn("node " .. helpers.shell_quote(helpers.ROOT .. "/tests/mock/providers.js") .. " "
            .. mock_port .. " >" .. helpers.shell_quote(dir .. "/mock.log") .. " 2>&1")
        assert(helpers.wait_port(mock_port, mock_proc, 10))
        up = helpers.mock_upstream({ paths = { ["/keep/slow"] = { delay = 3, body = "late" },
                                               ["/slow"] = { delay = 3, body = "late" } } })
        gw = helpers.start_gateway(NATURAL, { env = { SPEC_MOCK = mock_port, SPEC_UPSTREAM = up.addr } })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    local function chat(path)
        return assert(helpers.http("POST", gw.url(path), { timeout = 10,
            body = { model = "m", messages = { { role = "user", content = "hi" } } } }))
    end

    it("sluice -t accepts the natural spellings", function()
        local code, out = sluice_t(gw.file)
        assert.equal(0, code, out)
    end)

    it("falls back on a 429 listed as a number in fallback_on", function()
        local res = chat("/multi/v1/chat/completions")
        assert.equal(200, res.status, res.body)
        assert.equal("fine", res.headers["x-sluice-route-target"])
        -- without 429 in the list the provider's 429 goes to the client
        res = chat("/nofallback/v1/chat/completions")
        assert.equal(429, res.status, res.body)
    end)

    it("applies yes/no/on/off booleans", function()
        local res = assert(helpers.http("GET", gw.url("/strip/a/b")))
        assert.equal(200, res.status)
        assert.equal("/a/b", res.json.path)
        res = assert(helpers.http("GET", gw.url("/keep/a/b")))
        assert.equal("/keep/a/b", res.json.path)
        -- anonymous: no -> a request without a key is refused; hide_credentials: on -> the key is not forwarded
        assert.equal(401, assert(helpers.http("GET", gw.url("/auth/x"))).status)
        res = assert(helpers.http("GET", gw.url("/auth/x"), { headers = { ["x-api-key"] = "alice-key-1" } }))
        assert.equal(200, res.status)
        assert.is_nil(res.json.headers["x-api-key"])
    end)

    it("applies sizes and durations with units", function()
        -- max_body_size: 1k
        local res = assert(helpers.http("POST", gw.url("/keep/up"), { body = string.rep("x", 900) }))
        assert.equal(200, res.status)
        res = assert(helpers.http("POST", gw.url("/keep/up"), { body = string.rep("x", 2000) }))
        assert.equal(413, res.status)
        -- upstream read timeout 700ms against an upstream that answers after 3 s
        res = assert(helpers.http("GET", gw.url("/keep/slow"), { timeout = 10 }))
        assert.equal(504, res.status)
        assert.matches("timed out", res.body, 1, true)
    end)

    it("refuses wrong spellings with FILE:LINE and what would be accepted", function()
        local file = helpers.write_file(dir .. "/bad.yaml", BAD)
        local code, out = sluice_t(file)
        assert.is_not.equal(0, code)
        assert.is_nil(out:find("12345678", 1, true)) -- a secret's value is never shown
        for _, want in ipairs({
            ":2: node.shared_dicts.sluice: must be >= 65536 bytes, got 1024 bytes",
            ':2: node.shared_dicts.other: expected a size (bytes, or a number with k, m or g: 64k, 8m, 1g), got "8 megs"',
            ':3: node.drain_timeout: expected a duration (seconds, or a number with ms, s, m, h or d: 500ms, 5s, 1m30s), got "5 minutes"',
            ":4: node.limits.max_body_size: expected a size",
            ':4: node.limits.header_timeout: expected a duration (seconds, or a number with ms, s, m, h or d: 500ms, 5s, 1m30s), got "10x"',
            -- api_key is a secret: the hint, never the value
            ":6: providers.p.api_key: expected string, got integer (YAML reads an unquoted number as a number: put it in quotes)",
            ":8: upstreams.u.timeout.read: must be >= 0.001 s, got 0 s",
            ':12: routes[1].strip_prefix: expected a boolean (true/false, yes/no, on/off), got "maybe"',
            ":18: routes[2].plugins.ai-proxy-multi.fallback_on[2]: does not match any allowed form",
            ":18: routes[2].plugins.ai-proxy-multi.fallback_on[3]: does not match any allowed form",
            "fallback_on[2]: does not match any allowed form: (1) expected one of: error, timeout; got 42; (2) "
                .. "expected an HTTP status (100..599) or a class (1xx..5xx), got 42",
            ":19: routes[2].plugins.ai-proxy-multi.qos.shed_status: expected one of: 429, 503; got 502",
        }) do
            assert.matches((want:sub(1, 1) == ":" and file or "") .. want, out, 1, true)
        end
    end)

    it("takes the same spellings through the Admin API, keeping what was written", function()
        local res = assert(gw:admin("PUT", "/admin/routes/api", { paths = { "/api/*" }, strip_prefix = "yes",
            upstream = { nodes = { up.addr }, timeout = { read = "700ms", connect = "1s" },
                         keepalive = { idle_timeout = "2m" } } }))
        assert.equal(201, res.status, res.body)
        helpers.wait_until(function()
            local r = helpers.http("GET", gw.url("/api/slow"), { timeout = 10 })
            return r and r.status == 504
        end, 10, "the route with a 700ms read timeout")
        assert.equal("/x", assert(helpers.http("GET", gw.url("/api/x"))).json.path)
        local got = assert(gw:admin("GET", "/admin/routes/api")).json.item
        assert.equal("700ms", got.upstream.timeout.read)
        assert.equal("yes", got.strip_prefix)

        res = assert(gw:admin("PUT", "/admin/routes/bad", { paths = { "/bad" }, strip_prefix = "sometimes" }))
        assert.equal(400, res.status, res.body)
        assert.equal("strip_prefix", res.json.error.details[1].path)
        assert.equal('expected a boolean (true/false, yes/no, on/off), got "sometimes"', res.json.error.details[1].message)
        res = assert(gw:admin("PUT", "/admin/routes/bad", { paths = { "/bad" },
            upstream = { nodes = { up.addr }, timeout = { read = "soon" } } }))
        assert.equal(400, res.status, res.body)
        assert.equal("upstream.timeout.read", res.json.error.details[1].path)
        assert.matches('^expected a duration .*got "soon"$', res.json.error.details[1].message)
        assert.equal(404, assert(gw:admin("GET", "/admin/routes/bad")).status)
    end)
end)

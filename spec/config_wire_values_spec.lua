-- Config values that end up on the wire (Host header, node hosts, provider endpoints, extra headers, keys)
-- cannot carry CR, LF, NUL or other control characters: the schema formats (host, header_name, header_value,
-- url) refuse them at -t / start with file:line, and through the Admin API with a 400 naming the path, before
-- anything can reach an upstream.
local helpers = require("helpers")

local function sluice(args)
    return helpers.exec(("env SLUICE_HOME=%s %s %s"):format(helpers.shell_quote(helpers.ROOT),
        helpers.shell_quote(helpers.BIN), args), 15)
end

describe("header and host values in config", function()
    local mock, gw

    setup(function()
        mock = helpers.mock_upstream()
        gw = helpers.start_gateway({
            node = { workers = 1 },
            routes = { { id = "ok", paths = { "/ok/*" }, upstream = { nodes = { mock.addr }, pass_host = "rewrite",
                                                                    host = "backend.example:8080" } } },
        })
    end)

    teardown(function()
        helpers.stop_all()
    end)

    it("the repro from the issue: a rewrite host with CR LF is a 400 naming upstream.host, nothing is sent", function()
        local res = assert(gw:admin("PUT", "/admin/routes/inj", { paths = { "/inj/*" },
            upstream = { nodes = { mock.addr }, pass_host = "rewrite", host = "evil\r\nX-Injected: 1" } }))
        assert.equal(400, res.status, res.body)
        assert.equal("upstream.host", res.json.error.details[1].path)
        assert.matches("host name", res.json.error.details[1].message, 1, true)
        mock:clear()
        assert.equal(404, assert(helpers.http("GET", gw.url("/inj/x"))).status)
        assert.equal(0, #mock:requests())
        -- a clean host still works and is what the upstream sees
        assert.equal(200, assert(helpers.http("GET", gw.url("/ok/x"))).status)
        assert.equal("backend.example:8080", mock:last().headers.host)
    end)

    it("refuses control characters in every wire field of upstreams and providers (400 with the path)", function()
        local cases = {
            { "/admin/upstreams/u1", { nodes = { mock.addr }, pass_host = "rewrite", host = "a\0b" }, "host" },
            { "/admin/upstreams/u2", { nodes = { mock.addr }, pass_host = "rewrite", host = "a b" }, "host" },
            { "/admin/upstreams/u3", { nodes = { mock.addr }, scheme = "https", tls = { sni = "x\r\ny" } }, "tls.sni" },
            { "/admin/upstreams/u4", { nodes = { "evil\r\nX: 1:80" } }, "nodes[1]" },
            { "/admin/providers/p1", { kind = "openai", endpoint = "http://evil\r\nX-Injected: 1/" }, "endpoint" },
            { "/admin/providers/p2", { kind = "openai", endpoint = "http://127.0.0.1:1/v1 HTTP/1.1" }, "endpoint" },
            { "/admin/providers/p3", { kind = "openai", api_key = "sk\r\nX-Injected: 1" }, "api_key" },
            { "/admin/providers/p4", { kind = "openai", options = { headers = { ["X-Extra"] = "v\r\nX-Injected: 1" } } },
              "options.headers.X-Extra" },
            { "/admin/providers/p5", { kind = "openai", options = { headers = { ["X-Injected: 1\r\nX"] = "v" } } },
              "options.headers.X-Injected: 1\r\nX" },
            { "/admin/providers/p6", { kind = "anthropic", options = { beta = { "a", "b\nc" } } }, "options.beta[2]" },
            { "/admin/providers/p7", { kind = "bedrock", region = "us-east-1.evil.com/x" }, "region" },
            { "/admin/providers/p8", { kind = "anthropic", api_version = "2023\r\nX: 1" }, "api_version" },
            { "/admin/routes/r1", { paths = { "/r1" }, hosts = { "a\r\nb" } }, "hosts[1]" },
            { "/admin/routes/r2", { paths = { "/r2" }, plugins = { ["ai-proxy-multi"] = {
                targets = { { provider = "p0", name = "t\r\nX-Injected: 1" } } } } }, "plugins.ai-proxy-multi.targets[1].name" },
        }
        assert.equal(201, assert(gw:admin("PUT", "/admin/providers/p0", { kind = "mock" })).status)
        for _, c in ipairs(cases) do
            local res = assert(gw:admin("PUT", c[1], c[2]))
            assert.equal(400, res.status, c[1] .. ": " .. res.body)
            local paths = {}
            for i, d in ipairs(res.json.error.details) do paths[i] = d.path end
            assert.is_truthy(table.concat(paths, "|"):find(c[3], 1, true), c[1] .. ": " .. res.body)
        end
        -- and the same fields without control characters are accepted
        for _, c in ipairs({
            { "/admin/providers/p4", { kind = "openai", options = { headers = { ["X-Extra"] = "v\tw" } } } },
            { "/admin/providers/p6", { kind = "anthropic", options = { beta = { "a", "b" } } } },
            { "/admin/providers/p1", { kind = "openai", endpoint = "http://[::1]:8080/v1" } },
            { "/admin/upstreams/u1", { nodes = { mock.addr }, pass_host = "rewrite", host = "[::1]:8443" } },
        }) do
            local res = assert(gw:admin("PUT", c[1], c[2]))
            assert.equal(201, res.status, c[1] .. ": " .. res.body)
        end
    end)

    it("sluice -t refuses them with file:line and the YAML path", function()
        local dir = helpers.tmpdir()
        local file = helpers.write_file(dir .. "/inj.yaml", table.concat({
            'node: {plugin_paths: ["${SLUICE_HOME}/plugins"]}',
            'upstreams:',
            '  u: {nodes: ["127.0.0.1:1"], pass_host: rewrite, host: "evil\\r\\nX-Injected: 1"}',
            'providers:',
            '  p: {kind: openai, options: {headers: {X-A: "a\\nb"}}}',
            "" }, "\n"))
        local code, out = sluice("-t -c " .. file)
        assert.is_not.equal(0, code)
        assert.matches(file .. ":3: upstreams.u.host: must be a host name", out, 1, true)
        assert.matches(file .. ":5: providers.p.options.headers.X-A: must be a header value", out, 1, true)
    end)
end)

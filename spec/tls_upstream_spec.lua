-- HTTPS upstreams end to end: the gateway verifies the upstream's certificate (test CA, SNI, host name) and
-- rejects an unknown CA or a name mismatch with a 502 and a logged TLS reason.
local helpers = require("helpers")

local q = helpers.shell_quote

-- A node HTTPS server answering {"tls":true,"servername":...} for every request.
local function https_upstream(dir, name)
    local port = helpers.free_port()
    local js = helpers.write_file(dir .. "/https_up.js", ([[
const https = require("https"), fs = require("fs");
https.createServer({ key: fs.readFileSync(%q), cert: fs.readFileSync(%q) }, (req, res) => {
  res.setHeader("content-type", "application/json");
  res.end(JSON.stringify({ tls: true, servername: req.socket.servername || null, path: req.url }));
}).listen(%d, "127.0.0.1");
]]):format(dir .. "/" .. name .. ".key", dir .. "/" .. name .. ".crt", port))
    local p = helpers.spawn("node " .. q(js) .. " >/dev/null 2>&1")
    assert(helpers.wait_port(port, p, 10))
    return port
end

describe("HTTPS upstream", function()
    local dir, port

    setup(function()
        dir = helpers.tmpdir()
        local code, out = helpers.exec("sh " .. q(helpers.ROOT .. "/spec/support/certs.sh") .. " " .. q(dir) .. " up.test", 30)
        assert(code == 0, out)
        port = https_upstream(dir, "up.test")
    end)

    teardown(function()
        helpers.stop_all()
    end)

    local function gateway(tls)
        return helpers.start_gateway({ routes = { { id = "r", paths = { "/*" }, upstream = {
            nodes = { "127.0.0.1:" .. port }, scheme = "https", pass_host = "rewrite", host = "up.test", tls = tls } } } })
    end

    it("verifies the upstream against the configured CA and sends SNI", function()
        local gw = gateway({ ca_file = dir .. "/ca.crt" })
        local res = helpers.http("GET", gw.url("/x"))
        assert.equal(200, res.status, res.body)
        assert.equal("up.test", res.json.servername)
        gw:stop()
    end)

    it("rejects an unknown CA with a 502 and logs why", function()
        local gw = gateway({ ca_file = dir .. "/rogue.crt" })
        local res = helpers.http("GET", gw.url("/x"))
        assert.equal(502, res.status)
        helpers.wait_until(function() return gw:log():find("not correctly signed by the trusted CA", 1, true) end, 5)
        gw:stop()
    end)

    it("rejects a host name the certificate does not carry", function()
        local gw = gateway({ ca_file = dir .. "/ca.crt", sni = "other.test" })
        local res = helpers.http("GET", gw.url("/x"))
        assert.equal(502, res.status)
        helpers.wait_until(function() return gw:log():find("does not match with the expected CN", 1, true) end, 5)
        gw:stop()
    end)

    it("accepts any certificate with verification off", function()
        local gw = gateway({ verify = false })
        assert.equal(200, helpers.http("GET", gw.url("/x")).status)
        gw:stop()
    end)
end)

-- The configuration shipped in conf/ must load and serve: `bash scripts/run.sh` starts exactly this.
local helpers = require("helpers")

describe("conf/sluice.yaml", function()
    teardown(function()
        helpers.stop_all()
    end)

    it("passes sluice -t", function()
        local code, out = helpers.exec("SLUICE_ADMIN_KEY=spec-admin-key " .. helpers.BIN .. " -t -c "
            .. helpers.ROOT .. "/conf/sluice.yaml", 10)
        assert.equal(0, code, out)
    end)

    it("answers chat completions from the built-in mock provider", function()
        local text = helpers.read_file(helpers.ROOT .. "/conf/sluice.yaml")
        -- same file, on free ports
        text = text:gsub('listen: %["127.0.0.1:8080"%]', 'listen: ["127.0.0.1:${SLUICE_PORT}"]')
                   :gsub('listen: "127.0.0.1:9180"', 'listen: "127.0.0.1:${SLUICE_ADMIN_PORT}"')
                   :gsub('key: "%${SLUICE_ADMIN_KEY}"', 'key: "${SLUICE_ADMIN_KEY}"')
                   :gsub('plugin_paths: %["plugins"%]', 'plugin_paths: ["' .. helpers.ROOT .. '/plugins"]')
                   :gsub('path: "stdout"', 'path: "off"')
        local gw = helpers.start_gateway(text)
        local res = helpers.http("POST", gw.url("/v1/chat/completions"),
            { body = { model = "demo", messages = { { role = "user", content = "hi" } } } })
        assert.equal(200, res.status, res.body)
        assert.equal("assistant", res.json.choices[1].message.role)
        assert.is_true(res.json.usage.total_tokens > 0)
        local a = helpers.http("POST", gw.url("/v1/messages"),
            { body = { model = "demo", max_tokens = 20, messages = { { role = "user", content = "hi" } } } })
        assert.equal(200, a.status, a.body)
        assert.equal("message", a.json.type)
    end)
end)

-- scripts/new-plugin.sh: the scaffolded plugin loads and its generated specs pass as generated, out of the tree and
-- with the documented default (inside the repo).
local helpers = require("helpers")

local SCRIPT = helpers.ROOT .. "/scripts/new-plugin.sh"

describe("scripts/new-plugin.sh", function()
    teardown(function()
        helpers.stop_all()
    end)

    it("writes a plugin and specs that pass as generated", function()
        local dir = helpers.tmpdir()
        local code, out = helpers.exec(("bash %s my-plugin %s/plugins %s/spec"):format(
            helpers.shell_quote(SCRIPT), dir, dir))
        assert.equal(0, code, out)
        for _, f in ipairs({ "/plugins/my-plugin.lua", "/spec/my-plugin/00-config_spec.lua",
                             "/spec/my-plugin/01-unit_spec.lua", "/spec/my-plugin/02-integration_spec.lua" }) do
            assert.is_string(helpers.read_file(dir .. f), f)
        end
        code, out = helpers.exec(("cd %s && luajit /usr/bin/busted -o TAP %s/spec"):format(
            helpers.shell_quote(helpers.ROOT), dir), 120)
        assert.equal(0, code, out)
        assert.matches("ok 8 ", out, 1, true)
        assert.not_matches("not ok", out, 1, true)
    end)

    it("writes into the repo by default (plugins/, spec/plugins/), and those specs pass as generated", function()
        -- the documented default: `scripts/new-plugin.sh NAME` from the repo root
        local name = "scaffold-default-" .. os.time() .. "-" .. math.random(1000, 9999)
        local plugin_file = helpers.ROOT .. "/plugins/" .. name .. ".lua"
        local spec_dir = helpers.ROOT .. "/spec/plugins/" .. name
        assert.is_nil(helpers.read_file(plugin_file))
        finally(function()
            os.remove(plugin_file)
            os.execute("rm -rf " .. helpers.shell_quote(spec_dir))
        end)
        local code, out = helpers.exec(("cd %s && bash scripts/new-plugin.sh %s"):format(
            helpers.shell_quote(helpers.ROOT), name))
        assert.equal(0, code, out)
        assert.is_string(helpers.read_file(plugin_file))
        code, out = helpers.exec(("cd %s && luajit /usr/bin/busted -o TAP spec/plugins/%s"):format(
            helpers.shell_quote(helpers.ROOT), name), 120)
        assert.equal(0, code, out)
        assert.matches("ok 8 ", out, 1, true)
        assert.not_matches("not ok", out, 1, true)
    end)

    it("refuses bad names and existing files", function()
        local dir = helpers.tmpdir()
        local code = helpers.exec(("bash %s 'Bad Name' %s %s"):format(helpers.shell_quote(SCRIPT), dir, dir))
        assert.equal(2, code)
        assert.equal(0, (helpers.exec(("bash %s twice %s %s"):format(helpers.shell_quote(SCRIPT), dir, dir))))
        local out
        code, out = helpers.exec(("bash %s twice %s %s"):format(helpers.shell_quote(SCRIPT), dir, dir))
        assert.equal(1, code)
        assert.matches("exists; not overwriting", out, 1, true)
    end)
end)

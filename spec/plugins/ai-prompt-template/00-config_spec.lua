-- ai-prompt-template: config validation (schema + check), errors carry the path of the bad field.
local unit = require("unit_helpers")

local function tpl(name, content, variables)
    return { name = name, template = { messages = { { role = "user", content = content } } }, variables = variables }
end

describe("ai-prompt-template config", function()
    local plugin = unit.load_plugin("ai-prompt-template")

    it("has the plugin shape and runs in rewrite at priority 1071 (before the decorator)", function()
        assert.equal("ai-prompt-template", plugin.name)
        assert.equal(1071, plugin.priority)
        assert.is_function(plugin.rewrite)
        assert.is_true(plugin.priority > unit.load_plugin("ai-prompt-decorator").priority)
    end)

    it("accepts templates and fills defaults", function()
        local conf = assert(unit.validate(plugin, { templates = { tpl("a", "say {{x}}") } }))
        assert.is_true(conf.allow_untemplated_requests)
        assert.equal(65536, conf.max_variable_length)
        assert.is_table(conf.passthrough_fields)
        assert(unit.validate(plugin, { templates = { tpl("b.c-1", "{{ x }} {{y}}",
            { x = { default = "1" }, y = { enum = { "a", "b" }, max_length = 3, pattern = "^%a$" } }) } }))
    end)

    it("requires at least one template", function()
        local _, _, path = unit.validate(plugin, {})
        assert.equal("templates", path)
        _, _, path = unit.validate(plugin, { templates = {} })
        assert.equal("templates", path)
    end)

    it("rejects bad names, missing template bodies and unknown fields with their path", function()
        local _, _, path = unit.validate(plugin, { templates = { tpl("has space", "x") } })
        assert.equal("templates[1].name", path)
        _, _, path = unit.validate(plugin, { templates = { { name = "a" } } })
        assert.equal("templates[1].template", path)
        _, _, path = unit.validate(plugin, { templates = { { name = "a", template = "a string" } } })
        assert.equal("templates[1].template", path)
        _, _, path = unit.validate(plugin, { templates = { tpl("a", "x") }, allow_untemplated = false })
        assert.equal("allow_untemplated", path)
        _, _, path = unit.validate(plugin, { templates = { tpl("a", "{{x}}", { x = { dflt = "1" } }) } })
        assert.equal("templates[1].variables.x.dflt", path)
        _, _, path = unit.validate(plugin, { templates = { tpl("a", "{{x}}", { x = { default = { 1 } } }) } })
        assert.equal("templates[1].variables.x.default", path)
    end)

    it("rejects duplicate template names", function()
        local conf, errs = unit.validate(plugin, { templates = { tpl("a", "x"), tpl("a", "y") } })
        assert.is_nil(conf)
        assert.matches('templates[2].name: duplicate template name "a"', errs[1].message, 1, true)
    end)

    it("rejects a placeholder that the declared variables do not list", function()
        local conf, errs = unit.validate(plugin, { templates = { tpl("a", "{{x}} {{y}}", { x = {} }) } })
        assert.is_nil(conf)
        assert.matches("templates[1].variables: placeholder {{y}} is used but not declared", errs[1].message, 1, true)
    end)

    it("rejects an invalid Lua pattern", function()
        local conf, errs = unit.validate(plugin, { templates = { tpl("a", "{{x}}", { x = { pattern = "[%" } }) } })
        assert.is_nil(conf)
        assert.matches("templates[1].variables.x.pattern", errs[1].message, 1, true)
    end)
end)

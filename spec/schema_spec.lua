-- Specs for lua/sluice/schema.lua (self-contained: run `luajit /usr/bin/busted spec/schema_spec.lua`).
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
local schema = require("sluice.schema")
local cjson = require("cjson")

local function errs_of(s, v)
    local ok, errs = schema.validate(s, v)
    assert.is_nil(ok)
    return errs
end

local function msg(s, v)
    return schema.format_errors(errs_of(s, v))
end

describe("schema.validate", function()
    it("checks every type name", function()
        assert.is_true(schema.validate({ type = "string" }, "x"))
        assert.is_true(schema.validate({ type = "number" }, 1.5))
        assert.is_true(schema.validate({ type = "integer" }, 3))
        assert.is_true(schema.validate({ type = "boolean" }, false))
        assert.is_true(schema.validate({ type = "null" }, cjson.null))
        assert.is_true(schema.validate({ type = "array" }, { 1, 2 }))
        assert.is_true(schema.validate({ type = "object" }, { a = 1 }))
        assert.equal("(root): expected integer, got number", msg({ type = "integer" }, 1.5))
        assert.equal("(root): expected string, got integer 1 (YAML reads an unquoted number as a number: put it in quotes)",
            msg({ type = "string" }, 1))
        assert.equal("(root): expected object, got array", msg({ type = "object" }, { 1 }))
        assert.equal("(root): expected array, got object", msg({ type = "array" }, { a = 1 }))
        assert.equal("(root): expected integer, got number", msg({ type = "integer" }, math.huge))
    end)

    it("accepts a type list", function()
        local s = { type = { "string", "integer" } }
        assert.is_true(schema.validate(s, "a"))
        assert.is_true(schema.validate(s, 2))
        assert.equal("(root): expected string or integer, got boolean", msg(s, true))
    end)

    it("treats an empty table as an empty object and an empty array", function()
        assert.is_true(schema.validate({ type = "object" }, {}))
        assert.is_true(schema.validate({ type = "array" }, {}))
    end)

    it("reports nested paths with indexes", function()
        local s = { type = "object", properties = { plugins = { type = "object", properties = { x = {
            type = "object", properties = { targets = { type = "array", items = {
                type = "object", properties = { weight = { type = "integer" } } } } } } } } } }
        local errs = errs_of(s, { plugins = { x = { targets = { { weight = 1 }, { weight = "nine" } } } } })
        assert.same({ { path = "plugins.x.targets[2].weight", message = "expected integer, got string" } }, errs)
    end)

    it("handles required, additionalProperties and patternProperties", function()
        local s = { type = "object", required = { "a", "b" }, additionalProperties = false,
                    properties = { a = { type = "string" }, b = {} },
                    patternProperties = { ["^x%-"] = { type = "integer" } } }
        assert.is_true(schema.validate(s, { a = "1", b = 2, ["x-n"] = 3 }))
        assert.equal("b: is required", msg(s, { a = "1" }))
        assert.equal("c: unknown field (allowed: a, b)", msg(s, { a = "1", b = 1, c = 1 }))
        assert.equal("x-n: expected integer, got string", msg(s, { a = "1", b = 1, ["x-n"] = "s" }))
        local s2 = { type = "object", additionalProperties = { type = "number" } }
        assert.equal("k: expected number, got string", msg(s2, { k = "v" }))
    end)

    it("treats cjson.null in objects as absent", function()
        local s = { type = "object", required = { "a" }, properties = { b = { default = 5 } } }
        local v = { a = cjson.null, b = cjson.null }
        assert.equal("a: is required", msg(s, v))
        assert.equal(5, v.b)
    end)

    it("checks enum and const", function()
        assert.is_true(schema.validate({ enum = { "a", "b" } }, "b"))
        assert.equal('(root): expected one of: a, b; got "c"', msg({ enum = { "a", "b" } }, "c"))
        assert.is_true(schema.validate({ const = 3 }, 3))
        assert.equal("(root): expected 3, got 4", msg({ const = 3 }, 4))
        assert.is_true(schema.validate({ enum = { { 1, 2 } } }, { 1, 2 }))
    end)

    it("checks numeric bounds, both exclusive forms", function()
        local s = { type = "number", minimum = 1, maximum = 10 }
        assert.is_true(schema.validate(s, 1))
        assert.is_true(schema.validate(s, 10))
        assert.equal("(root): must be >= 1, got 0", msg(s, 0))
        assert.equal("(root): must be <= 10, got 11", msg(s, 11))
        assert.equal("(root): must be > 0, got 0", msg({ exclusiveMinimum = 0 }, 0))
        assert.equal("(root): must be < 5, got 5", msg({ exclusiveMaximum = 5 }, 5))
        assert.equal("(root): must be > 0, got 0", msg({ minimum = 0, exclusiveMinimum = true }, 0))
        assert.equal("(root): must be < 5, got 5", msg({ maximum = 5, exclusiveMaximum = true }, 5))
    end)

    it("checks strings", function()
        local s = { type = "string", minLength = 2, maxLength = 3, pattern = "^[a-z]+$" }
        assert.is_true(schema.validate(s, "ab"))
        assert.equal("(root): must be at least 2 character(s) long", msg(s, "a"))
        assert.equal("(root): must be at most 3 character(s) long", msg(s, "abcd"))
        assert.matches("does not match pattern", msg(s, "A1"))
    end)

    it("checks arrays", function()
        local s = { type = "array", minItems = 1, maxItems = 2, uniqueItems = true, items = { type = "string" } }
        assert.is_true(schema.validate(s, { "a", "b" }))
        assert.equal("(root): must have at least 1 item(s)", msg(s, {}))
        assert.equal("(root): must have at most 2 item(s)", msg(s, { "a", "b", "c" }))
        assert.equal("[2]: duplicate of item 1 (items must be unique)", msg(s, { "a", "a" }))
        assert.matches("^%[1%]: expected string, got integer 1 %(", msg(s, { 1 }))
        local tuple = { type = "array", items = { { type = "string" }, { type = "integer" } } }
        assert.is_true(schema.validate(tuple, { "a", 1 }))
        assert.equal("[2]: expected integer, got string", msg(tuple, { "a", "b" }))
    end)

    it("checks object sizes and dependencies", function()
        local s = { type = "object", minProperties = 1, maxProperties = 2, dependencies = { cert = { "key" } } }
        assert.equal("(root): must have at least 1 field(s)", msg(s, {}))
        assert.equal("(root): must have at most 2 field(s)", msg(s, { a = 1, b = 2, c = 3 }))
        assert.equal("key: is required when cert is set", msg(s, { cert = "c" }))
        assert.is_true(schema.validate(s, { cert = "c", key = "k" }))
    end)

    it("supports oneOf, anyOf, allOf and not", function()
        local one = { oneOf = { { type = "string" }, { type = "integer", minimum = 1 } } }
        assert.is_true(schema.validate(one, "x"))
        assert.is_true(schema.validate(one, 2))
        assert.matches("does not match any allowed form: %(1%) expected string", msg(one, 0))
        local both = { oneOf = { { type = "number" }, { type = "integer" } } }
        assert.equal("(root): matches more than one allowed form (1 and 2)", msg(both, 1))
        assert.is_true(schema.validate({ anyOf = { { type = "number" }, { type = "integer" } } }, 1))
        local all = { allOf = { { type = "integer" }, { minimum = 5 } } }
        assert.equal("(root): must be >= 5, got 4", msg(all, 4))
        assert.equal("(root): must not match the excluded form", msg({ ["not"] = { type = "string" } }, "s"))
        assert.is_true(schema.validate({ ["not"] = { type = "string" } }, 1))
    end)

    it("fills defaults, creating objects and arrays", function()
        local s = { type = "object", properties = {
            timeout = { type = "object", default = {}, properties = {
                connect = { type = "number", default = 5 }, read = { default = 60 } } },
            tags = { type = "array", default = { "a" } },
            n = { type = "integer", default = 1 } } }
        local v = { n = 3 }
        assert.is_true(schema.validate(s, v))
        assert.same({ n = 3, tags = { "a" }, timeout = { connect = 5, read = 60 } }, v)
        v.tags[2] = "b"
        assert.same({ "a" }, s.properties.tags.default) -- defaults are copied, never shared
    end)

    it("fills defaults only from the oneOf branch that matched", function()
        local s = { oneOf = {
            { type = "object", required = { "a" }, properties = { a = {}, x = { default = 1 } } },
            { type = "object", required = { "b" }, properties = { b = {}, y = { default = 2 } } } } }
        local v = { b = true }
        assert.is_true(schema.validate(s, v))
        assert.same({ b = true, y = 2 }, v)
    end)

    it("takes durations as seconds or with a unit, and gives seconds", function()
        local s = { type = "duration" }
        for written, secs in pairs({ [30] = 30, [0.5] = 0.5, ["30"] = 30, ["500ms"] = 0.5, ["5s"] = 5, ["1m"] = 60,
                                     ["1m30s"] = 90, ["1h"] = 3600, ["1d"] = 86400, ["1.5h"] = 5400, [" 2 s "] = 2,
                                     ["0.25"] = 0.25, ["10MS"] = 0.01 }) do
            local ok, v = schema.validate(s, written)
            assert.is_true(ok, tostring(written))
            assert.near(secs, v, 1e-9)
        end
        for _, bad in ipairs({ "5 minutes", "5x", "-1s", -1, "1m30", "s", "", "1e400", true, math.huge, 0 / 0 }) do
            assert.matches("^%(root%): expected a duration %(seconds, or a number with ms, s, m, h or d",
                msg(s, bad), 1)
        end
        assert.equal("(root): must be >= 1 s, got 0.5 s", msg({ type = "duration", minimum = 1 }, "500ms"))
    end)

    it("takes sizes as bytes or with k, m, g, and gives bytes", function()
        local s = { type = "size" }
        for written, bytes in pairs({ [4096] = 4096, ["4096"] = 4096, ["64k"] = 65536, ["64K"] = 65536,
                                      ["8m"] = 8388608, ["8MB"] = 8388608, ["1g"] = 1073741824, ["1.5k"] = 1536,
                                      ["10b"] = 10, ["2 MiB"] = 2097152 }) do
            local ok, v = schema.validate(s, written)
            assert.is_true(ok, tostring(written))
            assert.equal(bytes, v)
        end
        for _, bad in ipairs({ "8 megs", "1t", -1, 1.5, "1.5", "1.5b", "k", "0x10", false }) do
            assert.matches("^%(root%): expected a size %(bytes, or a number with k, m or g", msg(s, bad))
        end
        assert.equal("(root): must be >= 65536 bytes, got 1024 bytes", msg({ type = "size", minimum = 65536 }, "1k"))
    end)

    it("takes HTTP statuses as integers or strings, classes where allowed", function()
        assert.same({ true, 429 }, { schema.validate({ type = "status" }, 429) })
        assert.same({ true, 429 }, { schema.validate({ type = "status" }, "429") })
        assert.same({ true, "5xx" }, { schema.validate({ type = "status", classes = true }, "5XX") })
        assert.equal('(root): expected an HTTP status (100..599), got "5xx"', msg({ type = "status" }, "5xx"))
        assert.equal("(root): expected an HTTP status (100..599), got 42", msg({ type = "status" }, 42))
        assert.equal("(root): expected an HTTP status (100..599), got \"600\"", msg({ type = "status" }, "600"))
        assert.equal("(root): expected an HTTP status (100..599) or a class (1xx..5xx), got \"6xx\"",
            msg({ type = "status", classes = true }, "6xx"))
        assert.same({ true, 503 }, { schema.validate({ type = "status", enum = { 429, 503 } }, "503") })
        assert.matches("expected one of: 429, 503; got 502", msg({ type = "status", enum = { 429, 503 } }, "502"))
        -- a mixed list: words, statuses, classes
        local list = { type = "array", items = { anyOf = { { enum = { "error", "timeout" } },
                                                           { type = "status", classes = true } } } }
        local ok, v = schema.validate(list, { "error", 429, "503", "5xx", "timeout" })
        assert.is_true(ok)
        assert.same({ "error", 429, 503, "5xx", "timeout" }, v)
        assert.matches("^%[2%]: does not match any allowed form: .*got 42", msg(list, { "error", 42 }))
    end)

    it("takes yes/no/on/off/true/false strings as booleans and decimal strings as numbers", function()
        for written, b in pairs({ yes = true, no = false, on = true, off = false, ["true"] = true, ["False"] = false,
                                  YES = true }) do
            assert.same({ true, b }, { schema.validate({ type = "boolean" }, written) })
        end
        assert.equal('(root): expected a boolean (true/false, yes/no, on/off), got "y"', msg({ type = "boolean" }, "y"))
        assert.equal("(root): expected a boolean (true/false, yes/no, on/off), got 1", msg({ type = "boolean" }, 1))
        assert.same({ true, 2 }, { schema.validate({ type = "integer" }, "2") })
        assert.same({ true, -1.5 }, { schema.validate({ type = "number" }, "-1.5") })
        assert.equal("(root): expected integer, got string", msg({ type = "integer" }, "2.5"))
        assert.equal("(root): expected number, got string", msg({ type = "number" }, "0x10"))
        assert.equal("(root): must be >= 1, got 0", msg({ type = "integer", minimum = 1 }, "0"))
    end)

    it("prefers a value as it is over another spelling (type lists, anyOf, oneOf)", function()
        assert.same({ true, "on" }, { schema.validate({ type = { "string", "boolean" } }, "on") })
        assert.same({ true, "yes" }, { schema.validate({ oneOf = { { type = "string" }, { type = "boolean" } } }, "yes") })
        assert.same({ true, true }, { schema.validate({ oneOf = { { type = "integer" }, { type = "boolean" } } }, "yes") })
        assert.same({ true, "7" }, { schema.validate({ oneOf = { { type = "string" }, { type = "integer" } } }, "7") })
        -- normalized values reach the caller from inside objects, arrays and branches
        local s = { type = "object", properties = { t = { type = "duration", default = "1m" },
                                                    l = { type = "array", items = { type = "size" } },
                                                    o = { anyOf = { { type = "duration" } } } } }
        local v = { l = { "1k" }, o = "2s" }
        assert.is_true(schema.validate(s, v))
        assert.same({ t = 60, l = { 1024 }, o = 2 }, v)
    end)

    it("reports every error, never throws", function()
        local s = { type = "object", properties = { a = { type = "integer" }, b = { type = "string" } } }
        local errs = errs_of(s, { a = "x", b = 1 })
        assert.equal(2, #errs)
        local cyc = {}
        cyc.self = cyc
        local rec = { type = "object" }
        rec.properties = { self = rec }
        local ok, e = schema.validate(rec, cyc)
        assert.is_nil(ok)
        assert.matches("nested too deeply", schema.format_errors(e))
        for _, bad in ipairs({ 1, "s", { type = 5 }, { properties = 3 }, { items = "x" }, { pattern = "[" } }) do
            assert.has_no.errors(function() schema.validate(bad, { 1 }) end)
        end
        assert.has_no.errors(function() schema.validate({ type = "string" }, function() end) end)
    end)
end)

describe("schema.check_schema", function()
    it("accepts good schemas", function()
        assert.is_true(schema.check_schema({ type = "object", properties = { a = { type = { "string", "null" } } },
            required = { "a" }, additionalProperties = false, items = { { type = "string" } },
            oneOf = { { type = "string" } }, dependencies = { a = { "b" } }, exclusiveMinimum = true }))
    end)

    it("rejects malformed schemas with a path", function()
        local cases = {
            { { type = "strng" }, 'type: unknown type "strng"' },
            { { properties = 1 }, "properties: must be a table of schemas" },
            { { properties = { a = { type = 1 } } }, "properties.a.type: must be a type name or an array of type names" },
            { { required = "a" }, "required: must be an array of field names" },
            { { enum = {} }, "enum: must be a non-empty array" },
            { { minLength = -1 }, "minLength: must be a non-negative integer" },
            { { pattern = "[a" }, "pattern: must be a valid Lua pattern" },
            { { oneOf = {} }, "oneOf: must be a non-empty array of schemas" },
            { { items = { type = "x" } }, 'items.type: unknown type "x"' },
            { { type = "status", classes = "yes" }, "classes: must be a boolean" },
            { { patternProperties = { ["[x"] = {} } }, 'patternProperties: invalid Lua pattern "[x"' },
            { "nope", "(root): schema must be a table" },
        }
        for _, c in ipairs(cases) do
            local ok, err = schema.check_schema(c[1])
            assert.is_nil(ok)
            assert.equal(c[2], err)
        end
    end)
end)

describe("schema.format_errors", function()
    it("prints one path: message per line", function()
        assert.equal("a: x\n(root): y", schema.format_errors({ { path = "a", message = "x" }, { path = "", message = "y" } }))
    end)
end)

describe("schema formats, propertyNames and refs", function()
    local function errs_or_none(s, v)
        local ok, e = schema.validate(s, v)
        return ok and {} or e
    end

    it("checks the built-in formats", function()
        local good = { host = { "a.b", "x_y-1:8080", "1.2.3.4", "[::1]", "[::1]:443" },
                       header_name = { "x-a", "X_B", "a!#$%&'*+.^`|~" },
                       header_value = { "", "a b\tc", "é" },
                       url = { "http://a", "https://a.b:1/x?y=1#z", "HTTP://[::1]:80/" },
                       uri_path = { "/", "/a/:id/*" },
                       id = { "a", "_x", "a.b-c", ("a"):rep(256) } }
        local bad = { host = { "", "a b", "a\r\nb", "-a", ".a", "a:99999", "a:", "[zz]", ("a"):rep(256) },
                      header_name = { "", "a b", "a:", "a\r", ("a"):rep(257) },
                      header_value = { "a\rb", "a\nb", "a\0b", "\127" },
                      url = { "ftp://a", "http://", "http://a b/", "http://a/\r\n", "http://a/ x" },
                      uri_path = { "a", "/a b", "/a\0" },
                      id = { "", ".", "..", "-x", ".x", "a/b", "a b", ("a"):rep(257) } }
        for f, list in pairs(good) do
            for _, v in ipairs(list) do assert.is_true(schema.validate({ type = "string", format = f }, v), f .. ": " .. v) end
        end
        for f, list in pairs(bad) do
            for _, v in ipairs(list) do
                local e = errs_or_none({ type = "string", format = f }, v)
                assert.equal(1, #e, f .. ": " .. v)
                assert.matches("^must be ", e[1].message)
            end
        end
    end)

    it("checks object keys with propertyNames, with the key's path", function()
        local s = { type = "object", propertyNames = { type = "string", format = "header_name" } }
        assert.is_true(schema.validate(s, { ["x-a"] = 1 }))
        local e = errs_or_none(s, { ["bad name"] = 1 })
        assert.equal("bad name", e[1].path)
    end)

    it("collects refs with their paths (from the branch that matched in anyOf/oneOf), only when asked", function()
        local s = { type = "object", properties = {
            p = { type = "string", ref = "providers" },
            list = { type = "array", items = { type = "string", ref = "consumer_groups" } },
            m = { type = "object", propertyNames = { type = "string", ref = "consumer_groups" } },
            u = { anyOf = { { type = "integer" }, { type = "string", ref = "upstreams" } } },
        } }
        local refs = {}
        assert.is_true(schema.validate(s, { p = "x", list = { "g1", "g2" }, m = { k = 1 }, u = "up" }, refs))
        local got = {}
        for i, r in ipairs(refs) do got[i] = r.kind .. ":" .. r.id .. "@" .. r.path end
        table.sort(got)
        assert.same({ "consumer_groups:g1@list[1]", "consumer_groups:g2@list[2]", "consumer_groups:k@m.k",
                      "providers:x@p", "upstreams:up@u" }, got)
        refs = {}
        assert.is_true(schema.validate(s, { u = 5 }, refs))
        assert.same({}, refs)
        assert.is_true(schema.validate(s, { p = "x" })) -- no list given: nothing collected, nothing fails
    end)

    it("rejects unknown formats and ref kinds in a schema", function()
        assert.matches('format: unknown format "hostname"', select(2, schema.check_schema({ format = "hostname" })), 1, true)
        assert.matches('ref: unknown entity kind "provider"', select(2, schema.check_schema({ ref = "provider" })), 1, true)
        assert.matches("propertyNames.type", select(2, schema.check_schema({ propertyNames = { type = "x" } })), 1, true)
        assert.is_true(schema.check_schema({ type = "string", format = "host", ref = "upstreams" }))
    end)
end)

-- sluice.response's filter runners and head lines, unit: every count of plugins and headers, since the first two of
-- each are handled outside a loop (traces) and the rest in one; a failing plugin stops the ones after it.
local unit = require("unit_helpers")
local response = require("sluice.pdk.response")

-- n header_filter / body_filter items; item `fail` raises; every item notes its run in `seen`
local function items(n, fail, seen)
    local list = {}
    for i = 1, n do
        list[i] = { name = "p" .. i, conf = { i = i }, plugin = {
            header_filter = function(conf, ctx)
                seen[#seen + 1] = conf.i
                assert(ctx.plugin_name == "p" .. conf.i)
                if conf.i == fail then error("hf " .. conf.i, 0) end
                ctx.response.headers["x-" .. conf.i] = "1"
            end,
            body_filter = function(conf, _, chunk, eof)
                seen[#seen + 1] = conf.i
                if conf.i == fail then error("bf " .. conf.i, 0) end
                if conf.i % 2 == 0 then return nil end -- passes the chunk on
                return chunk .. (eof and "E" or "") .. conf.i
            end,
        } }
    end
    return list
end

local function range(n)
    local t = {}
    for i = 1, n do t[i] = i end
    return t
end

describe("response filter runners", function()
    for n = 0, 5 do
        it("run all of " .. n .. " header_filter and body_filter plugins in order", function()
            local ctx = unit.new_ctx({})
            ctx.response = { status = 200, headers = {} }
            local seen = {}
            assert.is_nil(response.run_header_filter(ctx, items(n, nil, seen)))
            assert.same(range(n), seen)
            for i = 1, n do assert.equal("1", ctx.response.headers["x-" .. i]) end
            assert.is_false(ctx._filtering)
            seen = {}
            local want = "c"
            for i = 1, n do if i % 2 == 1 then want = want .. i end end
            assert.equal(want, response.run_body_filter(ctx, items(n, nil, seen), "c", false))
            assert.same(range(n), seen)
            assert.is_false(ctx._filtering)
        end)
        for fail = 1, n do
            it("stop at plugin " .. fail .. " of " .. n .. " when it raises", function()
                local ctx = unit.new_ctx({})
                ctx.response = { status = 200, headers = {} }
                local seen = {}
                local item, err = response.run_header_filter(ctx, items(n, fail, seen))
                assert.equal("p" .. fail, item.name)
                assert.equal("hf " .. fail, err)
                assert.same(range(fail), seen)
                assert.is_false(ctx._filtering)
                seen = {}
                local chunk, bitem, berr = response.run_body_filter(ctx, items(n, fail, seen), "c", true)
                assert.is_nil(chunk)
                assert.equal("p" .. fail, bitem.name)
                assert.equal("bf " .. fail, berr)
                assert.same(range(fail), seen)
                assert.is_false(ctx._filtering)
            end)
        end
    end
end)

describe("response head lines", function()
    -- the lines as a set (a table's order is not the wire's concern here) and their count
    local function lines(headers, extra)
        local s, n = response.header_lines(headers, extra)
        local set, count = {}, 0
        for line in s:gmatch("([^\r]+)\r\n") do set[line] = true; count = count + 1 end
        assert.equal(n, count)
        return set
    end

    for n = 0, 5 do
        it("has every one of " .. n .. " headers and " .. n .. " plugin-set ones, framing ones left out", function()
            local h, extra, want = { ["content-length"] = "9" }, { connection = "close", ["x-off"] = false }, {}
            for i = 1, n do
                h["h" .. i] = (i == 3) and { "a", "b" } or tostring(i)
                extra["e" .. i] = "v" .. i
                if i == 3 then want["h3: a"], want["h3: b"] = true, true else want["h" .. i .. ": " .. i] = true end
                want["e" .. i .. ": v" .. i] = true
            end
            assert.same(want, lines(h, extra))
        end)
    end

    it("lets a plugin-set header replace the response's own of that name", function()
        assert.same({ ["content-type: text/plain"] = true, ["a: 1"] = true },
            lines({ ["content-type"] = "application/json", a = 1 }, { ["content-type"] = "text/plain" }))
        assert.same({}, lines(nil, nil))
    end)
end)

-- Every struct and constant the Lua side declares again in an ffi.cdef, compared with C: sizes and offsets of
-- the mirrored structs and the values of the enums, as core/lua/ffi_layout.c reports them through
-- build/libsluice_ffi.so. A field added, moved or retyped on one side only fails here.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
local ffi = require("ffi")
local base = require("sluice.pdk.base")
-- the modules that hold the other cdefs
require("sluice.pdk.http")
require("sluice.pdk.memcached")
require("sluice.limits.counters")
require("sluice.cplugin")
require("sluice.router")
require("sluice.pdk.vector")
require("sluice.pdk.rag")
require("sluice.ai.validate")
require("sluice.ai.safety.splice")
require("sluice.config.etcd")
require("sluice.fastpath")

local C = base.C

ffi.cdef [[
typedef struct sl_ffi_fact { const char *type; const char *field; int64_t value; } sl_ffi_fact_t;
const sl_ffi_fact_t *sl_ffi_layout(size_t *n);
]]

local function facts()
    local n = ffi.new("size_t[1]")
    local f = C.sl_ffi_layout(n)
    local out = {}
    for i = 0, tonumber(n[0]) - 1 do
        out[#out + 1] = { type = ffi.string(f[i].type), field = ffi.string(f[i].field), value = tonumber(f[i].value) }
    end
    return out
end

-- every Lua file with a cdef (git's list): a struct declared with a body in any of them must have layout facts
local MIRROR_FILES = {}
for file in io.popen("git ls-files 'lua/*.lua' 'plugins/*.lua'"):lines() do
    local src = assert(io.open(file)):read("*a")
    if src:find("ffi.cdef", 1, true) then
        MIRROR_FILES[#MIRROR_FILES + 1] = file
    end
end

describe("FFI layout: the Lua cdefs match C", function()
    local all = facts()

    it("C reports facts", function()
        assert.is_true(#all > 100)
    end)

    it("every mirrored struct has the size C gives it", function()
        local n = 0
        for _, f in ipairs(all) do
            if f.type ~= "enum" and f.field == "" then
                n = n + 1
                assert.equal(f.value, ffi.sizeof(f.type), "sizeof(" .. f.type .. ")")
            end
        end
        assert.is_true(n >= 11)
    end)

    it("every field is at the offset C gives it", function()
        for _, f in ipairs(all) do
            if f.type ~= "enum" and f.field ~= "" then
                local off = ffi.offsetof(f.type, f.field)
                assert.is_not_nil(off, f.type .. "." .. f.field .. " is not declared in Lua")
                assert.equal(f.value, off, "offsetof(" .. f.type .. ", " .. f.field .. ")")
            end
        end
    end)

    it("every enum constant Lua names has C's value", function()
        local n = 0
        for _, f in ipairs(all) do
            if f.type == "enum" then
                n = n + 1
                local ok, v = pcall(function() return C[f.field] end)
                assert.is_true(ok, f.field .. " is not declared in a Lua cdef")
                assert.equal(f.value, tonumber(v), f.field)
            end
        end
        assert.is_true(n >= 25)
    end)

    it("every struct with a body in a Lua cdef is checked", function()
        local checked = {}
        for _, f in ipairs(all) do
            if f.field == "" then checked[f.type] = true end
        end
        for _, file in ipairs(MIRROR_FILES) do
            local src = assert(io.open(file)):read("*a")
            for cdef in src:gmatch("ffi%.cdef%s*%[%[(.-)%]%]") do
                for name in cdef:gmatch("typedef%s+struct%s+([%w_]+)%s*{") do
                    assert.is_true(checked[name .. "_t"] or false, file .. ": struct " .. name
                        .. " has no layout facts in core/lua/ffi_layout.c")
                end
                for name in cdef:gmatch("\nstruct%s+([%w_]+)%s*{") do
                    assert.is_true(checked[name .. "_t"] or false, file .. ": struct " .. name
                        .. " has no layout facts in core/lua/ffi_layout.c")
                end
                for name in cdef:gmatch("typedef%s+struct%s*{.-}%s*([%w_]+)%s*;") do
                    assert.is_true(checked[name] or false, file .. ": " .. name
                        .. " has no layout facts in core/lua/ffi_layout.c")
                end
            end
        end
    end)

    it("upstream error names come from C's one table", function()
        assert.equal("timeout", base.uperr_name(C.SL_UPERR_TIMEOUT))
        assert.equal("connect failed", base.uperr_text(C.SL_UPERR_CONNECT))
        assert.equal("bad_request", base.uperr_name(C.SL_UPERR_BAD_REQUEST))
        assert.equal("error", base.uperr_name(99))
        assert.equal("error", base.uperr_text(-1))
    end)
end)

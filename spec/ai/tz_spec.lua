-- sluice.ai.tz (ai-context's time zones): offsets of IANA zones from the system's TZif files and from their POSIX
-- footer rules, compared with values from Python's zoneinfo over the same files; fixed offsets; bad names.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
local tz = require("sluice.ai.tz")

local has_zoneinfo = io.open((os.getenv("TZDIR") or "/usr/share/zoneinfo") .. "/Europe/Paris") ~= nil
local it_tz = has_zoneinfo and it or pending

describe("sluice.ai.tz", function()
    -- {zone, instant, offset}: around the 2024 DST changes, now, and after 2037 (the footer rule)
    local cases = {
        { "Europe/Paris", 1711846799, 3600 }, { "Europe/Paris", 1711846800, 7200 },
        { "Europe/Paris", 1729990799, 7200 }, { "Europe/Paris", 1729990800, 3600 },
        { "Europe/Paris", 2200000000, 7200 }, { "Europe/Paris", 3000000000, 3600 },
        { "America/New_York", 0, -18000 }, { "America/New_York", 1729990800, -14400 },
        { "America/New_York", 3000000000, -18000 },
        { "Australia/Sydney", 2100000000, 36000 }, { "Australia/Sydney", 3000000000, 39600 },
        { "Asia/Kolkata", 1796193444, 19800 }, { "America/Sao_Paulo", 3000000000, -10800 },
        { "Pacific/Chatham", 2100000000, 45900 }, { "Pacific/Chatham", 3000000000, 49500 },
    }

    it_tz("gives the offsets of IANA zones", function()
        for _, c in ipairs(cases) do
            local z = assert(tz.zone(c[1]))
            assert.equal(c[3], tz.offset(z, c[2]), c[1] .. " at " .. c[2])
        end
    end)

    it_tz("applies the POSIX footer rule the same way as the transitions", function()
        for _, c in ipairs(cases) do
            local z = assert(tz.zone(c[1]))
            if z.rule and c[2] > 1700000000 then
                assert.equal(c[3], tz._posix_offset(z.rule, c[2]), c[1] .. " rule at " .. c[2])
            end
        end
        local r = assert(tz._parse_posix("<+1030>-10:30<+11>-11,M10.1.0,M4.1.0"))
        assert.same({ 37800, 39600 }, { r.std, r.dst })
    end)

    it("takes UTC and fixed offsets, refuses bad names", function()
        assert.equal(0, tz.offset(assert(tz.zone("UTC")), 123))
        assert.equal(-8 * 3600, tz.offset(assert(tz.zone("-0800")), 123))
        assert.equal(5 * 3600 + 1800, tz.offset(assert(tz.zone("+05:30")), 123))
        for _, bad in ipairs({ "+15:00", "../etc/passwd", "Europe/../../etc/passwd", "", "/etc/passwd", "Nope/Zone" }) do
            local z, err = tz.zone(bad)
            assert.is_nil(z, bad)
            assert.is_string(err)
        end
    end)
end)

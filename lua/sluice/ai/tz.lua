-- Time zones for ai-context's date placeholders: "UTC", a fixed offset ("+05:30", "-0800"), or an IANA name
-- ("Europe/Paris") read from the system's TZif files (/usr/share/zoneinfo, or the TZDIR environment variable):
-- the transitions of the file, then its POSIX TZ footer rule ("CET-1CEST,M3.5.0,M10.5.0/3") for times after
-- the last transition. Zones are read once per worker and kept.
--
--   local tz = require("sluice.ai.tz")
--   local zone, err = tz.zone("Europe/Paris")     -- nil, err for an unknown name or a damaged file
--   local offset = tz.offset(zone, os.time())      -- seconds east of UTC at that instant
local byte, sub, find, match = string.byte, string.sub, string.find, string.match
local tonumber, floor = tonumber, math.floor

local _M = {}

local zones = {}

local function be(s, i, n) -- big-endian signed integer of n bytes at i
    local v = 0
    for k = 0, n - 1 do v = v * 256 + byte(s, i + k) end
    if v >= 2 ^ (8 * n - 1) then v = v - 2 ^ (8 * n) end
    return v
end

-- days since 1970-01-01 of a civil date (proleptic Gregorian)
local function days_from_civil(y, m, d)
    if m <= 2 then y = y - 1 end
    local era = floor(y / 400)
    local yoe = y - era * 400
    local mp = (m + 9) % 12
    local doy = floor((153 * mp + 2) / 5) + d - 1
    local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
    return era * 146097 + doe - 719468
end

local function year_of(t)
    local z = floor(t / 86400) + 719468
    local era = floor(z / 146097)
    local doe = z - era * 146097
    local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524) - floor(doe / 146096)) / 365)
    local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))
    local mp = floor((5 * doy + 2) / 153)
    local m = mp < 10 and mp + 3 or mp - 9
    return yoe + era * 400 + (m <= 2 and 1 or 0)
end

-- "[+-]hh[:mm[:ss]]" -> seconds (POSIX sign: as written)
local function hms(s)
    local sign, h, m, sec = match(s, "^([%+%-]?)(%d+):?(%d*):?(%d*)$")
    if not h then return nil end
    local v = tonumber(h) * 3600 + (tonumber(m) or 0) * 60 + (tonumber(sec) or 0)
    return sign == "-" and -v or v
end

-- POSIX TZ rule: {std = utoff, dst = utoff, start = {m, w, d, time}, stop = {...}} or {std = utoff}; nil if not
-- understood
local function parse_posix(s)
    local pos = 1
    local function name()
        local n = match(s, "^<[^>]*>", pos) or match(s, "^%a+", pos)
        if not n then return nil end
        pos = pos + #n
        return n
    end
    local function offset()
        local o = match(s, "^[%+%-]?%d+[:%d]*", pos)
        if not o then return nil end
        pos = pos + #o
        return hms(o)
    end
    if not name() then return nil end
    local std = offset()
    if not std then return nil end
    local rule = { std = -std }
    if pos > #s then return rule end
    if not name() then return nil end
    local dst = offset()
    rule.dst = dst and -dst or rule.std + 3600
    local function date()
        local m, w, d = match(s, "^,M(%d+)%.(%d)%.(%d)", pos)
        if not m then return nil end
        pos = pos + #match(s, "^,M%d+%.%d%.%d", pos)
        local t = 7200
        local tt = match(s, "^/([%+%-]?%d+[:%d]*)", pos)
        if tt then
            pos = pos + #tt + 1
            t = hms(tt)
        end
        return { tonumber(m), tonumber(w), tonumber(d), t }
    end
    rule.start, rule.stop = date(), nil
    rule.stop = rule.start and date()
    if not (rule.start and rule.stop) then return { std = rule.std } end -- Jn / n rules: standard time only
    return rule
end

-- UTC instant of rule date r in year y, given the local offset in force before it
local function rule_instant(y, r, before)
    local m, w, d, t = r[1], r[2], r[3], r[4]
    local first = days_from_civil(y, m, 1)
    local wd = (first + 4) % 7 -- 1970-01-01 was a Thursday
    local day = 1 + (d - wd) % 7 + (w - 1) * 7
    local mdays = days_from_civil(m == 12 and y + 1 or y, m == 12 and 1 or m + 1, 1) - first
    while day > mdays do day = day - 7 end
    return (first + day - 1) * 86400 + t - before
end

local function posix_offset(rule, t)
    if not rule.start then return rule.std end
    local y = year_of(t + rule.std)
    local s, e = rule_instant(y, rule.start, rule.std), rule_instant(y, rule.stop, rule.dst)
    local in_dst
    if s < e then in_dst = t >= s and t < e else in_dst = not (t >= e and t < s) end
    return in_dst and rule.dst or rule.std
end

-- TZif bytes -> zone table, or nil, err
local function parse_tzif(d)
    if sub(d, 1, 4) ~= "TZif" or #d < 44 then return nil, "not a TZif file" end
    local function counts(at)
        local c = {}
        for i = 0, 5 do c[i + 1] = be(d, at + 20 + i * 4, 4) end
        return c -- isutcnt, isstdcnt, leapcnt, timecnt, typecnt, charcnt
    end
    local c = counts(1)
    local tsize, at = 4, 45
    local version = byte(d, 5)
    if version and version >= 50 then -- '2' or later: skip the v1 block, read the 64-bit one
        at = at + c[4] * 5 + c[5] * 6 + c[6] + c[3] * 8 + c[2] + c[1]
        if #d < at + 43 then return nil, "truncated" end
        c = counts(at)
        at, tsize = at + 44, 8
    end
    local timecnt, typecnt = c[4], c[5]
    if typecnt < 1 or #d < at + timecnt * (tsize + 1) + typecnt * 6 - 1 then return nil, "truncated" end
    local z = { times = {}, idx = {}, utoff = {} }
    for i = 1, timecnt do z.times[i] = be(d, at + (i - 1) * tsize, tsize) end
    local ia = at + timecnt * tsize
    for i = 1, timecnt do z.idx[i] = byte(d, ia + i - 1) + 1 end
    local ta = ia + timecnt
    for i = 1, typecnt do z.utoff[i] = be(d, ta + (i - 1) * 6, 4) end
    for i = 1, timecnt do
        if z.idx[i] > typecnt then return nil, "corrupt" end
    end
    if tsize == 8 then
        local footer = match(d, "\n([^\n]*)\n$")
        if footer and footer ~= "" then z.rule = parse_posix(footer) end
    end
    return z
end

--- The zone called name (cached), or nil, err.
function _M.zone(name)
    if type(name) ~= "string" then return nil, "zone name must be a string" end
    local z = zones[name]
    if z then return z end
    if name == "UTC" or name == "Z" or name == "GMT" then
        z = { fixed = 0 }
    elseif find(name, "^[%+%-]%d%d:?%d%d$") then
        local sign, h, m = match(name, "^([%+%-])(%d%d):?(%d%d)$")
        h, m = tonumber(h), tonumber(m)
        if h > 14 or m > 59 then return nil, "offset out of range" end
        z = { fixed = (sign == "-" and -1 or 1) * (h * 3600 + m * 60) }
    else
        if #name > 64 or not find(name, "^[%a][%w_%+%-]*$") and not find(name, "^[%a][%w_%+%-]*/[%w_%+%-/]+$")
            or find(name, "..", 1, true) then
            return nil, "not a time zone name"
        end
        local dir = os.getenv("TZDIR") or "/usr/share/zoneinfo"
        local f = io.open(dir .. "/" .. name, "rb")
        if not f then return nil, "unknown time zone " .. name .. " (no " .. dir .. "/" .. name .. ")" end
        local d = f:read(65536 * 4)
        f:close()
        local err
        z, err = parse_tzif(d or "")
        if not z then return nil, "time zone " .. name .. ": " .. err end
    end
    zones[name] = z
    return z
end

--- Seconds east of UTC in zone z at instant t (seconds since 1970).
function _M.offset(z, t)
    if z.fixed then return z.fixed end
    local times = z.times
    local n = #times
    if n == 0 or t >= times[n] then
        if z.rule then return posix_offset(z.rule, t) end
        return n > 0 and z.utoff[z.idx[n]] or z.utoff[1]
    end
    if t < times[1] then return z.utoff[1] end
    local lo, hi = 1, n -- last transition <= t
    while lo < hi do
        local mid = floor((lo + hi + 1) / 2)
        if times[mid] <= t then lo = mid else hi = mid - 1 end
    end
    return z.utoff[z.idx[lo]]
end

_M._parse_posix = parse_posix
_M._posix_offset = posix_offset

return _M

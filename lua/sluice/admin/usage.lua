-- GET /admin/usage?group_by=consumer|model|provider|route&from=&to=[&format=csv][&scope=node]: requests, tokens and
-- cost per group over a time range (sluice.obs.usage; recorded by the prometheus plugin). from/to: seconds
-- since the epoch or RFC 3339 UTC ("2026-12-02T05:00:00Z"); default the last 24 hours. With memcached
-- configured every node that publishes is summed (scope=node: this node only).
local usage = require("sluice.obs.usage")
local request = require("sluice.pdk.request")
local cjson = require("cjson.safe")

local tonumber, type, os_time = tonumber, type, os.time

local _M = {}

local JSON = { ["content-type"] = "application/json" }

local function fail(status, msg)
    return status, cjson.encode({ error = { message = msg } }), JSON
end

-- seconds since the epoch of an RFC 3339 UTC time (Z or +00:00), or of a number
local function parse_time(s)
    if s == nil or s == "" then return nil end
    local n = tonumber(s)
    if n then return n end
    local y, mo, d, h, mi, sec, frac, tz = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)[Tt ](%d%d):(%d%d):(%d%d)(%.?%d*)(.*)$")
    if not y then
        y, mo, d = s:match("^(%d%d%d%d)%-(%d%d)%-(%d%d)$")
        if not y then return nil end
        h, mi, sec, frac, tz = 0, 0, 0, "", "Z"
    end
    if tz ~= "Z" and tz ~= "z" and tz ~= "+00:00" then return nil end
    y, mo, d, h, mi, sec = tonumber(y), tonumber(mo), tonumber(d), tonumber(h), tonumber(mi), tonumber(sec)
    if mo < 1 or mo > 12 or d < 1 or d > 31 or h > 23 or mi > 59 or sec > 60 then return nil end
    -- days from civil (proleptic Gregorian), no dependence on the local time zone
    local yy = mo <= 2 and y - 1 or y
    local era = math.floor(yy / 400)
    local yoe = yy - era * 400
    local mp = (mo + 9) % 12
    local doy = math.floor((153 * mp + 2) / 5) + d - 1
    local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
    local days = era * 146097 + doe - 719468
    return days * 86400 + h * 3600 + mi * 60 + sec + (tonumber(frac ~= "" and ("0" .. frac) or "0") or 0)
end
_M.parse_time = parse_time

function _M.handle(ctx)
    if ctx.method ~= "GET" then return fail(405, "method not allowed (GET)") end
    local q = request.get_query(ctx)
    local group_by = q.group_by or "consumer"
    if type(group_by) ~= "string" then return fail(400, "group_by given more than once") end
    local now = os_time()
    local from, to = parse_time(q.from), parse_time(q.to)
    if q.from and not from then return fail(400, "from: expected seconds since the epoch or an RFC 3339 UTC time") end
    if q.to and not to then return fail(400, "to: expected seconds since the epoch or an RFC 3339 UTC time") end
    to = to or now
    from = from or (to - 86400)
    if from > to then return fail(400, "from is after to") end
    local fmt = q.format or "json"
    if fmt ~= "json" and fmt ~= "csv" then return fail(400, "format must be json or csv") end
    local rep, err = usage.report({ group_by = group_by, from = from, to = to, cluster = q.scope ~= "node" })
    if not rep then return fail(400, err) end
    if fmt == "csv" then
        return 200, usage.csv(rep), { ["content-type"] = "text/csv; charset=utf-8",
            ["content-disposition"] = 'attachment; filename="usage-' .. group_by .. '.csv"' }
    end
    if #rep.rows == 0 then
        rep.rows = "\0empty\0" -- cjson 2.1 writes {} for an empty table
        return 200, (cjson.encode(rep):gsub('"\\u0000empty\\u0000"', "[]")), JSON
    end
    return 200, cjson.encode(rep), JSON
end

return _M

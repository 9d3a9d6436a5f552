-- fuzz_sse: checks of sluice.ai.sse on one fuzz input (a cut plan, then stream bytes). Uses the parser's
-- interface only (sse.parser(), p:feed(bytes) -> events, p:finish() -> events), so it holds for any
-- implementation behind it. Any error raised here is a finding (fuzz_sse aborts with it):
--   * feed/finish raise nothing and return lists of events;
--   * the events of the bytes fed whole equal those of the same bytes fed in the plan's pieces (event, data,
--     id, retry), finish() included;
--   * events are well formed: data is a string without "\r"; event and id, when set, have no line break;
--   * sse.encode(ev) parses back to the same event.
local sse = require("sluice.ai.sse")
local find, fmt = string.find, string.format
local type, ipairs, tostring, error = type, ipairs, tostring, error

local FIELDS = { "event", "data", "id", "retry" }

local function run(pieces)
    local p = sse.parser()
    local evs = {}
    for i = 1, #pieces do
        local out = p:feed(pieces[i])
        if type(out) ~= "table" then error("feed returned " .. type(out)) end
        for _, e in ipairs(out) do evs[#evs + 1] = e end
    end
    local out = p:finish()
    if type(out) ~= "table" then error("finish returned " .. type(out)) end
    for _, e in ipairs(out) do evs[#evs + 1] = e end
    return evs
end

local function same(a, b)
    return a == b or (a ~= a and b ~= b) -- NaN retry
end

local function show(v)
    return type(v) == "string" and fmt("%q", v) or tostring(v)
end

return function(s)
    local cuts, pos = fz.read_cuts(s, 1)
    local data = s:sub(pos)
    local whole = run({ data })
    local cut = run(fz.pieces(data, cuts))
    if #whole ~= #cut then
        error(fmt("differential: %d event(s) fed whole, %d fed in %d-piece plan", #whole, #cut, #cuts))
    end
    for i, a in ipairs(whole) do
        local b = cut[i]
        for _, k in ipairs(FIELDS) do
            if not same(a[k], b[k]) then
                error(fmt("differential: event %d field %s: whole %s, cut %s", i, k, show(a[k]), show(b[k])))
            end
        end
        if type(a.data) ~= "string" or find(a.data, "\r", 1, true) then
            error(fmt("event %d: bad data %s", i, show(a.data)))
        end
        for _, k in ipairs({ "event", "id" }) do
            if a[k] ~= nil and (type(a[k]) ~= "string" or find(a[k], "[\r\n]")) then
                error(fmt("event %d: bad %s %s", i, k, show(a[k])))
            end
        end
        if sse.encode then
            local p = sse.parser()
            local back = p:feed(sse.encode({ event = a.event, data = a.data, id = a.id }))
            if #back ~= 1 or back[1].data ~= a.data or back[1].event ~= a.event or back[1].id ~= a.id then
                error(fmt("encode round trip of event %d (%s) gave %d event(s), data %s", i, show(a.data), #back,
                    back[1] and show(back[1].data) or "-"))
            end
        end
    end
end

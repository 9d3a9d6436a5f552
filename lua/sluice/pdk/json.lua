-- sluice.json: JSON through lua-cjson. Phases: all.
--   local t, err = sluice.json.decode(s)   -- nil, err on bad input (never raises)
--   local s = sluice.json.encode(t)
local cjson = require("cjson.safe")

local _M = {
    null = cjson.null,
    empty_array = cjson.empty_array,
}

--- Decodes s; returns value | nil, err.
function _M.decode(s)
    if type(s) ~= "string" then
        return nil, "expected a string"
    end
    return cjson.decode(s)
end

--- Encodes v; returns string | nil, err.
function _M.encode(v)
    return cjson.encode(v)
end

return _M

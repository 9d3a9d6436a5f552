-- sluice.log: the error log. Phases: all.
--   sluice.log.warn("upstream ", name, " slow: ", ms, "ms")
local base = require("sluice.pdk.base")
local C = base.C

local concat, select, tostring = table.concat, select, tostring

local _M = {}

local function writer(level, tag)
    return function(...)
        if C.sl_log_enabled(level) == 0 then
            return
        end
        local n = select("#", ...)
        local parts = { tag }
        for i = 1, n do
            parts[i + 1] = tostring((select(i, ...)))
        end
        local ctx = base.current_ctx()
        if ctx then
            parts[#parts + 1] = " (request " .. ctx.request_id .. ")"
        end
        local msg = concat(parts)
        C.sl_log_write(level, msg, #msg)
    end
end

_M.debug = writer(0, "")
_M.info = writer(1, "")
_M.warn = writer(2, "")
_M.err = writer(3, "")
_M.error = _M.err

local cjson = require("cjson.safe")

--- Adds a field to this request's access log line (JSON lines): `sluice.log.access("ai", {model = m})`.
--- `sluice.log.access_enabled()` says whether there is an access log at all (to skip building a value).
--- Any phase; a name may be given once per request. Returns true, or nil and an error.
function _M.access(name, value)
    if type(name) ~= "string" or not name:match("^[%w_]+$") or #name > 64 then
        error("access log field name must be 1-64 letters, digits or _", 2)
    end
    local ctx = base.get_ctx()
    if C.sl_access_log_enabled() == 0 then
        return true -- no access log: nothing to build
    end
    local json, err = cjson.encode(value)
    if not json then
        return nil, err
    end
    if C.sl_req_log_field(ctx.req, name, #name, json, #json) ~= 0 then
        return nil, "access log line too long"
    end
    return true
end

function _M.access_enabled()
    return C.sl_access_log_enabled() ~= 0
end

--- A logger that prefixes every line with "[name] " (used for plugins).
function _M.named(name)
    local p = "[" .. name .. "] "
    return { debug = writer(0, p), info = writer(1, p), warn = writer(2, p), err = writer(3, p),
             error = writer(3, p) }
end

return _M

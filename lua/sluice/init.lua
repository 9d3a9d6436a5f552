-- The PDK: the only door a plugin has to a request.
--   local sluice = require("sluice")
--   sluice.request.get_header("authorization")
--   return sluice.response.exit(401, {error = {message = "no key"}})
-- See docs/plugins.md for every function and the phases where it may be used.
local base = require("sluice.pdk.base")
local C = base.C

local _M = {
    request = require("sluice.pdk.request"),
    response = require("sluice.pdk.response"),
    log = require("sluice.pdk.log"),
    timer = require("sluice.pdk.timer"),
    json = require("sluice.pdk.json"),
    shared = require("sluice.pdk.shared"),
    re = require("sluice.pdk.re"),
    http = require("sluice.pdk.http"),
    memcached = require("sluice.pdk.memcached"),
    ai = require("sluice.pdk.ai"),
    consumer = require("sluice.pdk.consumer"),
}

_M.sleep = _M.timer.sleep

--- The running request's context table (shared by the plugins of this request); raises outside a request.
function _M.ctx()
    return base.get_ctx()
end

--- Monotonic seconds (for durations).
function _M.now()
    return C.sl_now()
end

--- Wall-clock seconds since the epoch.
function _M.time()
    return C.sl_time()
end

--- This worker's id (0-based) and the worker count.
function _M.worker_id()
    return C.sl_worker_id()
end

function _M.worker_count()
    return C.sl_worker_count()
end

return _M

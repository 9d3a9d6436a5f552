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
    upstream = require("sluice.pdk.upstream"),
    metrics = require("sluice.pdk.metrics"), -- counters/histograms over all workers (docs/observability.md)
    consumer = require("sluice.pdk.consumer"),
    -- vectors, RAG indexes and provider calls from plugins (docs/vector.md, docs/ai-rag.md)
    vector = require("sluice.pdk.vector"),
    rag = require("sluice.pdk.rag"),
    providers = require("sluice.pdk.providers"),
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

--- Iterates the confs a plugin runs with in this worker's live config: `for conf, config in
--- sluice.each_conf("my-plugin") do ... end`, once per distinct conf table (a global conf once, however many
--- routes use it; confs disabled with `_meta.disable` are left out), `config` being the whole validated config.
--- For plugins that keep state per conf outside requests (timers started in init_worker, health checks).
function _M.each_conf(name)
    local st = base.live_state()
    local routes = st and st.cfg and st.cfg.routes or {}
    local seen, ri, ii = {}, 1, 0
    return function()
        while true do
            local route = routes[ri]
            if not route then
                return nil
            end
            local all = route.pipeline and route.pipeline.all or {}
            ii = ii + 1
            local item = all[ii]
            if not item then
                ri, ii = ri + 1, 0
            elseif item.name == name and not seen[item.conf] then
                seen[item.conf] = true
                return item.conf, st.cfg
            end
        end
    end
end

--- This worker's id (0-based) and the worker count.
function _M.worker_id()
    return C.sl_worker_id()
end

function _M.worker_count()
    return C.sl_worker_count()
end

return _M

-- sluice.upstream: the upstream stage of a request. Phases: rewrite, access.
--
--   sluice.upstream.take_over(function(ctx)                -- instead of the route's upstream
--       local res = sluice.http.request({url = ..., body = ...})
--       sluice.response.send(200, res and res.body or "", {["content-type"] = "application/json"})
--   end)
--
-- After every access plugin, the gateway calls the handler instead of proxying to the route's upstream (the
-- route then needs no upstream). The handler runs in the request's coroutine (it may wait on I/O) and answers
-- the client with sluice.response.send or stream_start / stream_write / stream_finish: the route's
-- header_filter, body_filter and log plugins run on that answer as on any other (sluice.response.exit works
-- too). If it sends nothing, the client gets a 502; if it raises, a 500 with the request id (the error is
-- logged). ai-proxy and ai-proxy-multi make their provider calls this way.
local base = require("sluice.pdk.base")

local get_ctx, type, error = base.get_ctx, type, error

local _M = {}

--- Makes handler(ctx) the request's upstream stage (the last call wins). Returns the handler it replaces (nil
--- when none), so a plugin can wrap it: ai-cache answers from its cache, or calls ai-proxy's handler on a miss.
function _M.take_over(handler, ctx)
    ctx = ctx or get_ctx()
    if type(handler) ~= "function" then
        error("handler must be a function(ctx)", 2)
    end
    local prev = rawget(ctx, "_upstream_handler") -- unset: no call of the context's __index
    ctx._upstream_handler, ctx._upstream_plugin = handler, ctx.plugin_name
    return prev
end

--- True when a plugin took over the upstream stage of this request.
function _M.taken_over(ctx)
    ctx = ctx or get_ctx()
    return ctx._upstream_handler ~= nil
end

return _M

-- sluice.ai.common.stream_base: the one skeleton of every driver's stream translator.
--
--   local Stream = stream_base.class(handle, on_finish)
--   function _M.new_stream(op, opts) return stream_base.new(Stream, sse.parser(), {state = ..., ...}) end
--
-- The decoder splits the upstream bytes into items (SSE events, AWS event-stream messages):
-- decoder:feed(bytes) -> items | nil, err and decoder:finish() -> items | nil, err. handle(self, item, out)
-- appends canonical chunks (or {error = {...}} items) to out and may set self.failed, self.usage, self.done;
-- on_finish(self, out), when given, runs after the decoder's last items. Once an error item went out
-- (self.failed) nothing more is produced. Public interface: s:feed(bytes) -> items, s:finish() -> items,
-- s.usage, s.done (see docs/providers.md, "Driver interface").
local setmetatable = setmetatable

local _M = {}

--- An {error = ...} item for an upstream stream the driver could not read (502).
function _M.error_item(message)
    return { error = { status = 502, type = "api_error", message = message } }
end

local function run(self, items, err, out)
    if not items then
        self.failed = true
        out[#out + 1] = _M.error_item(self.label .. err)
        return
    end
    local handle = self.handle
    for i = 1, #items do
        handle(self, items[i], out)
        if self.failed then return end
    end
end

--- A stream class (metatable) from the driver's item handler and optional end hook.
function _M.class(handle, on_finish)
    local S = { handle = handle }
    S.__index = S

    function S:feed(bytes)
        local out = {}
        if self.failed or self.finished then return out end
        local items, err = self.decoder:feed(bytes)
        run(self, items, err, out)
        return out
    end

    function S:finish()
        local out = {}
        if not self.failed and not self.finished then
            local items, err = self.decoder:finish()
            run(self, items, err, out)
            if on_finish and not self.failed then on_finish(self, out) end
        end
        self.finished = true
        self.done = true
        return out
    end

    return S
end

--- A stream of class S reading with decoder; fields are the driver's own state (label: error prefix).
function _M.new(S, decoder, fields)
    fields = fields or {}
    fields.decoder = decoder
    fields.done = fields.done or false
    fields.label = fields.label or ""
    return setmetatable(fields, S)
end

return _M

-- sluice.ai.stream: the streaming half of an AI call (sluice.ai.proxy.run hands over once the upstream answered
-- 2xx with stream = true). Two ways through:
--   pass-through (OpenAI client, OpenAI-wire provider): upstream events go out as they are, cut at event
--     boundaries; each event's shape is checked (`data: {...}` on one line, or `data: [DONE]`) and plain searches
--     find the usage chunk, finish reasons and error events (Pass below). Events of another shape (comments,
--     "\r\n" framing, several data lines) go through the SSE parser and are re-encoded; garbage is an error;
--   translated: the driver's stream parser yields canonical chunks, encoded for the client's API
--     (Anthropic through sluice.ai.anthropic_api's stream encoder).
--
-- A stream is complete when the provider ended it: OpenAI-wire `data: [DONE]` (or, for servers that omit it, a
-- finish reason before a clean end at an event boundary), Anthropic `message_stop`, Gemini and Bedrock the
-- finish reason. Anything else (a reset, a timeout, a clean close mid-event or before the end, garbage, an event
-- larger than max_event_size, a provider error event) is a fault: nothing sent yet -> an HTTP error in the
-- client's shape (or, with ai.defer_errors, back to ai-proxy-multi for another target); else one error event in
-- the client's API, and never a terminal event ([DONE], message_stop) after it. The upstream connection is
-- closed when the stream ends on a fault (the request ends without reading the rest).
--
-- The usage record (sluice.ai.usage) counts what reached the client: the provider's usage once the events before
-- it were written, else an estimate over the text written; a stream cut short is marked cut = "client" or
-- "upstream".
local upstream = require("sluice.ai.upstream")
local base = require("sluice.pdk.base")
local response = require("sluice.pdk.response")
local common = require("sluice.ai.common")
local sse = require("sluice.ai.sse")
local usage = require("sluice.ai.usage")
local cjson = require("cjson.safe")

local C = base.C
local type, ipairs, require, setmetatable = type, ipairs, require, setmetatable
local find, sub, byte = string.find, string.sub, string.byte
local concat = table.concat
local decode = cjson.decode
local null = cjson.null
local json_encode = common.json_encode
local finish_usage, scan_usage, completion_text_of = usage.finish_usage, usage.scan_usage, usage.completion_text_of

local UPERR_TIMEOUT, UPERR_CLIENT_GONE = C.SL_UPERR_TIMEOUT, C.SL_UPERR_CLIENT_GONE

local _M = {}

-- Providers whose wire format is the canonical one (responses and streams pass through untouched).
-- sluice.ai.proxy re-exports it (ai_proxy.OPENAI_WIRE) and uses it for its non-streaming lean path.
local OPENAI_WIRE = { openai = true, ["openai-compatible"] = true, deepseek = true, ["azure-openai"] = true }
_M.OPENAI_WIRE = OPENAI_WIRE

-- Provider kinds whose stream ends with an event of its own after the finish reason (Anthropic message_stop):
-- a finish reason alone is not the end there.
local TERMINAL_EVENT = { anthropic = true }

local anthropic_api_mod
local function anthropic_api()
    if not anthropic_api_mod then
        anthropic_api_mod = require("sluice.ai.anthropic_api")
    end
    return anthropic_api_mod
end

-- The event that ends a stream after a failure, in the client's API.
local function stream_error_event(ai, status, message, typ)
    local body = common.error_body(ai.api, status, message, typ)
    if ai.api == "anthropic" then
        return "event: error\ndata: " .. json_encode(body) .. "\n\n"
    end
    return "data: " .. json_encode(body) .. "\n\n"
end

local SSE_HEADERS = { ["content-type"] = "text/event-stream", ["cache-control"] = "no-cache" }

-- A fault: what ends a stream that is not complete (status for the client and the record, message, error type;
-- provider = true for the provider's own error event, kind for ai-proxy-multi's fallback_on).
local function fault(status, message, typ)
    return { status = status, message = message, type = typ }
end

---------------------------------------------------------------------------------------------------------------
-- pass-through: OpenAI-wire provider -> OpenAI client
--
-- Events are checked where they lie in the upstream chunk (indexes, no string per event: LuaJIT interns every
-- string, and the events of a stream hash alike), and runs of good ones go out as one piece of the chunk.

local Pass = {}
Pass.__index = Pass

local KEEP, DROP, SLOW = 1, 2, 3
local NEVER = math.huge

local function new_pass(ai, max)
    return setmetatable({ ai = ai, max = max, pend = nil, plen = 0, tail_nl = false, parser = nil,
                          done = false, finished = false, usage = nil, cur = nil, nu = 0, nf = 0 }, Pass)
end
--- The pass-through filter alone (bench/sse_parse.lua): p = pass_through(ai, max_event_size);
--- p:feed(bytes, out) and p:close(out) append what goes to the client to out and return a fault or nil.
_M.pass_through = new_pass

local function too_large(max)
    return fault(502, "an event larger than " .. max .. " bytes in the upstream stream")
end

-- A provider error event (its data decoded), as a fault with the provider's message.
local function provider_error(ai, data)
    local e = ai.driver.parse_error(502, nil, data) or {}
    local f = fault(502, e.message or "upstream error event", e.type)
    f.provider = true
    return f
end

-- The event s[a..b] (b: its last byte before the blank line): KEEP (forwarded as it is), DROP (the usage chunk
-- the client did not ask for, anything after [DONE]), SLOW (another shape: parse it), or a fault. Plain searches
-- for "usage" and "finish_reason" keep a cursor per chunk, so a chunk is searched once whatever its events.
function Pass:scan(s, a, b)
    if self.done or b < a then
        return DROP
    end
    local b1, b2, b3, b4, b5, b6, b7 = byte(s, a, a + 6)
    local nl = find(s, "\n", a, true)
    if nl and nl <= b then -- not one line
        return SLOW
    end
    if not (b1 == 100 and b2 == 97 and b3 == 116 and b4 == 97 and b5 == 58 and b6 == 32) then -- "data: "
        return b1 == 58 and DROP or SLOW -- a comment line alone (a keep-alive): dropped
    end
    if b7 == 91 then -- '['
        if b - a == 11 and sub(s, a, b) == "data: [DONE]" then
            self.done = true
            return KEEP
        end
        return SLOW
    end
    if b7 ~= 123 or byte(s, b) ~= 125 then -- not {...}
        return SLOW
    end
    local c = byte(s, a + 7)
    if (c == 34 and byte(s, a + 8) == 101 and sub(s, a + 6, a + 13) == '{"error"')
        or (c == 32 and find(sub(s, a, b), '^data: {%s*"error"')) then
        return provider_error(self.ai, sub(s, a + 6, b))
    end
    if s ~= self.cur then -- cursors are positions in s
        self.cur, self.nu, self.nf = s, 0, 0
    end
    local nu = self.nu
    if nu < a then
        nu = find(s, '"usage":', a, true) or NEVER
        self.nu = nu
    end
    if nu <= b then
        local k = nu + 8
        if byte(s, k) == 32 then k = k + 1 end
        if byte(s, k) == 123 then -- '{': not null
            local ev = sub(s, a, b)
            self.usage = scan_usage(ev) or self.usage
            if not self.ai.include_usage
                and (find(ev, '"choices":[]', 1, true) or find(ev, '"choices": []', 1, true)) then
                return DROP
            end
        end
    end
    if not self.finished then
        local nf = self.nf
        if nf < a then
            nf = find(s, '"finish_reason":', a, true) or NEVER
            self.nf = nf
        end
        if nf <= b then
            local k = nf + 16
            if byte(s, k) == 32 then k = k + 1 end
            if byte(s, k) == 34 then self.finished = true end -- a string, not null
        end
    end
    return KEEP
end

-- Events of another shape, parsed: each data must be [DONE] or a JSON object, re-encoded on one line.
function Pass:parsed(evs, out)
    for i = 1, #evs do
        local ev = evs[i]
        local data = ev.data
        if self.done then
            return
        elseif ev.event == "error" then
            return provider_error(self.ai, data)
        end
        local line
        if data == "[DONE]" then
            line = "data: [DONE]"
        else
            local t = decode(data)
            if type(t) ~= "table" then
                return fault(502, "invalid event in the upstream stream (not JSON)")
            end
            line = "data: " .. (find(data, "[\r\n]") and json_encode(t) or data)
        end
        local r = self:scan(line, 1, #line)
        if r == KEEP then
            out[#out + 1] = line
            out[#out + 1] = "\n\n"
        elseif r ~= DROP then
            return r == SLOW and fault(502, "invalid event in the upstream stream") or r
        end
    end
end

-- The event s[a..b] that scan() did not keep as it is.
function Pass:other(r, s, a, b, out)
    if r == SLOW then
        return self:parsed(sse.parser({ max_size = self.max }):feed(sub(s, a, b) .. "\n\n"), out)
    elseif r ~= DROP then
        return r
    end
end

--- Feeds upstream bytes; appends what goes to the client to out. Returns a fault or nil.
function Pass:feed(bytes, out)
    if self.done then
        return -- nothing after [DONE] reaches the client
    end
    if self.parser then
        local f = self:parsed(self.parser:feed(bytes), out)
        if f then return f end
        return self.parser.err and too_large(self.max) or nil
    end
    local n, pos, max = #bytes, 1, self.max
    if find(bytes, "\r", 1, true) then
        -- "\r\n" framing: the SSE parser from here on, starting with what is pending
        self.parser = sse.parser({ max_size = max })
        if self.plen > 0 then
            local pending = concat(self.pend)
            self.pend, self.plen = nil, 0
            local f = self:parsed(self.parser:feed(pending), out)
            if f then return f end
        end
        return self:feed(bytes, out)
    end
    if self.plen > 0 then -- the end of the event begun in an earlier feed
        local ev
        if self.tail_nl and byte(bytes, 1) == 10 then
            ev = concat(self.pend)
            ev, pos = sub(ev, 1, -2), 2
        else
            local j = find(bytes, "\n\n", 1, true)
            if not j then
                local plen = self.plen + n
                if plen > max then return too_large(max) end
                self.pend[#self.pend + 1] = bytes
                self.plen, self.tail_nl = plen, byte(bytes, n) == 10
                return
            end
            if self.plen + j - 1 > max then return too_large(max) end
            self.pend[#self.pend + 1] = sub(bytes, 1, j - 1)
            ev, pos = concat(self.pend), j + 2
        end
        self.pend, self.plen = nil, 0
        local r = self:scan(ev, 1, #ev)
        if r == KEEP then
            out[#out + 1] = ev
            out[#out + 1] = "\n\n"
        else
            local f = self:other(r, ev, 1, #ev, out)
            if f then return f end
        end
    end
    local span = pos -- bytes[span .. pos - 1]: whole events kept as they are, not written to out yet
    while pos <= n do
        local j = find(bytes, "\n\n", pos, true)
        if not j then
            break
        end
        local f
        if j - pos > max then
            f = too_large(max)
        else
            local r = self:scan(bytes, pos, j - 1)
            if r ~= KEEP then
                if pos > span then out[#out + 1] = sub(bytes, span, pos - 1) end
                span = j + 2
                f = self:other(r, bytes, pos, j - 1, out)
            end
        end
        if f then
            if pos > span then out[#out + 1] = sub(bytes, span, pos - 1) end
            return f
        end
        pos = j + 2
    end
    if pos > span then
        out[#out + 1] = span == 1 and pos > n and bytes or sub(bytes, span, pos - 1)
    end
    if pos <= n and not self.done then -- an event whose end has not come yet
        if n - pos + 1 > max then return too_large(max) end
        self.pend, self.plen, self.tail_nl = { sub(bytes, pos) }, n - pos + 1, byte(bytes, n) == 10
    end
end

--- The upstream body ended cleanly: the last event (a blank line may be missing after it) and whether the stream
--- was complete. Returns a fault or nil.
function Pass:close(out)
    local f
    if self.parser then
        f = self:parsed(self.parser:finish(), out)
    elseif self.plen > 0 then
        local ev = concat(self.pend)
        self.pend, self.plen = nil, 0
        if byte(ev, #ev) == 10 then ev = sub(ev, 1, -2) end
        local r = self:scan(ev, 1, #ev)
        if r == KEEP then
            out[#out + 1] = ev
            out[#out + 1] = "\n\n"
        else
            f = self:other(r, ev, 1, #ev, out)
        end
        if f and not f.provider then
            return fault(502, "upstream stream ended in the middle of an event")
        end
    end
    if f then return f end
    if not self.done and not self.finished then
        return fault(502, "upstream stream ended before its end (no [DONE])")
    end
    if not self.done then
        self.done = true
        out[#out + 1] = "data: [DONE]\n\n"
    end
end

---------------------------------------------------------------------------------------------------------------
-- translated: the driver's canonical chunks -> the client's API

-- Canonical chunks -> bytes in the client's API; b collects the usage and text they carry. Returns a fault or nil.
local function encode_chunks(ai, st, chunks, out, b)
    for i = 1, #chunks do
        local c = chunks[i]
        if c.error then
            local e = c.error
            local f = fault(502, e.message or "upstream error event", e.type)
            f.provider = true
            return f
        end
        local ch = c.choices
        if type(ch) == "table" then
            for j = 1, #ch do
                local x = ch[j]
                if type(x) == "table" and x.finish_reason ~= nil and x.finish_reason ~= null then
                    st.finished = true
                end
            end
        end
        local u = c.usage
        if u ~= nil and u ~= null then
            b.usage = common.normalize_usage(u) or b.usage
        end
        if ai.api == "anthropic" then
            local s = st.encoder:chunk(c)
            if s and s ~= "" then
                out[#out + 1] = s
            end
        else
            local usage_only = u ~= nil and u ~= null and (type(ch) ~= "table" or #ch == 0)
            if not usage_only or ai.include_usage then
                out[#out + 1] = common.encode_chunk_sse(c)
            end
        end
        if not st.usage then
            b.text[#b.text + 1] = completion_text_of(c)
        end
    end
end

-- The SSE parser a driver's stream decodes with (nil for Bedrock's binary event stream).
local function sse_decoder(s)
    local d = s.decoder
    return type(d) == "table" and d.set_max_size and d or nil
end

-- The driver's stream over the bound: its SSE parser stopped, or (Bedrock's binary frames) its buffer grew past it.
local function over_bound(s, max)
    local p = sse_decoder(s)
    if p then
        return p.err ~= nil
    end
    local d = s.decoder
    return type(d) == "table" and type(d.buf) == "string" and #d.buf > max
end

---------------------------------------------------------------------------------------------------------------
-- the stream

-- Text the client got (for an estimate when the provider's usage did not reach it).
local function delivered_text(st)
    if st.pass then
        local p = sse.parser()
        local text = {}
        for _, raw in ipairs(st.raw) do
            for _, ev in ipairs(p:feed(raw)) do
                if ev.data ~= "[DONE]" then
                    text[#text + 1] = completion_text_of(decode(ev.data))
                end
            end
        end
        return concat(text)
    end
    return concat(st.text)
end

local function finish(ctx, ai, st, status, cut, err)
    if response.stream_ended(ctx) then -- a body_filter ended the stream (sluice.response.end_stream): complete
        status, cut, err = 200, "filter", nil
    end
    local u = st.usage
    finish_usage(ctx, ai, u, status, not u and delivered_text(st) or nil, cut)
    if err then
        ai.usage.error = err
    end
end

local function stream(ctx, ai, p)
    local conf = ai.conf
    local max = conf and conf.max_event_size or sse.DEFAULT_MAX_SIZE
    -- a driver that must see every chunk (e.g. azure-openai drops prompt_filter_results chunks) opts out
    local passthrough = ai.api == "openai" and OPENAI_WIRE[ai.provider.kind] and ai.driver.stream_passthrough ~= false
    -- st: started (the head went out), raw / text (what the client got, for an estimate), usage (the provider's,
    -- once the events before it reached the client), finished (a finish reason went by)
    local st = { started = false, raw = {}, text = {}, usage = nil, finished = false }
    local pass, s
    if passthrough then
        pass = new_pass(ai, max)
        st.pass = pass
    else
        s = ai.driver.new_stream(ai.op, { include_usage = true })
        local dec = sse_decoder(s)
        if dec then
            dec:set_max_size(max)
        end
        if ai.api == "anthropic" then
            st.encoder = anthropic_api().stream_encoder({ model = ai.requested_model })
        end
    end
    local rec = ai.usage
    local gone, f = false, nil

    -- what a batch carried, once it reached the client (or had nothing for it, as a dropped usage chunk)
    local function commit(b, data)
        if b.usage then
            st.usage = b.usage
        end
        if not st.usage and data then -- text for an estimate, kept only while no usage reached the client
            if pass then
                st.raw[#st.raw + 1] = data
            else
                local t = st.text
                for i = 1, #b.text do t[#t + 1] = b.text[i] end
            end
        end
    end

    -- writes out (starting the stream first) and commits b; false when the client is gone
    local function deliver(out, b)
        if not st.started then
            if not response.stream_start(200, SSE_HEADERS, ctx) then
                return false
            end
            st.started = true
            ai.first_byte = true
            if ai.idle_timeout and type(p) ~= "table" then
                C.sl_proxy_set_read_timeout(p, ai.idle_timeout)
            end
        end
        if not rec.ttft then
            rec.ttft = C.sl_time() - ai.t0
        end
        local data = concat(out)
        if not response.stream_write(data, ctx) then
            return false
        end
        commit(b, data)
        return true
    end

    while true do
        local bytes = upstream.read(ctx, p)
        if not bytes then
            break
        end
        local out, b = {}, { text = {}, usage = nil }
        if pass then
            local had = pass.usage
            f = pass:feed(bytes, out)
            if pass.usage ~= had then
                b.usage = pass.usage
            end
        else
            f = encode_chunks(ai, st, s:feed(bytes), out, b)
            if not f and over_bound(s, max) then
                f = too_large(max)
            end
        end
        if st.started or not f then
            if #out == 0 then
                commit(b)
            elseif not deliver(out, b) then
                gone = true -- ending the request closes the upstream connection
                break
            end
        end
        if f then
            break
        end
    end

    if ctx._cut then -- a body_filter plugin failed: the stream was cut (logged with the request id)
        return finish(ctx, ai, st, 500, "gateway", "a body_filter plugin failed")
    end
    if gone or ctx.req.client_gone ~= 0 or p.error == UPERR_CLIENT_GONE then
        return finish(ctx, ai, st, 499, "client")
    end
    -- the client already has a whole answer ([DONE] or message_stop went out): whatever follows is not its business
    -- (an encoder that stopped in a read whose output was held back by a fault sent the client nothing)
    local client_done = st.started and ((pass and pass.done) or (st.encoder and st.encoder.stopped))
    if not f and p.error ~= 0 then
        local what = upstream.error_text(p.error)
        f = fault(p.error == UPERR_TIMEOUT and 504 or 502, "upstream " .. what ..
            (st.started and " during the stream" or " before the first event"))
        f.kind = p.error == UPERR_TIMEOUT and "timeout" or "error"
    end
    if not f then -- a clean end of the upstream body: complete, or cut short?
        local out, b = {}, { text = {}, usage = nil }
        if pass then
            local had = pass.usage
            f = pass:close(out)
            if pass.usage ~= had then
                b.usage = pass.usage
            end
        else
            if sse_decoder(s) then -- an event the stream ended without its blank line after
                f = encode_chunks(ai, st, s:feed("\n\n"), out, b)
            end
            local terminal = s.done
            if not f then
                f = encode_chunks(ai, st, s:finish(), out, b)
            end
            if not f and not terminal and (TERMINAL_EVENT[ai.provider.kind] or not st.finished) then
                f = fault(502, "upstream stream ended before its end (" ..
                    (TERMINAL_EVENT[ai.provider.kind] and "no message_stop" or "no finish reason") .. ")")
            end
            if not f then
                if ai.api == "anthropic" then
                    out[#out + 1] = st.encoder:finish() or ""
                else
                    out[#out + 1] = common.done_sse()
                end
            end
        end
        if not f or client_done then
            if #out == 0 and st.started then
                commit(b)
            elseif not deliver(out, b) then
                return finish(ctx, ai, st, 499, "client")
            end
            response.stream_finish(ctx)
            return finish(ctx, ai, st, 200)
        end
        if st.started then
            if #out == 0 then
                commit(b)
            elseif not deliver(out, b) then
                return finish(ctx, ai, st, 499, "client")
            end
        end
    end
    if client_done then
        response.stream_finish(ctx)
        return finish(ctx, ai, st, 200)
    end

    -- a fault: nothing sent yet -> an HTTP error (or another target); else one error event, no terminal event
    local status = f.status or 502
    if not st.started then
        if ai.defer_errors then
            return false, { kind = f.kind or "error", status = status, message = f.message }
        end
        finish(ctx, ai, st, status, "upstream", f.message)
        local body = common.error_body(ai.api, status, f.message, f.type)
        response.deliver(ctx, status, json_encode(body) or "{}", { ["content-type"] = "application/json" }, true)
        return
    end
    response.stream_write(stream_error_event(ai, status, f.message, f.type), ctx)
    response.stream_finish(ctx)
    finish(ctx, ai, st, status, "upstream", f.message)
end

--- Streams the answer of upstream call p (status 2xx) to the client and finishes the usage record. With
--- ai.defer_errors, a failure before the first event returns false, {kind, status, message} unanswered.
_M.run = stream

return _M

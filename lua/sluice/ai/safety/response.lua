-- sluice.ai.safety.response: the texts of a response as a body_filter sees it on an AI route (already in the
-- client's format), whole or streamed, handed to a handler that may change them, hold parts back, or stop the
-- response. Shared by ai-pii (placeholder restore, output masking) and ai-moderation.
--
--   local rs = require("sluice.ai.safety.response")
--   function plugin.body_filter(conf, ctx, chunk, eof)
--       local st = ctx.my_rs or rs.new(ctx, handler)     -- one per request and plugin
--       ctx.my_rs = st
--       return st:filter(chunk, eof)                      -- the bytes to send now
--   end
--
-- The handler (a table) has:
--   text(key, s, json) -> out | nil, "stop"   a piece of text of channel `key` (OpenAI "c<choice>" content or
--                                              "c<choice>:t<tool call>" arguments; Anthropic "b<block>"); json: s is
--                                              JSON text (tool arguments) rather than prose. out replaces s; the
--                                              handler may keep a tail of it back for later
--   flush(key, json) -> out | nil, "stop"     the channel ends: what was kept back
--   finish() -> nil | "stop"                  the answer is about to end (before OpenAI's first finish_reason chunk,
--                                              Anthropic's message_delta, or the end of a whole body)
--   trigger (optional string)                  events whose raw bytes lack it (and lack "\u" escapes) and that
--                                              arrive while no channel holds anything back pass untouched, undecoded
--                                              (ai-pii: "<"), whole bodies likewise; without it every event with
--                                              text is decoded
--   refusal(api) (optional)                    for a stop in a whole body: the replacement body table, or nil, status,
--                                              body for an error answer instead
--   stop_reason (optional)                     Anthropic stop_reason of a stopped stream (default "refusal")
-- A stop ends a stream at once with a well-formed last event in the client's format (OpenAI: a chunk with
-- finish_reason "content_filter" for each choice, then data: [DONE]; Anthropic: content_block_stop for an open block,
-- message_delta with the stop reason and usage, message_stop), and sluice.response.end_stream stops the producer. A
-- whole body that stops is replaced by handler:refusal(api).
--
-- What is looked at: OpenAI chat.completion(.chunk) choices[].message|delta .content and tool_calls[].function
-- .arguments, text completions' choices[].text; Anthropic text blocks / text_delta, tool_use input (whole: each string
-- in it) / input_json_delta. Other bodies (not JSON or SSE, an error status, a content-encoding) pass untouched.
local response = require("sluice.pdk.response")
local json = require("sluice.ai.common.json")
local tokens = require("sluice.ai.tokens")

local type, ipairs, pairs, tostring, tonumber, setmetatable = type, ipairs, pairs, tostring, tonumber,
    setmetatable
local find, sub, gsub, lower = string.find, string.sub, string.gsub, string.lower
local concat = table.concat
local json_encode, json_decode, null = json.json_encode, json.json_decode, json.null

local _M = {}

local St = {}
St.__index = St

--- A response filter for ctx with handler h (see the header). api: the client's API ("openai" | "anthropic"),
--- by default from ctx (sluice.ai) or the path.
function _M.new(ctx, h, api)
    if not api then
        local ai = ctx.ai
        api = ai and ai.api or (find(ctx.path or "", "/messages$") and "anthropic" or "openai")
    end
    return setmetatable({ ctx = ctx, h = h, api = api, mode = nil, buf = nil, carry = "", open = {}, nopen = 0,
                          choices = {}, tmpl = nil, blocks = {}, cur_block = nil, stopped = false,
                          started = false, sent = {}, nsent = 0, finished = false }, St)
end

local function is_null(v)
    return v == nil or v == null
end

-- Decides what the body is, from the response head (first call).
local function mode_of(ctx)
    local status = response.get_status(ctx)
    if status and (status < 200 or status > 299) then return "pass" end
    if response.get_header("content-encoding", ctx) then return "pass" end
    local ct = response.get_header("content-type", ctx)
    if type(ct) == "table" then ct = ct[1] end
    ct = lower(tostring(ct or ""))
    if find(ct, "text/event-stream", 1, true) then return "sse" end
    if find(ct, "json", 1, true) then return "json" end
    return "pass"
end

---------------------------------------------------------------------------------------------------------------
-- text the client got (for a stop's usage estimate and the log)

local function note_sent(self, s)
    if s and s ~= "" then
        local n = self.nsent + 1
        self.sent[n] = s
        self.nsent = n
    end
end

--- The text that went to the client so far (streams), in order.
function St:sent_text()
    return concat(self.sent, "", 1, self.nsent)
end

---------------------------------------------------------------------------------------------------------------
-- whole bodies

-- Calls the handler over every text of a decoded body; returns changed, or nil, "stop".
local function whole_texts(self, t)
    local h, changed = self.h, false
    local function one(holder, k, key, is_json)
        local s = holder[k]
        if type(s) ~= "string" then return true end
        local a, stop = h.text(h, key, s, is_json)
        if not a then return nil, stop end
        local b
        b, stop = h.flush(h, key, is_json)
        if not b then return nil, stop end
        local out = b ~= "" and (a .. b) or a
        if out ~= s then
            holder[k] = out
            changed = true
        end
        return true
    end
    local ok, stop
    if self.api == "anthropic" then
        local content = t.content
        if type(content) == "table" then
            for i, b in ipairs(content) do
                if type(b) == "table" then
                    if b.type == "text" then
                        ok, stop = one(b, "text", "b" .. (i - 1), false)
                        if not ok then return nil, stop end
                    elseif b.type == "tool_use" and type(b.input) == "table" then
                        local slots = {}
                        require("sluice.ai.safety.request").value_slots(b.input, slots, "tool_input", 0)
                        for j, sl in ipairs(slots) do
                            ok, stop = one(sl.t, sl.k, "b" .. (i - 1) .. ":" .. j, false)
                            if not ok then return nil, stop end
                        end
                    end
                end
            end
        end
    else
        local choices = t.choices
        if type(choices) == "table" then
            for i, c in ipairs(choices) do
                if type(c) == "table" then
                    local idx = tonumber(c.index) or (i - 1)
                    local m = c.message
                    if type(m) == "table" then
                        ok, stop = one(m, "content", "c" .. idx, false)
                        if not ok then return nil, stop end
                        if type(m.tool_calls) == "table" then
                            for j, tc in ipairs(m.tool_calls) do
                                local f = type(tc) == "table" and tc["function"]
                                if type(f) == "table" then
                                    ok, stop = one(f, "arguments", "c" .. idx .. ":t" .. (j - 1), true)
                                    if not ok then return nil, stop end
                                end
                            end
                        end
                    elseif type(c.text) == "string" then
                        ok, stop = one(c, "text", "c" .. idx, false)
                        if not ok then return nil, stop end
                    end
                end
            end
        end
    end
    return changed
end

local function whole(self, body)
    local h = self.h
    if h.trigger and not find(body, h.trigger, 1, true) and not find(body, "\\u", 1, true)
        and not (h.finish and h.finish(h) == "stop") then
        return body -- no text in it can hold the trigger: nothing for the handler, no decode and encode
    end
    local t = json_decode(body)
    if type(t) ~= "table" then return body end
    local changed = whole_texts(self, t)
    if changed == nil or (h.finish and h.finish(h) == "stop") then
        self.stopped = true
        if not h.refusal then return body end
        local rb, status, eb = h.refusal(h, self.api, t)
        if rb then
            return json_encode(rb) or body
        end
        -- an error answer instead: possible while the head is not out (a body made in memory)
        if not response.head_sent(self.ctx) then
            response.set_status(status, self.ctx)
            return json_encode(eb) or body
        end
        rb = h.refusal(h, self.api, t, true) -- the head is out: the refusal body whatever the setting
        return rb and json_encode(rb) or body
    end
    if changed then
        return json_encode(t) or body
    end
    return body
end

---------------------------------------------------------------------------------------------------------------
-- streams: events

local function gmatch_lines(raw)
    return raw:gmatch("([^\n]+)")
end

-- Splits bytes into whole events ({raw, name, data}); keeps a partial one for the next call.
local function split(self, chunk, eof)
    local s = self.carry .. chunk
    self.carry = ""
    if find(s, "\r", 1, true) then
        -- CRLF or CR framing (not what the AI layer writes; a proxied upstream may): as LF, keeping a last "\r"
        -- that may be half of a "\r\n"
        local keep = ""
        if not eof and sub(s, -1) == "\r" then
            keep, s = "\r", sub(s, 1, -2)
        end
        s = gsub(gsub(s, "\r\n", "\n"), "\r", "\n")
        self.carry = keep
    end
    local out, pos, n = {}, 1, #s
    while pos <= n do
        local j = find(s, "\n\n", pos, true)
        if not j then break end
        local raw = sub(s, pos, j + 1)
        local name, data
        for line in gmatch_lines(raw) do
            local f, v = line:match("^([^:]*):? ?(.*)$")
            if f == "event" then
                name = v
            elseif f == "data" then
                data = data and (data .. "\n" .. v) or v
            end
        end
        out[#out + 1] = { raw = raw, name = name, data = data }
        pos = j + 2
    end
    if pos <= n then
        local rest = sub(s, pos)
        if eof then
            if find(rest, "%S") then -- an event the stream ended without its blank line: as it is
                out[#out + 1] = { raw = rest, name = nil, data = nil, partial = true }
            end
        else
            self.carry = self.carry == "" and rest or (rest .. self.carry)
        end
    end
    return out
end

local function encode_event(name, t)
    local data = json_encode(t) or "{}"
    if name then
        return "event: " .. name .. "\ndata: " .. data .. "\n\n"
    end
    return "data: " .. data .. "\n\n"
end

-- Records a key as open (it may hold text back until it ends).
local function open_key(self, key, info)
    if not self.open[key] then
        self.open[key] = info
        self.nopen = self.nopen + 1
    end
end

local function close_key(self, key)
    if self.open[key] then
        self.open[key] = nil
        self.nopen = self.nopen - 1
    end
end

-- The OpenAI chunk template (id, object, created, model) for chunks made here.
local function remember_tmpl(self, t)
    if not self.tmpl and type(t) == "table" then
        self.tmpl = { id = t.id, object = t.object, created = t.created, model = t.model }
    end
end

local function openai_chunk(self, choices)
    local tm = self.tmpl or {}
    return { id = tm.id or "chatcmpl-sluice", object = tm.object or "chat.completion.chunk",
             created = tm.created or 0, model = tm.model or "", choices = json.array(choices) }
end

local function is_completion(self)
    return self.tmpl and self.tmpl.object == "text_completion"
end

---------------------------------------------------------------------------------------------------------------
-- streams: stop

-- The events that end a stream now, in the client's format.
local function stop_events(self)
    local out = {}
    if self.api == "anthropic" then
        if not self.started then
            out[#out + 1] = encode_event("message_start", { type = "message_start", message = {
                id = "msg_sluice", type = "message", role = "assistant", model = "", content = json.array(),
                stop_reason = null, stop_sequence = null, usage = { input_tokens = 0, output_tokens = 0 } } })
        end
        if self.cur_block ~= nil then
            out[#out + 1] = encode_event("content_block_stop", { type = "content_block_stop", index = self.cur_block })
            self.cur_block = nil
        end
        out[#out + 1] = encode_event("message_delta", { type = "message_delta",
            delta = { stop_reason = self.h.stop_reason or "refusal", stop_sequence = null },
            usage = { output_tokens = tokens.count_text(self:sent_text()) } })
        out[#out + 1] = encode_event("message_stop", { type = "message_stop" })
    else
        local idxs = {}
        for idx in pairs(self.choices) do idxs[#idxs + 1] = idx end
        if #idxs == 0 then idxs[1] = 0 end
        table.sort(idxs)
        local choices = {}
        for i, idx in ipairs(idxs) do
            if is_completion(self) then
                choices[i] = { index = idx, text = "", logprobs = null, finish_reason = "content_filter" }
            else
                choices[i] = { index = idx, delta = {}, logprobs = null, finish_reason = "content_filter" }
            end
        end
        out[#out + 1] = encode_event(nil, openai_chunk(self, choices))
        out[#out + 1] = "data: [DONE]\n\n"
    end
    return concat(out)
end

-- Ends the stream: what the client gets last; later input is dropped.
local function stop(self, out)
    self.stopped = true
    out[#out + 1] = stop_events(self)
    if response.head_sent(self.ctx) then
        response.end_stream(self.ctx)
    end
end

---------------------------------------------------------------------------------------------------------------
-- streams: OpenAI

-- Appends flushed text s of an open key to choice c of chunk t (content, or its tool call's arguments).
local function put_flushed(c, info, s)
    if info.tool then
        local d = c.delta
        if type(d) ~= "table" then d = {}; c.delta = d end
        local tcs = d.tool_calls
        if type(tcs) ~= "table" then tcs = json.array(); d.tool_calls = tcs end
        local entry
        for _, tc in ipairs(tcs) do
            if type(tc) == "table" and tonumber(tc.index) == info.tool then entry = tc end
        end
        if not entry then
            entry = { index = info.tool, ["function"] = { arguments = "" } }
            tcs[#tcs + 1] = entry
        end
        local f = entry["function"]
        if type(f) ~= "table" then f = {}; entry["function"] = f end
        f.arguments = (type(f.arguments) == "string" and f.arguments or "") .. s
    elseif info.completion then
        c.text = (type(c.text) == "string" and c.text or "") .. s
    else
        local d = c.delta
        if type(d) ~= "table" then d = {}; c.delta = d end
        d.content = (type(d.content) == "string" and d.content or "") .. s
    end
end

-- Flushes every open key of choice idx into choice c; returns changed, or nil, "stop".
local function flush_choice(self, idx, c)
    local h, changed = self.h, false
    for key, info in pairs(self.open) do
        if info.choice == idx then
            local s, why = h.flush(h, key, info.json)
            if not s then return nil, why end
            close_key(self, key)
            if s ~= "" then
                put_flushed(c, info, s)
                note_sent(self, s)
                changed = true
            end
        end
    end
    return changed
end

-- One OpenAI text field holder[k] of channel key: through the handler; returns changed, or nil, "stop".
local function field(self, holder, k, key, info)
    local s = holder[k]
    if type(s) ~= "string" or s == "" then return false end
    local h = self.h
    open_key(self, key, info)
    local out, why = h.text(h, key, s, info.json)
    if not out then return nil, why end
    note_sent(self, out)
    if out ~= s then
        holder[k] = out
        return true
    end
    return false
end

local function openai_event(self, ev, out)
    local data = ev.data
    if data == nil then
        out[#out + 1] = ev.raw -- a comment or an empty event
        return
    end
    if data == "[DONE]" then
        -- whatever is still held back goes out in a chunk of its own before the end
        if self.nopen > 0 then
            local choices = {}
            local by = {}
            for key, info in pairs(self.open) do
                local c = by[info.choice]
                if not c then
                    c = is_completion(self) and { index = info.choice, text = "", logprobs = null,
                                                  finish_reason = null }
                        or { index = info.choice, delta = {}, logprobs = null, finish_reason = null }
                    by[info.choice] = c
                    choices[#choices + 1] = c
                end
                local s = self.h.flush(self.h, key, info.json)
                if not s then return stop(self, out) end
                if s ~= "" then put_flushed(c, info, s); note_sent(self, s) end
            end
            self.open, self.nopen = {}, 0
            out[#out + 1] = encode_event(nil, openai_chunk(self, choices))
        end
        if not self.finished then
            self.finished = true
            if self.h.finish and self.h.finish(self.h) == "stop" then return stop(self, out) end
        end
        out[#out + 1] = ev.raw
        return
    end
    local h = self.h
    local trig = h.trigger
    if self.tmpl and self.nopen == 0 and trig and not find(data, trig, 1, true) and not find(data, "\\u", 1, true)
        and not find(data, '"finish_reason":"', 1, true) and not find(data, '"finish_reason": "', 1, true) then
        out[#out + 1] = ev.raw -- nothing here for the handler (no trigger, nothing held back, not the end)
        return
    end
    local t = json_decode(data)
    if type(t) ~= "table" then
        out[#out + 1] = ev.raw
        return
    end
    remember_tmpl(self, t)
    local choices = t.choices
    if type(choices) ~= "table" then
        out[#out + 1] = ev.raw
        return
    end
    local changed, ending = false, false
    for i, c in ipairs(choices) do
        if type(c) == "table" then
            local idx = tonumber(c.index) or (i - 1)
            self.choices[idx] = true
            local ch, why
            local d = c.delta
            if type(d) == "table" then
                ch, why = field(self, d, "content", "c" .. idx, { choice = idx })
                if ch == nil then return stop(self, out, why) end
                changed = changed or ch
                local tcs = d.tool_calls
                if type(tcs) == "table" then
                    for j, tc in ipairs(tcs) do
                        local f = type(tc) == "table" and tc["function"]
                        if type(f) == "table" then
                            local ti = tonumber(tc.index) or (j - 1)
                            ch, why = field(self, f, "arguments", "c" .. idx .. ":t" .. ti,
                                { choice = idx, tool = ti, json = true })
                            if ch == nil then return stop(self, out, why) end
                            changed = changed or ch
                        end
                    end
                end
            elseif type(c.text) == "string" then
                ch, why = field(self, c, "text", "c" .. idx, { choice = idx, completion = true })
                if ch == nil then return stop(self, out, why) end
                changed = changed or ch
            end
            if not is_null(c.finish_reason) then
                ending = true
                ch, why = flush_choice(self, idx, c)
                if ch == nil then return stop(self, out, why) end
                changed = changed or ch
            end
        end
    end
    if ending and not self.finished then
        self.finished = true
        if h.finish and h.finish(h) == "stop" then return stop(self, out) end
    end
    out[#out + 1] = changed and encode_event(nil, t) or ev.raw
end

---------------------------------------------------------------------------------------------------------------
-- streams: Anthropic

local function anthropic_event(self, ev, out)
    local name, data = ev.name, ev.data
    if data == nil or name == "ping" or name == "error" then
        out[#out + 1] = ev.raw
        return
    end
    if name == "message_start" then
        self.started = true
        out[#out + 1] = ev.raw
        return
    end
    local h = self.h
    if name == "content_block_delta" or name == "content_block_start" then
        local trig = h.trigger
        local t
        if name == "content_block_delta" and trig and self.nopen == 0 and not find(data, trig, 1, true)
            and not find(data, "\\u", 1, true) then
            -- still the block's type must be known: content_block_start is always decoded
            out[#out + 1] = ev.raw
            return
        end
        t = json_decode(data)
        if type(t) ~= "table" then
            out[#out + 1] = ev.raw
            return
        end
        local idx = tonumber(t.index) or 0
        if name == "content_block_start" then
            local b = type(t.content_block) == "table" and t.content_block or {}
            self.blocks[idx] = b.type
            self.cur_block = idx
            if b.type == "text" and type(b.text) == "string" and b.text ~= "" then
                local ch, why = field(self, b, "text", "b" .. idx, { block = idx })
                if ch == nil then return stop(self, out, why) end
                out[#out + 1] = ch and encode_event(name, t) or ev.raw
                return
            end
            out[#out + 1] = ev.raw
            return
        end
        local d = t.delta
        local ch, why = false, nil
        if type(d) == "table" then
            if d.type == "text_delta" then
                ch, why = field(self, d, "text", "b" .. idx, { block = idx })
            elseif d.type == "input_json_delta" then
                ch, why = field(self, d, "partial_json", "b" .. idx, { block = idx, json = true })
            end
        end
        if ch == nil then return stop(self, out, why) end
        out[#out + 1] = ch and encode_event(name, t) or ev.raw
        return
    end
    if name == "content_block_stop" then
        local t = json_decode(data)
        local idx = type(t) == "table" and tonumber(t.index) or self.cur_block or 0
        local key = "b" .. idx
        local info = self.open[key]
        if info then
            local s, why = h.flush(h, key, info.json)
            if not s then return stop(self, out, why) end
            close_key(self, key)
            if s ~= "" then
                note_sent(self, s)
                local delta = info.json and { type = "input_json_delta", partial_json = s }
                    or { type = "text_delta", text = s }
                out[#out + 1] = encode_event("content_block_delta", { type = "content_block_delta", index = idx,
                                                                      delta = delta })
            end
        end
        if self.cur_block == idx then self.cur_block = nil end
        out[#out + 1] = ev.raw
        return
    end
    if name == "message_delta" and not self.finished then
        self.finished = true
        if h.finish and h.finish(h) == "stop" then return stop(self, out) end
    end
    out[#out + 1] = ev.raw
end

---------------------------------------------------------------------------------------------------------------

--- The bytes to send for this chunk (body_filter's result).
function St:filter(chunk, eof)
    if self.stopped then
        return ""
    end
    local mode = self.mode
    if not mode then
        mode = mode_of(self.ctx)
        self.mode = mode
    end
    if mode == "pass" then
        return nil
    end
    if mode == "json" then
        if not eof then
            local b = self.buf
            if not b then b = {}; self.buf = b end
            b[#b + 1] = chunk
            return ""
        end
        local body = self.buf and (concat(self.buf) .. chunk) or chunk
        self.buf = nil
        if body == "" then return "" end
        return whole(self, body)
    end
    local out = {}
    local evs = split(self, chunk, eof)
    local anthropic = self.api == "anthropic"
    for i = 1, #evs do
        local ev = evs[i]
        if ev.partial then
            out[#out + 1] = ev.raw
        elseif anthropic then
            anthropic_event(self, ev, out)
        else
            openai_event(self, ev, out)
        end
        if self.stopped then break end
    end
    if eof and not self.stopped and self.nopen > 0 then
        -- the stream ended without its end events (a fault upstream): flush as plain text is not possible in a
        -- well-formed way; what was held back is dropped with the broken stream
        self.open, self.nopen = {}, 0
    end
    return concat(out)
end

--- True once the handler stopped the response.
function St:is_stopped()
    return self.stopped
end

_M.stop_events = stop_events

return _M

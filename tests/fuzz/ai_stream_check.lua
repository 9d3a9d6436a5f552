-- fuzz_ai_stream: one fuzzed provider stream through sluice.ai.stream.run, the way sluice.ai.proxy hands a
-- 2xx streaming answer over, with sluice.proxy's upstream side replaced by the fuzz input: read() returns the
-- plan's pieces, then nil with p.error set to the fuzz-chosen end (0 clean, reset, timeout, client gone);
-- stream_start / stream_write / stream_finish record what the client would get; deliver() a whole answer
-- (a failure before anything was streamed is answered as an HTTP error in the client's shape).
--
-- Input: byte 1 picks the driver (KINDS), byte 2 the options (bit 0: Anthropic client, else OpenAI; bit 1:
-- include_usage; bit 2: defer_errors; bits 3-4: how the upstream ends; bit 5: Bedrock frames keep the CRCs as
-- given instead of having them fixed up), then a cut plan (fuzz.h), then the stream bytes.
--
-- Any error raised here is a finding (fuzz_ai_stream aborts with it). Checked:
--   * run() raises nothing (stream.lua catches nothing around the drivers and encoders: a raised error ends
--     the request's coroutine mid-stream, the client's stream cut without its error event, usage unrecorded);
--   * it returns false only with defer_errors and before anything was sent; otherwise the client got a head,
--     then writes, then the end (unless the client went away), and the usage record has a status;
--   * a translated stream (any client of a non-OpenAI-wire driver, or an Anthropic client) is well formed:
--     OpenAI client: "data: <JSON object>" events ending with [DONE] or an error; Anthropic client: "event:
--     NAME" + "data: <JSON>" whose type is NAME, from message_start (or error) to message_stop (or error);
--   * the text, reasoning and tool arguments the client gets do not depend on how the provider's bytes were
--     cut (translated streams, defer_errors off: that option legitimately depends on what the first read held).
local cjson = require("cjson.safe")
local crypto = require("sluice.crypto")
local byte, char, sub, find, fmt = string.byte, string.char, string.sub, string.find, string.format
local concat = table.concat
local type, ipairs, tostring, error, xpcall = type, ipairs, tostring, error, xpcall

local KINDS = { "openai", "azure-openai", "deepseek", "openai-compatible", "anthropic", "gemini", "bedrock", "mock" }
local OPENAI_WIRE = { openai = true, ["openai-compatible"] = true, deepseek = true, ["azure-openai"] = true }
local ENDS = { 0, 4, 3, 6 } -- none, SL_UPERR_RESET, SL_UPERR_TIMEOUT, SL_UPERR_CLIENT_GONE

-- the fake upstream side (sluice.ai.upstream) and client side (sluice.pdk.response's stream and whole-answer
-- calls) of stream.lua: only what it calls
local io_ = {}
package.loaded["sluice.ai.upstream"] = {
    read = function(ctx, p)
        io_.i = io_.i + 1
        local b = io_.reads[io_.i]
        if b == nil then p.error = io_.end_error end
        return b
    end,
    error_text = function(code) return "error" .. tostring(code) end,
}
do
    local response = require("sluice.pdk.response")
    response.stream_start = function(status, headers, ctx)
        if io_.started then error("stream_start called twice") end
        if status ~= 200 then error("stream_start with status " .. tostring(status)) end
        io_.started = true
        return true
    end
    response.stream_write = function(data, ctx)
        if not io_.started then error("stream_write before stream_start") end
        if io_.finished then error("stream_write after stream_finish") end
        if type(data) ~= "string" then error("stream_write of a " .. type(data)) end
        io_.out[#io_.out + 1] = data
        return true
    end
    response.stream_finish = function(ctx)
        if not io_.started then error("stream_finish before stream_start") end
        if io_.finished then error("stream_finish called twice") end
        io_.finished = true
    end
    response.deliver = function(ctx, status, body, headers)
        if io_.started then error("a whole answer after stream_start") end
        if io_.responded then error("a second whole answer") end
        if type(status) ~= "number" or status < 400 then error("a whole answer with status " .. tostring(status)) end
        if type(cjson.decode(body)) ~= "table" then error(fmt("a whole answer that is not JSON: %q", body)) end
        io_.responded = status
    end
end
local stream = require("sluice.ai.stream")
local usage = require("sluice.ai.usage")

local drivers = {}
for _, k in ipairs(KINDS) do drivers[k] = require("sluice.ai.drivers." .. k) end

local function u32(s, i)
    local a, b, c, d = byte(s, i, i + 3)
    return ((a * 256 + b) * 256 + c) * 256 + d
end
local function be32(n)
    return char(math.floor(n / 16777216) % 256, math.floor(n / 65536) % 256, math.floor(n / 256) % 256, n % 256)
end

-- AWS event-stream frames carry two CRC32s the fuzzer cannot guess: fix them up frame by frame (lengths as
-- given), so that what follows the CRC checks gets fuzzed too.
local function fix_crcs(s)
    local out, pos = {}, 1
    while #s - pos + 1 >= 16 do
        local total = u32(s, pos)
        if total < 16 or total > #s - pos + 1 then break end
        local prelude = sub(s, pos, pos + 7)
        local msg = prelude .. be32(crypto.crc32(prelude)) .. sub(s, pos + 12, pos + total - 5)
        out[#out + 1] = msg .. be32(crypto.crc32(msg))
        pos = pos + total
    end
    out[#out + 1] = sub(s, pos)
    return concat(out)
end

-- Splits the client's bytes into SSE events ({event=, data=}); translated streams use "\n" line ends only.
local function events(s)
    local evs = {}
    for block in s:gmatch("(.-)\n\n") do
        local ev = {}
        for line in (block .. "\n"):gmatch("(.-)\n") do
            local name, value = line:match("^([^:]*): ?(.*)$")
            if name == "data" then
                ev.data = ev.data and (ev.data .. "\n" .. value) or value
            elseif name == "event" then
                ev.event = value
            elseif line ~= "" then
                error(fmt("client stream: unexpected line %q", line))
            end
        end
        evs[#evs + 1] = ev
    end
    if not find(s, "\n\n$") and s ~= "" then error("client stream: does not end with a blank line") end
    return evs
end

local function text_of(evs, api)
    local parts, err = {}, false
    for _, ev in ipairs(evs) do
        local t = cjson.decode(ev.data)
        if type(t) == "table" then
            if t.error ~= nil or t.type == "error" then err = true end
            if api == "anthropic" then
                local d = type(t.delta) == "table" and t.delta or {}
                parts[#parts + 1] = tostring(d.text or d.partial_json or d.thinking or "")
            else
                local c = type(t.choices) == "table" and t.choices[1]
                local d = type(c) == "table" and type(c.delta) == "table" and c.delta or {}
                parts[#parts + 1] = type(d.content) == "string" and d.content or ""
                parts[#parts + 1] = type(d.reasoning_content) == "string" and d.reasoning_content or ""
                if type(d.tool_calls) == "table" then
                    for _, tc in ipairs(d.tool_calls) do
                        local f = type(tc) == "table" and type(tc["function"]) == "table" and tc["function"] or {}
                        parts[#parts + 1] = type(f.arguments) == "string" and f.arguments or ""
                    end
                end
            end
        end
    end
    return concat(parts), err
end

local function check_translated(out, api)
    local evs = events(out)
    if #evs == 0 then error("translated stream: no event") end
    for i, ev in ipairs(evs) do
        if ev.data == nil then error(fmt("event %d has no data", i)) end
        if api == "anthropic" then
            local t = cjson.decode(ev.data)
            if type(t) ~= "table" or t.type ~= ev.event then
                error(fmt("Anthropic event %d: %s with data %q", i, tostring(ev.event), ev.data))
            end
        elseif ev.data ~= "[DONE]" then
            local t = cjson.decode(ev.data)
            if type(t) ~= "table" then error(fmt("OpenAI event %d: data is not a JSON object: %q", i, ev.data)) end
        end
    end
    local first, last = evs[1], evs[#evs]
    if api == "anthropic" then
        if first.event ~= "message_start" and first.event ~= "error" then
            error("Anthropic stream starts with " .. tostring(first.event))
        end
        if last.event ~= "message_stop" and last.event ~= "error" then
            error("Anthropic stream ends with " .. tostring(last.event))
        end
    elseif last.data ~= "[DONE]" and not find(last.data, '"error"', 1, true) then
        error("OpenAI stream ends with " .. last.data)
    end
    return evs
end

local function run(kind, opts, pieces)
    local api = opts % 2 == 1 and "anthropic" or "openai"
    local ai = {
        api = api, provider = { kind = kind }, provider_name = "p", driver = drivers[kind], op = "chat",
        requested_model = "m", model = "m", stream = true, t0 = 0,
        include_usage = math.floor(opts / 2) % 2 == 1, defer_errors = math.floor(opts / 4) % 2 == 1,
        request = { model = "m", messages = { { role = "user", content = "hi" } } },
    }
    local ctx = { req = { client_gone = 0 }, route = { id = "r" } }
    ai.usage = usage.new_usage(ctx, ai)
    io_.reads, io_.i, io_.out, io_.started, io_.finished, io_.responded = pieces, 0, {}, false, false, nil
    io_.end_error = ENDS[math.floor(opts / 8) % 4 + 1]
    local p = { error = 0 }
    local ok, r1, r2 = xpcall(stream.run, debug.traceback, ctx, ai, p)
    if not ok and kind == "bedrock" and find(tostring(r1), "bedrock.lua", 1, true) and
        fz.known("bedrock-header-overrun") then
        return nil
    end
    if not ok then error(fmt("stream.run raised (driver %s, %s client): %s", kind, api, tostring(r1)), 0) end
    local out = concat(io_.out)
    if r1 == false then
        if not ai.defer_errors then error("run returned false without defer_errors") end
        if io_.started then error("run returned false after the stream started") end
        if type(r2) ~= "table" or type(r2.status) ~= "number" then error("deferred failure without a status") end
        return nil
    end
    local gone = io_.end_error == 6 -- the client went away: nothing more is owed to it
    if io_.responded then -- failed before the first event: one HTTP error answer, recorded
        if ai.usage.status ~= io_.responded then error("usage status differs from the error answered") end
        return nil
    end
    if not io_.started and not gone then error("run ended without starting the client's stream") end
    if not gone and not io_.finished then error("run ended without finishing the client's stream") end
    if type(ai.usage.status) ~= "number" then error("usage record without a status") end
    local translated = api == "anthropic" or not OPENAI_WIRE[kind]
    if translated and not gone then
        return out, check_translated(out, api), api
    end
    if out ~= "" and not gone and not find(out, "\n\n$") then error("pass-through stream does not end an event") end
    return out
end

return function(s)
    local kind = KINDS[(byte(s, 1) or 0) % #KINDS + 1]
    local opts = byte(s, 2) or 0
    local cuts, pos = fz.read_cuts(s, 3)
    local data = sub(s, pos)
    if kind == "bedrock" and math.floor(opts / 32) % 2 == 0 then data = fix_crcs(data) end
    local _, cut_evs, api = run(kind, opts, fz.pieces(data, cuts))
    if cut_evs and math.floor(opts / 4) % 2 == 0 then
        local _, whole_evs = run(kind, opts, { data })
        if not whole_evs then return end -- a known finding, looked past
        local a, ea = text_of(whole_evs, api)
        local b, eb = text_of(cut_evs, api)
        if (a ~= b or ea ~= eb) and not (kind == "bedrock" and fz.known("bedrock-decoder-drops")) then
            error(fmt("differential (driver %s, %s client): fed whole the client got %q (error %s), cut %q (error %s)",
                kind, api, a, tostring(ea), b, tostring(eb)), 0)
        end
    end
end

-- sluice.ai.stream: the streaming half of an AI call (sluice.ai.proxy.run hands over once the upstream answered
-- 2xx with stream = true). Two ways through:
--   pass-through (OpenAI client, OpenAI-wire provider): upstream bytes go out cut at event boundaries, with plain
--     searches for the usage chunk, [DONE] and error events (pass_raw; pass_events for "\r\n"-framed streams);
--   translated: the driver's stream parser yields canonical chunks, encoded for the client's API
--     (encode_chunks; Anthropic through sluice.ai.anthropic_api's stream encoder).
-- The usage record is finished here (sluice.ai.usage), from the provider's usage or a local count.
local proxy = require("sluice.proxy")
local base = require("sluice.pdk.base")
local common = require("sluice.ai.common")
local sse = require("sluice.ai.sse")
local usage = require("sluice.ai.usage")
local cjson = require("cjson.safe")

local C = base.C
local type, ipairs, require = type, ipairs, require
local find, sub = string.find, string.sub
local concat = table.concat
local decode = cjson.decode
local json_encode = common.json_encode
local finish_usage, scan_usage, completion_text_of = usage.finish_usage, usage.scan_usage, usage.completion_text_of

local UPERR_CLIENT_GONE = 6

local _M = {}

-- Providers whose wire format is the canonical one (responses and streams pass through untouched).
-- sluice.ai.proxy re-exports it (ai_proxy.OPENAI_WIRE) and uses it for its non-streaming lean path.
local OPENAI_WIRE = { openai = true, ["openai-compatible"] = true, deepseek = true, ["azure-openai"] = true }
_M.OPENAI_WIRE = OPENAI_WIRE

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

-- OpenAI-wire provider -> OpenAI client: bytes forwarded as they come, cut at event boundaries ("\n\n"); plain
-- searches find the usage chunk (read, and cut out when the client did not ask for it), [DONE] and errors.
-- A stream framed with "\r\n" goes through the SSE parser instead (pass_events).
local function pass_raw(ai, bytes, out, st)
    local buf = st.rest ~= "" and (st.rest .. bytes) or bytes
    local cut = nil
    local from = 1
    while true do -- the last event boundary
        local j = find(buf, "\n\n", from, true)
        if not j then
            break
        end
        cut, from = j + 1, j + 2
    end
    if not cut then
        st.rest = buf
        return
    end
    local done = buf
    if cut < #buf then
        done, st.rest = sub(buf, 1, cut), sub(buf, cut + 1)
    else
        st.rest = ""
    end
    local u = find(done, '"usage":{', 1, true) or find(done, '"usage": {', 1, true)
    if u then
        st.usage = scan_usage(done, u) or st.usage
        if not ai.include_usage then
            -- the usage-only chunk: the event around the match, when its choices are empty
            local s0 = 1
            local f = 1
            while true do
                local j = find(done, "\n\n", f, true)
                if not j or j > u then
                    break
                end
                s0, f = j + 2, j + 2
            end
            local e0 = find(done, "\n\n", u, true) or #done
            local ev = sub(done, s0, e0 + 1)
            if find(ev, '"choices":[]', 1, true) or find(ev, '"choices": []', 1, true) then
                done = sub(done, 1, s0 - 1) .. sub(done, e0 + 2)
            end
        end
    end
    if not st.done and find(done, "data: [DONE]", 1, true) then
        st.done = true
    end
    if find(done, '{"error"', 1, true) or find(done, '{ "error"', 1, true) then
        st.error = true
    end
    if not st.usage then
        st.raw[#st.raw + 1] = done -- for a local count, should no usage ever come
    end
    if done ~= "" then
        out[#out + 1] = done
    end
end

local function pass_events(ai, parser, bytes, out, st)
    local evs = parser:feed(bytes)
    for i = 1, #evs do
        local data = evs[i].data
        if data == "[DONE]" then
            st.done = true
            out[#out + 1] = "data: [DONE]\n\n"
        elseif data ~= "" then
            local keep = true
            if find(data, '"usage"%s*:%s*{') then
                st.usage = scan_usage(data) or st.usage
                if not ai.include_usage and find(data, '"choices"%s*:%s*%[%s*%]') then
                    keep = false
                end
            elseif find(data, '^%s*{%s*"error"') then
                st.error = true
            end
            if keep then
                if not st.usage then
                    st.raw[#st.raw + 1] = "data: " .. data .. "\n\n"
                end
                out[#out + 1] = "data: " .. data .. "\n\n"
            end
        end
    end
end

-- Canonical chunks -> bytes in the client's API.
local function encode_chunks(ai, chunks, out, st)
    for i = 1, #chunks do
        local c = chunks[i]
        if c.error then
            local e = c.error
            st.error = true
            out[#out + 1] = stream_error_event(ai, e.status or 502, e.message, e.type)
            return false
        end
        if ai.api == "anthropic" then
            local s = st.encoder:chunk(c)
            if s and s ~= "" then
                out[#out + 1] = s
            end
        else
            local ch = c.choices
            local usage_only = c.usage ~= nil and c.usage ~= cjson.null and (type(ch) ~= "table" or #ch == 0)
            if not usage_only or ai.include_usage then
                out[#out + 1] = common.encode_chunk_sse(c)
            end
        end
        if not st.usage_seen then
            st.text[#st.text + 1] = completion_text_of(c)
        end
    end
    return true
end

local function stream(ctx, pipe, ai, p)
    -- the head goes out with the first event: a stream that fails before it can still be retried elsewhere
    -- (ai.defer_errors, set by ai-proxy-multi)
    local started = false
    local st = { raw = {}, text = {}, rest = "" }
    local passthrough = ai.api == "openai" and OPENAI_WIRE[ai.provider.kind] and ai.driver.stream_passthrough ~= false
    local parser, s
    if not passthrough then
        s = ai.driver.new_stream(ai.op, { include_usage = true })
        if ai.api == "anthropic" then
            st.encoder = anthropic_api().stream_encoder({ model = ai.requested_model })
        end
    end
    local rec = ai.usage
    local ok = true
    while ok do
        local bytes = proxy.read(ctx, p)
        if not bytes then
            break
        end
        local out = {}
        if passthrough then
            if not parser and find(bytes, "\r", 1, true) then
                parser = sse.parser()
                bytes, st.rest = st.rest .. bytes, ""
            end
            if parser then
                pass_events(ai, parser, bytes, out, st)
            else
                pass_raw(ai, bytes, out, st)
            end
        else
            ok = encode_chunks(ai, s:feed(bytes), out, st)
        end
        if #out > 0 and not started then
            if ai.defer_errors and (st.error or not ok) then
                break -- an error event before anything else: nothing sent yet
            end
            if not proxy.stream_start(ctx, pipe, 200, SSE_HEADERS) then
                st.gone = true
                break
            end
            started = true
            ai.first_byte = true
            if ai.idle_timeout then
                C.sl_proxy_set_read_timeout(p, ai.idle_timeout)
            end
        end
        if #out > 0 then
            if not rec.ttft then
                rec.ttft = C.sl_time() - ai.t0
            end
            if not proxy.stream_write(ctx, pipe, concat(out)) then
                st.gone = true -- ending the request closes the upstream connection
                break
            end
        end
    end
    if st.gone or ctx.req.client_gone ~= 0 or p.error == UPERR_CLIENT_GONE then
        finish_usage(ctx, ai, st.usage or (s and s.usage), 499)
        return
    end
    if not started and ai.defer_errors and (p.error ~= 0 or not ok or st.error) then
        local status = p.error == 3 and 504 or 502
        return false, { kind = p.error == 3 and "timeout" or "error", status = status,
                        message = "upstream " .. (p.error ~= 0 and proxy.error_name(p.error) or "error event") ..
                            " before the first event" }
    end
    if not started then
        if not proxy.stream_start(ctx, pipe, 200, SSE_HEADERS) then
            finish_usage(ctx, ai, st.usage or (s and s.usage), 499)
            return
        end
        started = true
    end
    local out = {}
    local status = 200
    if p.error ~= 0 or not ok or st.error then
        -- the upstream broke off (or sent an error event, already forwarded): end with one error event
        status = 502
        if p.error ~= 0 and ok and not st.error then
            out[#out + 1] = stream_error_event(ai, 502, "upstream " .. proxy.error_name(p.error) ..
                " during the stream")
        end
    elseif passthrough then
        if parser then
            pass_events(ai, parser, "\n\n", out, st)
        elseif st.rest ~= "" then
            pass_raw(ai, "\n\n", out, st)
        end
        if not st.done then
            out[#out + 1] = "data: [DONE]\n\n"
        end
    else
        ok = encode_chunks(ai, s:finish(), out, st)
        if ok then
            if ai.api == "anthropic" then
                out[#out + 1] = st.encoder:finish() or ""
            else
                out[#out + 1] = common.done_sse()
            end
        else
            status = 502
        end
    end
    if #out > 0 then
        proxy.stream_write(ctx, pipe, concat(out))
    end
    proxy.stream_finish(ctx, pipe)
    local u = st.usage or (s and s.usage)
    local text
    if not u then
        if passthrough then
            local p2 = sse.parser()
            for _, raw in ipairs(st.raw) do
                for _, ev in ipairs(p2:feed(raw)) do
                    if ev.data ~= "[DONE]" then
                        st.text[#st.text + 1] = completion_text_of(decode(ev.data))
                    end
                end
            end
        end
        text = concat(st.text)
    end
    finish_usage(ctx, ai, u, status, text)
end
--- Streams the answer of upstream call p (status 2xx) to the client and finishes the usage record. With
--- ai.defer_errors, a failure before the first event returns false, {kind, status, message} unanswered.
_M.run = stream

return _M

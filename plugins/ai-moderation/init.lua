-- ai-moderation: checks the request and the answer against local categories (keyword lists and PCRE2 patterns)
-- and/or an OpenAI-compatible /v1/moderations provider; streamed answers are checked as they flow and end at once,
-- well-formed, on a violation.
--
--   ai-moderation:
--     categories:                                      # local checks
--       - {name: violence, keywords: [kill, bomb], patterns: ['\bshoot(ing)?\b'], threshold: 1, action: block}
--       - {name: profanity, keywords: [darn], threshold: 3, action: flag}      # flag: logged only
--     provider: openai-main                            # optional: a /v1/moderations provider of `providers`
--     model: omni-moderation-latest
--     thresholds: {violence: 0.5, "*": 0.8}            # per category score; none: the provider's `flagged`
--     timeout: 2s
--     on_error: fail_closed                            # fail_closed: refuse / stop; fail_open: let it pass
--     request: true                                    # check the request (roles, history as ai-prompt-guard)
--     roles: [user]
--     history: false
--     response: true                                   # check the answer
--     response_action: refusal                         # refusal (200, content_filter / refusal) | error (status)
--     status: 400
--     stream: {window: 1000, overlap: 64}              # characters; see below
--     message: "The content was blocked by the content policy."
--
-- A request that violates a category is a 400 in the client's shape naming the category. A non-streamed answer is
-- replaced by a refusal in the client's shape (OpenAI finish_reason "content_filter", Anthropic stop_reason
-- "refusal") or, with response_action: error, by `status`. A stream is checked piece by piece: local categories see
-- each piece with the `overlap` characters before it (a word split over events is still seen), the provider is asked
-- each time `window` new characters have come (with the overlap before them) and once more at the end; on a
-- violation the stream ends with a well-formed last event (sluice.ai.safety.response). What had been sent is logged
-- as sent (characters; the text itself with log_sent_text). Runs in rewrite (1054, after ai-pii masked the prompt:
-- the provider sees masked text) and body_filter (after ai-pii restored the answer). See docs/ai-moderation.md.
local sluice = require("sluice")
local sreq = require("sluice.ai.safety.request")
local rs = require("sluice.ai.safety.response")
local safety = require("sluice.ai.safety")
local check = require("ai-moderation.check")

local type, ipairs, tostring = type, ipairs, tostring
local sub, concat = string.sub, table.concat

local ACTIONS = { "block", "flag" }

local _M = {
    name = "ai-moderation",
    version = "1.0",
    priority = 1054,
    schema = {
        type = "object",
        additionalProperties = false,
        properties = {
            categories = { type = "array", default = {}, maxItems = 100, items = {
                type = "object", required = { "name" }, additionalProperties = false,
                properties = {
                    name = { type = "string", minLength = 1, maxLength = 64, pattern = "^[%w%._/%-]+$" },
                    keywords = { type = "array", default = {}, maxItems = 10000,
                                 items = { type = "string", minLength = 1, maxLength = 256 } },
                    patterns = { type = "array", default = {}, maxItems = 1000,
                                 items = { type = "string", minLength = 1, maxLength = 16384 } },
                    threshold = { type = "integer", minimum = 1, maximum = 1000000, default = 1 },
                    action = { enum = ACTIONS, default = "block" },
                } } },
            provider = { type = "string", minLength = 1, ref = "providers" },
            model = { type = "string", minLength = 1, maxLength = 256 },
            thresholds = { type = "object", default = {},
                           additionalProperties = { type = "number", minimum = 0, maximum = 1 } },
            provider_action = { enum = ACTIONS, default = "block" },
            timeout = { type = "duration", exclusiveMinimum = 0, maximum = 300, default = 5 },
            on_error = { enum = { "fail_open", "fail_closed" }, default = "fail_closed" },
            request = { type = "boolean", default = true },
            roles = { type = "array", minItems = 1, uniqueItems = true, default = { "user" },
                      items = { enum = { "system", "user", "assistant", "tool" } } },
            history = { type = "boolean", default = false },
            response = { type = "boolean", default = true },
            response_action = { enum = { "refusal", "error" }, default = "refusal" },
            status = { type = "status", minimum = 400, maximum = 499, default = 400 },
            stream = { type = "object", default = {}, additionalProperties = false, properties = {
                window = { type = "integer", minimum = 16, maximum = 1048576, default = 1000 },
                overlap = { type = "integer", minimum = 0, maximum = 65536, default = 64 },
            } },
            stop_reason = { type = "string", minLength = 1, maxLength = 64, default = "refusal" },
            message = { type = "string", minLength = 1, maxLength = 4096,
                        default = "The content was blocked by the content policy." },
            log_sent_text = { type = "boolean", default = false },
        },
    },
}

local log = sluice.log.named(_M.name)

function _M.check(conf)
    if #conf.categories == 0 and not conf.provider then
        return nil, "nothing to check with: give categories, a provider, or both"
    end
    if conf.stream.overlap >= conf.stream.window then
        return nil, "stream.overlap must be smaller than stream.window"
    end
    local _, err = check.compile(conf)
    if err then return nil, err end
    return true
end

local function build(conf)
    return check.compile(conf)
end

-- The message of a refusal naming the category.
local function refusal_message(conf, v)
    return conf.message .. " (category: " .. tostring(v.category) .. ")"
end

---------------------------------------------------------------------------------------------------------------
-- request

function _M.rewrite(conf, ctx)
    if not conf.request then return end
    local api = sreq.api(ctx.path)
    -- an OpenAI request whose bytes are plain JSON is read where its texts sit, without decoding it
    local all = api == "openai" and sreq.raw_units(sluice.request.json_bytes(ctx)) or nil
    if not all then
        local body = sluice.request.peek_json(ctx) -- read only: unchanged bytes still go upstream as sent
        if type(body) ~= "table" then return end
        all = sreq.units(body, api)
    end
    local c, err = safety.per_conf(conf, build)
    if not c then
        log.err("cannot compile the categories (id ", ctx.request_id, "): ", err)
        return sreq.refusal(api, 500, "moderation is misconfigured (id " .. ctx.request_id .. ")")
    end
    local units = {}
    for _, u in ipairs(all) do
        if c.roles[u.role] and #u.slots > 0 then units[#units + 1] = u end
    end
    if not conf.history and #units > 1 then units = { units[#units] } end
    local texts = {}
    for i, u in ipairs(units) do texts[i] = sreq.unit_text(u) end
    local rec = safety.record(ctx, "moderation")
    rec.request = "pass"
    if #texts == 0 then return end
    local text = concat(texts, "\n")
    local v = check.local_verdict(c, text, nil)
    if not v and conf.provider then
        v = check.provider_verdict(conf, ctx, text)
    end
    if not v then return end
    if v.flags then rec.request_flags = v.flags end
    if v.action ~= "block" then
        if v.category then
            rec.request = "flag"
            log.info("request flagged (id ", ctx.request_id, "): category \"", v.category, "\" (", v.source, ")")
        end
        return
    end
    rec.request, rec.category, rec.source, rec.score = "block", v.category, v.source, v.score
    log.warn("request refused (id ", ctx.request_id, "): category \"", v.category, "\" (", v.source,
        v.score and (", score " .. v.score) or "", v.error and (": " .. v.error) or "", ")")
    return sreq.refusal(api, 400, refusal_message(conf, v), "content_policy_violation")
end

---------------------------------------------------------------------------------------------------------------
-- response

-- The answer that replaces a blocked whole response (t: the decoded original), in the client's shape; with
-- response_action "error" (and not forced): nil, status, error body.
local function refusal_body(conf, api, t, v, force)
    local msg = refusal_message(conf, v)
    if conf.response_action == "error" and not force then
        local status, body = sreq.refusal(api, conf.status, msg, "content_policy_violation")
        return nil, status, body
    end
    local json = require("sluice.ai.common.json")
    if api == "anthropic" then
        return { id = t.id, type = "message", role = "assistant", model = t.model,
                 content = json.array({ { type = "text", text = msg } }), stop_reason = conf.stop_reason,
                 stop_sequence = json.null, usage = t.usage }
    end
    local choice
    if t.object == "text_completion" then
        choice = { index = 0, text = msg, logprobs = json.null, finish_reason = "content_filter" }
    else
        choice = { index = 0, message = { role = "assistant", content = msg, refusal = json.null },
                   logprobs = json.null, finish_reason = "content_filter" }
    end
    return { id = t.id, object = t.object or "chat.completion", created = t.created, model = t.model,
             choices = json.array({ choice }), usage = t.usage }
end

-- The handler for sluice.ai.safety.response (see check.lua for the windows).
local function handler(conf, ctx, c, rec)
    local mon = check.monitor(conf, ctx, c)
    local h = { stop_reason = conf.stop_reason }
    local verdict

    local function decide(v)
        if not v then return true end
        if v.flags then rec.response_flags = v.flags end
        if v.action ~= "block" then
            if v.category and rec.response ~= "block" then
                rec.response = "flag"
                log.info("response flagged (id ", ctx.request_id, "): category \"", v.category, "\" (", v.source,
                    ")")
            end
            return true
        end
        verdict = v
        return false
    end

    local pending = {}
    function h.text(_, key, s, is_json)
        if not decide(mon:piece(key, s)) then return nil, "stop" end
        local p = pending[key]
        if p then
            s = p .. s
            pending[key] = nil
        end
        local cut = check.keyword_tail(c, s) -- the start of a blocked word: kept until the word is whole
        if cut then
            pending[key] = sub(s, cut)
            s = sub(s, 1, cut - 1)
        end
        return s
    end

    function h.flush(_, key)
        local p = pending[key]
        pending[key] = nil
        return p or ""
    end

    function h.finish()
        if not decide(mon:finish()) then return "stop" end
        return nil
    end

    function h.refusal(_, api, t, force)
        return refusal_body(conf, api, t, verdict, force)
    end

    h.verdict = function() return verdict end
    return h
end

function _M.header_filter(conf, ctx)
    safety.link(ctx)
end

function _M.body_filter(conf, ctx, chunk, eof)
    if not conf.response then return nil end
    local st = ctx.moderation_rs
    if st == nil then
        local c = safety.per_conf(conf, build)
        if not c then
            ctx.moderation_rs = false
            return nil
        end
        local rec = safety.record(ctx, "moderation")
        rec.response = "pass"
        local h = handler(conf, ctx, c, rec)
        st = rs.new(ctx, h)
        st.handler, st.rec = h, rec
        ctx.moderation_rs = st
    elseif st == false then
        return nil
    end
    local was = st:is_stopped()
    local out = st:filter(chunk, eof)
    if st:is_stopped() and not was then
        local v = st.handler.verdict() or {}
        local rec = st.rec
        rec.response, rec.category, rec.source, rec.score = "block", v.category, v.source, v.score
        local streamed = st.mode == "sse"
        -- what the client already has (streams: the pieces before the one that failed); a whole body sent nothing
        local sent = streamed and st:sent_text() or ""
        if streamed then rec.sent_chars = #sent end
        log.warn(streamed and "stream stopped (id " or "response blocked (id ", ctx.request_id, "): category \"",
            tostring(v.category), "\" (", tostring(v.source), v.score and (", score " .. v.score) or "",
            v.error and (": " .. v.error) or "", ")",
            streamed and ("; " .. #sent .. " characters had already been sent") or "",
            (streamed and conf.log_sent_text) and (": " .. sent) or "")
    end
    return out
end

function _M.log(conf, ctx)
    local rec = ctx.safety and ctx.safety.moderation
    if rec and sluice.log.access_enabled() then
        sluice.log.access("moderation", { request = rec.request, response = rec.response, category = rec.category,
                                          source = rec.source, sent_chars = rec.sent_chars })
    end
end

return _M

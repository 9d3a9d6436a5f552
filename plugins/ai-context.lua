-- ai-context: context a client did not send. A system-prompt template filled per request (who is asking, request
-- headers, the route, the date and time in a configured zone, values other plugins put in ctx), and session
-- memory: the conversation of a session id, kept by the gateway and prepended to the next request.
-- docs/ai-context.md is the reference.
--
--   plugins:
--     key-auth: {}
--     ai-context:
--       template: "You help {{consumer.name}} ({{consumer.metadata.team}}). Today is {{weekday}} {{date}}."
--       timezone: Europe/Paris          # UTC, a fixed offset (+05:30) or an IANA name (sluice.ai.tz)
--       session: {header: X-Session-Id, store: memcached, ttl: 3600, budget_tokens: 2000}
--
-- Placeholders: {{consumer.name}}, {{consumer.groups}} (comma-separated), {{consumer.metadata.KEY}},
-- {{header.NAME}}, {{route.id}}, {{date}}, {{time}}, {{datetime}}, {{weekday}}, {{timezone}}, {{utc_offset}},
-- {{ctx.FIELD}}
-- (a string or number another plugin put in ctx: ctx.FIELD or ctx.var.FIELD). An unknown or missing value is
-- empty; values are cut to 1000 bytes, control characters dropped.
-- Placement: `before` (a system message before the client's), `after` (after the client's system
-- messages), `merge` (joined into the client's first system message); in Anthropic's top-level `system` the text
-- goes before or after the client's.
-- Session memory: the session is the header's value scoped to the consumer (another consumer with the same id
-- has another session); the client's new messages and the assistant's answer (a streamed answer assembled from
-- its events) are stored when the answer's last piece (a stream's last event) passes body_filter, before it is sent,
-- trimmed to `budget_tokens` (oldest turns first; system prompts are never stored, so they are always kept) and
-- put back before the client's messages of the next request. A failing store is logged and the request is
-- served without memory. Runs in rewrite at priority 1065 (after
-- key-auth, before ai-rag and ai-proxy).
local sluice = require("sluice")
local session = require("sluice.ai.session")
local tz = require("sluice.ai.tz")
local cjson = require("cjson.safe")

local type, ipairs, tostring, tonumber, pcall, floor = type, ipairs, tostring, tonumber, pcall, math.floor
local find, gsub, sub, concat, insert = string.find, string.gsub, string.sub, table.concat, table.insert
local request, response, log = sluice.request, sluice.response, sluice.log

local MAX_VALUE = 1000

local schema = {
    type = "object",
    additionalProperties = false,
    properties = {
        template = { type = "string", minLength = 1, maxLength = 100000 },
        placement = { type = "string", enum = { "before", "after", "merge" }, default = "before" },
        timezone = { type = "string", maxLength = 64, default = "UTC" }, -- UTC, +05:30, or Europe/Paris
        date_format = { type = "string", minLength = 1, maxLength = 100, default = "%Y-%m-%d" },
        time_format = { type = "string", minLength = 1, maxLength = 100, default = "%H:%M" },
        format = { type = "string", enum = { "auto", "openai", "anthropic" }, default = "auto" },
        session = {
            type = "object",
            additionalProperties = false,
            properties = {
                header = { type = "string", format = "header_name", default = "X-Session-Id" },
                store = { type = "string", enum = { "memcached", "shared" }, default = "shared" },
                shared_dict = { type = "string", minLength = 1, default = "sluice" },
                ttl = { type = "number", minimum = 1, maximum = 30 * 86400, default = 3600 },
                budget_tokens = { type = "integer", minimum = 1, maximum = 1000000, default = 2000 },
                max_turns = { type = "integer", minimum = 1, maximum = 10000, default = 50 },
                max_answer_bytes = { type = "integer", minimum = 1, maximum = 16777216, default = 1048576 },
                namespace = { type = "string", maxLength = 100, default = "" }, -- separates routes' sessions
                require_consumer = { type = "boolean", default = false },
            },
        },
    },
}
local _M = { name = "ai-context", version = "1.0", priority = 1065, schema = schema }

function _M.check(conf)
    if not conf.template and not conf.session then
        return nil, "template or session must be set"
    end
    local ok, err = tz.zone(conf.timezone)
    if not ok then
        return nil, "timezone: " .. tostring(err) .. " (UTC, a fixed offset such as +05:30, or a name such as "
            .. "Europe/Paris)"
    end
    for _, f in ipairs({ conf.date_format, conf.time_format }) do
        local fine = pcall(os.date, "!" .. f, 0)
        if not fine or find(f, "%%[^aAbBcdHIjmMpSUwWxXyYzZ%%]") then
            return nil, "date_format / time_format: unsupported conversion in " .. f
        end
    end
    return true
end

-- ---- the template ----

local function clean(v)
    if type(v) == "number" then return tostring(v) end
    if type(v) ~= "string" then return "" end
    v = gsub(v, "[%z\1-\8\11-\31\127]", "")
    if #v > MAX_VALUE then v = sub(v, 1, MAX_VALUE) end
    return v
end

local function path_get(t, path)
    for part in path:gmatch("[^%.]+") do
        if type(t) ~= "table" then return nil end
        t = t[part]
    end
    return t
end

local function fill(conf, ctx)
    local utc = floor(tonumber(sluice.time()))
    local offset = tz.offset(assert(tz.zone(conf.timezone)), utc)
    local t = utc + offset
    local consumer = ctx.consumer
    return (gsub(conf.template, "{{%s*([%w_%.%-]+)%s*}}", function(name)
        if name == "date" then return os.date("!" .. conf.date_format, t) end
        if name == "time" then return os.date("!" .. conf.time_format, t) end
        if name == "datetime" then return os.date("!" .. conf.date_format .. " " .. conf.time_format, t) end
        if name == "weekday" then return os.date("!%A", t) end
        if name == "timezone" then return conf.timezone end
        if name == "utc_offset" then
            local a = offset < 0 and -offset or offset
            return (offset < 0 and "-" or "+") .. string.format("%02d:%02d", floor(a / 3600), floor(a % 3600 / 60))
        end
        if name == "route.id" then return clean(ctx.route and ctx.route.id) end
        local head, rest = name:match("^([%w_]+)%.(.+)$")
        if head == "header" then
            return clean(request.get_header(rest, ctx))
        elseif head == "consumer" then
            if type(consumer) ~= "table" then return "" end
            if rest == "groups" then
                local g = {}
                for i, x in ipairs(type(consumer.groups) == "table" and consumer.groups or {}) do g[i] = tostring(x) end
                return clean(concat(g, ", "))
            end
            if rest == "keys" or find(rest, "^keys%.") then return "" end -- never the consumer's credentials
            return clean(path_get(consumer, rest))
        elseif head == "ctx" then
            local first = rest:match("^[^%.]+")
            if find(first, "^_") or find(first, "^req") or find(first, "^response") or find(first, "^exit")
                or first == "pipeline" or first == "config" or first == "consumer" then
                return "" -- the PDK's own fields and the config are not template material
            end
            local v = path_get(ctx, rest)
            if v == nil and type(ctx.var) == "table" then v = path_get(ctx.var, rest) end
            return clean(v)
        end
        return ""
    end))
end

local function detect(conf_format, path)
    if conf_format ~= "auto" then return conf_format end
    return find(path, "/messages$") and "anthropic" or "openai"
end

local function place(conf, body, fmt, text)
    if fmt == "anthropic" then
        sluice.ai.add_anthropic_system(body, text, conf.placement == "before")
        return
    end
    local msgs = body.messages
    local nsys = 0
    while type(msgs[nsys + 1]) == "table" and (msgs[nsys + 1].role == "system" or msgs[nsys + 1].role == "developer") do
        nsys = nsys + 1
    end
    if conf.placement == "merge" and nsys > 0 and type(msgs[1].content) == "string" then
        msgs[1].content = msgs[1].content .. "\n\n" .. text
    elseif conf.placement == "after" then
        insert(msgs, nsys + 1, { role = "system", content = text })
    else
        insert(msgs, 1, { role = "system", content = text })
    end
end

-- ---- session memory ----

local function start_session(conf, ctx, body, fmt)
    local s = conf.session
    local id = request.get_header(s.header, ctx)
    if id == nil then return end
    if #id == 0 or #id > session.MAX_ID or not find(id, session.ID_PATTERN) then
        return 400, { error = { message = s.header .. " must be 1 to " .. session.MAX_ID
            .. " letters, digits or _ . : -", type = "invalid_request_error" } }
    end
    local consumer = type(ctx.consumer) == "table" and ctx.consumer.name or nil
    if s.require_consumer and not consumer then
        return 401, { error = { message = "a session needs an identified consumer", type = "invalid_request_error" } }
    end
    local key = session.key(s, consumer, id)
    local history, err = session.load(s, key, consumer, id)
    if not history then
        log.warn("[ai-context] session memory unavailable, served without it: ", err)
        return
    end
    history = session.trim(history, s.budget_tokens, s.max_turns)
    -- the client's new messages (not its system prompt: that is the client's to send each time)
    local new, rest, nsys = {}, {}, 0
    for i, m in ipairs(body.messages) do
        if type(m) ~= "table" then return end
        if (m.role == "system" or m.role == "developer") and i == nsys + 1 then
            nsys = i
        else
            local text = session.text_of(m.content)
            -- user and assistant text only: tool calls and results replayed without their pairs are refused
            if (m.role == "user" or m.role == "assistant") and text and text ~= "" then
                new[#new + 1] = { role = m.role, content = text }
            end
            rest[#rest + 1] = m
        end
    end
    if #history > 0 then
        local msgs = {}
        for i = 1, nsys do msgs[i] = body.messages[i] end
        for _, m in ipairs(history) do msgs[#msgs + 1] = { role = m.role, content = m.content } end
        for _, m in ipairs(rest) do msgs[#msgs + 1] = m end
        body.messages = msgs
    end
    ctx.ai_context = { key = key, consumer = consumer, id = id, history = history, new = new, fmt = fmt,
                       parts = {}, size = 0 }
    return nil, nil, #history > 0
end

function _M.rewrite(conf, ctx)
    local body = request.get_json(ctx)
    if type(body) ~= "table" or type(body.messages) ~= "table" then return end
    local fmt = detect(conf.format, ctx.path)
    local changed = false
    if conf.session then
        local status, err, with_history = start_session(conf, ctx, body, fmt)
        if status then return status, err end
        changed = with_history or false
    end
    if conf.template then
        place(conf, body, fmt, fill(conf, ctx))
        changed = true
    end
    if changed then request.set_json(body, ctx) end
end

function _M.header_filter(_, ctx)
    local st = ctx.ai_context
    if st then
        st.ok = response.get_status(ctx) == 200
        local ct = response.get_header("content-type", ctx) or ""
        st.sse = find(ct, "text/event-stream", 1, true) ~= nil
    end
end

-- The assistant's text of a response body (JSON or SSE, OpenAI or Anthropic), or nil.
local function answer_text(body, sse)
    if not sse then
        local doc = cjson.decode(body)
        if type(doc) ~= "table" then return nil end
        local c = type(doc.choices) == "table" and doc.choices[1]
        if type(c) == "table" and type(c.message) == "table" then
            return session.text_of(c.message.content)
        end
        if doc.type == "message" and type(doc.content) == "table" then
            return session.text_of(doc.content)
        end
        return nil
    end
    local out, seen = {}, false
    for data in body:gmatch("data:[ ]?([^\r\n]*)") do
        local ev = data ~= "[DONE]" and cjson.decode(data)
        if type(ev) == "table" then
            local c = type(ev.choices) == "table" and ev.choices[1]
            if type(c) == "table" and type(c.delta) == "table" then
                seen = true
                if type(c.delta.content) == "string" then out[#out + 1] = c.delta.content end
            elseif ev.type == "content_block_delta" and type(ev.delta) == "table" then
                seen = true
                if type(ev.delta.text) == "string" then out[#out + 1] = ev.delta.text end
            elseif ev.type == "error" or ev.error then
                return nil -- a failed stream is not a turn
            end
        end
    end
    return seen and concat(out) or nil
end

-- Writes the turn (once): the history, the client's new messages and the answer.
local function store(conf, ctx)
    local st = ctx.ai_context
    if not st or st.stored or not st.ok or #st.new == 0 then return end
    st.stored = true
    local text = answer_text(concat(st.parts), st.sse)
    if not text then return end
    local s = conf.session
    local msgs = {}
    for _, m in ipairs(st.history) do msgs[#msgs + 1] = m end
    for _, m in ipairs(st.new) do msgs[#msgs + 1] = m end
    msgs[#msgs + 1] = { role = "assistant", content = text }
    local ok, err = session.save(s, st.key, st.consumer, st.id, session.trim(msgs, s.budget_tokens, s.max_turns))
    if not ok then
        log.warn("[ai-context] cannot store session memory: ", err)
    end
end

-- The last event of a stream (OpenAI's [DONE], Anthropic's message_stop) at the start of a line of chunk. Inside
-- an event's JSON a newline is escaped, so the model's text cannot fake one.
local function stream_end(chunk)
    return find(chunk, "\ndata: [DONE]", 1, true) or find(chunk, "\nevent: message_stop", 1, true)
        or sub(chunk, 1, 12) == "data: [DONE]" or sub(chunk, 1, 19) == "event: message_stop"
end

-- The turn is written when the last piece of the answer passes, before that piece reaches the client: a client
-- that sends its next message as soon as it has the answer (the SDKs stop reading a stream at its last event,
-- before the response's end) finds this turn remembered.
function _M.body_filter(conf, ctx, chunk, eof)
    local st = ctx.ai_context
    if not st then return end
    if st.ok and chunk ~= "" then
        st.size = st.size + #chunk
        if st.size > conf.session.max_answer_bytes then
            st.ok = false
            st.parts = {}
        else
            st.parts[#st.parts + 1] = chunk
        end
    end
    if eof or (st.sse and st.ok and chunk ~= "" and stream_end(chunk)) then store(conf, ctx) end
end

_M._answer_text = answer_text

return _M

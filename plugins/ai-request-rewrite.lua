-- ai-request-rewrite: an LLM call rewrites the client's prompt before it goes on ("translate to English", "remove
-- personal data", "make it a search query"). docs/ai-request-rewrite.md is the reference.
--
--   plugins:
--     ai-request-rewrite:
--       provider: rewriter            # from the providers map (any chat provider; the mock too)
--       model: gpt-4o-mini
--       prompt: "Translate the user's message to English. Answer with the translation only."
--       timeout: 5                    # seconds; then the original prompt goes on (on_error: original)
--
-- The text of the last user message (or of every user message with `messages: all_user`) is sent as the user
-- message after `prompt` as the system message; the answer's text replaces it (text parts of a multi-part
-- content are replaced by one text part; images and other parts stay). A failure (timeout, provider error, an
-- empty answer) keeps the original prompt (logged), or answers 502 with `on_error: fail`. The request's
-- `X-Sluice-Rewritten: 1|0` response header says what happened (`response_header: false` leaves it out). Both
-- client formats. Runs in rewrite at priority 1068: after ai-prompt-template / ai-prompt-decorator, before
-- ai-context and ai-rag (so retrieval sees the rewritten question).
local sluice = require("sluice")

local type, ipairs, tostring = type, ipairs, tostring
local request, response, log = sluice.request, sluice.response, sluice.log

local schema = {
    type = "object",
    required = { "provider", "prompt" },
    additionalProperties = false,
    properties = {
        provider = { type = "string", minLength = 1 },
        model = { type = "string", minLength = 1 },
        prompt = { type = "string", minLength = 1, maxLength = 100000 },
        messages = { type = "string", enum = { "last_user", "all_user" }, default = "last_user" },
        timeout = { type = "number", minimum = 0.001, maximum = 600, default = 5 },
        max_tokens = { type = "integer", minimum = 1, maximum = 100000 },
        max_input_chars = { type = "integer", minimum = 1, maximum = 1000000, default = 20000 },
        on_error = { type = "string", enum = { "original", "fail" }, default = "original" },
        response_header = { type = "boolean", default = true },
    },
}

local _M = { name = "ai-request-rewrite", version = "1.0", priority = 1068, schema = schema }

local text_of = sluice.ai.text_of

local function set_text(m, text)
    if type(m.content) == "string" then
        m.content = text
        return
    end
    local out, placed = {}, false
    for _, p in ipairs(m.content) do
        if type(p) == "table" and p.type == "text" then
            if not placed then
                out[#out + 1] = { type = "text", text = text }
                placed = true
            end
        else
            out[#out + 1] = p
        end
    end
    m.content = out
end

-- The rewritten text, or nil, err.
local function rewrite_text(conf, ctx, text)
    local resp, err = sluice.providers.call(conf.provider, "chat", {
        model = conf.model,
        max_tokens = conf.max_tokens,
        messages = { { role = "system", content = conf.prompt }, { role = "user", content = text } },
    }, { timeout = conf.timeout, config = ctx.config })
    if not resp then return nil, err end
    local c = type(resp.choices) == "table" and resp.choices[1]
    local out = type(c) == "table" and type(c.message) == "table" and text_of(c.message.content)
    if type(out) ~= "string" or not out:find("%S") then
        return nil, "provider " .. conf.provider .. ": empty answer"
    end
    return out
end

function _M.rewrite(conf, ctx)
    local body = request.get_json(ctx)
    if type(body) ~= "table" or type(body.messages) ~= "table" then return end
    local targets = {}
    for i = #body.messages, 1, -1 do
        local m = body.messages[i]
        if type(m) == "table" and m.role == "user" and text_of(m.content) then
            targets[#targets + 1] = m
            if conf.messages == "last_user" then break end
        end
    end
    if #targets == 0 then return end
    -- every rewrite first, then all applied or none: the decoded body is shared with the plugins after this one
    local outs = {}
    for i, m in ipairs(targets) do
        local text = text_of(m.content)
        local out, err
        if #text > conf.max_input_chars then
            err = "message over max_input_chars (" .. #text .. " characters)"
        else
            out, err = rewrite_text(conf, ctx, text)
        end
        if not out then
            if conf.on_error == "fail" then
                log.err("[ai-request-rewrite] ", err)
                return 502, { error = { message = "the prompt could not be rewritten", type = "rewrite_error" } }
            end
            log.warn("[ai-request-rewrite] the original prompt goes on: ", tostring(err))
            ctx.request_rewritten = false
            return
        end
        outs[i] = out
    end
    for i, m in ipairs(targets) do set_text(m, outs[i]) end
    ctx.request_rewritten = true
    request.set_json(body, ctx)
end

function _M.header_filter(conf, ctx)
    if conf.response_header and ctx.request_rewritten ~= nil then
        response.set_header("X-Sluice-Rewritten", ctx.request_rewritten and "1" or "0", ctx)
    end
end

return _M

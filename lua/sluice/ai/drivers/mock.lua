-- sluice.ai.drivers.mock: a provider that answers locally, in the OpenAI wire format, without any upstream.
--
-- build_request returns a req like every driver, plus `req.local_response`; the runtime does not connect
-- anywhere for it: it waits `latency_ms`, then hands `body` to parse_response (non-streaming) or feeds each
-- string of `chunks` to new_stream():feed(), waiting `chunk_delay_ms` between them:
--   req.local_response = {status=, headers=, body=string | nil, chunks={sse strings} | nil,
--                         latency_ms=, chunk_delay_ms=, decoded=table | nil (embeddings: the body decoded)}
-- provider.options (all optional):
--   text             reply text (default "This is a mock response.")     echo = true: reply with the last user text
--   prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens    reported usage (default: local estimate)
--   latency_ms (before the first byte), chunk_delay_ms (between stream chunks), chunk_chars (default: per word)
--   finish_reason    default "stop" ("tool_calls" when tool_calls is set)
--   tool_calls       list of {name=, arguments=table|string}: answer with tool calls instead of text
--   error            {status=, message=, type=, code=, retry_after=}: answer with this error
--   fail_after_chunks n: stream n content chunks, then an error event and no [DONE] (mid-stream failure)
--   embedding_dimensions (default 256; a request's `dimensions` wins): embeddings are hashed bags of words
--                    (see vector() below): deterministic, and near each other when the texts share words
--   moderation       the /v1/moderations answers (mock.moderations, used by ai-moderation), all optional:
--                    {words = {category = {word, ...}}: a category scores 0.9 when one of its words is in the input
--                     (case-insensitive), else 0.01 (default words below, MODERATION_WORDS); latency_ms;
--                     error = {status, message}: answer with this error; fail_after = n: the first n calls answer,
--                     later ones fail with a 500 (for fail_open / fail_closed tests)}
local common = require("sluice.ai.common")
local openai = require("sluice.ai.drivers.openai")
local tokens = require("sluice.ai.tokens")

local type, ipairs, tostring, tonumber = type, ipairs, tostring, tonumber
local json_encode, null = common.json_encode, common.null
local byte = string.byte
local bit = require("bit")

local _M = { kind = "mock", ["local"] = true }

local DEFAULT_TEXT = "This is a mock response."
local DEFAULT_DIMS = 256

local function last_user_text(body)
    local msgs = type(body) == "table" and body.messages
    if type(msgs) ~= "table" then return nil end
    for i = #msgs, 1, -1 do
        if type(msgs[i]) == "table" and msgs[i].role == "user" then return common.content_text(msgs[i].content) end
    end
    return nil
end

local function split_text(text, chunk_chars)
    local out = {}
    if chunk_chars and chunk_chars > 0 then
        for i = 1, #text, chunk_chars do out[#out + 1] = text:sub(i, i + chunk_chars - 1) end
    else
        for piece in text:gmatch("%s*%S+") do out[#out + 1] = piece end
        local trailing = text:match("%s+$")
        if trailing then out[#out + 1] = trailing end
    end
    if #out == 0 then out[1] = "" end
    return out
end

-- Embeddings: a hashed bag of words, so texts that share words are near each other (what a retrieval test
-- needs) and the same text always gives the same vector. Words are lower-cased, stop words dropped, plural /
-- -ing / -ed / final e stripped; each word and each of its character trigrams (weighted 0.3, so "configure"
-- and "configuration" stay close) is hashed (FNV-1a) into 4 dimensions with a sign, weighted by 1 + log(tf),
-- and the vector is scaled to unit length: a random projection of the word counts, whose cosines follow
-- the texts' word overlap. Not a language model: synonyms are not near.
local STOP = {}
for w in ([[a about after all also am an and any are as at be been before being but by can could did do does
doing for from had has have having he her here him his how i if in into is it its itself just me more most my no
nor not of off on once only or other our out over own same she should so some such than that the their them then
there these they this those through to too under until up very was we were what when where which while who whom
why will with would you your yours]]):gmatch("%a+") do STOP[w] = true end

local band, bxor, lshift, rshift, tobit = bit.band, bit.bxor, bit.lshift, bit.rshift, bit.tobit
local log, sqrt, floor = math.log, math.sqrt, math.floor

local function fnv(s)
    local h = -2128831035 -- 2166136261 as a signed 32-bit number
    for i = 1, #s do
        h = bxor(h, byte(s, i))
        h = tobit(lshift(h, 24) + h * 403) -- h * 16777619 mod 2^32, exact in doubles
    end
    return h
end

local function stem(w)
    local n = #w
    if n > 4 and w:sub(-3) == "ies" then w = w:sub(1, -4) .. "y"
    elseif n > 3 and w:sub(-1) == "s" and w:sub(-2) ~= "ss" and w:sub(-2) ~= "us" and w:sub(-2) ~= "is" then
        w = w:sub(1, -2)
    end
    if #w >= 6 and w:sub(-3) == "ing" then w = w:sub(1, -4)
    elseif #w >= 5 and w:sub(-2) == "ed" then w = w:sub(1, -3) end
    if #w > 3 and w:sub(-1) == "e" then w = w:sub(1, -2) end
    return w
end

local function add_feature(v, dims, feature, weight)
    local h = fnv(feature)
    for _ = 1, 4 do
        h = bxor(h, lshift(h, 13)); h = bxor(h, rshift(h, 17)); h = bxor(h, lshift(h, 5))
        local idx = band(h, 0x7fffffff) % dims + 1
        v[idx] = v[idx] + (band(h, 0x80000000) ~= 0 and -weight or weight)
    end
end

local function vector(text, dims)
    local tf = {}
    for w in text:lower():gmatch("[%w\128-\255]+") do
        if #w > 1 and not STOP[w] then
            w = stem(w)
            tf[w] = (tf[w] or 0) + 1
        end
    end
    local v = {}
    for i = 1, dims do v[i] = 0 end
    local words = {}
    for w in pairs(tf) do words[#words + 1] = w end
    table.sort(words) -- the same order every time: float sums do not depend on hash order
    for _, w in ipairs(words) do
        local weight = 1 + log(tf[w])
        add_feature(v, dims, w, weight)
        local padded = "^" .. w .. "$"
        for i = 1, #padded - 2 do add_feature(v, dims, padded:sub(i, i + 2), 0.3 * weight) end
    end
    local ss = 0
    for i = 1, dims do ss = ss + v[i] * v[i] end
    if ss > 0 then
        local inv = 1 / sqrt(ss)
        for i = 1, dims do v[i] = floor(v[i] * inv * 1e6 + 0.5) / 1e6 end
    end
    return v
end
_M.embed_text = vector

local lazy_body = { __index = function(t, k)
    if k == "body" then
        local b = json_encode(t.decoded)
        rawset(t, "body", b)
        return b
    end
end }

local function error_response(o, stream)
    local e = o.error
    local status = tonumber(e.status) or 500
    local headers = { ["Content-Type"] = "application/json" }
    if e.retry_after then headers["Retry-After"] = tostring(e.retry_after) end
    return {
        status = status, headers = headers,
        body = json_encode(common.error_body("openai", status, e.message or "mock error", e.type, e.code)),
        latency_ms = tonumber(o.latency_ms) or 0,
    }
end

local function usage_for(o, op, body, completion_text)
    local p = tonumber(o.prompt_tokens) or tokens.count_request(op, body)
    local c = tonumber(o.completion_tokens) or (op == "embeddings" and 0 or tokens.count_text(completion_text))
    return common.openai_usage(p, c, tonumber(o.cached_tokens), tonumber(o.reasoning_tokens))
end

local function tool_calls(o)
    local calls = {}
    for i, tc in ipairs(o.tool_calls) do
        local args = tc.arguments
        if type(args) ~= "string" then args = json_encode(args or {}) end
        calls[i] = { id = tc.id or ("call_mock_" .. i), type = "function",
            ["function"] = { name = tc.name, arguments = args } }
    end
    return calls
end

--- Computes the local response for a request (see the header comment).
function _M.respond(provider, op, body, opts)
    local o = (provider and provider.options) or {}
    opts = opts or {}
    if type(o.error) == "table" then return error_response(o) end
    local model = type(body) == "table" and body.model or "mock"
    local created = opts.now and opts.now() or os.time()
    local latency = tonumber(o.latency_ms) or 0
    local json_headers = { ["Content-Type"] = "application/json" }

    if op == "models" then
        local data = common.array()
        for name in pairs((provider and provider.models) or {}) do
            data[#data + 1] = { id = name, object = "model", created = created, owned_by = "sluice-mock" }
        end
        table.sort(data, function(a, b) return a.id < b.id end)
        return { status = 200, headers = json_headers, body = json_encode({ object = "list", data = data }),
            latency_ms = latency }
    end

    if op == "embeddings" then
        local input = body.input
        if type(input) == "string" then input = { input } end
        local data = {}
        local dims = tonumber(body.dimensions) or tonumber(o.embedding_dimensions) or DEFAULT_DIMS
        for i, text in ipairs(type(input) == "table" and input or {}) do
            data[i] = { object = "embedding", index = i - 1, embedding = vector(tostring(text), dims) }
        end
        local u = usage_for(o, op, body, "")
        local resp = { object = "list", data = data, model = model,
                       usage = { prompt_tokens = u.prompt_tokens, total_tokens = u.prompt_tokens } }
        -- `decoded`: the answer as a table too, for callers inside the gateway (sluice.providers) that would
        -- only decode the JSON again; the JSON `body` is then made only when something reads it (encoding
        -- hundreds of floats per call was most of a RAG query's cost with this provider)
        return setmetatable({ status = 200, headers = json_headers, latency_ms = latency, decoded = resp },
            lazy_body)
    end

    local text = o.echo and last_user_text(body) or o.text or DEFAULT_TEXT
    local calls = type(o.tool_calls) == "table" and #o.tool_calls > 0 and tool_calls(o) or nil
    local finish = o.finish_reason or (calls and "tool_calls" or "stop")
    if calls then text = "" end
    local usage = usage_for(o, op, body, calls and json_encode(calls) or text)
    local id = (op == "completions" and "cmpl-" or "chatcmpl-") .. common.new_id("mock", 20)
    local stream = opts.stream
    if stream == nil then stream = type(body) == "table" and body.stream == true end

    if not stream then
        local choice
        if op == "completions" then
            choice = { index = 0, text = text, logprobs = null, finish_reason = finish }
        else
            choice = { index = 0, message = { role = "assistant", content = calls and null or text, tool_calls = calls,
                refusal = null }, logprobs = null, finish_reason = finish }
        end
        return { status = 200, headers = json_headers, latency_ms = latency, body = json_encode({
            id = id, object = op == "completions" and "text_completion" or "chat.completion", created = created,
            model = model, choices = { choice }, usage = usage, system_fingerprint = "fp_sluice_mock" }) }
    end

    local st = { id = id, created = created, model = model }
    local chunks = {}
    local function add(c) chunks[#chunks + 1] = common.encode_chunk_sse(c) end
    local function delta_chunk(delta, fr)
        if op == "completions" then
            return { id = id, object = "text_completion", created = created, model = model,
                choices = { { index = 0, text = delta.content or "", logprobs = null, finish_reason = fr or null } } }
        end
        return common.chunk(st, delta, fr)
    end
    if op ~= "completions" then add(delta_chunk({ role = "assistant", content = "" })) end
    local fail_after = tonumber(o.fail_after_chunks)
    local n = 0
    if calls then
        for i, tc in ipairs(calls) do
            add(delta_chunk({ tool_calls = { { index = i - 1, id = tc.id, type = "function",
                ["function"] = { name = tc["function"].name, arguments = "" } } } }))
            for _, piece in ipairs(split_text(tc["function"].arguments, tonumber(o.chunk_chars) or 8)) do
                add(delta_chunk({ tool_calls = { { index = i - 1, ["function"] = { arguments = piece } } } }))
            end
        end
    else
        for _, piece in ipairs(split_text(text, tonumber(o.chunk_chars))) do
            if fail_after and n >= fail_after then break end
            add(delta_chunk({ content = piece }))
            n = n + 1
        end
    end
    if fail_after then
        chunks[#chunks + 1] = "data: " .. json_encode(common.error_body("openai", 500,
            "mock: stream failed after " .. fail_after .. " chunks", "server_error")) .. "\n\n"
    else
        add(delta_chunk({}, finish))
        if opts.include_usage ~= false then add(common.usage_chunk(st, usage)) end
        chunks[#chunks + 1] = common.done_sse()
    end
    return { status = 200, headers = { ["Content-Type"] = "text/event-stream", ["Cache-Control"] = "no-cache" },
        chunks = chunks, latency_ms = latency, chunk_delay_ms = tonumber(o.chunk_delay_ms) or 0 }
end

-- The mock moderation model's word lists (OpenAI's category names).
local MODERATION_WORDS = {
    harassment = { "idiot", "moron" }, ["harassment/threatening"] = { "i will hurt you" },
    hate = { "hateful slur" }, ["hate/threatening"] = {}, illicit = { "counterfeit" }, ["illicit/violent"] = {},
    ["self-harm"] = { "self-harm" }, ["self-harm/intent"] = {}, ["self-harm/instructions"] = {},
    sexual = { "explicit sex" }, ["sexual/minors"] = {},
    violence = { "kill", "murder", "bomb" }, ["violence/graphic"] = { "gore" },
}
_M.MODERATION_WORDS = MODERATION_WORDS

local moderation_calls = 0 -- per worker, for fail_after

--- Answers an OpenAI /v1/moderations request body ({input = string | {strings}, model}) deterministically:
--- {status, headers, body (JSON text), latency_ms}. See `moderation` in the header.
function _M.moderations(provider, body)
    local o = (provider and provider.options) or {}
    local m = type(o.moderation) == "table" and o.moderation or {}
    local latency = tonumber(m.latency_ms) or 0
    local json_headers = { ["Content-Type"] = "application/json" }
    moderation_calls = moderation_calls + 1
    local e = m.error
    if type(e) ~= "table" and m.fail_after and moderation_calls > tonumber(m.fail_after) then
        e = { status = 500, message = "mock: moderation failed after " .. tostring(m.fail_after) .. " calls" }
    end
    if type(e) == "table" then
        local status = tonumber(e.status) or 500
        return { status = status, headers = json_headers, latency_ms = latency,
            body = json_encode(common.error_body("openai", status, e.message or "mock moderation error")) }
    end
    local inputs = type(body) == "table" and body.input or nil
    if type(inputs) == "string" then inputs = { inputs } end
    local words = type(m.words) == "table" and m.words or MODERATION_WORDS
    local results = {}
    for i, text in ipairs(type(inputs) == "table" and inputs or {}) do
        local low = tostring(text):lower()
        local cats, scores, flagged = {}, {}, false
        for cat in pairs(MODERATION_WORDS) do
            cats[cat], scores[cat] = false, 0.01
        end
        for cat, list in pairs(words) do
            local hit = false
            for _, w in ipairs(list) do
                if low:find(tostring(w):lower(), 1, true) then hit = true break end
            end
            cats[cat], scores[cat] = hit, hit and 0.9 or 0.01
            flagged = flagged or hit
        end
        results[i] = { flagged = flagged, categories = cats, category_scores = scores }
    end
    return { status = 200, headers = json_headers, latency_ms = latency, body = json_encode({
        id = "modr-" .. common.new_id("mock", 20),
        model = type(body) == "table" and body.model or "mock-moderation", results = common.array(results) }) }
end

function _M.build_request(provider, op, body, opts)
    op = op or "chat"
    if op ~= "chat" and op ~= "completions" and op ~= "embeddings" and op ~= "models" then
        return nil, "mock: unsupported operation " .. tostring(op)
    end
    if op ~= "models" and type(body) ~= "table" then return nil, "mock: request body must be a table" end
    opts = opts or {}
    local stream = op ~= "embeddings" and op ~= "models" and (opts.stream or (opts.stream == nil and body.stream == true))
    local lr = _M.respond(provider, op, body, { stream = stream, include_usage = opts.include_usage, now = opts.now })
    return {
        method = op == "models" and "GET" or "POST", scheme = "http", host = "mock", port = 0,
        path = "/v1" .. openai.OP_PATH[op], headers = {}, body = op ~= "models" and json_encode(body) or nil,
        stream = stream and true or false, local_response = lr,
    }
end

_M.parse_response = openai.parse_response
_M.parse_error = openai.parse_error
_M.new_stream = openai.new_stream
_M.usage = openai.usage

return _M

-- sluice.providers: calls to a provider of the config's providers map from a plugin (not the route's own AI
-- call): an embedding for a query, a chat completion that rewrites a prompt. The request and the answer are
-- in the canonical (OpenAI) form; the provider's driver translates, as for ai-proxy, and the call goes out
-- through sluice.http (the mock provider answers in Lua). Phases: rewrite, access, header_filter,
-- body_filter, log, and timers (each call yields).
--
--   local providers = require("sluice").providers
--   local resp, err = providers.call("openai-main", "chat", {model = "gpt-4o-mini", messages = {...}},
--                                    {timeout = 5})          -- resp.choices[1].message.content
--   local vecs, err = providers.embed("embedder", {"text one", "text two"}, {model = "text-embedding-3-small"})
--
-- Failures return nil, err (a one-line text: "provider x: timeout", "provider x: 401 invalid key", ...), status
-- (the HTTP status when the provider answered, else nil). Misuse (unknown op, wrong types) raises.
local ffi = require("ffi")
local C = require("sluice.core")
local base = require("sluice.pdk.base")
local timer = require("sluice.pdk.timer")
local vector = require("sluice.pdk.vector")

local type, pairs, tostring, tonumber, ipairs, error, require = type, pairs, tostring, tonumber, ipairs, error, require
local concat, floor = table.concat, math.floor
local ffi_new, ffi_copy = ffi.new, ffi.copy

ffi.cdef [[
int sl_rag_embeddings_read(const char *json, size_t len, uint32_t count, float *out, size_t cap, int64_t *tokens);
]]
local float_arr = ffi.typeof("float[?]")
local tokens_p = ffi_new("int64_t[1]")
local floats_buf, floats_cap = nil, 0 -- where an answer's numbers are read (grown to the largest answer)

local OPS = { chat = true, completions = true, embeddings = true }
local EMBED_BATCH = 64

local _M = {}

-- The validated config of the running request, else this worker's live one.
local function config()
    local ctx = base.current_ctx()
    if ctx and ctx.config then return ctx.config end
    local st = base.live_state()
    return st and st.cfg or nil
end

local function http()
    return require("sluice.pdk.http")
end

-- Sends one request (see call): the driver, then the status, headers and body of the answer, or the mock's
-- answer already decoded (a table: no JSON round trip) | nil, err.
local function exchange(name, op, body, opts)
    local cfg = opts.config or config()
    local provider = cfg and cfg.providers and cfg.providers[name]
    if type(provider) ~= "table" then
        return nil, "provider " .. name .. " is not configured"
    end
    local ai = require("sluice.ai.proxy")
    local d, derr = ai.driver(provider.kind)
    if not d then return nil, "provider " .. name .. ": " .. tostring(derr) end
    local b = {}
    for k, v in pairs(body) do b[k] = v end
    local _, served = ai.resolve_model({}, provider, b.model)
    if not served then
        return nil, "provider " .. name .. ": model " .. tostring(b.model) .. " is not served"
    end
    b.model, b.stream = served, nil
    local req, err = d.build_request(provider, op, b, { stream = false, include_usage = false })
    if not req then return nil, "provider " .. name .. ": " .. tostring(err) end
    local timeout = opts.timeout or (provider.timeout and provider.timeout.read) or 60
    local status, headers, rbody
    local lr = req.local_response
    if lr then -- the mock provider answers in Lua; its latency counts against the timeout
        local wait = (tonumber(lr.latency_ms) or 0) / 1000
        if wait > timeout then
            timer.sleep(timeout)
            return nil, "provider " .. name .. ": timeout"
        end
        if wait > 0 then timer.sleep(wait) end
        status, headers = lr.status or 200, lr.headers or {}
        if lr.decoded and status == 200 then
            return d, status, headers, nil, lr.decoded
        end
        rbody = lr.body or concat(lr.chunks or {})
    else
        local port = req.port
        local url = req.scheme .. "://" .. (req.host:find(":", 1, true) and ("[" .. req.host .. "]") or req.host)
            .. (port and (":" .. port) or "") .. req.path
        local tls = provider.tls or {}
        local res, herr, detail = http().request({
            method = req.method, url = url, headers = req.headers, body = req.body or "", timeout = timeout,
            ssl_verify = tls.verify, ca_file = tls.ca_file, proxy = provider.proxy,
        })
        if not res then
            return nil, "provider " .. name .. ": " .. tostring(herr) .. (detail and (" (" .. detail .. ")") or "")
        end
        status, headers, rbody = res.status, res.headers, res.body
    end
    return d, status, headers, rbody
end

-- The canonical response of an exchange's answer | nil, err, status.
local function parse(name, op, d, status, headers, rbody)
    local resp, perr = d.parse_response(status, headers, rbody, op)
    if not resp then
        local msg = type(perr) == "table" and (perr.message or perr.type) or tostring(perr)
        return nil, "provider " .. name .. ": " .. tostring(status) .. " " .. tostring(msg), status
    end
    return resp
end

--- Sends one request to provider `name` (op "chat", "completions" or "embeddings"; body canonical; body.model a
--- name the provider serves, mapped through its `models`). opts: timeout (seconds, default the provider's read
--- timeout or 60), config (a validated config; default the request's or the live one). Returns the canonical
--- response table | nil, err, status.
function _M.call(name, op, body, opts)
    if type(name) ~= "string" then error("provider name must be a string", 2) end
    if not OPS[op] then error("op must be chat, completions or embeddings", 2) end
    if type(body) ~= "table" then error("body must be a table", 2) end
    local d, status, headers, rbody, decoded = exchange(name, op, body, opts or {})
    if not d then return nil, status end
    if decoded then return decoded end
    return parse(name, op, d, status, headers, rbody)
end

-- An OpenAI-format answer of n embeddings read in C straight into float arrays: the list and the prompt
-- tokens, or nil when the answer is not one (an error, another format: the caller reads it the general way).
local function read_floats(status, rbody, n)
    if not rbody or status < 200 or status > 299 then return nil end
    local cap = floor(#rbody / 2) + 1 -- a number and its comma take two bytes or more
    if cap > floats_cap then floats_buf, floats_cap = float_arr(cap), cap end
    local dims = C.sl_rag_embeddings_read(rbody, #rbody, n, floats_buf, floats_cap, tokens_p)
    if dims <= 0 then return nil end
    local out = {}
    for i = 1, n do
        local v = float_arr(dims)
        ffi_copy(v, floats_buf + (i - 1) * dims, dims * 4)
        out[i] = v
    end
    return out, tonumber(tokens_p[0])
end

--- Embeds texts (a string or a list of strings) with provider `name`: a list of vectors (Lua arrays), in
--- order, plus the summed usage {prompt_tokens} | nil, err, status. opts: model (a name the provider serves),
--- dimensions (when the model supports it), batch (texts per call, default 64), timeout, config, floats (true:
--- the vectors as float arrays, as sluice.vector.new makes them; an OpenAI-format answer is then read in C
--- straight into them, without a JSON tree or a Lua array of hundreds of numbers: what a RAG query's embedding
--- costs the gateway).
function _M.embed(name, texts, opts)
    if type(name) ~= "string" then error("provider name must be a string", 2) end
    if type(texts) == "string" then texts = { texts } end
    if type(texts) ~= "table" then error("texts must be a string or a list of strings", 2) end
    opts = opts or {}
    local batch = opts.batch or EMBED_BATCH
    local out, tokens = {}, 0
    for i = 1, #texts, batch do
        local part = {}
        for j = i, math.min(i + batch - 1, #texts) do
            if type(texts[j]) ~= "string" then error("texts[" .. j .. "] must be a string", 2) end
            part[#part + 1] = texts[j]
        end
        local d, status, headers, rbody, resp = exchange(name, "embeddings",
            { model = opts.model, input = part, dimensions = opts.dimensions }, opts)
        if not d then return nil, status end
        local vecs, used
        if opts.floats then vecs, used = read_floats(status, rbody, #part) end
        if vecs then
            for k = 1, #part do out[i - 1 + k] = vecs[k] end
            tokens = tokens + (used > 0 and used or 0)
        else
            local err, st
            if not resp then resp, err, st = parse(name, "embeddings", d, status, headers, rbody) end
            if not resp then return nil, err, st end
            local data = type(resp.data) == "table" and resp.data or {}
            if #data ~= #part then
                return nil, "provider " .. name .. ": " .. #data .. " embeddings for " .. #part .. " inputs"
            end
            for k, e in ipairs(data) do
                local at = i - 1 + (tonumber(e.index) and (e.index + 1) or k)
                if type(e.embedding) ~= "table" or at < i or at > i + #part - 1 then
                    return nil, "provider " .. name .. ": bad embedding in the answer (base64 answers are not read)"
                end
                local v = e.embedding
                if opts.floats then
                    local verr
                    v, verr = vector.new(v)
                    if not v then return nil, "provider " .. name .. ": bad embedding in the answer: " .. verr end
                end
                out[at] = v
            end
            local u = resp.usage
            tokens = tokens + (type(u) == "table" and tonumber(u.prompt_tokens) or 0)
        end
    end
    return out, { prompt_tokens = tokens }
end

return _M

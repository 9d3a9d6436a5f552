-- sluice.cache.semantic: what the semantic cache (ai-cache `semantic`) compares, and the embedding call.
--
--   local text, partition = semantic.split(prefix, request, model, ignore)
--     text: the last user message's text (nil: nothing to compare, the request is not looked up);
--     partition: a hash of everything else (prefix: namespace, generations, scope; the model; the system prompt,
--     earlier turns, tools and parameters), so only requests that differ in their last question alone are
--     compared, and a purge (a new generation) empties the partition as it does the exact entries
--   local vec, err = semantic.embed(ctx, conf, text)   -- conf: {provider, model, timeout}; yields
--     the embedding of text by the provider (its driver builds the call: any provider kind with embeddings),
--     bounded by conf.timeout; nil, err on any failure (the caller then treats the request as a miss)
--   local ix = semantic.index(dict_name, capacity, max_entries)      -- the prompts' vectors (below)
--   local ok, err = semantic.add(ix, partition, vec, key, ttl)
--   local key, sim = semantic.nearest(ix, partition, vec, threshold)
--
-- The prompts' vectors live in the node's vector store (sluice.vector: the k-NN code ai-rag uses), one store
-- per dict, dimensions and capacity, shared by every worker and by the routes with those settings. A stored
-- key is PARTITION .. KEY (two 64-hex-digit hashes): the partition is the store's group, so a partition keeps
-- at most max_entries prompts (adding to a full one replaces its oldest) and a lookup compares its own
-- partition alone; the whole store keeps at most `capacity` (its oldest goes). A prompt expires with its answer
-- (ttl). Per node: another node has its own vectors, the answers are shared through L2.
local sluice = require("sluice")
local vector = require("sluice.pdk.vector")
local key = require("sluice.cache.key")
local common = require("sluice.ai.common")

local type, pairs, ipairs, tostring, tonumber, pcall, require = type, pairs, ipairs, tostring, tonumber, pcall, require
local sub = string.sub
local nn = common.nn

local PARTITION_LEN = 64 -- sluice.cache.key: 64 hex digits

local _M = {}

--- (last user text, partition hash) of a canonical chat request; text nil when it has no user message.
function _M.split(prefix, request, model, ignore)
    local msgs = type(request) == "table" and request.messages
    if type(msgs) ~= "table" then return nil end
    local last
    for i = #msgs, 1, -1 do
        local m = msgs[i]
        if type(m) == "table" and m.role == "user" then
            last = i
            break
        end
    end
    if not last then return nil end
    local m = msgs[last]
    local text = common.content_text(nn(m.content))
    if type(text) ~= "string" or text == "" or common.has_non_text(nn(m.content)) then
        return nil -- images, files: the text alone does not say what was asked
    end
    -- the request with the last user message's content blanked: everything else must match exactly
    local copy = {}
    for k, v in pairs(request) do copy[k] = v end
    local list = {}
    for i, x in ipairs(msgs) do list[i] = x end
    local blank = {}
    for k, v in pairs(m) do blank[k] = v end
    blank.content = ""
    list[last] = blank
    copy.messages = list
    return text, key.of("semantic\0" .. prefix, copy, model, ignore)
end

-- the driver of a provider kind (the AI runtime's table)
local function driver_of(kind)
    local ok, ai_proxy = pcall(require, "sluice.ai.proxy")
    if not ok then return nil, ai_proxy end
    return ai_proxy.driver(kind)
end

local function embedding_of(t)
    local data = type(t) == "table" and nn(t.data)
    local first = type(data) == "table" and data[1]
    local e = type(first) == "table" and nn(first.embedding)
    if type(e) ~= "table" or #e == 0 then return nil end
    for i = 1, #e do
        if type(e[i]) ~= "number" then return nil end
    end
    return e
end

--- See the top of this file.
function _M.embed(ctx, conf, text)
    local provider = ctx.config and ctx.config.providers and ctx.config.providers[conf.provider]
    if type(provider) ~= "table" then
        return nil, "embeddings provider " .. tostring(conf.provider) .. " is not configured"
    end
    local d, derr = driver_of(provider.kind)
    if not d then return nil, derr end
    local model = conf.model
    if type(provider.models) == "table" and provider.models[model] then
        model = provider.models[model]
    end
    local ok, req, berr = pcall(d.build_request, provider, "embeddings", { model = model, input = text }, {})
    if not ok or not req then
        return nil, "cannot build the embeddings call: " .. tostring(ok and berr or req)
    end
    local timeout = conf.timeout
    local status, headers, body
    local lr = req.local_response
    if lr then -- the mock provider answers in Lua
        local wait = (tonumber(lr.latency_ms) or 0) / 1000
        if wait > 0 then
            sluice.sleep(wait < timeout and wait or timeout)
            if wait >= timeout then return nil, "embeddings call timed out" end
        end
        status, headers, body = lr.status or 200, lr.headers or {}, lr.body
    else
        local port = req.port
        local default = req.scheme == "https" and 443 or 80
        local url = req.scheme .. "://" .. req.host .. ((port and port ~= default) and (":" .. port) or "")
            .. (req.path or "/")
        local res, err, detail = sluice.http.request({ method = req.method or "POST", url = url,
            headers = req.headers, body = req.body, timeout = timeout,
            ssl_verify = not (provider.tls and provider.tls.verify == false),
            ca_file = provider.tls and provider.tls.ca_file, proxy = provider.proxy, max_body = 16 * 1024 * 1024 })
        if not res then
            return nil, "embeddings call failed: " .. tostring(err)
                .. (detail and (" (" .. tostring(detail) .. ")") or "")
        end
        status, headers, body = res.status, res.headers, res.body
    end
    local pok, t, perr = pcall(d.parse_response, status, headers, body, "embeddings")
    if not pok or not t then
        local e = pok and perr or t
        return nil, "embeddings call: " .. tostring(type(e) == "table" and e.message or e)
    end
    local vec = embedding_of(t)
    if not vec then return nil, "embeddings call: no embedding in the answer" end
    return vec
end

--- The prompts' vectors of one ai-cache conf (see the top of this file); stores are opened on first use, when
--- the embeddings' dimensions are known.
function _M.index(dict_name, capacity, max_entries)
    return { name = "ai-cache/" .. dict_name .. "/", capacity = capacity, max = max_entries, stores = {} }
end

-- The store for vectors of n numbers, or nil, err.
local function store_of(ix, n)
    local st = ix.stores[n]
    if st then return st end
    if n < 1 or n > 16384 then return nil, "embedding of " .. n .. " dimensions" end
    local err
    st, err = vector.store(ix.name .. n .. "/" .. ix.capacity, { dims = n, capacity = ix.capacity })
    if not st then return nil, err end
    ix.stores[n] = st
    return st
end

--- Adds the prompt vec answered by key to partition (its oldest prompt goes when it is full); true or nil, err.
function _M.add(ix, partition, vec, k, ttl)
    local st, err = store_of(ix, #vec)
    if not st then return nil, err end
    return st:add(partition .. k, vec, ttl, PARTITION_LEN, ix.max)
end

--- The key of the prompt of partition nearest to vec with a cosine similarity >= threshold, and that
--- similarity; nil when there is none.
function _M.nearest(ix, partition, vec, threshold)
    local st = store_of(ix, #vec)
    local hits = st and st:search(vec, 1, threshold, "exact", partition)
    local h = hits and hits[1]
    if not h then return nil end
    return sub(h.key, PARTITION_LEN + 1), h.score
end

return _M

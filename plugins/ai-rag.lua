-- ai-rag: retrieval-augmented generation. The last user message (or a field the client sends) is the query;
-- the best chunks of an index go into the prompt with numbered citations, so the model answers from the
-- company's documents. docs/ai-rag.md is the reference.
--
--   plugins:
--     ai-rag:
--       index: {name: docs, file: data/docs.idx, source: docs, provider: embedder}   # built by `sluice rag build docs`
--       k: 4
--       budget_tokens: 1500
--
-- The index is the embedded one (a file built by `sluice rag build`, mapped once and shared by every worker:
-- sluice.rag) or, with `retrieval`, an HTTP endpoint of the user's own vector database (its answer mapped by
-- dot paths). Hits above the thresholds are rendered through `chunk_template` ({{n}}, {{source}},
-- {{heading}}, {{text}}, {{score}}) into `template` ({{context}}, {{query}}) and placed as system text before
-- or after the client's system prompt (both client formats), or before the last user message. The sources
-- used are listed in a response header. A retrieval failure (embedding provider down, index missing) serves
-- the request without context unless `on_error: fail`. Runs in rewrite at priority 1060: after the prompt
-- template and decorator plugins, before ai-proxy (access).
local sluice = require("sluice")
local cjson = require("cjson.safe")

local type, ipairs, pairs, tostring, tonumber, setmetatable = type, ipairs, pairs, tostring, tonumber, setmetatable
local concat, find, gsub, format, floor = table.concat, string.find, string.gsub, string.format, math.floor
local request, response, log = sluice.request, sluice.response, sluice.log

local index_def = {
    type = "object",
    required = { "name", "file", "source", "provider" },
    additionalProperties = false,
    properties = {
        name = { type = "string", pattern = "^[%w_%.%-]+$", maxLength = 64 },
        file = { type = "string", minLength = 1, maxLength = 4000 },   -- relative: to the prefix
        source = { type = "string", minLength = 1, maxLength = 4000 }, -- the folder `sluice rag build` reads
        provider = { type = "string", minLength = 1 },                  -- embeddings provider (providers map)
        model = { type = "string", minLength = 1 },
        dimensions = { type = "integer", minimum = 1, maximum = 16384 },
        chunk_size = { type = "integer", minimum = 100, maximum = 100000, default = 1200 },
        overlap = { type = "integer", minimum = 0, maximum = 50000, default = 150 },
        include = { type = "array", items = { type = "string", minLength = 1 }, maxItems = 100 },
        exclude = { type = "array", items = { type = "string", minLength = 1 }, maxItems = 100 },
        quantize = { type = "array", items = { type = "string", enum = { "int8", "binary" } }, maxItems = 2 },
        -- the vectors' inverted file (docs/vector.md): lists (default ~sqrt(chunks) from 4096 chunks, 0: none)
        -- and the lists a search probes by default
        ivf = {
            type = "object",
            additionalProperties = false,
            properties = {
                lists = { type = "integer", minimum = 0, maximum = 65536 },
                probes = { type = "integer", minimum = 1, maximum = 65536 },
            },
        },
        timeout = { type = "number", minimum = 0.001, maximum = 3600 },
    },
}

local retrieval_def = {
    type = "object",
    required = { "url" },
    additionalProperties = false,
    properties = {
        url = { type = "string", format = "url" },
        method = { type = "string", enum = { "POST", "GET" }, default = "POST" },
        headers = { type = "object", additionalProperties = { type = "string", format = "header_value" } },
        -- the request body: a JSON template whose string "{{query}}" / number placeholders are filled
        body = { type = "object", default = { query = "{{query}}", top_k = "{{k}}" } },
        results = { type = "string", default = "results" },   -- dot path of the hit list in the answer
        text = { type = "string", default = "text" },         -- dot paths inside one hit
        source = { type = "string", default = "source" },
        heading = { type = "string", default = "heading" },
        score = { type = "string", default = "score" },
        timeout = { type = "number", minimum = 0.001, maximum = 600, default = 5 },
    },
}

local schema = {
    type = "object",
    additionalProperties = false,
    properties = {
        index = index_def,
        retrieval = retrieval_def,
        mode = { type = "string", enum = { "hybrid", "bm25", "dense" }, default = "hybrid" },
        k = { type = "integer", minimum = 1, maximum = 50, default = 4 },
        probes = { type = "integer", minimum = 1, maximum = 65536 }, -- IVF lists searched (default: the index's)
        min_bm25 = { type = "number", minimum = 0, default = 0 },             -- BM25 score a chunk needs
        min_similarity = { type = "number", minimum = -1, maximum = 1, default = 0 }, -- cosine a chunk needs
        min_score = { type = "number", default = 0 },                       -- external retrieval: score a hit needs
        -- hybrid: how the two lists become one (docs/ai-rag.md#retrieval-quality-and-speed for the measurements)
        fusion = { type = "string", enum = { "score", "rrf" }, default = "score" },
        weights = {
            type = "object",
            additionalProperties = false,
            properties = {
                bm25 = { type = "number", exclusiveMinimum = 0, maximum = 100, default = 1 },
                dense = { type = "number", exclusiveMinimum = 0, maximum = 100, default = 1 },
            },
        },
        rrf_k = { type = "number", exclusiveMinimum = 0, maximum = 100000, default = 60 },
        budget_tokens = { type = "integer", minimum = 1, maximum = 1000000, default = 1500 },
        query_field = { type = "string", pattern = "^[%w_%-]+$" },   -- top-level body field (removed before going on)
        max_query_chars = { type = "integer", minimum = 1, maximum = 100000, default = 2000 },
        filter = {
            type = "object",
            additionalProperties = false,
            properties = {
                sources = { type = "array", items = { type = "string", minLength = 1 }, maxItems = 100 },
                meta = { type = "object", additionalProperties = { type = "string" } },
            },
        },
        template = { type = "string", minLength = 1, maxLength = 100000,
                     default = "Answer with the help of the numbered context below, and cite the sources you use as "
                         .. "[n].\n\n{{context}}" },
        chunk_template = { type = "string", minLength = 1, maxLength = 10000,
                           default = "[{{n}}] {{source}} ({{heading}})\n{{text}}" },
        placement = { type = "string", enum = { "system_before", "system_after", "user_before" },
                      default = "system_before" },
        sources_header = { type = "string", format = "header_name", default = "X-Sluice-RAG-Sources" },
        send_sources_header = { type = "boolean", default = true },
        on_error = { type = "string", enum = { "continue", "fail" }, default = "continue" },
        embedding_timeout = { type = "number", minimum = 0.001, maximum = 600, default = 10 },
        check_interval = { type = "number", minimum = 0.1, maximum = 3600, default = 2 }, -- index file changed?
        format = { type = "string", enum = { "auto", "openai", "anthropic" }, default = "auto" },
    },
}

local _M = { name = "ai-rag", version = "1.0", priority = 1060, schema = schema }

function _M.check(conf)
    if (conf.index == nil) == (conf.retrieval == nil) then
        return nil, "exactly one of index and retrieval must be set"
    end
    if not find(conf.template, "{{%s*context%s*}}") then
        return nil, "template must contain {{context}}"
    end
    return true
end

-- ---- the query ----

local function last_user(messages)
    for i = #messages, 1, -1 do
        local m = messages[i]
        if type(m) == "table" and m.role == "user" then
            return i, sluice.ai.text_of(m.content)
        end
    end
end

-- ---- retrieval ----

local function path_get(t, path)
    for part in path:gmatch("[^%.]+") do
        if type(t) ~= "table" then return nil end
        local n = tonumber(part)
        t = t[n and n + 1 or part] -- numeric parts are 0-based list indexes
    end
    return t
end

-- Replaces "{{query}}" / "{{k}}" string values of a JSON template (a copy); values only, never structure.
local function fill_body(t, vars)
    if type(t) == "string" then
        local whole = t:match("^{{%s*([%w_]+)%s*}}$")
        if whole and vars[whole] ~= nil then return vars[whole] end
        return (gsub(t, "{{%s*([%w_]+)%s*}}", function(n)
            local v = vars[n]
            return v ~= nil and tostring(v) or nil
        end))
    elseif type(t) == "table" then
        local out = {}
        for k, v in pairs(t) do out[k] = fill_body(v, vars) end
        return out
    end
    return t
end

local function external(conf, query)
    local r = conf.retrieval
    local body = cjson.encode(fill_body(r.body, { query = query, k = conf.k }))
    local headers = { ["content-type"] = "application/json" }
    for k, v in pairs(r.headers or {}) do headers[k] = v end
    local res, err = sluice.http.request({ method = r.method, url = r.url, headers = headers,
                                           body = r.method == "POST" and body or nil, timeout = r.timeout })
    if not res then return nil, "retrieval endpoint: " .. tostring(err) end
    if res.status ~= 200 then return nil, "retrieval endpoint: status " .. tostring(res.status) end
    local doc = cjson.decode(res.body or "")
    local list = type(doc) == "table" and path_get(doc, r.results)
    if type(list) ~= "table" then return nil, "retrieval endpoint: no list at " .. r.results end
    local hits = {}
    for _, h in ipairs(list) do
        local text, score = path_get(h, r.text), tonumber(path_get(h, r.score))
        if type(text) == "string" and (score == nil or score >= conf.min_score) then
            hits[#hits + 1] = { text = text, source = tostring(path_get(h, r.source) or ""),
                                heading = tostring(path_get(h, r.heading) or ""), score = score or 0 }
            if #hits >= conf.k then break end
        end
    end
    return hits
end

local files = setmetatable({}, { __mode = "k" }) -- conf -> index file path (absolute)

local function embedded(conf, query, ctx)
    local def = conf.index
    local file = files[conf]
    if not file then
        file = require("sluice.rag.build").resolve(def).file
        files[conf] = file -- a conf table lives as long as its config version: resolved once
    end
    local idx = sluice.rag.open(file)
    local now = tonumber(sluice.time())
    if (idx.checked_at or 0) + conf.check_interval <= now then
        idx.checked_at = now
        idx:reload() -- a replaced file is loaded now, or refused (logged) while the old index serves
    end
    local q = { query = query, k = conf.k, mode = conf.mode, min_bm25 = conf.min_bm25,
                min_similarity = conf.min_similarity, filter = conf.filter, probes = conf.probes,
                fusion = conf.fusion, weights = conf.weights, rrf_k = conf.rrf_k }
    if conf.mode ~= "bm25" then
        local ok, cerr = idx:current()
        if not ok then return nil, cerr end -- no index: no embedding call either
        local vecs, err = sluice.providers.embed(def.provider, query, {
            model = def.model, dimensions = def.dimensions, timeout = conf.embedding_timeout,
            config = ctx.config, floats = true })
        if not vecs then
            if conf.mode == "dense" then return nil, "cannot embed the query: " .. tostring(err) end
            log.warn("[ai-rag] cannot embed the query, BM25 alone: ", err)
            q.mode = "bm25"
        else
            q.vector = vecs[1]
        end
    end
    local hits, err = idx:search(q)
    if not hits and q.mode == "hybrid" and q.vector then
        -- the embedder's vectors do not fit the index (another model or dimensions since the build): BM25 alone
        log.warn("[ai-rag] index ", def.name, ": ", err, "; BM25 alone (rebuild the index with this embedder)")
        q.mode, q.vector = "bm25", nil
        hits, err = idx:search(q)
    end
    return hits, err
end

-- ---- rendering ----

-- gsub replaces through a table, not a function: no Lua call per placeholder, and no closure made per call
-- (which LuaJIT does not compile); a name vars lacks renders as ""
local blank = { __index = function() return "" end }
local function fill(t, vars)
    return (gsub(t, "{{%s*([%w_]+)%s*}}", setmetatable(vars, blank)))
end

-- The context text and the sources used, within budget tokens.
local function render(conf, hits, query)
    local tokens = require("sluice.ai.tokens")
    local used, parts, sources = 0, {}, {}
    local frame = tokens.count_text(fill(conf.template, { context = "", query = query }))
    for _, h in ipairs(hits) do
        local n = #parts + 1
        local piece = fill(conf.chunk_template, { n = n, source = h.source, heading = h.heading, text = h.text,
                                                  score = format("%.4f", h.score or 0) })
        local cost = tokens.count_text(piece)
        if frame + used + cost > conf.budget_tokens then
            if n == 1 then -- the best chunk alone is over the budget: cut it rather than give nothing
                local keep = floor(#piece * (conf.budget_tokens - frame) / cost)
                if keep > 0 then
                    parts[1] = piece:sub(1, keep)
                    sources[1] = h.source .. (h.heading ~= "" and ("#" .. h.heading) or "")
                end
            end
            break
        end
        used = used + cost
        parts[n] = piece
        sources[n] = h.source .. (h.heading ~= "" and ("#" .. h.heading) or "")
    end
    if #parts == 0 then return nil end
    return fill(conf.template, { context = concat(parts, "\n\n"), query = query }), sources
end

-- ---- placing ----

local function detect(conf_format, path)
    if conf_format ~= "auto" then return conf_format end
    return find(path, "/messages$") and "anthropic" or "openai"
end

local function place(conf, body, fmt, text, user_i)
    local p = conf.placement
    if p == "user_before" then
        table.insert(body.messages, user_i, { role = "user", content = text })
        return
    end
    local before = p == "system_before"
    if fmt == "anthropic" then
        sluice.ai.add_anthropic_system(body, text, before)
        return
    end
    local msgs = body.messages
    -- OpenAI: merged into the client's leading system message when there is one, else a new one first
    local first = msgs[1]
    if type(first) == "table" and (first.role == "system" or first.role == "developer")
        and type(first.content) == "string" then
        first.content = before and (text .. "\n\n" .. first.content) or (first.content .. "\n\n" .. text)
    else
        table.insert(msgs, 1, { role = "system", content = text })
    end
end

-- Header value: the sources, comma-separated, with characters outside visible ASCII percent-encoded.
local function header_value(sources)
    local out = {}
    for i, s in ipairs(sources) do
        out[i] = format("[%d] %s", i, (gsub(s, "[^\33-\126 ]", function(c) return format("%%%02X", c:byte()) end)))
    end
    return concat(out, ", ")
end

function _M.rewrite(conf, ctx)
    local body = request.get_json(ctx)
    if type(body) ~= "table" or type(body.messages) ~= "table" then
        return
    end
    local fmt = detect(conf.format, ctx.path)
    local user_i, query = last_user(body.messages)
    if conf.query_field then
        local q = body[conf.query_field]
        body[conf.query_field] = nil
        if type(q) == "string" and q ~= "" then query = q end
    end
    if not user_i or type(query) ~= "string" or not find(query, "%S") then
        if conf.query_field then request.set_json(body, ctx) end
        return
    end
    if #query > conf.max_query_chars then query = query:sub(1, conf.max_query_chars) end
    local hits, err
    if conf.retrieval then
        hits, err = external(conf, query)
    else
        hits, err = embedded(conf, query, ctx)
    end
    if not hits then
        if conf.on_error == "fail" then
            log.err("[ai-rag] retrieval failed: ", err)
            return 503, { error = { message = "retrieval failed", type = "rag_error" } }
        end
        log.warn("[ai-rag] retrieval failed, served without context: ", err)
        if conf.query_field then request.set_json(body, ctx) end
        return
    end
    local text, sources = render(conf, hits, query)
    if text then
        place(conf, body, fmt, text, user_i)
        ctx.rag_sources = sources
    end
    if text or conf.query_field then request.set_json(body, ctx) end
end

function _M.header_filter(conf, ctx)
    if conf.send_sources_header and ctx.rag_sources then
        response.set_header(conf.sources_header, header_value(ctx.rag_sources), ctx)
    end
end

return _M

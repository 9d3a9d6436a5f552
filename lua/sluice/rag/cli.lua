-- sluice.rag.cli: `sluice rag build|info|search` (core/rag/cli.c runs this in a worker of its own, with the
-- config loaded; see docs/ai-rag.md). main() schedules the command in a timer coroutine (provider calls
-- yield) and returns; the command ends the process's loop through sl_rag_cli_done(exit code).
local ffi = require("ffi")
local C = require("sluice.core")
local sluice = require("sluice")
local build = require("sluice.rag.build")
local cjson = require("cjson.safe")

local ipairs, tostring, tonumber, select = ipairs, tostring, tonumber, select
local format = string.format

ffi.cdef [[
void sl_rag_cli_done(int rc);
]]

local _M = {}

local function out(...)
    io.stdout:write(...)
    io.stdout:write("\n")
    io.stdout:flush()
end

local function errln(...)
    io.stderr:write("sluice rag: ", ...)
    io.stderr:write("\n")
end

-- Options (--name value, --flag) and positionals; nil, err for an unknown option or a missing value.
local VALUED = { source = true, out = true, provider = true, model = true, ["chunk-size"] = true, overlap = true,
                 quantize = true, dimensions = true, mode = true, k = true, include = true,
                 ["rrf-k"] = true, weights = true, fusion = true, candidates = true, ["ivf-lists"] = true,
                 ["ivf-probes"] = true, probes = true }
local FLAGS = { full = true, json = true }
local function parse(args)
    local o, pos = {}, {}
    local i = 1
    while i <= #args do
        local a = args[i]
        local name = a:match("^%-%-(.+)$") or (a == "-k" and "k")
        if name then
            if VALUED[name] then
                if args[i + 1] == nil then return nil, "--" .. name .. " needs a value" end
                o[name] = args[i + 1]
                i = i + 1
            elseif FLAGS[name] then
                o[name] = true
            else
                return nil, "unknown option " .. a
            end
        else
            pos[#pos + 1] = a
        end
        i = i + 1
    end
    return o, pos
end

local function split_list(s)
    local t = {}
    for x in tostring(s):gmatch("[^,%s]+") do t[#t + 1] = x end
    return t
end

-- The index named name in the config (an ai-rag plugin's `index`), resolved; or nil, err.
local function definition(name)
    local defs, err = build.definitions(sluice.each_conf)
    if not defs then return nil, err end
    local d = defs[name]
    if not d then
        local names = {}
        for n in pairs(defs) do names[#names + 1] = n end
        table.sort(names)
        return nil, format("no index named %q in the config (ai-rag plugins define: %s)", name,
            #names > 0 and table.concat(names, ", ") or "none")
    end
    return build.resolve(d)
end

local function cmd_build(o, pos)
    local def, err
    if o.source or o.out then
        if not (o.source and o.out and o.provider) then
            return nil, "--source, --out and --provider go together"
        end
        def = build.resolve({ name = pos[1] or "index", source = o.source, file = o.out, provider = o.provider,
                              model = o.model })
    else
        if #pos ~= 1 then return nil, "build wants an index NAME (or --source, --out and --provider)" end
        def, err = definition(pos[1])
        if not def then return nil, err end
    end
    def.chunk_size, def.overlap = def.chunk_size or 1200, def.overlap or 150
    if o["chunk-size"] then def.chunk_size = tonumber(o["chunk-size"]) end
    if o.overlap then def.overlap = tonumber(o.overlap) end
    if o.dimensions then def.dimensions = tonumber(o.dimensions) end
    if o.quantize then def.quantize = o.quantize == "none" and {} or split_list(o.quantize) end
    if o.include then def.include = split_list(o.include) end
    for _, name in ipairs({ "lists", "probes" }) do
        local arg = o["ivf-" .. name]
        if arg then
            local v, low = tonumber(arg), name == "lists" and 0 or 1
            if not (v and v % 1 == 0 and v >= low and v <= 65536) then
                return nil, format("--ivf-%s must be an integer from %d to 65536", name, low)
            end
            -- a copy: def.ivf may be the config's own table
            def.ivf = { lists = def.ivf and def.ivf.lists, probes = def.ivf and def.ivf.probes }
            def.ivf[name] = v
        end
    end
    if not def.chunk_size or def.chunk_size < 100 or (def.overlap and def.overlap < 0) then
        return nil, "--chunk-size must be at least 100 and --overlap at least 0"
    end
    local stats, berr = build.run(def, { full = o.full, log = function(m) errln(m) end })
    if not stats then return nil, berr end
    out(cjson.encode(stats))
    return 0
end

local function index_file(arg)
    if arg:find("/", 1, true) or arg:find("%.idx$") then return arg end
    local def, err = definition(arg)
    if not def then return nil, err end
    return def.file, def
end

local function cmd_info(_, pos)
    if #pos ~= 1 then return nil, "info wants an index NAME or FILE" end
    local file, err = index_file(pos[1])
    if not file then return nil, err end
    local info, ierr = sluice.rag.check_file(file)
    if not info then return nil, file .. ": " .. ierr end
    out(cjson.encode(info))
    return 0
end

local function cmd_search(o, pos)
    if #pos ~= 2 then return nil, "search wants INDEX and QUERY" end
    local file, def = index_file(pos[1])
    if not file then return nil, def end
    local info, ierr = sluice.rag.check_file(file)
    if not info then return nil, file .. ": " .. ierr end
    local mode = o.mode or "hybrid"
    local q = { query = pos[2], k = tonumber(o.k) or 5, mode = mode, probes = tonumber(o.probes) }
    local b = info.build or {}
    if mode ~= "bm25" then
        local vecs, eerr = sluice.providers.embed(b.provider or (def and def.provider) or "", { pos[2] },
            { model = b.model, dimensions = b.dimensions })
        if not vecs then return nil, "cannot embed the query: " .. tostring(eerr) end
        q.vector = vecs[1]
    end
    local hits, serr = sluice.rag.open(file):search(q)
    if not hits then return nil, serr end
    for i, h in ipairs(hits) do
        out(format("%d. %.4f  %s  [%s]  bm25 %.3f (#%d)  cosine %.3f (#%d)", i, h.score, h.source, h.heading, h.bm25,
            h.bm25_rank, h.similarity, h.dense_rank))
        if o.json then out(cjson.encode({ text = h.text })) end
    end
    return 0
end

-- Retrieval quality: a JSON list of {q, file, heading}; a question is answered at rank r when the r-th hit's
-- source is `file` and its heading contains `heading`. Prints recall@1 and recall@k per mode.
local function cmd_eval(o, pos)
    if #pos ~= 2 then return nil, "eval wants INDEX and QUESTIONS.json" end
    local file, def = index_file(pos[1])
    if not file then return nil, def end
    local info, ierr = sluice.rag.check_file(file)
    if not info then return nil, file .. ": " .. ierr end
    local f, ferr = io.open(pos[2], "rb")
    if not f then return nil, ferr end
    local qs = cjson.decode(f:read("*a"))
    f:close()
    if type(qs) ~= "table" or #qs == 0 then return nil, pos[2] .. ": not a JSON list of questions" end
    local texts = {}
    for i, q in ipairs(qs) do
        if type(q) ~= "table" or type(q.q) ~= "string" or type(q.file) ~= "string" or type(q.heading) ~= "string" then
            return nil, pos[2] .. ": question " .. i .. " needs q, file and heading strings"
        end
        texts[i] = q.q
    end
    local b = info.build or {}
    local vecs, eerr = sluice.providers.embed(b.provider or (def and def.provider) or "", texts,
        { model = b.model, dimensions = b.dimensions })
    if not vecs then return nil, "cannot embed the questions: " .. tostring(eerr) end
    local k = tonumber(o.k) or 5
    local weights
    if o.weights then
        local w = split_list(o.weights)
        weights = { bm25 = tonumber(w[1]), dense = tonumber(w[2]) }
        if #w ~= 2 or not weights.bm25 or not weights.dense or weights.bm25 <= 0 or weights.dense <= 0 then
            return nil, "--weights wants BM25,DENSE (two positive numbers)"
        end
    end
    if o.fusion and o.fusion ~= "score" and o.fusion ~= "rrf" then return nil, "--fusion wants score or rrf" end
    local idx = sluice.rag.open(file)
    local report = { questions = #qs, k = k, fusion = o.fusion or "score",
                     weights = weights or { bm25 = 1, dense = 1 } }
    for _, mode in ipairs({ "bm25", "dense", "hybrid" }) do
        local at1, atk, misses = 0, 0, {}
        for i, q in ipairs(qs) do
            local hits, serr = idx:search({ query = q.q, vector = vecs[i], k = k, mode = mode,
                                            rrf_k = tonumber(o["rrf-k"]), weights = weights, fusion = o.fusion,
                                            candidates = tonumber(o.candidates),
                                            probes = tonumber(o.probes) })
            if not hits then return nil, serr end
            local rank
            for r, h in ipairs(hits) do
                if h.source == q.file and h.heading:find(q.heading, 1, true) then rank = r; break end
            end
            if rank == 1 then at1 = at1 + 1 end
            if rank then atk = atk + 1 else misses[#misses + 1] = q.q end
        end
        report[mode] = { recall_at_1 = at1 / #qs, ["recall_at_" .. k] = atk / #qs, misses = o.json and misses or nil }
    end
    out(cjson.encode(report))
    return 0
end

local COMMANDS = { build = cmd_build, info = cmd_info, search = cmd_search, eval = cmd_eval }

--- Entry from core/rag/cli.c: the arguments after `rag` (options -c/-p already taken).
function _M.main(...)
    local args = { ... }
    local cmd = COMMANDS[args[1] or ""]
    if not cmd then
        errln("unknown command ", tostring(args[1]), " (build, info, search, eval; sluice rag -h)")
        C.sl_rag_cli_done(2)
        return
    end
    local rest = {}
    for i = 2, select("#", ...) do rest[#rest + 1] = args[i] end
    sluice.timer.at(0, function()
        local o, pos = parse(rest)
        local ok, rc, err = true, nil, pos
        if o then
            ok, rc, err = pcall(cmd, o, pos)
        end
        if not ok then
            errln(tostring(rc))
            rc = 1
        elseif not rc then
            errln(tostring(err))
            rc = 1
        end
        C.sl_rag_cli_done(rc)
    end)
end

return _M

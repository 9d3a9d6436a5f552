-- sluice.rag.build: builds or updates a RAG index file from a folder (docs/ai-rag.md, "Building an index").
--
--   local stats, err = build.run({name = "docs", file = "/var/lib/sluice/docs.idx", source = "./docs",
--                                 provider = "embedder", model = "text-embedding-3-small",
--                                 chunk_size = 1200, overlap = 150, include = {"*.md"}, quantize = {"int8", "binary"},
--                                 ivf = {lists = 100, probes = 8}},   -- optional; lists 0: no inverted file
--                                {full = false, log = print})
--
-- Files are read, chunked (sluice.rag.chunk), embedded through the provider (sluice.providers.embed; yields) and
-- written with core/rag/writer.c, which replaces the file atomically. An update reuses the chunks and vectors of
-- every file whose bytes did not change (same XXH64) when the old index was built with the same provider,
-- model, dimensions and chunking; anything else is a full build. Runs in a timer or request coroutine (the CLI
-- and POST /admin/rag/NAME/rebuild); reading and chunking do not yield, embedding does.
local ffi = require("ffi")
local C = require("sluice.core")
local chunk = require("sluice.rag.chunk")
local providers = require("sluice.pdk.providers")
require("sluice.pdk.rag") -- the index cdefs (loader, views) this module reads old indexes with
local cjson = require("cjson.safe")

local type, ipairs, tostring, tonumber = type, ipairs, tostring, tonumber
local ffi_string, ffi_gc, ffi_new = ffi.string, ffi.gc, ffi.new
local sort, format = table.sort, string.format

ffi.cdef [[
typedef struct sl_rag_writer sl_rag_writer_t;
sl_rag_writer_t *sl_rag_writer_new(uint32_t dims, uint32_t flags);
int sl_rag_writer_source(sl_rag_writer_t *w, const char *path, size_t plen, const char *meta, size_t mlen,
                         uint64_t hash, int64_t mtime, uint64_t size);
int sl_rag_writer_chunk(sl_rag_writer_t *w, const char *heading, size_t hlen, const char *text, size_t tlen,
                        const float *vec);
int sl_rag_writer_info(sl_rag_writer_t *w, const char *json, size_t len);
int sl_rag_writer_ivf(sl_rag_writer_t *w, int32_t lists, uint32_t probes);
uint32_t sl_rag_writer_lists(const sl_rag_writer_t *w);
int sl_rag_writer_write(sl_rag_writer_t *w, const char *path, char *err, size_t errlen);
uint32_t sl_rag_writer_count(const sl_rag_writer_t *w);
void sl_rag_writer_free(sl_rag_writer_t *w);
int sl_rag_list_files(const char *dir, size_t max, char **out, size_t *len);
void sl_rag_free(void *p);
uint64_t sl_xxh64(const void *p, size_t n, uint64_t seed);
int fnmatch(const char *pattern, const char *string, int flags);
]]

local FORMAT = 1 -- bump when chunking changes: an old index is then rebuilt in full
local MAX_FILES = 100000
local MAX_FILE_BYTES = 32 * 1024 * 1024 -- a document over this is skipped (logged): a stray dump, not a page
local DEFAULT_INCLUDE = { "*.md", "*.markdown", "*.txt", "*.text", "*.html", "*.htm" }

local _M = { DEFAULT_INCLUDE = DEFAULT_INCLUDE }

local function now()
    return tonumber(C.sl_now())
end

--- The regular files under dir: {{path, size, mtime}} sorted by path, or nil, err.
function _M.list(dir)
    local out_p, len_p = ffi_new("char*[1]"), ffi_new("size_t[1]")
    local n = C.sl_rag_list_files(#dir > 0 and dir or ".", MAX_FILES, out_p, len_p)
    if n < 0 then
        return nil, format("cannot list %s: %s", dir, n == -2 and "no such folder" or n == -20 and "not a folder"
            or n == -7 and ("more than " .. MAX_FILES .. " files") or n == -13 and "permission denied"
            or ("error " .. n))
    end
    local text = out_p[0] ~= nil and ffi_string(out_p[0], len_p[0]) or ""
    C.sl_rag_free(out_p[0])
    local files = {}
    for path, size, mtime in text:gmatch("([^\t\n]+)\t(%d+)\t(%-?%d+)\n") do
        files[#files + 1] = { path = path, size = tonumber(size), mtime = tonumber(mtime) }
    end
    sort(files, function(a, b) return a.path < b.path end)
    return files
end

local function matches(path, globs)
    local base = path:match("[^/]+$")
    for _, g in ipairs(globs) do
        if C.fnmatch(g, path, 0) == 0 or (not g:find("/", 1, true) and C.fnmatch(g, base, 0) == 0) then
            return true
        end
    end
    return false
end

local function read_file(path)
    local f, err = io.open(path, "rb")
    if not f then return nil, err end
    local s = f:read("*a")
    f:close()
    return s
end

-- What must match for an old index's chunks to be reused.
local function settings_key(def)
    return cjson.encode({ FORMAT, def.provider, def.model or cjson.null, def.dimensions or cjson.null,
                          def.chunk_size, def.overlap })
end

-- The old index's reusable chunks per source path: {hash = , chunks = {{heading, text, vec (cdata)}}}, plus
-- the index kept alive (its vectors are read from its mapping); or nil.
local function old_index(def)
    local pp = ffi_new("sl_rag_index_t*[1]")
    local errbuf = ffi_new("char[256]")
    if C.sl_rag_load(def.file, pp, errbuf, 256) ~= 0 then
        return nil, ffi_string(errbuf)
    end
    local idx = ffi_gc(pp[0], C.sl_rag_release)
    local lenp = ffi_new("uint32_t[1]")
    local info = cjson.decode(ffi_string(C.sl_rag_info(idx, lenp), lenp[0])) or {}
    if info.settings ~= settings_key(def) then
        return nil, "built with other settings"
    end
    local sv, cv = ffi_new("sl_rag_source_view_t"), ffi_new("sl_rag_chunk_view_t")
    local by_path = {}
    for i = 0, C.sl_rag_nsources(idx) - 1 do
        C.sl_rag_source_get(idx, i, sv)
        local chunks = {}
        for c = sv.first, sv.first + sv.count - 1 do
            C.sl_rag_chunk_get(idx, c, cv)
            chunks[#chunks + 1] = { heading = ffi_string(cv.heading, cv.heading_len),
                                    text = ffi_string(cv.text, cv.text_len), vec = C.sl_rag_chunk_vector(idx, c) }
        end
        by_path[ffi_string(sv.path, sv.path_len)] = { hash = sv.hash, chunks = chunks,
                                                      meta = ffi_string(sv.meta, sv.meta_len) }
    end
    return { idx = idx, by_path = by_path, dims = C.sl_rag_dims(idx) }
end

--- def with `file` and `source` made absolute: a relative path is relative to the prefix (SLUICE_HOME, -p), as
--- plugin_paths are, so the gateway and `sluice rag build` mean the same files.
function _M.resolve(def)
    local out = {}
    for k, v in pairs(def) do out[k] = v end
    local prefix = (SLUICE_HOME or "."):gsub("/+$", "")
    for _, k in ipairs({ "file", "source" }) do
        local p = out[k]
        if type(p) == "string" and p:sub(1, 1) ~= "/" then
            out[k] = prefix .. "/" .. p:gsub("^%./", "")
        end
    end
    return out
end

--- What gets embedded for a chunk: its heading then its text.
function _M.embed_input(c)
    return c.heading ~= "" and (c.heading .. "\n\n" .. c.text) or c.text
end

--- Builds def (see the top) into def.file. opts: full (ignore the old index), log (function(msg)), config
--- (for the provider; default the live one). Returns stats {files, chunks, reused_files, embedded_chunks,
--- dims, seconds, bytes?} | nil, err. The previous file stays when anything fails.
function _M.run(def, opts)
    opts = opts or {}
    local log = opts.log or function() end
    local t0 = now()
    local size, overlap = def.chunk_size or 1200, def.overlap or 150
    def.chunk_size, def.overlap = size, overlap
    local files, err = _M.list(def.source)
    if not files then return nil, err end
    local include, exclude = def.include or DEFAULT_INCLUDE, def.exclude or {}
    local old
    if not opts.full then
        local why
        old, why = old_index(def)
        if not old and why and not why:find("cannot open", 1, true) then
            log("full build: the old index " .. why)
        end
    end
    local docs, pending = {}, {}
    for _, f in ipairs(files) do
        if matches(f.path, include) and not matches(f.path, exclude) and f.size > MAX_FILE_BYTES then
            log(format("%s skipped: %d bytes, over %d", f.path, f.size, MAX_FILE_BYTES))
        elseif matches(f.path, include) and not matches(f.path, exclude) then
            local text, rerr = read_file(def.source .. "/" .. f.path)
            if not text then return nil, "cannot read " .. f.path .. ": " .. tostring(rerr) end
            if not text:sub(1, 8192):find("%z") then -- a NUL: binary, not a document
                local hash = C.sl_xxh64(text, #text, 0)
                local prev = old and old.by_path[f.path]
                local d = { path = f.path, size = #text, mtime = f.mtime, hash = hash }
                if prev and prev.hash == hash then
                    d.chunks, d.meta, d.reused = prev.chunks, prev.meta, true
                else
                    local doc = chunk.parse(f.path, text)
                    d.meta = chunk.meta_bytes(doc.meta)
                    d.chunks = chunk.split(doc, { size = size, overlap = overlap })
                    for _, c in ipairs(d.chunks) do pending[#pending + 1] = c end
                end
                docs[#docs + 1] = d
            end
        end
    end
    log(format("%d files (%d unchanged), %d chunks to embed", #docs, old and (function()
        local n = 0
        for _, d in ipairs(docs) do if d.reused then n = n + 1 end end
        return n
    end)() or 0, #pending))
    local dims = old and old.dims or nil
    local batch = def.batch or 64
    for i = 1, #pending, batch do
        local texts = {}
        for j = i, math.min(i + batch - 1, #pending) do texts[#texts + 1] = _M.embed_input(pending[j]) end
        local vecs, eerr = providers.embed(def.provider, texts, { model = def.model, dimensions = def.dimensions,
                                                                 config = opts.config, timeout = def.timeout,
                                                                 floats = true })
        if not vecs then return nil, "embedding failed: " .. tostring(eerr) end
        for j, fv in ipairs(vecs) do
            local n = ffi.sizeof(fv) / 4
            dims = dims or n
            if n ~= dims then
                return nil, format("the provider returned %d dimensions, then %d", dims, n)
            end
            pending[i + j - 1].vec = fv
        end
        if #pending > batch then log(format("embedded %d/%d", math.min(i + batch - 1, #pending), #pending)) end
    end
    dims = dims or 1
    local flags = 0
    for _, q in ipairs(def.quantize or { "int8", "binary" }) do
        flags = flags + (q == "int8" and 1 or q == "binary" and 2 or 0)
    end
    local w = ffi_gc(C.sl_rag_writer_new(dims, flags), C.sl_rag_writer_free)
    if w == nil then return nil, "cannot make an index of " .. dims .. " dimensions" end
    local ivf = def.ivf or {}
    if C.sl_rag_writer_ivf(w, ivf.lists or -1, ivf.probes or 0) ~= 0 then
        return nil, "ivf.lists and ivf.probes must be at most 65536"
    end
    local zero = ffi_new("float[?]", dims)
    local nchunks, reused = 0, 0
    for _, d in ipairs(docs) do
        if C.sl_rag_writer_source(w, d.path, #d.path, d.meta, #d.meta, d.hash, d.mtime, d.size) < 0 then
            return nil, "out of memory"
        end
        reused = reused + (d.reused and 1 or 0)
        for _, c in ipairs(d.chunks) do
            if C.sl_rag_writer_chunk(w, c.heading, #c.heading, c.text, #c.text, c.vec or zero) < 0 then
                return nil, "out of memory"
            end
            nchunks = nchunks + 1
        end
    end
    local lists = C.sl_rag_writer_lists(w)
    local info = cjson.encode({
        name = def.name, provider = def.provider, model = def.model, dimensions = dims, chunk_size = size,
        overlap = overlap, source = def.source, built_at = os.time(), files = #docs, chunks = nchunks,
        settings = settings_key(def),
    })
    C.sl_rag_writer_info(w, info, #info)
    local errbuf = ffi_new("char[512]")
    if C.sl_rag_writer_write(w, def.file, errbuf, 512) ~= 0 then
        return nil, ffi_string(errbuf)
    end
    C.sl_rag_writer_free(ffi_gc(w, nil))
    if old then C.sl_rag_release(ffi_gc(old.idx, nil)) end
    local stats = { name = def.name, file = def.file, files = #docs, chunks = nchunks, reused_files = reused,
                    embedded_chunks = #pending, dims = dims, ivf_lists = lists, seconds = now() - t0 }
    log(format("wrote %s: %d files, %d chunks (%d embedded), %d dimensions, %s, %.2f s", def.file, #docs, nchunks,
        #pending, dims, lists > 0 and (lists .. " IVF lists") or "no IVF (brute force)", stats.seconds))
    return stats
end

--- The index definitions of the live config (ai-rag confs with an `index`), by name: name -> def | nil, err
--- when two confs define one name differently.
function _M.definitions(each_conf)
    local defs, where = {}, {}
    for conf in each_conf("ai-rag") do
        local d = conf.index
        if type(d) == "table" and d.name then
            local key = cjson.encode({ d.file, d.source, d.provider, d.model, d.dimensions, d.chunk_size, d.overlap,
                                       d.ivf or cjson.null })
            if defs[d.name] and where[d.name] ~= key then
                return nil, "index " .. d.name .. " is defined twice with different settings"
            end
            defs[d.name], where[d.name] = d, key
        end
    end
    return defs
end

return _M

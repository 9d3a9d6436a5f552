-- sluice.rag: RAG indexes built by `sluice rag build` (core/rag/: one file per index, mapped once per process
-- and shared by every worker; BM25, cosine k-NN and both fused). Reference: docs/vector.md, docs/ai-rag.md.
-- Phases: every phase, init_worker and timers (nothing yields).
--
--   local idx = require("sluice").rag.open("/var/lib/sluice/docs.idx")   -- per worker, cheap after the first
--   local hits, err = idx:search({query = "how do I rotate keys", vector = emb, k = 4, mode = "hybrid",
--                                 filter = {sources = {"admin/*"}, meta = {lang = "en"}}})
--   -- hits[i] = {chunk, score, bm25, similarity, bm25_rank, dense_rank, source, heading, text, meta, ordinal}
--   idx:info()      -- {file, chunks, sources, terms, dims, ivf, generation, loaded_at, build = {...}, error}
--   idx:reload()    -- load the file again if it changed (1), 0 unchanged, nil, err refused (old one serves)
--
-- A search uses the newest index of the file: when `sluice rag build` or POST /admin/rag/NAME/rebuild replaced
-- it (and idx:reload() or the ai-rag plugin's watcher noticed), the next search runs on the new one; a search
-- never sees an index go away under it. A missing or damaged file: search returns nil, err ("index
-- /x.idx: corrupt: checksum mismatch ..."), and a damaged replacement leaves the previous index serving.
local ffi = require("ffi")
local C = require("sluice.core")
local vector = require("sluice.pdk.vector")
local cjson = require("cjson.safe")
local log = require("sluice.pdk.log")

local type, pairs, ipairs, tostring, tonumber, error, setmetatable = type, pairs, ipairs, tostring, tonumber, error,
    setmetatable
local ffi_new, ffi_string, ffi_gc = ffi.new, ffi.string, ffi.gc
local band = require("bit").band
local concat, sort, find = table.concat, table.sort, string.find

ffi.cdef [[
typedef struct sl_rag_index sl_rag_index_t;
typedef struct sl_rag_slot sl_rag_slot_t;
typedef struct sl_rag_chunk_view {
    const char *text, *heading, *source, *meta;
    uint32_t text_len, heading_len, source_len, meta_len;
    uint32_t source_id, ordinal;
} sl_rag_chunk_view_t;
typedef struct sl_rag_source_view {
    const char *path, *meta;
    uint32_t path_len, meta_len;
    uint32_t first, count;
    uint64_t hash, size;
    int64_t mtime;
} sl_rag_source_view_t;
typedef struct sl_rag_query {
    const char *text; size_t text_len;
    const float *vec; const uint8_t *allow;
    uint32_t dims, k, candidates;
    int32_t mode, quant;
    float min_bm25, min_dense, rrf_k;
    uint32_t probes;
    float w_bm25, w_dense;
    int32_t fusion;
} sl_rag_query_t;
typedef struct sl_rag_hit { uint32_t chunk; float score, bm25, dense; uint32_t bm25_rank, dense_rank; } sl_rag_hit_t;
enum { SL_RAG_BM25 = 1, SL_RAG_DENSE = 2, SL_RAG_HYBRID = 3 };
enum { SL_RAG_FUSE_SCORE = 0, SL_RAG_FUSE_RRF = 1 };
enum { SL_RAG_HAS_I8 = 1, SL_RAG_HAS_BITS = 2, SL_RAG_HAS_IVF = 4 };
void sl_rag_release(sl_rag_index_t *idx);
uint32_t sl_rag_nchunks(const sl_rag_index_t *idx);
uint32_t sl_rag_nsources(const sl_rag_index_t *idx);
uint32_t sl_rag_nterms(const sl_rag_index_t *idx);
uint32_t sl_rag_dims(const sl_rag_index_t *idx);
uint32_t sl_rag_flags(const sl_rag_index_t *idx);
uint32_t sl_rag_ivf_lists(const sl_rag_index_t *idx);
uint32_t sl_rag_ivf_probes(const sl_rag_index_t *idx);
uint32_t sl_rag_version(const sl_rag_index_t *idx);
const char *sl_rag_info(const sl_rag_index_t *idx, uint32_t *len);
int sl_rag_chunk_get(const sl_rag_index_t *idx, uint32_t i, sl_rag_chunk_view_t *v);
int sl_rag_source_get(const sl_rag_index_t *idx, uint32_t i, sl_rag_source_view_t *v);
const float *sl_rag_chunk_vector(const sl_rag_index_t *idx, uint32_t i);
int sl_rag_search(const sl_rag_index_t *idx, const sl_rag_query_t *q, sl_rag_hit_t *out);
int sl_rag_filter(const sl_rag_index_t *idx, const char *spec, size_t len, uint8_t *bitmap);
size_t sl_rag_terms(const char *text, size_t len, char *out, size_t cap);
int sl_rag_load(const char *path, sl_rag_index_t **out, char *err, size_t errlen);
sl_rag_slot_t *sl_rag_slot(const char *path, size_t len);
uint64_t sl_rag_slot_gen(const sl_rag_slot_t *s);
sl_rag_index_t *sl_rag_slot_acquire(sl_rag_slot_t *s, uint64_t *gen, char *err, size_t errlen);
int sl_rag_slot_reload(sl_rag_slot_t *s, int force, char *err, size_t errlen);
void sl_rag_slot_error(sl_rag_slot_t *s, char *err, size_t errlen);
double sl_rag_slot_loaded_at(sl_rag_slot_t *s);
]]

local MODES = { bm25 = C.SL_RAG_BM25, dense = C.SL_RAG_DENSE, hybrid = C.SL_RAG_HYBRID }
local QUANT = vector.MODES
local FUSIONS = { score = C.SL_RAG_FUSE_SCORE, rrf = C.SL_RAG_FUSE_RRF }
local MAX_K = C.SL_VEC_MAX_K
local RETRY = 1 -- seconds before a worker tries again to load an index that failed

local errbuf = ffi_new("char[256]")
local gen_p = ffi_new("uint64_t[1]")
local len_p = ffi_new("uint32_t[1]")
local cview = ffi_new("sl_rag_chunk_view_t")
local sview = ffi_new("sl_rag_source_view_t")
local query = ffi_new("sl_rag_query_t")
local hits_buf, hits_cap = nil, 0
local terms_buf = ffi_new("char[?]", 65536)

local _M = { MODES = MODES }

--- The "key\0value\0" metadata of a source as a table.
local function parse_meta(p, n)
    local t = {}
    if n == 0 then return t end
    local s = ffi_string(p, n)
    for k, v in s:gmatch("([^%z]*)%z([^%z]*)%z?") do
        if k ~= "" then t[k] = v end
    end
    return t
end
_M.parse_meta = parse_meta

local handle_mt = { __index = {} }
local H = handle_mt.__index
local handles = {} -- path -> handle (per worker VM)

--- The handle of the index file at path (one per path and worker; loads nothing yet).
function _M.open(path)
    if type(path) ~= "string" or path == "" or #path >= 4096 or find(path, "%z") then
        error("index path must be a non-empty string", 2)
    end
    local h = handles[path]
    if h then return h end
    local slot = C.sl_rag_slot(path, #path)
    if slot == nil then
        return nil, "cannot register index " .. path
    end
    h = setmetatable({ path = path, slot = slot, idx = nil, gen = -1, failed_at = nil, filters = {} }, handle_mt)
    handles[path] = h
    return h
end

local function now()
    return tonumber(C.sl_now())
end

--- The index this worker searches (swapped for the slot's current one when it changed), or nil, err.
function H.current(self)
    local g = C.sl_rag_slot_gen(self.slot)
    if self.idx ~= nil and g == self.gen then
        return self.idx
    end
    if self.idx == nil and self.failed_at and now() - self.failed_at < RETRY then
        return nil, self.err
    end
    local idx = C.sl_rag_slot_acquire(self.slot, gen_p, errbuf, 256)
    if idx == nil then
        self.failed_at, self.err = now(), "index " .. self.path .. ": " .. ffi_string(errbuf)
        return nil, self.err
    end
    if self.idx ~= nil then
        C.sl_rag_release(ffi_gc(self.idx, nil))
    end
    self.idx, self.gen, self.failed_at, self.filters = ffi_gc(idx, C.sl_rag_release), gen_p[0], nil, {}
    return self.idx
end

--- Loads the file again when it changed on disk (or always with force): 1 replaced, 0 unchanged, or nil, err
--- when the new file was refused (the previous index keeps serving).
function H.reload(self, force)
    local rc = C.sl_rag_slot_reload(self.slot, force and 1 or 0, errbuf, 256)
    if rc < 0 then
        local err = ffi_string(errbuf)
        if err ~= self.last_refused then -- logged once per reason and worker, whoever looked (plugin, Admin API)
            self.last_refused = err
            if C.sl_rag_slot_gen(self.slot) > 0 then
                log.err("index ", self.path, ": the new file is refused, the previous index keeps serving: ", err)
            else
                log.err("index ", self.path, " cannot be served: ", err)
            end
        end
        return nil, err
    end
    self.last_refused = nil
    return rc
end

-- The filter bitmap for spec lines on idx (cached per index and spec), or nil, err.
local function bitmap(self, idx, f)
    if f == nil then return nil end
    if type(f) ~= "table" then error("filter must be a table", 3) end
    local lines = {}
    for _, g in ipairs(f.sources or {}) do
        if type(g) ~= "string" or find(g, "[\n%z]") then error("filter.sources: strings without newlines", 3) end
        lines[#lines + 1] = "source:" .. g
    end
    local keys = {}
    for k in pairs(f.meta or {}) do keys[#keys + 1] = tostring(k) end
    sort(keys)
    for _, k in ipairs(keys) do
        local v = tostring(f.meta[k])
        if find(k, "[=\n%z]") or find(v, "[\n%z]") then error("filter.meta: bad key or value", 3) end
        lines[#lines + 1] = "meta:" .. k .. "=" .. v
    end
    if #lines == 0 then return nil end
    local spec = concat(lines, "\n")
    local bm = self.filters[spec]
    if not bm then
        bm = ffi_new("uint8_t[?]", (C.sl_rag_nchunks(idx) + 7) / 8 + 1)
        if C.sl_rag_filter(idx, spec, #spec, bm) < 0 then
            return nil, "invalid filter"
        end
        self.filters[spec] = bm
    end
    return bm
end

local function chunk_table(idx, i)
    if C.sl_rag_chunk_get(idx, i, cview) ~= 0 then return nil end
    return {
        chunk = i, text = ffi_string(cview.text, cview.text_len),
        heading = ffi_string(cview.heading, cview.heading_len),
        source = ffi_string(cview.source, cview.source_len), meta = parse_meta(cview.meta, cview.meta_len),
        ordinal = cview.ordinal,
    }
end

--- Searches: q = {query = text (BM25), vector = embedding (dense), k = 4, mode = "hybrid" | "bm25" | "dense",
--- quantize = "auto" | "exact" | "int8" | "binary", candidates (per-signal list before fusion), probes (IVF
--- lists the dense pass scans; default the index's), min_bm25, min_similarity, fusion = "score" | "rrf" (hybrid:
--- scores scaled by each list's best and summed, or reciprocal rank fusion), weights = {bm25 = 1, dense = 1}
--- (each signal's share in either fusion), rrf_k = 60, filter = {sources =
--- {glob, ...}, meta = {key = value}}}. Returns hits (see the top of the file), or nil, err (no index, a vector
--- of other dimensions).
function H.search(self, q)
    if type(q) ~= "table" then error("search wants a table", 2) end
    local mode = MODES[q.mode or "hybrid"]
    if not mode then error("mode must be hybrid, bm25 or dense", 2) end
    local quant = QUANT[q.quantize or "auto"]
    if not quant then error("quantize must be auto, exact, int8 or binary", 2) end
    local k = q.k or 4
    if type(k) ~= "number" or k < 1 or k > MAX_K or k % 1 ~= 0 then
        error("k must be an integer from 1 to " .. MAX_K, 2)
    end
    if q.query ~= nil and type(q.query) ~= "string" then error("query must be a string", 2) end
    local probes = q.probes or 0
    if type(probes) ~= "number" or probes < 0 or probes > 65536 or probes % 1 ~= 0 then
        error("probes must be an integer from 0 (the index's default) to 65536", 2)
    end
    local fusion = FUSIONS[q.fusion or "score"]
    if not fusion then error("fusion must be score or rrf", 2) end
    local w_bm25, w_dense = 0, 0
    if q.weights ~= nil then
        local w = q.weights
        if type(w) ~= "table" or type(w.bm25 or 1) ~= "number" or type(w.dense or 1) ~= "number"
            or (w.bm25 or 1) <= 0 or (w.dense or 1) <= 0 then
            error("weights must be {bm25 = n, dense = n} with positive numbers", 2)
        end
        w_bm25, w_dense = w.bm25 or 0, w.dense or 0
    end
    local idx, err = self:current()
    if not idx then return nil, err end
    local dims = C.sl_rag_dims(idx)
    local vec
    if q.vector ~= nil then
        vec, err = vector.as_floats(q.vector, dims, 2)
        if not vec then return nil, err end
    end
    local allow
    allow, err = bitmap(self, idx, q.filter)
    if err then return nil, err end
    query.text, query.text_len = q.query, q.query and #q.query or 0
    query.vec, query.dims, query.allow = vec, dims, allow
    query.k, query.candidates, query.mode, query.quant = k, q.candidates or 0, mode, quant
    query.min_bm25, query.min_dense, query.rrf_k = q.min_bm25 or 0, q.min_similarity or -1, q.rrf_k or 0
    query.probes = probes
    query.w_bm25, query.w_dense, query.fusion = w_bm25, w_dense, fusion
    if k > hits_cap then hits_buf, hits_cap = ffi_new("sl_rag_hit_t[?]", k), k end
    local n = C.sl_rag_search(idx, query, hits_buf)
    query.text, query.vec, query.allow = nil, nil, nil
    if n < 0 then
        return nil, n == -12 and "out of memory" or "invalid query (no text and no vector for this mode?)"
    end
    local out = {}
    for i = 0, n - 1 do
        local h = hits_buf[i]
        local t = chunk_table(idx, h.chunk)
        t.score, t.bm25, t.similarity = tonumber(h.score), tonumber(h.bm25), tonumber(h.dense)
        t.bm25_rank, t.dense_rank = h.bm25_rank, h.dense_rank
        out[i + 1] = t
    end
    return out
end

--- Chunk i (0-based) as a table (with `vector`, a Lua array, when with_vector); nil when out of range or no
--- index.
function H.chunk(self, i, with_vector)
    local idx = self:current()
    if not idx then return nil end
    local t = chunk_table(idx, i)
    if t and with_vector then
        local p, d = C.sl_rag_chunk_vector(idx, i), C.sl_rag_dims(idx)
        local v = {}
        for j = 0, d - 1 do v[j + 1] = tonumber(p[j]) end
        t.vector = v
    end
    return t
end

--- The source files of the index: {{path, meta, hash (hex), mtime, size, first, count}, ...}; nil, err.
function H.sources(self)
    local idx, err = self:current()
    if not idx then return nil, err end
    local out = {}
    for i = 0, C.sl_rag_nsources(idx) - 1 do
        C.sl_rag_source_get(idx, i, sview)
        out[i + 1] = { path = ffi_string(sview.path, sview.path_len), meta = parse_meta(sview.meta, sview.meta_len),
                       hash = string.format("%016x", sview.hash), mtime = tonumber(sview.mtime),
                       size = tonumber(sview.size), first = sview.first, count = sview.count }
    end
    return out
end

-- The inverted file of idx: {lists, probes}, or false (brute force).
local function ivf_info(idx)
    local lists = C.sl_rag_ivf_lists(idx)
    return lists > 0 and { lists = lists, probes = C.sl_rag_ivf_probes(idx) } or false
end

--- What the index is: {file, chunks, sources, terms, dims, int8, binary, ivf = {lists, probes} | false, format,
--- generation, loaded_at, build = the builder's information}, and error (the last refused load) when there is
--- one. Without an index: {file, error}.
function H.info(self)
    local idx, err = self:current()
    C.sl_rag_slot_error(self.slot, errbuf, 256)
    local last = ffi_string(errbuf)
    if not idx then
        return { file = self.path, error = err or last }
    end
    local flags = C.sl_rag_flags(idx)
    local build = cjson.decode(ffi_string(C.sl_rag_info(idx, len_p), len_p[0]))
    return {
        file = self.path, chunks = C.sl_rag_nchunks(idx), sources = C.sl_rag_nsources(idx),
        terms = C.sl_rag_nterms(idx), dims = C.sl_rag_dims(idx), int8 = band(flags, C.SL_RAG_HAS_I8) ~= 0,
        binary = band(flags, C.SL_RAG_HAS_BITS) ~= 0, ivf = ivf_info(idx), format = C.sl_rag_version(idx),
        generation = tonumber(self.gen), loaded_at = tonumber(C.sl_rag_slot_loaded_at(self.slot)), build = build,
        error = last ~= "" and last or nil,
    }
end

--- The BM25 terms of text (the index's tokenizer), as a list.
function _M.terms(text)
    if type(text) ~= "string" then error("text must be a string", 2) end
    local n = C.sl_rag_terms(text, #text, terms_buf, 65536)
    local out = {}
    for t in ffi_string(terms_buf, n):gmatch("[^\n]+") do out[#out + 1] = t end
    return out
end

--- Checks an index file without serving it: info table | nil, err (the loader's reason).
function _M.check_file(path)
    local pp = ffi_new("sl_rag_index_t*[1]")
    local rc = C.sl_rag_load(path, pp, errbuf, 256)
    if rc ~= 0 then
        return nil, ffi_string(errbuf)
    end
    local idx = ffi_gc(pp[0], C.sl_rag_release)
    local out = { file = path, chunks = C.sl_rag_nchunks(idx), sources = C.sl_rag_nsources(idx),
                  terms = C.sl_rag_nterms(idx), dims = C.sl_rag_dims(idx), format = C.sl_rag_version(idx),
                  int8 = band(C.sl_rag_flags(idx), C.SL_RAG_HAS_I8) ~= 0,
                  binary = band(C.sl_rag_flags(idx), C.SL_RAG_HAS_BITS) ~= 0,
                  ivf = ivf_info(idx), build = cjson.decode(ffi_string(C.sl_rag_info(idx, len_p), len_p[0])) }
    C.sl_rag_release(ffi_gc(idx, nil))
    return out
end

return _M

-- sluice.vector: vectors and the node-wide vector store (core/common/vector.c, vstore.c), for plugins that
-- search by meaning: the semantic cache keeps its prompts' embeddings here, ai-rag's index uses the same k-NN
-- code (sluice.rag). Reference: docs/vector.md. Phases: every phase, init_worker and timers (nothing yields).
--
--   local vector = require("sluice").vector
--   local store = vector.store("semcache", {dims = 1536, capacity = 10000})   -- same store in every worker
--   local ok, evicted = store:add("cache-key-1", embedding, 3600)              -- ttl seconds (optional)
--   local hits = store:search(embedding, 3, 0.92)        -- {{key = "cache-key-1", score = 0.97}, ...}
--   store:add("p1/key-2", embedding, 3600, 3, 100)  -- at most 100 keys starting with "p1/" (their oldest goes)
--   store:search(embedding, 1, 0.92, nil, "p1/")      -- only keys starting with "p1/"
--   store:remove("cache-key-1"); store:count(); store:clear()
--   local v = vector.new({0.1, 0.2, ...}); vector.cosine(a, b)
--
-- A vector argument is a Lua array of numbers or a float array made by vector.new (cheaper when reused).
-- Misuse (wrong types, a key over 250 bytes, dimensions that do not match the store) raises; runtime failures
-- return nil, err.
local ffi = require("ffi")
local C = require("sluice.core")

local type, tostring, error, setmetatable, tonumber = type, tostring, error, setmetatable, tonumber
local ffi_new, ffi_string, ffi_gc, ffi_istype, ffi_sizeof = ffi.new, ffi.string, ffi.gc, ffi.istype, ffi.sizeof
local sqrt = math.sqrt

ffi.cdef [[
float sl_vec_dot(const float *a, const float *b, size_t n);
float sl_vec_normalize(float *v, size_t n);
typedef struct sl_vstore sl_vstore_t;
typedef struct sl_vstore_hit { char key[250]; uint32_t key_len; float score; } sl_vstore_hit_t;
enum { SL_VEC_EXACT = 0, SL_VEC_INT8 = 1, SL_VEC_BINARY = 2, SL_VEC_AUTO = -1 };
enum { SL_VSTORE_I8 = 1, SL_VSTORE_BITS = 2 };
enum { SL_VEC_MAX_K = 1024, SL_VEC_MAX_DIMS = 16384, SL_VSTORE_KEY_MAX = 250 };
sl_vstore_t *sl_vstore_open(const char *name, size_t nlen, uint32_t dims, uint32_t capacity, uint32_t flags,
                            int *err);
void sl_vstore_release(sl_vstore_t *s);
int sl_vstore_add(sl_vstore_t *s, const char *key, size_t klen, const float *v, double ttl, char *evicted,
                  uint32_t *evicted_len);
int sl_vstore_add_in(sl_vstore_t *s, const char *key, size_t klen, size_t glen, uint32_t gmax, const float *v,
                     double ttl, char *evicted, uint32_t *evicted_len);
int sl_vstore_remove(sl_vstore_t *s, const char *key, size_t klen);
int sl_vstore_search(sl_vstore_t *s, const float *q, uint32_t k, float min_score, int mode, sl_vstore_hit_t *out);
int sl_vstore_search_in(sl_vstore_t *s, const char *prefix, size_t plen, const float *q, uint32_t k,
                        float min_score, int mode, sl_vstore_hit_t *out);
uint32_t sl_vstore_count(sl_vstore_t *s);
void sl_vstore_clear(sl_vstore_t *s);
]]

local MAX_K, MAX_DIMS, KEY_MAX = C.SL_VEC_MAX_K, C.SL_VEC_MAX_DIMS, C.SL_VSTORE_KEY_MAX
local MODES = { exact = C.SL_VEC_EXACT, int8 = C.SL_VEC_INT8, binary = C.SL_VEC_BINARY, auto = C.SL_VEC_AUTO }
local float_arr = ffi.typeof("float[?]")
local err_p, evlen_p = ffi_new("int[1]"), ffi_new("uint32_t[1]")
local evbuf = ffi_new("char[?]", KEY_MAX)

local _M = { MODES = MODES }

--- A float array (cdata) of the numbers of t (a Lua array), or nil, err when t holds something else.
function _M.new(t)
    if type(t) ~= "table" then
        error("vector must be an array of numbers", 2)
    end
    local n = #t
    if n == 0 or n > MAX_DIMS then
        return nil, "vector must have 1 to " .. MAX_DIMS .. " numbers"
    end
    local v = float_arr(n)
    for i = 1, n do
        local x = t[i]
        if type(x) ~= "number" or x ~= x then
            return nil, "vector element " .. i .. " is not a number"
        end
        v[i - 1] = x
    end
    return v, n
end

-- A float pointer for v of dims numbers (a Lua array is copied), or nil, err.
local function as_floats(v, dims, level)
    if type(v) == "table" then
        if #v ~= dims then
            return nil, "vector has " .. #v .. " dimensions, expected " .. dims
        end
        return _M.new(v)
    elseif ffi_istype(float_arr, v) then
        if ffi_sizeof(v) ~= dims * 4 then
            return nil, "vector has " .. ffi_sizeof(v) / 4 .. " dimensions, expected " .. dims
        end
        return v
    elseif type(v) == "cdata" and ffi_istype("float*", v) then -- the caller vouches for its length
        return v
    end
    error("vector must be an array of numbers or a float array from sluice.vector.new", level + 1)
end
_M.as_floats = as_floats

--- Dot product of two vectors of n numbers (arrays or float arrays).
function _M.dot(a, b, n)
    n = n or (type(a) == "table" and #a) or error("n is required for float arrays", 2)
    local x, e1 = as_floats(a, n, 2)
    local y, e2 = as_floats(b, n, 2)
    if not x or not y then return nil, e1 or e2 end
    return tonumber(C.sl_vec_dot(x, y, n))
end

--- Cosine similarity of two vectors of n numbers (-1..1; 0 when either is all zero).
function _M.cosine(a, b, n)
    n = n or (type(a) == "table" and #a) or error("n is required for float arrays", 2)
    local x, e1 = as_floats(a, n, 2)
    local y, e2 = as_floats(b, n, 2)
    if not x or not y then return nil, e1 or e2 end
    local d, na, nb = C.sl_vec_dot(x, y, n), C.sl_vec_dot(x, x, n), C.sl_vec_dot(y, y, n)
    if na <= 0 or nb <= 0 then return 0 end
    return tonumber(d / sqrt(na * nb))
end

--- Scales a float array (vector.new) to unit length in place; returns its length before.
function _M.normalize(v, n)
    return tonumber(C.sl_vec_normalize(v, n))
end

---------------------------------------------------------------------------------------------------------------
-- the store

local store_mt = { __index = {} }
local S = store_mt.__index

local function check_key(key, level)
    if type(key) ~= "string" or #key == 0 or #key > KEY_MAX then
        error("key must be a string of 1 to " .. KEY_MAX .. " bytes", level + 1)
    end
end

--- The node-wide store called name: opts = {dims (required), capacity (default 10000), quantize = nil |
--- "int8" | "binary" | "both" (first-pass copies for large stores)}. Every worker gets the same store for the
--- same name and settings; other settings replace it with a new empty one (docs/vector.md). Returns the store
--- or nil, err.
function _M.store(name, opts)
    if type(name) ~= "string" or #name == 0 or #name > 128 then
        error("store name must be a string of 1 to 128 bytes", 2)
    end
    if type(opts) ~= "table" or type(opts.dims) ~= "number" then
        error("opts.dims is required", 2)
    end
    local dims, cap = opts.dims, opts.capacity or 10000
    if dims < 1 or dims > MAX_DIMS or dims % 1 ~= 0 then
        error("dims must be an integer from 1 to " .. MAX_DIMS, 2)
    end
    if type(cap) ~= "number" or cap < 1 or cap % 1 ~= 0 then
        error("capacity must be a positive integer", 2)
    end
    local q = opts.quantize
    local flags = q == "int8" and C.SL_VSTORE_I8 or q == "binary" and C.SL_VSTORE_BITS
        or q == "both" and (C.SL_VSTORE_I8 + C.SL_VSTORE_BITS) or 0
    if q ~= nil and flags == 0 then
        error("quantize must be \"int8\", \"binary\" or \"both\"", 2)
    end
    local s = C.sl_vstore_open(name, #name, dims, cap, flags, err_p)
    if s == nil then
        return nil, err_p[0] == -12 and "out of memory" or "invalid store settings (capacity at most 16777216)"
    end
    return setmetatable({ cd = ffi_gc(s, C.sl_vstore_release), dims = dims, capacity = cap, name = name },
        store_mt)
end

--- Adds (or replaces) key with vector v; ttl seconds (optional) until it is no longer found. group_len,
--- group_max (optional): the key's first group_len bytes are its group, which keeps at most group_max keys
--- (adding to a full group evicts the group's oldest). Returns true, plus the key evicted to make room (a full
--- store or group); nil, err for a zero or NaN vector.
function S.add(self, key, v, ttl, group_len, group_max)
    check_key(key, 2)
    if ttl ~= nil and (type(ttl) ~= "number" or ttl < 0) then
        error("ttl must be a non-negative number", 2)
    end
    group_len, group_max = group_len or 0, group_max or 0
    if type(group_len) ~= "number" or group_len < 0 or group_len > #key or group_len % 1 ~= 0
        or type(group_max) ~= "number" or group_max < 0 or group_max >= 2 ^ 32 or group_max % 1 ~= 0 then
        error("group_len must be an integer from 0 to the key's length, group_max a non-negative integer", 2)
    end
    local f, err = as_floats(v, self.dims, 2)
    if not f then return nil, err end
    local rc = C.sl_vstore_add_in(self.cd, key, #key, group_len, group_max, f, ttl or 0, evbuf, evlen_p)
    if rc < 0 then
        return nil, rc == -12 and "out of memory" or "vector is all zero or not a number"
    end
    if rc == 2 then
        return true, ffi_string(evbuf, evlen_p[0])
    end
    return true
end

--- Removes key: true, or false when it was not there.
function S.remove(self, key)
    check_key(key, 2)
    return C.sl_vstore_remove(self.cd, key, #key) == 0
end

local hits_buf, hits_cap = nil, 0

--- The k (default 1) entries nearest to v with a cosine >= min_score (default -1), best first:
--- {{key = , score = }, ...}; mode "auto" (default), "exact", "int8", "binary"; prefix (optional): only keys
--- that start with it. nil, err on failure.
function S.search(self, v, k, min_score, mode, prefix)
    k = k or 1
    if type(k) ~= "number" or k < 1 or k > MAX_K or k % 1 ~= 0 then
        error("k must be an integer from 1 to " .. MAX_K, 2)
    end
    local m = MODES[mode or "auto"]
    if m == nil then
        error("mode must be auto, exact, int8 or binary", 2)
    end
    if prefix ~= nil and (type(prefix) ~= "string" or #prefix > KEY_MAX) then
        error("prefix must be a string of at most " .. KEY_MAX .. " bytes", 2)
    end
    local f, err = as_floats(v, self.dims, 2)
    if not f then return nil, err end
    if k > hits_cap then
        hits_buf, hits_cap = ffi_new("sl_vstore_hit_t[?]", k), k
    end
    local n = C.sl_vstore_search_in(self.cd, prefix, prefix and #prefix or 0, f, k, min_score or -1, m, hits_buf)
    if n < 0 then
        return nil, n == -12 and "out of memory" or "invalid search"
    end
    local out = {}
    for i = 0, n - 1 do
        local h = hits_buf[i]
        out[i + 1] = { key = ffi_string(h.key, h.key_len), score = tonumber(h.score) }
    end
    return out
end

--- Number of entries (expired ones count until they are evicted or removed).
function S.count(self)
    return tonumber(C.sl_vstore_count(self.cd))
end

--- Removes every entry.
function S.clear(self)
    C.sl_vstore_clear(self.cd)
end

function store_mt.__tostring(self)
    return "sluice.vector store " .. tostring(self.name)
end

return _M

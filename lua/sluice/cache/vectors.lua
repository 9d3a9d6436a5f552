-- sluice.cache.vectors: the semantic cache's per-node vector store: per partition, at most `max` unit vectors,
-- each with the cache key of its answer; the oldest is replaced when a partition is full; search returns the
-- nearest vector by cosine similarity.
--
--   vectors.add(d, partition, vec, key, max)          -- vec: Lua array of numbers (normalised here)
--   local key, sim = vectors.nearest(d, partition, vec, max)
--
-- Interim implementation, kept behind these two calls so it can be swapped for the shared k-NN code
-- (`sluice.vector`) once it lands: the vectors live in the node's shared dict (so every worker of the node sees
-- them), one item per vector ("v:PARTITION:SLOT" -> float32 bytes .. key), slots used as a ring counted by
-- "vn:PARTITION" (an atomic incr: concurrent adds get different slots); a search reads the partition's items and
-- takes dot products through FFI. Linear in the partition's size: bounded by `max` (ai-cache's
-- semantic.max_entries).
local ffi = require("ffi")

local type, tonumber = type, tonumber
local sqrt = math.sqrt
local sub = string.sub
local ffi_new, ffi_string, ffi_cast = ffi.new, ffi.string, ffi.cast

local _M = {}

local KEY_LEN = 64 -- sluice.cache.key: 64 hex digits

-- vec -> float32 bytes of vec / |vec| (nil for a zero or non-numeric vector)
local function pack(vec)
    local n = #vec
    if n == 0 then return nil end
    local norm = 0
    for i = 1, n do
        local x = vec[i]
        if type(x) ~= "number" or x ~= x then return nil end
        norm = norm + x * x
    end
    if norm <= 0 then return nil end
    norm = 1 / sqrt(norm)
    local f = ffi_new("float[?]", n)
    for i = 0, n - 1 do
        f[i] = vec[i + 1] * norm
    end
    return ffi_string(f, n * 4), n
end
_M.pack = pack

local function dot(a, b, n)
    local s = 0
    for i = 0, n - 1 do
        s = s + a[i] * b[i]
    end
    return s
end

--- Adds vec with key to partition (at most max vectors: the oldest goes). True, or nil, err.
function _M.add(d, partition, vec, key, max)
    local bytes = pack(vec)
    if not bytes then return nil, "not a vector" end
    local n, err = d:incr("vn:" .. partition, 1, 0)
    if not n then return nil, err end
    local slot = (n - 1) % max + 1
    local ok, serr = d:set("v:" .. partition .. ":" .. slot, bytes .. key)
    if not ok then return nil, serr end
    return true
end

--- The key of the nearest vector to vec in partition and its cosine similarity, or nil when the partition is
--- empty (or holds vectors of another dimension only).
function _M.nearest(d, partition, vec, max)
    local q, n = pack(vec)
    if not q then return nil end
    local count = tonumber(d:get("vn:" .. partition)) or 0
    if count > max then count = max end
    local qf = ffi_cast("const float *", q)
    local want = n * 4 + KEY_LEN
    local best, best_key = -2, nil
    local prefix = "v:" .. partition .. ":"
    for slot = 1, count do
        local item = d:get(prefix .. slot)
        if type(item) == "string" and #item == want then
            local s = dot(qf, ffi_cast("const float *", item), n)
            if s > best then
                best, best_key = s, sub(item, n * 4 + 1)
            end
        end
    end
    if not best_key then return nil end
    return best_key, best
end

return _M

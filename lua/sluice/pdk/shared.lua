-- sluice.shared: shared dictionaries, visible to every worker (core/shared/shdict.c).
-- Phases: all. Dicts are declared in config (node.shared_dicts: {name: bytes}) and created at startup.
--
--   local shared = require("sluice").shared                      -- (the module itself: sluice.pdk.shared)
--   local d = shared.get("limits")  -- or shared.limits
--   local ok, err, forcible = d:set("k", "v", 10)     -- ttl seconds (0/nil = none), flags optional
--   local v, flags = d:get("k")
--   local n, err = d:incr("hits", 1, 0)
--   local ok, err, cur = d:cas("tat", old, new, 60)   -- compare-and-set of a number (old nil: when absent)
--
-- Semantics follow OpenResty's ngx.shared.DICT: values are strings, numbers or booleans, setting nil
-- deletes, `forcible` says that live entries were evicted to make room, `flags` come back only when
-- non-zero. Misuse (bad key or ttl) raises; runtime failures return nil/false plus an error string.
-- One entry (key + value) must fit one shard of the dict: d:max_item_size(); a larger one is refused with
-- "value too large (N bytes, limit M for this dict)" however much free_space() reports.
local ffi = require("ffi")
local C = require("sluice.core")

local type, tostring, tonumber, error, setmetatable = type, tostring, tonumber, error, setmetatable
local ffi_new, ffi_string = ffi.new, ffi.string
local format = string.format
local max = math.max

ffi.cdef [[
typedef struct sl_shdict sl_shdict_t;
int sl_shdict_create(const char *name, size_t size);
sl_shdict_t *sl_shdict_find(const char *name, size_t len);
int sl_shdict_get(sl_shdict_t *d, const char *key, size_t klen, int *type, double *num, char *buf,
                  size_t buflen, size_t *vlen, uint32_t *flags);
int sl_shdict_set(sl_shdict_t *d, const char *key, size_t klen, int type, double num, const char *str,
                  size_t slen, double ttl, uint32_t flags, int *forcible);
int sl_shdict_add(sl_shdict_t *d, const char *key, size_t klen, int type, double num, const char *str,
                  size_t slen, double ttl, uint32_t flags, int *forcible);
int sl_shdict_replace(sl_shdict_t *d, const char *key, size_t klen, int type, double num, const char *str,
                      size_t slen, double ttl, uint32_t flags, int *forcible);
int sl_shdict_incr(sl_shdict_t *d, const char *key, size_t klen, double delta, int has_init, double init,
                   double init_ttl, double *out, int *forcible);
int sl_shdict_delete(sl_shdict_t *d, const char *key, size_t klen);
int sl_shdict_cas_num(sl_shdict_t *d, const char *key, size_t klen, int has_old, double old, double num, double ttl,
                      double *cur, int *forcible);
int sl_shdict_ttl(sl_shdict_t *d, const char *key, size_t klen, double *ttl);
int sl_shdict_expire(sl_shdict_t *d, const char *key, size_t klen, double ttl);
void sl_shdict_flush_all(sl_shdict_t *d);
int sl_shdict_flush_expired(sl_shdict_t *d, int max);
int sl_shdict_get_keys(sl_shdict_t *d, int max, char *buf, size_t buflen, size_t *needed, int *count);
size_t sl_shdict_capacity(const sl_shdict_t *d);
size_t sl_shdict_free_space(sl_shdict_t *d);
size_t sl_shdict_max_item(const sl_shdict_t *d);
]]

local T_NIL, T_NUMBER, T_STRING, T_BOOLEAN = 0, 1, 2, 3
local NOT_FOUND, NOMEM, EXISTS, INVALID, NOT_NUMBER, NOBUFS, TOOBIG = -2, -12, -17, -22, -33, -105, -27
local ERRORS = {
    [NOT_FOUND] = "not found", [NOMEM] = "no memory", [EXISTS] = "exists",
    [INVALID] = "invalid argument", [NOT_NUMBER] = "not a number",
}

-- Out-parameters and the copy-out buffer, allocated once per VM and reused by every call.
local type_p, num_p = ffi_new("int[1]"), ffi_new("double[1]")
local size_p, flags_p = ffi_new("size_t[1]"), ffi_new("uint32_t[1]")
local forcible_p, count_p = ffi_new("int[1]"), ffi_new("int[1]")
local buf_size = 4096
local buf = ffi_new("char[?]", buf_size)

local function grow(n)
    if n > buf_size then
        buf_size = max(n, buf_size * 2)
        buf = ffi_new("char[?]", buf_size)
    end
    return buf
end

local _M = {}
local dict_mt = { __index = {} }
local dict = dict_mt.__index
local cache = {}

local function check(self, key)
    if type(self) ~= "table" or self.cd == nil then
        error("bad shared dict (call methods with ':')", 3)
    end
    if key == nil then
        error("nil key", 3)
    end
    if type(key) ~= "string" then
        key = tostring(key)
    end
    if #key == 0 then
        return nil, "empty key"
    end
    if #key > 65535 then
        return nil, "key too long"
    end
    return key
end

local function check_ttl(ttl)
    if ttl == nil then
        return 0
    end
    if type(ttl) ~= "number" or ttl < 0 then
        error("bad ttl: " .. tostring(ttl), 3)
    end
    return ttl
end

--- d:get(key) -> value, flags|nil ; nil when absent.
function dict.get(self, key)
    local k, kerr = check(self, key)
    if not k then
        return nil, kerr
    end
    local rc = C.sl_shdict_get(self.cd, k, #k, type_p, num_p, buf, buf_size, size_p, flags_p)
    if rc == NOBUFS then
        grow(tonumber(size_p[0]))
        rc = C.sl_shdict_get(self.cd, k, #k, type_p, num_p, buf, buf_size, size_p, flags_p)
    end
    if rc ~= 0 then
        if rc == NOT_FOUND then
            return nil
        end
        return nil, ERRORS[rc] or ("error " .. rc)
    end
    local t, value = type_p[0]
    if t == T_STRING then
        value = ffi_string(buf, size_p[0])
    elseif t == T_NUMBER then
        value = num_p[0]
    else
        value = num_p[0] ~= 0
    end
    local flags = flags_p[0]
    if flags ~= 0 then
        return value, flags
    end
    return value
end

local function store(fn, self, key, value, ttl, flags)
    local k, kerr = check(self, key)
    if not k then
        return false, kerr, false
    end
    ttl = check_ttl(ttl)
    if flags ~= nil and type(flags) ~= "number" then
        error("bad flags: " .. tostring(flags), 3)
    end
    local vt, num, str, slen = T_NIL, 0, nil, 0
    local tv = type(value)
    if tv == "string" then
        vt, str, slen = T_STRING, value, #value
    elseif tv == "number" then
        vt, num = T_NUMBER, value
    elseif tv == "boolean" then
        vt, num = T_BOOLEAN, value and 1 or 0
    elseif tv ~= "nil" then
        return false, "bad value type", false
    end
    local rc = fn(self.cd, k, #k, vt, num, str, slen, ttl, flags or 0, forcible_p)
    local forcible = forcible_p[0] ~= 0
    if rc == 0 then
        return true, nil, forcible
    end
    if rc == TOOBIG then
        return false, format("value too large (%d bytes, limit %d for this dict)", slen,
            math.max(0, tonumber(C.sl_shdict_max_item(self.cd)) - #k)), false
    end
    return false, ERRORS[rc] or ("error " .. rc), forcible
end

--- d:set(key, value, ttl?, flags?) -> ok, err, forcible ; value nil deletes.
function dict.set(self, key, value, ttl, flags)
    return store(C.sl_shdict_set, self, key, value, ttl, flags)
end

--- d:add(key, value, ttl?, flags?) -> ok, err ("exists"), forcible ; only when absent or expired.
function dict.add(self, key, value, ttl, flags)
    return store(C.sl_shdict_add, self, key, value, ttl, flags)
end

--- d:replace(key, value, ttl?, flags?) -> ok, err ("not found"), forcible ; only when present.
function dict.replace(self, key, value, ttl, flags)
    return store(C.sl_shdict_replace, self, key, value, ttl, flags)
end

--- d:delete(key) -> true
function dict.delete(self, key)
    local k, kerr = check(self, key)
    if not k then
        return false, kerr
    end
    C.sl_shdict_delete(self.cd, k, #k)
    return true
end

--- d:incr(key, delta, init?, init_ttl?) -> new value, nil, forcible | nil, err ; atomic across workers.
function dict.incr(self, key, delta, init, init_ttl)
    local k, kerr = check(self, key)
    if not k then
        return nil, kerr
    end
    if type(delta) ~= "number" then
        error("bad delta: " .. tostring(delta), 2)
    end
    if init ~= nil and type(init) ~= "number" then
        error("bad init: " .. tostring(init), 2)
    end
    local rc = C.sl_shdict_incr(self.cd, k, #k, delta, init ~= nil and 1 or 0, init or 0,
        init ~= nil and check_ttl(init_ttl) or 0, num_p, forcible_p)
    if rc ~= 0 then
        return nil, ERRORS[rc] or ("error " .. rc)
    end
    return num_p[0], nil, forcible_p[0] ~= 0
end

--- d:cas(key, old, new, ttl?) -> true | false, "changed", current | nil, err ; compare-and-set of a number:
--- stores `new` only when the live value is the number `old` (old nil: only when the key is absent), atomic across
--- workers. On "changed", `current` is the live number (nil when absent or not a number): retry from it.
function dict.cas(self, key, old, new, ttl)
    local k, kerr = check(self, key)
    if not k then
        return nil, kerr
    end
    if old ~= nil and type(old) ~= "number" then
        error("bad old value (a number or nil): " .. tostring(old), 2)
    end
    if type(new) ~= "number" then
        error("bad new value (a number): " .. tostring(new), 2)
    end
    local rc = C.sl_shdict_cas_num(self.cd, k, #k, old ~= nil and 1 or 0, old or 0, new, check_ttl(ttl), num_p,
        forcible_p)
    if rc == 0 then
        return true
    end
    if rc == EXISTS then
        local cur = num_p[0]
        return false, "changed", cur == cur and cur or nil -- NaN: absent
    end
    return nil, ERRORS[rc] or ("error " .. rc)
end

--- d:ttl(key) -> seconds left (0 = never expires) | nil, "not found"
function dict.ttl(self, key)
    local k, kerr = check(self, key)
    if not k then
        return nil, kerr
    end
    local rc = C.sl_shdict_ttl(self.cd, k, #k, num_p)
    if rc ~= 0 then
        return nil, ERRORS[rc] or ("error " .. rc)
    end
    return num_p[0]
end

--- d:expire(key, ttl) -> true | nil, "not found" ; ttl 0 removes the expiry.
function dict.expire(self, key, ttl)
    local k, kerr = check(self, key)
    if not k then
        return nil, kerr
    end
    if ttl == nil then
        error("ttl required", 2)
    end
    local rc = C.sl_shdict_expire(self.cd, k, #k, check_ttl(ttl))
    if rc ~= 0 then
        return nil, ERRORS[rc] or ("error " .. rc)
    end
    return true
end

--- d:flush_all() ; removes everything.
function dict.flush_all(self)
    C.sl_shdict_flush_all(self.cd)
end

--- d:flush_expired(max?) -> number of entries freed (max 0/nil: all).
function dict.flush_expired(self, max_count)
    return C.sl_shdict_flush_expired(self.cd, max_count or 0)
end

--- d:get_keys(max?) -> array of keys (default at most 1024; 0 = all). Copies; use sparingly.
function dict.get_keys(self, max_count)
    max_count = max_count or 1024
    local rc
    repeat
        rc = C.sl_shdict_get_keys(self.cd, max_count, buf, buf_size, size_p, count_p)
        if rc == NOBUFS then
            grow(tonumber(size_p[0]))
        end
    until rc ~= NOBUFS
    local keys, off = {}, 0
    local len_p = ffi_new("uint32_t[1]")
    for i = 1, count_p[0] do
        ffi.copy(len_p, buf + off, 4)
        keys[i] = ffi_string(buf + off + 4, len_p[0])
        off = off + 4 + len_p[0]
    end
    return keys
end

--- d:capacity() -> bytes
function dict.capacity(self)
    return tonumber(C.sl_shdict_capacity(self.cd))
end

--- d:free_space() -> bytes (summed over the dict's shards: one value never uses more than max_item_size())
function dict.free_space(self)
    return tonumber(C.sl_shdict_free_space(self.cd))
end

--- d:max_item_size() -> bytes: the largest key + value the dict can hold (a larger one: set returns
--- false, "value too large (N bytes, limit M for this dict)").
function dict.max_item_size(self)
    return tonumber(C.sl_shdict_max_item(self.cd))
end

--- shared.get(name) -> dict | nil, err
function _M.get(name)
    if type(name) ~= "string" then
        error("dict name must be a string", 2)
    end
    local d = cache[name]
    if d then
        return d
    end
    local cd = C.sl_shdict_find(name, #name)
    if cd == nil then
        return nil, "no shared dict '" .. name .. "'"
    end
    d = setmetatable({ cd = cd, name = name }, dict_mt)
    cache[name] = d
    return d
end

return setmetatable(_M, {
    __index = function(_, name)
        return (_M.get(name))
    end,
})

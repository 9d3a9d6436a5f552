-- sluice.zip: zlib compression of whole strings (core/common/zip.c), for values kept in shared dicts or
-- memcached (the AI response cache compresses large entries).
--
--   local zip = require("sluice.zip")
--   local z = zip.deflate(s)                 -- compressed bytes (zlib framing)
--   local s2, err = zip.inflate(z, #s)       -- the original, given (at most) its length; nil, err when z is
--                                            -- corrupt, cut short, or inflates past max_len
local ffi = require("ffi")
local C = require("sluice.core")

local ffi_new, ffi_string = ffi.new, ffi.string
local type, error, max = type, error, math.max

ffi.cdef [[
size_t sl_zip_bound(size_t n);
int sl_zip_deflate(const char *src, size_t n, char *dst, size_t *dlen, int level);
int sl_zip_inflate(const char *src, size_t n, char *dst, size_t *dlen);
]]

local ENOBUFS = -105

local _M = {}

-- one scratch buffer per VM, grown as needed
local buf_size = 64 * 1024
local buf = ffi_new("char[?]", buf_size)
local len_p = ffi_new("size_t[1]")

local function room(n)
    if n > buf_size then
        buf_size = max(n, buf_size * 2)
        buf = ffi_new("char[?]", buf_size)
    end
end

--- Compresses s (level 1..9, default 6); returns the compressed string.
function _M.deflate(s, level)
    if type(s) ~= "string" then
        error("deflate takes a string", 2)
    end
    local bound = tonumber(C.sl_zip_bound(#s))
    room(bound)
    len_p[0] = buf_size
    local rc = C.sl_zip_deflate(s, #s, buf, len_p, level or 6)
    if rc ~= 0 then -- cannot happen with bound bytes of room; say so rather than return garbage
        return nil, "deflate failed (" .. rc .. ")"
    end
    return ffi_string(buf, len_p[0])
end

--- Uncompresses z, which must inflate to at most max_len bytes; the string, or nil, err.
function _M.inflate(z, max_len)
    if type(z) ~= "string" or type(max_len) ~= "number" or max_len < 0 then
        error("inflate takes a string and the largest length it may inflate to", 2)
    end
    room(max_len + 1) -- one byte more: an output that fills max_len exactly is told apart from a longer one
    len_p[0] = max_len + 1
    local rc = C.sl_zip_inflate(z, #z, buf, len_p)
    if rc ~= 0 then
        return nil, rc == ENOBUFS and "inflates past " .. max_len .. " bytes" or "not a whole zlib stream"
    end
    if len_p[0] > max_len then
        return nil, "inflates past " .. max_len .. " bytes"
    end
    return ffi_string(buf, len_p[0])
end

return _M

-- sluice.crypto: SHA-256 and HMAC-SHA256 through mbedTLS (FFI), hex, CRC32 (pure Lua, bit ops).
--
--   crypto.sha256(s) -> 32 raw bytes          crypto.sha256_hex(s) -> 64 hex chars
--   crypto.hmac_sha256(key, s) -> 32 bytes    crypto.hmac_sha256_hex(key, s)
--   crypto.to_hex(s)                          crypto.crc32(s [, crc]) -> unsigned 32-bit number
--
-- Inside the sluice binary mbedcrypto is linked in and its symbols are reached through ffi.C; under plain
-- luajit (specs) the shared library is loaded with ffi.load("mbedcrypto"). This module owns the mbedTLS
-- md/sha256 cdefs (one declaration per C function across the Lua tree).
local ffi = require("ffi")
local bit = require("bit")

local byte, fmt = string.byte, string.format
local band, bxor, rshift, tobit = bit.band, bit.bxor, bit.rshift, bit.tobit

pcall(ffi.cdef, [[
typedef struct mbedtls_md_info_t mbedtls_md_info_t;
const mbedtls_md_info_t *mbedtls_md_info_from_string(const char *md_name);
int mbedtls_md_hmac(const mbedtls_md_info_t *md_info, const unsigned char *key, size_t keylen,
                    const unsigned char *input, size_t ilen, unsigned char *output);
int mbedtls_md(const mbedtls_md_info_t *md_info, const unsigned char *input, size_t ilen,
               unsigned char *output);
int mbedtls_sha256_ret(const unsigned char *input, size_t ilen, unsigned char output[32], int is224);
]])

local function has(lib, sym)
    local ok, v = pcall(function() return lib[sym] end)
    return ok and v ~= nil
end

local lib
if has(ffi.C, "mbedtls_md_hmac") then
    lib = ffi.C
else
    for _, name in ipairs({ "mbedcrypto", "libmbedcrypto.so.7", "libmbedcrypto.so.16", "libmbedcrypto.so" }) do
        local ok, l = pcall(ffi.load, name)
        if ok and has(l, "mbedtls_md_hmac") then lib = l break end
    end
end
if not lib then
    error("sluice.crypto: mbedcrypto not found (neither linked in nor loadable)")
end

local md_sha256 = lib.mbedtls_md_info_from_string("SHA256")
if md_sha256 == nil then error("sluice.crypto: mbedTLS has no SHA256") end
local use_sha256_ret = has(lib, "mbedtls_sha256_ret") -- mbedTLS 2.x; 3.x only has mbedtls_md/mbedtls_sha256

local out32 = ffi.new("unsigned char[32]")

local _M = {}

function _M.sha256(s)
    local rc
    if use_sha256_ret then
        rc = lib.mbedtls_sha256_ret(s, #s, out32, 0)
    else
        rc = lib.mbedtls_md(md_sha256, s, #s, out32)
    end
    if rc ~= 0 then return nil, "sha256 failed: " .. tonumber(rc) end
    return ffi.string(out32, 32)
end

function _M.hmac_sha256(key, s)
    local rc = lib.mbedtls_md_hmac(md_sha256, key, #key, s, #s, out32)
    if rc ~= 0 then return nil, "hmac failed: " .. tonumber(rc) end
    return ffi.string(out32, 32)
end

function _M.to_hex(s)
    return (s:gsub(".", function(c) return fmt("%02x", byte(c)) end))
end

function _M.sha256_hex(s)
    return _M.to_hex(assert(_M.sha256(s)))
end

function _M.hmac_sha256_hex(key, s)
    return _M.to_hex(assert(_M.hmac_sha256(key, s)))
end

-- CRC-32 (IEEE 802.3, reflected, poly 0xEDB88320), as used by the AWS event-stream framing.
local crc_table = {}
for i = 0, 255 do
    local c = i
    for _ = 1, 8 do
        if band(c, 1) == 1 then c = bxor(rshift(c, 1), 0xEDB88320) else c = rshift(c, 1) end
    end
    crc_table[i] = c
end

--- CRC32 of s (continuing from crc when given); returns an unsigned number.
function _M.crc32(s, crc)
    local c = bxor(tobit(crc or 0), -1)
    for i = 1, #s do
        c = bxor(crc_table[band(bxor(c, byte(s, i)), 0xFF)], rshift(c, 8))
    end
    c = bxor(c, -1)
    if c < 0 then c = c + 4294967296 end
    return c
end

return _M

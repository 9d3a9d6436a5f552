-- sluice.crypto: SHA-256 and HMAC through mbedTLS (FFI), public-key signature checks (core/common/pkey.c),
-- base64, random bytes, hex, CRC32 (pure Lua, bit ops).
--
--   crypto.sha256(s) -> 32 raw bytes          crypto.sha256_hex(s) -> 64 hex chars
--   crypto.hmac_sha256(key, s) -> 32 bytes    crypto.hmac_sha256_hex(key, s)
--   crypto.hmac("SHA384", key, s)             crypto.equal(a, b) -> constant-time comparison
--   crypto.to_hex(s), crypto.from_hex(h)      crypto.crc32(s [, crc]) -> unsigned 32-bit number
--   crypto.random(n) -> n bytes from the kernel's CSPRNG (/dev/urandom)
--   crypto.b64_decode(s), crypto.b64url_decode(s), crypto.b64url_encode(s)
--   local k = crypto.public_key(pem) | crypto.public_key_jwk(jwk)   -- parsed once, kept (freed by the GC)
--   crypto.verify(k, "RS256" | "RS384" | "RS512" | "ES256" | "ES384", msg, sig) -> true | false, why
--
-- Inside the sluice binary mbedcrypto is linked in and its symbols are reached through ffi.C; under plain
-- luajit (specs) the shared library is loaded with ffi.load("mbedcrypto"). This module owns the mbedTLS
-- md/sha256 cdefs (one declaration per C function across the Lua tree). sha256 goes through the core's own
-- sl_sha256 (core/common/sha256.c: SHA-NI when the CPU has it, several times cheaper than mbedTLS's) when the
-- core is there, as it is in the gateway: it runs on every request of a route with key-auth.
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
int mbedtls_base64_decode(unsigned char *dst, size_t dlen, size_t *olen, const unsigned char *src, size_t slen);
int mbedtls_base64_encode(unsigned char *dst, size_t dlen, size_t *olen, const unsigned char *src, size_t slen);
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

pcall(ffi.cdef, [[
void sl_sha256(const void *p, size_t len, unsigned char out[32]);
]])
local core_ok, core = pcall(require, "sluice.core")
local sl_sha256 = core_ok and has(core, "sl_sha256") and core.sl_sha256 or nil

local md_sha256 = lib.mbedtls_md_info_from_string("SHA256")
if md_sha256 == nil then error("sluice.crypto: mbedTLS has no SHA256") end
local use_sha256_ret = has(lib, "mbedtls_sha256_ret") -- mbedTLS 2.x; 3.x only has mbedtls_md/mbedtls_sha256

local out32 = ffi.new("unsigned char[32]")
local out64 = ffi.new("unsigned char[64]")
local olen = ffi.new("size_t[1]")
local md_by_name = { SHA256 = md_sha256 }

local _M = {}

function _M.sha256(s)
    if sl_sha256 then
        sl_sha256(s, #s, out32)
        return ffi.string(out32, 32)
    end
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

--- HMAC with md ("SHA256", "SHA384", "SHA512"): raw bytes | nil, err.
function _M.hmac(md, key, s)
    local info = md_by_name[md]
    if info == nil then
        info = lib.mbedtls_md_info_from_string(md)
        if info == nil then return nil, "unknown digest " .. tostring(md) end
        md_by_name[md] = info
    end
    local rc = lib.mbedtls_md_hmac(info, key, #key, s, #s, out64)
    if rc ~= 0 then return nil, "hmac failed: " .. tonumber(rc) end
    return ffi.string(out64, md == "SHA384" and 48 or md == "SHA512" and 64 or 32)
end

--- True when a and b are equal strings; the time depends only on their lengths (every byte is looked at).
function _M.equal(a, b)
    if type(a) ~= "string" or type(b) ~= "string" then return false end
    local la, lb = #a, #b
    local diff = bxor(la, lb)
    for i = 1, (la > lb and la or lb) do
        diff = bit.bor(diff, bxor(byte(a, i) or 0, byte(b, i) or 0))
    end
    return diff == 0
end

--- n random bytes from the kernel (/dev/urandom): for keys and ids. nil, err when it cannot be read.
function _M.random(n)
    local f, err = io.open("/dev/urandom", "rb")
    if not f then return nil, err end
    local s = f:read(n)
    f:close()
    if not s or #s ~= n then return nil, "short read from /dev/urandom" end
    return s
end

--- Standard base64 (padding optional) -> bytes | nil, err.
function _M.b64_decode(s)
    if type(s) ~= "string" then return nil, "not a string" end
    local pad = #s % 4
    if pad == 1 then return nil, "invalid base64 length" end
    if pad > 0 then s = s .. string.rep("=", 4 - pad) end
    local n = #s
    local buf = ffi.new("unsigned char[?]", n + 1)
    local rc = lib.mbedtls_base64_decode(buf, n + 1, olen, s, n)
    if rc ~= 0 then return nil, "invalid base64" end
    return ffi.string(buf, olen[0])
end

--- base64url (RFC 4648 section 5, as JWS writes it: no padding) -> bytes | nil, err.
function _M.b64url_decode(s)
    if type(s) ~= "string" or s:find("[^%w%-_]") then return nil, "invalid base64url" end
    return _M.b64_decode((s:gsub("[%-_]", { ["-"] = "+", ["_"] = "/" })))
end

--- bytes -> base64url without padding.
function _M.b64url_encode(s)
    local n = #s
    local cap = math.floor((n + 2) / 3) * 4 + 1
    local buf = ffi.new("unsigned char[?]", cap)
    if lib.mbedtls_base64_encode(buf, cap, olen, s, n) ~= 0 then return nil, "encode failed" end
    return (ffi.string(buf, olen[0]):gsub("[+/=]", { ["+"] = "-", ["/"] = "_", ["="] = "" }))
end

--- Hex text -> bytes | nil.
function _M.from_hex(h)
    if type(h) ~= "string" or #h % 2 ~= 0 or h:find("[^%x]") then return nil end
    return (h:gsub("%x%x", function(x) return string.char(tonumber(x, 16)) end))
end

-- Public keys (core/common/pkey.c: reached through the core, not mbedcrypto directly)
local pk_C
local function pkey_lib()
    if not pk_C then
        pk_C = require("sluice.core")
        pcall(ffi.cdef, [[
typedef struct sl_pkey sl_pkey_t;
sl_pkey_t *sl_pkey_load(const char *data, size_t len, char *err, size_t errlen);
sl_pkey_t *sl_pkey_from_jwk(const char *kty, const char *crv, const uint8_t *a, size_t alen, const uint8_t *b,
                            size_t blen, char *err, size_t errlen);
int sl_pkey_verify(sl_pkey_t *k, const char *alg, const uint8_t *msg, size_t len, const uint8_t *sig, size_t siglen);
const char *sl_pkey_kind(const sl_pkey_t *k, int *bits);
void sl_pkey_free(sl_pkey_t *k);
]])
    end
    return pk_C
end
local errbuf = ffi.new("char[160]")

local function wrap(k)
    local PC = pkey_lib()
    k = ffi.gc(k, PC.sl_pkey_free)
    local bits = ffi.new("int[1]")
    local kind = ffi.string(PC.sl_pkey_kind(k, bits))
    return { cd = k, kind = kind, bits = tonumber(bits[0]) }
end

--- A public key from PEM (or DER) text: key | nil, err. Keep it: parsing costs far more than a check.
function _M.public_key(pem)
    if type(pem) ~= "string" or pem == "" then return nil, "no key" end
    local k = pkey_lib().sl_pkey_load(pem, #pem, errbuf, 160)
    if k == nil then return nil, ffi.string(errbuf) end
    return wrap(k)
end

--- A public key from a JWK table ({kty = "RSA", n, e} or {kty = "EC", crv, x, y}, base64url members): key | nil, err.
function _M.public_key_jwk(jwk)
    if type(jwk) ~= "table" then return nil, "a JWK must be an object" end
    local a, b
    if jwk.kty == "RSA" then
        a, b = _M.b64url_decode(jwk.n), _M.b64url_decode(jwk.e)
    elseif jwk.kty == "EC" then
        a, b = _M.b64url_decode(jwk.x), _M.b64url_decode(jwk.y)
    else
        return nil, "unsupported kty " .. tostring(jwk.kty) .. " (RSA, EC)"
    end
    if not a or not b then return nil, "invalid base64url in the key's members" end
    local crv = type(jwk.crv) == "string" and jwk.crv or nil
    local k = pkey_lib().sl_pkey_from_jwk(jwk.kty, crv, a, #a, b, #b, errbuf, 160)
    if k == nil then return nil, ffi.string(errbuf) end
    return wrap(k)
end

--- Checks a JWS signature: true | false, why ("bad signature", or the key does not fit alg).
function _M.verify(key, alg, msg, sig)
    local rc = pkey_lib().sl_pkey_verify(key.cd, alg, msg, #msg, sig, #sig)
    if rc == 0 then return true end
    if rc == -22 then return false, "key cannot check " .. tostring(alg) end
    return false, "bad signature"
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

local crypto = require("sluice.crypto")

describe("sluice.crypto", function()
    it("computes SHA-256 (FIPS 180-2 vectors)", function()
        assert.equals("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", crypto.sha256_hex("abc"))
        assert.equals("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", crypto.sha256_hex(""))
        assert.equals("248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
            crypto.sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"))
        assert.equals(32, #crypto.sha256("x"))
    end)

    it("computes HMAC-SHA256 (RFC 4231 test cases 1, 2 and 6)", function()
        assert.equals("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            crypto.hmac_sha256_hex(string.rep("\11", 20), "Hi There"))
        assert.equals("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            crypto.hmac_sha256_hex("Jefe", "what do ya want for nothing?"))
        assert.equals("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            crypto.hmac_sha256_hex(string.rep("\170", 131), "Test Using Larger Than Block-Size Key - Hash Key First"))
    end)

    it("computes CRC32 (IEEE)", function()
        assert.equals(0xCBF43926, crypto.crc32("123456789"))
        assert.equals(0, crypto.crc32(""))
        assert.equals(crypto.crc32("hello world"), crypto.crc32(" world", crypto.crc32("hello")))
    end)
end)

describe("crypto.sha256 through the core's sl_sha256", function()
    it("equals mbedTLS for every length 0..300", function()
        local ffi = require("ffi")
        local lib = ffi.load("mbedcrypto")
        local out = ffi.new("unsigned char[32]")
        for n = 0, 300 do
            local s = string.rep("\x5a\x00\xff", 101):sub(1, n)
            assert.equal(0, lib.mbedtls_sha256_ret(s, n, out, 0))
            assert.equal(ffi.string(out, 32), crypto.sha256(s), "length " .. n)
        end
    end)
end)

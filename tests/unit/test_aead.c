/* AES-256-GCM sealing of secrets (core/common/aead.c): published vectors, round trips, tampering. */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "common/aead.h"
#include "test.h"

static size_t unhex(const char *h, uint8_t *out)
{
    size_t n = strlen(h) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
    return n;
}

/* The GCM specification's test cases 14 and 16 (AES-256; McGrew and Viega, "The Galois/Counter Mode of
 * Operation", appendix B). */
static void test_vectors(void)
{
    uint8_t key[32] = {0}, nonce[12] = {0}, out[128], aad[32], p[64], c[64], t[16];

    CHECK_INT(sl_aead_seal_nonce(key, nonce, NULL, 0, NULL, 0, out), 0);
    unhex("530f8afbc74536b9a963b4f1c4cb738b", t);
    CHECK(memcmp(out + 12, t, 16) == 0);

    unhex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308", key);
    unhex("cafebabefacedbaddecaf888", nonce);
    size_t alen = unhex("feedfacedeadbeeffeedfacedeadbeefabaddad2", aad);
    size_t plen = unhex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
                        "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
                        p);
    unhex("522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
          "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
          c);
    unhex("76fc6ece0f4e1768cddf8853bb2d551b", t);
    CHECK_INT(sl_aead_seal_nonce(key, nonce, aad, alen, p, plen, out), 0);
    CHECK(memcmp(out, nonce, 12) == 0);
    CHECK(memcmp(out + 12, c, plen) == 0);
    CHECK(memcmp(out + 12 + plen, t, 16) == 0);

    uint8_t back[64];
    CHECK_INT(sl_aead_open(key, aad, alen, out, plen + SL_AEAD_OVERHEAD, back), 0);
    CHECK(memcmp(back, p, plen) == 0);
}

static void test_round_trip_and_tampering(void)
{
    uint8_t key[32], other[32], out[64], back[64];
    const char *secret = "sk-live-0123456789abcdef";
    const char *aad = "providers/openai/api_key";
    size_t n = strlen(secret), m = n + SL_AEAD_OVERHEAD;
    memset(key, 7, sizeof(key));
    memset(other, 8, sizeof(other));

    CHECK_INT(sl_aead_seal(key, (const uint8_t *)aad, strlen(aad), (const uint8_t *)secret, n, out), 0);
    CHECK(memmem(out, m, secret, n) == NULL); /* not in the clear */
    CHECK_INT(sl_aead_open(key, (const uint8_t *)aad, strlen(aad), out, m, back), 0);
    CHECK(memcmp(back, secret, n) == 0);

    uint8_t again[64];
    CHECK_INT(sl_aead_seal(key, (const uint8_t *)aad, strlen(aad), (const uint8_t *)secret, n, again), 0);
    CHECK(memcmp(out, again, 12) != 0); /* a fresh nonce each time */

    CHECK_INT(sl_aead_open(other, (const uint8_t *)aad, strlen(aad), out, m, back), -EBADMSG); /* wrong key */
    CHECK_INT(sl_aead_open(key, (const uint8_t *)"providers/x/api_key", 19, out, m, back),
              -EBADMSG);             /* moved */
    for (size_t i = 0; i < m; i++) { /* any flipped bit: nonce, ciphertext or tag */
        out[i] ^= 1;
        if (sl_aead_open(key, (const uint8_t *)aad, strlen(aad), out, m, back) != -EBADMSG) {
            CHECK(0);
            fprintf(stderr, "byte %zu flipped and still opened\n", i);
        }
        out[i] ^= 1;
    }
    CHECK_INT(sl_aead_open(key, NULL, 0, out, 27, back), -EINVAL); /* shorter than nonce + tag */
    CHECK_INT(sl_aead_seal(NULL, NULL, 0, (const uint8_t *)secret, n, out), -EINVAL);
}

int main(void)
{
    test_vectors();
    test_round_trip_and_tampering();
    return sl_test_done();
}

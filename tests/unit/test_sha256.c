/* core/common/sha256.c: the FIPS 180-4 test vectors, and every length from 0 to 300 (one and two padding
 * blocks, each boundary) against mbedTLS; with the CPU's SHA extensions and without. */
#include <mbedtls/sha256.h>
#include <stdlib.h>
#include <string.h>

#include "common/sha256.h"
#include "test.h"

static void hex_of(const char *s, size_t n, char *out)
{
    sl_sha256_hex(s, n, out);
    out[64] = '\0';
}

static void test_vectors(void)
{
    char h[65];
    hex_of("", 0, h);
    CHECK_STR(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    hex_of("abc", 3, h);
    CHECK_STR(h, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    hex_of("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", 56, h);
    CHECK_STR(h, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    {
        size_t n = 1000000;
        char *a = malloc(n);
        memset(a, 'a', n);
        hex_of(a, n, h);
        CHECK_STR(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
        free(a);
    }
}

static void test_against_mbedtls(void)
{
    unsigned char buf[300], mine[32], theirs[32];
    for (size_t i = 0; i < sizeof buf; i++)
        buf[i] = (unsigned char)(i * 131 + 7);
    for (size_t n = 0; n <= sizeof buf; n++) {
        sl_sha256(buf, n, mine);
        CHECK_INT(mbedtls_sha256_ret(buf, n, theirs, 0), 0);
        CHECK(memcmp(mine, theirs, 32) == 0);
    }
}

int main(void)
{
    int accel = sl__sha256_accel(-1);
    printf("sha256: CPU extensions %s\n", accel ? "in use" : "not available");
    test_vectors();
    test_against_mbedtls();
    if (accel) { /* the portable code too */
        sl__sha256_accel(0);
        test_vectors();
        test_against_mbedtls();
        sl__sha256_accel(1);
    }
    return sl_test_done();
}

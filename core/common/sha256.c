/* SHA-256 (FIPS 180-4), one-shot. Blocks go through the CPU's SHA extensions when it has them (x86-64 SHA-NI:
 * about a tenth of the instructions), else through portable C whose rounds are unrolled eight at a time with
 * the working variables rotated by name, the message schedule computed in place in a 16-word ring. The CPU is
 * asked once, at load (CPUID; valgrind hides SHA-NI there, so bench/instr.sh counts the portable code). */
#include "common/sha256.h"

#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#include <immintrin.h>
#define SL_SHA256_X86 1
#endif

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))
#define S0(x) (ROR(x, 2) ^ ROR(x, 13) ^ ROR(x, 22))
#define S1(x) (ROR(x, 6) ^ ROR(x, 11) ^ ROR(x, 25))
#define s0(x) (ROR(x, 7) ^ ROR(x, 18) ^ ((x) >> 3))
#define s1(x) (ROR(x, 17) ^ ROR(x, 19) ^ ((x) >> 10))
#define CH(x, y, z) ((z) ^ ((x) & ((y) ^ (z))))
#define MAJ(x, y, z) (((x) & (y)) | ((z) & ((x) | (y))))

/* W[i & 15] becomes word i of the schedule (i >= 16) */
#define SCHED(i) (W[(i)&15] += s1(W[((i)-2) & 15]) + W[((i)-7) & 15] + s0(W[((i)-15) & 15]))

#define ROUND(a, b, c, d, e, f, g, h, i, w)                                                                  \
    do {                                                                                                     \
        uint32_t t1 = (h) + S1(e) + CH(e, f, g) + K[i] + (w);                                                \
        (d) += t1;                                                                                           \
        (h) = t1 + S0(a) + MAJ(a, b, c);                                                                     \
    } while (0)

#define EIGHT(i, W_)                                                                                         \
    do {                                                                                                     \
        ROUND(a, b, c, d, e, f, g, h, (i) + 0, W_((i) + 0));                                                 \
        ROUND(h, a, b, c, d, e, f, g, (i) + 1, W_((i) + 1));                                                 \
        ROUND(g, h, a, b, c, d, e, f, (i) + 2, W_((i) + 2));                                                 \
        ROUND(f, g, h, a, b, c, d, e, (i) + 3, W_((i) + 3));                                                 \
        ROUND(e, f, g, h, a, b, c, d, (i) + 4, W_((i) + 4));                                                 \
        ROUND(d, e, f, g, h, a, b, c, (i) + 5, W_((i) + 5));                                                 \
        ROUND(c, d, e, f, g, h, a, b, (i) + 6, W_((i) + 6));                                                 \
        ROUND(b, c, d, e, f, g, h, a, (i) + 7, W_((i) + 7));                                                 \
    } while (0)

#define WFIRST(i) W[i]

static uint32_t load_be(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static void compress(uint32_t H[8], const unsigned char *blk)
{
    uint32_t W[16];
    uint32_t a = H[0], b = H[1], c = H[2], d = H[3], e = H[4], f = H[5], g = H[6], h = H[7];
    for (int i = 0; i < 16; i++)
        W[i] = load_be(blk + 4 * i);
    EIGHT(0, WFIRST);
    EIGHT(8, WFIRST);
    EIGHT(16, SCHED);
    EIGHT(24, SCHED);
    EIGHT(32, SCHED);
    EIGHT(40, SCHED);
    EIGHT(48, SCHED);
    EIGHT(56, SCHED);
    H[0] += a, H[1] += b, H[2] += c, H[3] += d, H[4] += e, H[5] += f, H[6] += g, H[7] += h;
}

#ifdef SL_SHA256_X86
#define SHANI __attribute__((target("sha,sse4.1,ssse3")))

static int use_shani;

/* SHA-NI needs SHA (leaf 7 EBX bit 29), SSE4.1 and SSSE3 (leaf 1 ECX bits 19 and 9) */
__attribute__((constructor)) static void detect(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 19)) || !(c & (1u << 9)))
        return;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return;
    use_shani = (b >> 29) & 1;
}

/* ABEF / CDGH is the state layout the SHA-NI round instructions work on */
SHANI static void compress_shani(uint32_t H[8], const unsigned char *blk, size_t nblocks)
{
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bULL, 0x0405060700010203ULL);
    __m128i tmp = _mm_loadu_si128((const __m128i *)&H[0]);
    __m128i st1 = _mm_loadu_si128((const __m128i *)&H[4]);
    tmp = _mm_shuffle_epi32(tmp, 0xB1);         /* CDAB */
    st1 = _mm_shuffle_epi32(st1, 0x1B);         /* EFGH */
    __m128i st0 = _mm_alignr_epi8(tmp, st1, 8); /* ABEF */
    st1 = _mm_blend_epi16(st1, tmp, 0xF0);      /* CDGH */

    for (; nblocks > 0; nblocks--, blk += 64) {
        __m128i abef = st0, cdgh = st1, m[4], msg;
        for (int i = 0; i < 4; i++)
            m[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(blk + 16 * i)), bswap);
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++) {
            if (i >= 4) /* words 4i..4i+3 from the four before them */
                m[i & 3] =
                    _mm_sha256msg2_epu32(_mm_add_epi32(_mm_sha256msg1_epu32(m[i & 3], m[(i + 1) & 3]),
                                                       _mm_alignr_epi8(m[(i + 3) & 3], m[(i + 2) & 3], 4)),
                                         m[(i + 3) & 3]);
            msg = _mm_add_epi32(m[i & 3], _mm_loadu_si128((const __m128i *)&K[4 * i]));
            st1 = _mm_sha256rnds2_epu32(st1, st0, msg);
            msg = _mm_shuffle_epi32(msg, 0x0E);
            st0 = _mm_sha256rnds2_epu32(st0, st1, msg);
        }
        st0 = _mm_add_epi32(st0, abef);
        st1 = _mm_add_epi32(st1, cdgh);
    }

    tmp = _mm_shuffle_epi32(st0, 0x1B);    /* FEBA */
    st1 = _mm_shuffle_epi32(st1, 0xB1);    /* DCHG */
    st0 = _mm_blend_epi16(tmp, st1, 0xF0); /* DCBA */
    st1 = _mm_alignr_epi8(st1, tmp, 8);    /* ABEF */
    _mm_storeu_si128((__m128i *)&H[0], st0);
    _mm_storeu_si128((__m128i *)&H[4], st1);
}

int sl__sha256_accel(int on)
{
    int was = use_shani;
    if (on >= 0)
        use_shani = on;
    return was;
}
#else
int sl__sha256_accel(int on)
{
    (void)on;
    return 0;
}
#endif

static void blocks(uint32_t H[8], const unsigned char *s, size_t n)
{
#ifdef SL_SHA256_X86
    if (use_shani) {
        compress_shani(H, s, n);
        return;
    }
#endif
    for (; n > 0; n--, s += 64)
        compress(H, s);
}

void sl_sha256(const void *p, size_t len, unsigned char out[32])
{
    uint32_t H[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                     0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    const unsigned char *s = p;
    unsigned char tail[128];
    size_t left = len, n;
    uint64_t bits = (uint64_t)len * 8;

    blocks(H, s, left / 64);
    s += left / 64 * 64;
    left %= 64;
    /* the rest, 0x80, zeros, the length in bits (big-endian): one block, or two when the rest is 56 or more
     */
    memcpy(tail, s, left);
    tail[left] = 0x80;
    n = left < 56 ? 64 : 128;
    memset(tail + left + 1, 0, n - left - 1 - 8);
    for (int i = 0; i < 8; i++)
        tail[n - 1 - i] = (unsigned char)(bits >> (8 * i));
    blocks(H, tail, n / 64);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (unsigned char)(H[i] >> 24);
        out[4 * i + 1] = (unsigned char)(H[i] >> 16);
        out[4 * i + 2] = (unsigned char)(H[i] >> 8);
        out[4 * i + 3] = (unsigned char)H[i];
    }
}

void sl_sha256_hex(const void *p, size_t len, char out[64])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char d[32];
    sl_sha256(p, len, d);
    for (int i = 0; i < 32; i++) {
        out[2 * i] = hex[d[i] >> 4];
        out[2 * i + 1] = hex[d[i] & 15];
    }
}

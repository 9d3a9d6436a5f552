/* Literal search for regex-set pre-filters (common/literals.h). Each literal is looked for on its own: a
 * vector compare of its two rarest bytes at 16 (SSE2) or 32 (AVX2) start positions at a time, then the whole
 * literal at the positions both agree. Caseless literals are lower case: a byte is or-ed with 0x20
 * before the compare when the literal's byte is a letter (other bytes may then agree by accident: the full
 * compare settles it). */
#include "common/literals.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define SL_LITERALS_X86 1
#endif

static int is_lower(unsigned char c)
{
    return c >= 'a' && c <= 'z';
}

/* t[0..m) equals lit, ASCII caseless when fold (lit in lower case) */
static int same(const unsigned char *t, const unsigned char *lit, size_t m, int fold)
{
    if (!fold)
        return memcmp(t, lit, m) == 0;
    for (size_t i = 0; i < m; i++) {
        unsigned char c = t[i];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c + 32);
        if (c != lit[i])
            return 0;
    }
    return 1;
}

/* start positions [i, last] looked at one by one */
static int scalar_from(const unsigned char *t, size_t i, size_t last, const unsigned char *lit, size_t m,
                       int fold)
{
    unsigned char f = lit[0], fo = (fold && is_lower(f)) ? 0x20 : 0;
    for (; i <= last; i++)
        if ((unsigned char)(t[i] | fo) == f && same(t + i, lit, m, fold))
            return 1;
    return 0;
}

/* How common a byte is in prose (rough English letter frequencies; spaces most of all): the two bytes of a
 * literal compared first are its rarest, so fewer positions need the full compare. */
static inline unsigned weight(unsigned char c, int fold)
{
    static const unsigned char letters[26] = {130, 25,  45, 70, 200, 35,  32,  100, 120, 4,  12, 65, 40,
                                              115, 125, 30, 3,  100, 110, 150, 45,  15,  35, 4,  30, 2};
    if (c >= 'a' && c <= 'z')
        return letters[c - 'a'];
    if (c >= 'A' && c <= 'Z')
        return fold ? letters[c - 'A'] : letters[c - 'A'] / 8 + 1;
    if (c == ' ')
        return 255;
    if (c == ',' || c == '.' || c == '\n')
        return 20;
    if (c >= '0' && c <= '9')
        return 10;
    return 2;
}

/* The offsets of the two rarest bytes of lit (the same one twice for a one-byte literal), a < b */
static void rarest(const unsigned char *lit, size_t m, int fold, size_t *a, size_t *b)
{
    size_t x = 0, y = 0;
    unsigned wx = weight(lit[0], fold), wy = ~0u;
    for (size_t i = 1; i < m; i++) {
        unsigned w = weight(lit[i], fold);
        if (w < wx)
            y = x, wy = wx, x = i, wx = w;
        else if (w < wy)
            y = i, wy = w;
    }
    if (m == 1)
        y = 0;
    *a = x < y ? x : y;
    *b = x < y ? y : x;
}

#ifdef SL_LITERALS_X86
static int use_avx2;

__attribute__((constructor)) static void detect(void)
{
    __builtin_cpu_init();
    use_avx2 = __builtin_cpu_supports("avx2");
}

__attribute__((target("avx2"))) static int find_avx2(const unsigned char *t, size_t len,
                                                     const unsigned char *lit, size_t m, int fold, size_t pa,
                                                     size_t pb, size_t *at)
{
    size_t last = len - m, i = 0;
    const __m256i va = _mm256_set1_epi8((char)lit[pa]), vb = _mm256_set1_epi8((char)lit[pb]);
    const __m256i oa = _mm256_set1_epi8((fold && is_lower(lit[pa])) ? 0x20 : 0);
    const __m256i ob = _mm256_set1_epi8((fold && is_lower(lit[pb])) ? 0x20 : 0);
#define HIT32(off)                                                                                           \
    ((uint32_t)_mm256_movemask_epi8(_mm256_and_si256(                                                        \
        _mm256_cmpeq_epi8(_mm256_or_si256(_mm256_loadu_si256((const __m256i *)(t + (off) + pa)), oa), va),   \
        _mm256_cmpeq_epi8(_mm256_or_si256(_mm256_loadu_si256((const __m256i *)(t + (off) + pb)), ob), vb))))
    while (i + 63 <= last) { /* two blocks a round: one branch for 64 positions */
        uint64_t mask = 0;
        for (; i + 63 <= last; i += 64) /* no call in here: the constants stay in registers */
            if ((mask = (uint64_t)HIT32(i) | (uint64_t)HIT32(i + 32) << 32) != 0)
                break;
        if (!mask)
            break;
        while (mask) {
            if (same(t + i + (unsigned)__builtin_ctzll(mask), lit, m, fold))
                return 1;
            mask &= mask - 1;
        }
        i += 64;
    }
    for (; i + 31 <= last; i += 32) {
        uint32_t mask = HIT32(i);
        while (mask) {
            if (same(t + i + (unsigned)__builtin_ctz(mask), lit, m, fold))
                return 1;
            mask &= mask - 1;
        }
    }
#undef HIT32
    *at = i;
    return 0;
}

static int find_sse2(const unsigned char *t, size_t len, const unsigned char *lit, size_t m, int fold,
                     size_t pa, size_t pb, size_t *at)
{
    size_t last = len - m, i = 0;
    const __m128i va = _mm_set1_epi8((char)lit[pa]), vb = _mm_set1_epi8((char)lit[pb]);
    const __m128i oa = _mm_set1_epi8((fold && is_lower(lit[pa])) ? 0x20 : 0);
    const __m128i ob = _mm_set1_epi8((fold && is_lower(lit[pb])) ? 0x20 : 0);
    for (; i + 15 <= last; i += 16) {
        __m128i a = _mm_or_si128(_mm_loadu_si128((const __m128i *)(t + i + pa)), oa);
        __m128i b = _mm_or_si128(_mm_loadu_si128((const __m128i *)(t + i + pb)), ob);
        unsigned mask =
            (unsigned)_mm_movemask_epi8(_mm_and_si128(_mm_cmpeq_epi8(a, va), _mm_cmpeq_epi8(b, vb)));
        while (mask) {
            if (same(t + i + (unsigned)__builtin_ctz(mask), lit, m, fold))
                return 1;
            mask &= mask - 1;
        }
    }
    *at = i;
    return 0;
}
#endif

static int find(const unsigned char *t, size_t len, const unsigned char *lit, size_t m, int fold)
{
    size_t at = 0;
    if (m > len)
        return 0;
#ifdef SL_LITERALS_X86
    size_t pa, pb;
    rarest(lit, m, fold, &pa, &pb);
    if (use_avx2 ? find_avx2(t, len, lit, m, fold, pa, pb, &at)
                 : find_sse2(t, len, lit, m, fold, pa, pb, &at))
        return 1;
#endif
    return scalar_from(t, at, len - m, lit, m, fold);
}

int sl_literals_find(const char *text, size_t len, const char *const *lits, const size_t *lens,
                     const unsigned char *fold, int n, unsigned char *found)
{
    int hits = 0;
    if ((!text && len) || n < 0 || (n && (!lits || !lens || !fold || !found)))
        return -EINVAL;
    for (int i = 0; i < n; i++) {
        if (!lits[i] || lens[i] == 0)
            return -EINVAL;
        found[i] = (unsigned char)find((const unsigned char *)text, len, (const unsigned char *)lits[i],
                                       lens[i], fold[i] != 0);
        hits += found[i];
    }
    return hits;
}

/* Literal search for regex-set pre-filters (common/literals.h). Each literal is looked for on its own: a
 * vector compare of its first and last bytes at 16 (SSE2) or 32 (AVX2) start positions at a time, then the
 * whole literal at the positions both agree. Caseless literals are lower case: a byte is or-ed with 0x20
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

#ifdef SL_LITERALS_X86
static int use_avx2;

__attribute__((constructor)) static void detect(void)
{
    __builtin_cpu_init();
    use_avx2 = __builtin_cpu_supports("avx2");
}

__attribute__((target("avx2"))) static int find_avx2(const unsigned char *t, size_t len,
                                                     const unsigned char *lit, size_t m, int fold)
{
    size_t last = len - m, i = 0;
    const __m256i vf = _mm256_set1_epi8((char)lit[0]), vl = _mm256_set1_epi8((char)lit[m - 1]);
    const __m256i of = _mm256_set1_epi8((fold && is_lower(lit[0])) ? 0x20 : 0);
    const __m256i ol = _mm256_set1_epi8((fold && is_lower(lit[m - 1])) ? 0x20 : 0);
    for (; i + 31 <= last; i += 32) {
        __m256i a = _mm256_or_si256(_mm256_loadu_si256((const __m256i *)(t + i)), of);
        __m256i b = _mm256_or_si256(_mm256_loadu_si256((const __m256i *)(t + i + m - 1)), ol);
        uint32_t mask = (uint32_t)_mm256_movemask_epi8(
            _mm256_and_si256(_mm256_cmpeq_epi8(a, vf), _mm256_cmpeq_epi8(b, vl)));
        while (mask) {
            if (same(t + i + (unsigned)__builtin_ctz(mask), lit, m, fold))
                return 1;
            mask &= mask - 1;
        }
    }
    return scalar_from(t, i, last, lit, m, fold);
}

static int find_sse2(const unsigned char *t, size_t len, const unsigned char *lit, size_t m, int fold)
{
    size_t last = len - m, i = 0;
    const __m128i vf = _mm_set1_epi8((char)lit[0]), vl = _mm_set1_epi8((char)lit[m - 1]);
    const __m128i of = _mm_set1_epi8((fold && is_lower(lit[0])) ? 0x20 : 0);
    const __m128i ol = _mm_set1_epi8((fold && is_lower(lit[m - 1])) ? 0x20 : 0);
    for (; i + 15 <= last; i += 16) {
        __m128i a = _mm_or_si128(_mm_loadu_si128((const __m128i *)(t + i)), of);
        __m128i b = _mm_or_si128(_mm_loadu_si128((const __m128i *)(t + i + m - 1)), ol);
        unsigned mask =
            (unsigned)_mm_movemask_epi8(_mm_and_si128(_mm_cmpeq_epi8(a, vf), _mm_cmpeq_epi8(b, vl)));
        while (mask) {
            if (same(t + i + (unsigned)__builtin_ctz(mask), lit, m, fold))
                return 1;
            mask &= mask - 1;
        }
    }
    return scalar_from(t, i, last, lit, m, fold);
}
#endif

static int find(const unsigned char *t, size_t len, const unsigned char *lit, size_t m, int fold)
{
    if (m > len)
        return 0;
#ifdef SL_LITERALS_X86
    return use_avx2 ? find_avx2(t, len, lit, m, fold) : find_sse2(t, len, lit, m, fold);
#else
    if (!fold)
        return memmem(t, len, lit, m) != NULL;
    return scalar_from(t, 0, len - m, lit, m, fold);
#endif
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

/* Brute-force k nearest neighbours (see vector.h). The scans are plain loops the compiler vectorises: this
 * file is built with reassociation allowed (CMakeLists.txt), so a float sum may be split across SIMD lanes,
 * and on x86-64 each scan is also compiled for Haswell-class CPUs (AVX2, FMA, POPCNT), picked at load time by
 * the dynamic linker (target_clones). One call scans every row once; the row loop stays inside the cloned
 * function so the dispatch costs one indirect call per search, not per row. */
#include "common/vector.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/dot.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SL_VEC_NO_CLONES /* ifunc resolvers run before the sanitizer's runtime is ready */
#endif
#endif
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__SANITIZE_ADDRESS__) && !defined(SL_VEC_NO_CLONES)
#define CLONES __attribute__((target_clones("arch=haswell", "default")))
#else
#define CLONES
#endif

/* Rows a first pass keeps per result by default, and at least. */
#define OVERSAMPLE 8
#define MIN_CANDIDATES 64
#define BINARY_KEEP 64 /* binary first pass: keep at least n / BINARY_KEEP candidates */
/* Below this many bytes of float rows an exact scan is as fast as a quantised one (it stays in cache). */
#define AUTO_EXACT_BYTES (4u << 20)

CLONES float sl_vec_dot(const float *a, const float *b, size_t n)
{
    return sl__dot(a, b, n);
}

float sl_vec_normalize(float *v, size_t n)
{
    double ss = 0;
    for (size_t i = 0; i < n; i++)
        ss += (double)v[i] * v[i];
    double len = sqrt(ss);
    if (!(len > 0) || isinf(len)) { /* zero, NaN or overflow: no direction to keep */
        memset(v, 0, n * sizeof(float));
        return 0;
    }
    for (size_t i = 0; i < n; i++)
        v[i] = (float)(v[i] / len);
    return (float)len;
}

float sl_vec_quantize_i8(const float *v, size_t n, int8_t *q)
{
    float m = 0;
    for (size_t i = 0; i < n; i++) {
        float a = fabsf(v[i]);
        if (a > m)
            m = a;
    }
    if (!(m > 0) || isinf(m)) {
        memset(q, 0, n);
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        float x = v[i] / m * 127.0f;
        long r = lroundf(x);
        q[i] = (int8_t)(r > 127 ? 127 : r < -127 ? -127 : r);
    }
    return m / 127.0f;
}

void sl_vec_binarize(const float *v, size_t n, uint64_t *bits)
{
    memset(bits, 0, sl_vec_words((uint32_t)n) * 8);
    for (size_t i = 0; i < n; i++)
        if (v[i] > 0)
            bits[i / 64] |= 1ull << (i % 64);
}

/* ---------------------------------------------------------------------------------------------------------
 * top-k: a min-heap, the worst kept hit at the root */

void sl_topk_init(sl_topk_t *t, sl_vec_hit_t *room, uint32_t k)
{
    t->h = room;
    t->n = 0;
    t->k = k;
}

static inline int worse(const sl_vec_hit_t *a, const sl_vec_hit_t *b)
{
    return a->score < b->score || (a->score == b->score && a->id > b->id);
}

static void sift_down(sl_vec_hit_t *h, uint32_t n, uint32_t i)
{
    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && worse(&h[l], &h[m]))
            m = l;
        if (r < n && worse(&h[r], &h[m]))
            m = r;
        if (m == i)
            return;
        sl_vec_hit_t tmp = h[i];
        h[i] = h[m];
        h[m] = tmp;
        i = m;
    }
}

void sl_topk_push(sl_topk_t *t, uint32_t id, float score)
{
    if (score != score || t->k == 0)
        return; /* NaN */
    sl_vec_hit_t x = {id, score};
    if (t->n < t->k) {
        uint32_t i = t->n++;
        while (i > 0) {
            uint32_t p = (i - 1) / 2;
            if (!worse(&x, &t->h[p]))
                break;
            t->h[i] = t->h[p];
            i = p;
        }
        t->h[i] = x;
        return;
    }
    if (!worse(&t->h[0], &x))
        return;
    t->h[0] = x;
    sift_down(t->h, t->n, 0);
}

uint32_t sl_topk_sort(sl_topk_t *t)
{
    uint32_t n = t->n;
    /* heap sort: repeatedly move the worst to the end, so the array ends best first */
    for (uint32_t end = n; end > 1; end--) {
        sl_vec_hit_t tmp = t->h[0];
        t->h[0] = t->h[end - 1];
        t->h[end - 1] = tmp;
        sift_down(t->h, end - 1, 0);
    }
    t->n = 0;
    return n;
}

/* ---------------------------------------------------------------------------------------------------------
 * scans */

#define row_ok sl_vec_row_ok

/* Each scan walks rows 0..n-1 of the set, or with pos the n places pos[0..n-1] of an inverted file's list
 * order (the probed lists: ivf->ids[p] is the row at place p, and ivf->i8 holds the int8 rows in that order,
 * so a list is scanned from contiguous memory); `ROW(j)` is the j-th row scanned. */
#define ROW(j) (pos ? (size_t)s->ivf->ids[pos[j]] : (j))

CLONES static void scan_f32(const sl_vecset_t *s, const float *q, const uint32_t *pos, size_t n, sl_topk_t *t)
{
    const uint32_t d = s->dims;
    const int filtered = s->allow || s->expires;
    for (size_t j = 0; j < n; j++) {
        size_t i = ROW(j);
        if (filtered && !row_ok(s, i))
            continue;
        float sc = sl__dot(s->f32 + i * d, q, d);
        if (t->n < t->k || sc > t->h[0].score)
            sl_topk_push(t, (uint32_t)i, sc);
    }
}

/* q is the query's int8 copy widened to int16: int8 x int16 products summed in int32 compile to vpmaddwd (two
 * products and their sum per 32-bit lane), int8 x int8 to a multiply and two widenings. */
CLONES static void scan_i8(const sl_vecset_t *s, const int16_t *q, const uint32_t *pos, size_t n,
                           sl_topk_t *t)
{
    const uint32_t d = s->dims;
    const int filtered = s->allow || s->expires, grouped = pos && s->ivf->i8;
    for (size_t j = 0; j < n; j++) {
        size_t i = ROW(j), at = grouped ? pos[j] : i;
        if (filtered && !row_ok(s, i))
            continue;
        const int8_t *restrict r = (grouped ? s->ivf->i8 : s->i8) + at * d;
        int32_t acc = 0;
        for (uint32_t x = 0; x < d; x++)
            acc += (int16_t)r[x] * q[x];
        float sc = (float)acc * (grouped ? s->ivf->i8_scale : s->i8_scale)[at];
        if (t->n < t->k || sc > t->h[0].score)
            sl_topk_push(t, (uint32_t)i, sc);
    }
}

/* The sign-bit pass keeps no heap: it writes every scanned row's Hamming distance (UINT16_MAX for a row
 * filtered out) into ham (by scan position) and counts them in hist (dims + 1 counts), and the caller picks
 * the c nearest from a histogram of the distances (pick_bits): a heap push per row that improved the c-th
 * best cost more than the popcounts themselves. A distance is at most 64 x words <= SL_VEC_MAX_DIMS (hist has
 * room for that much, even from a file whose unused bits are set). */
CLONES static void scan_bits(const sl_vecset_t *s, const uint64_t *q, const uint32_t *pos, size_t n,
                             uint16_t *ham, uint32_t *hist)
{
    const size_t w = sl_vec_words(s->dims);
    memset(hist, 0, (s->dims + 1) * sizeof(*hist));
    const int filtered = s->allow || s->expires;
    if (w == 4 && !filtered && !pos) { /* 256 dimensions, the common embedding size: unrolled */
        const uint64_t q0 = q[0], q1 = q[1], q2 = q[2], q3 = q[3];
        for (size_t i = 0; i < n; i++) {
            const uint64_t *restrict r = s->bits + i * 4;
            uint32_t h = (uint32_t)(__builtin_popcountll(r[0] ^ q0) + __builtin_popcountll(r[1] ^ q1) +
                                    __builtin_popcountll(r[2] ^ q2) + __builtin_popcountll(r[3] ^ q3));
            ham[i] = (uint16_t)h;
            hist[h]++;
        }
        return;
    }
    for (size_t j = 0; j < n; j++) {
        size_t i = ROW(j);
        if (filtered && !row_ok(s, i)) {
            ham[j] = UINT16_MAX;
            continue;
        }
        const uint64_t *restrict r = s->bits + i * w;
        uint32_t h = 0;
        for (size_t x = 0; x < w; x++)
            h += (uint32_t)__builtin_popcountll(r[x] ^ q[x]);
        ham[j] = (uint16_t)h;
        hist[h]++;
    }
}

/* The exact scores of rows ids (a first pass's candidates) offered to t. */
CLONES static void rescore(const sl_vecset_t *s, const float *q, const uint32_t *ids, uint32_t n,
                           sl_topk_t *t)
{
    for (uint32_t i = 0; i < n; i++) {
        float sc = sl__dot(s->f32 + (size_t)ids[i] * s->dims, q, s->dims);
        if (t->n < t->k || sc > t->h[0].score)
            sl_topk_push(t, ids[i], sc);
    }
}

/* The (at most) c scanned rows of smallest distance into out, ties by scan order (ascending rows within a
 * scan, as the heap of the other passes orders them), from the histogram of the distances; returns how many.
 */
static uint32_t pick_bits(const sl_vecset_t *s, const uint16_t *ham, const uint32_t *pos, size_t n,
                          uint32_t c, uint32_t *hist, uint32_t *out)
{
    uint32_t below = 0, cut = 0; /* rows with a distance under cut: below (< c); those at cut fill up */
    for (; cut <= s->dims; cut++) {
        if (below + hist[cut] >= c)
            break;
        below += hist[cut];
    }
    uint32_t m = 0, at_cut = c - below;
    for (size_t j = 0; j < n && m < c; j++) {
        if (ham[j] < cut)
            out[m++] = (uint32_t)ROW(j);
        else if (ham[j] == cut && at_cut > 0) {
            out[m++] = (uint32_t)ROW(j);
            at_cut--;
        }
    }
    return m;
}

/* The mode SL_VEC_AUTO uses for a scan of n rows of the set. */
static int auto_mode(const sl_vecset_t *s, size_t n)
{
    if ((double)n * s->dims * sizeof(float) <= AUTO_EXACT_BYTES)
        return SL_VEC_EXACT;
    if (s->bits)
        return SL_VEC_BINARY;
    if (s->i8 && s->i8_scale)
        return SL_VEC_INT8;
    return SL_VEC_EXACT;
}

int sl_vec_auto_mode(const sl_vecset_t *s)
{
    return auto_mode(s, s->n);
}

int sl_vec_search(const sl_vecset_t *s, const float *q, uint32_t k, int mode, uint32_t candidates,
                  float min_score, sl_vec_hit_t *out)
{
    if (k == 0 || k > SL_VEC_MAX_K || s->dims == 0 || s->dims > SL_VEC_MAX_DIMS || (s->n && !s->f32))
        return -EINVAL;
    /* an inverted file: only the rows of the lists nearest to q (probing every list is a brute-force scan) */
    const uint32_t *pos = NULL;
    size_t n = s->n;
    if (s->ivf && s->ivf->nlist > 0 && (s->probes ? s->probes : s->ivf->nprobe) < s->ivf->nlist) {
        int m = sl__ivf_probe(s, q, k, &pos);
        if (m < 0)
            return m;
        n = (size_t)m;
    }
    /* by the rows this search scans: probed lists small enough stay in cache (exact), more are read from the
     * lists' own contiguous int8 copy */
    if (mode == SL_VEC_AUTO)
        mode = pos && s->i8 && s->i8_scale && (double)n * s->dims * sizeof(float) > AUTO_EXACT_BYTES
                   ? SL_VEC_INT8
                   : auto_mode(s, n);
    if ((mode == SL_VEC_INT8 && !(s->i8 && s->i8_scale)) || (mode == SL_VEC_BINARY && !s->bits) ||
        (mode != SL_VEC_EXACT && mode != SL_VEC_INT8 && mode != SL_VEC_BINARY))
        return -EINVAL;
    sl_topk_t t;
    if (mode == SL_VEC_EXACT) {
        sl_topk_init(&t, out, k);
        scan_f32(s, q, pos, n, &t);
    } else {
        uint32_t c = candidates ? candidates : k * OVERSAMPLE;
        /* one sign bit per dimension ranks coarsely: on a large set its default keeps 1/64 of the rows
         * (rescoring them costs little next to the scan), which keeps recall near the exact answer's */
        if (!candidates && mode == SL_VEC_BINARY && n / BINARY_KEEP > c)
            c = (uint32_t)(n / BINARY_KEEP > SL_VEC_MAX_CANDIDATES ? SL_VEC_MAX_CANDIDATES : n / BINARY_KEEP);
        if (c < MIN_CANDIDATES)
            c = MIN_CANDIDATES;
        if (c < k)
            c = k;
        if (c > SL_VEC_MAX_CANDIDATES)
            c = SL_VEC_MAX_CANDIDATES;
        uint64_t qq[SL_VEC_MAX_DIMS / 8]; /* the query's int8 or sign-bit copy */
        if (mode == SL_VEC_INT8) {
            sl_vec_hit_t *cand = malloc(c * (sizeof(*cand) + sizeof(uint32_t)) + s->dims * sizeof(int16_t));
            if (cand == NULL)
                return -ENOMEM;
            uint32_t *cids = (uint32_t *)(cand + c); /* one allocation: candidates, their rows, the query */
            int16_t *q16 = (int16_t *)(cids + c);
            sl_topk_init(&t, cand, c);
            sl_vec_quantize_i8(q, s->dims, (int8_t *)qq);
            for (uint32_t x = 0; x < s->dims; x++)
                q16[x] = ((const int8_t *)qq)[x];
            scan_i8(s, q16, pos, n, &t);
            uint32_t nc = t.n;
            for (uint32_t i = 0; i < nc; i++)
                cids[i] = cand[i].id;
            sl_topk_init(&t, out, k);
            rescore(s, q, cids, nc, &t);
            free(cand);
        } else {
            /* per thread, grown to the largest scan: distances, histogram, candidate rows */
            static __thread uint16_t *ham;
            static __thread uint32_t *hist, *cids;
            static __thread size_t ham_n;
            if (hist == NULL && (hist = malloc((SL_VEC_MAX_DIMS + 1) * sizeof(*hist))) == NULL)
                return -ENOMEM;
            if (cids == NULL && (cids = malloc(SL_VEC_MAX_CANDIDATES * sizeof(*cids))) == NULL)
                return -ENOMEM;
            if (n > ham_n) {
                uint16_t *h = malloc(n * sizeof(*h));
                if (h == NULL)
                    return -ENOMEM;
                free(ham);
                ham = h;
                ham_n = n;
            }
            sl_vec_binarize(q, s->dims, qq);
            scan_bits(s, qq, pos, n, ham, hist);
            uint32_t nc = pick_bits(s, ham, pos, n, c, hist, cids);
            sl_topk_init(&t, out, k);
            rescore(s, q, cids, nc, &t);
        }
    }
    uint32_t m = sl_topk_sort(&t);
    while (m > 0 && !(out[m - 1].score >= min_score))
        m--;
    return (int)m;
}

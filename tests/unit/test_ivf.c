/* core/common/ivf.c (the inverted file: k-means partition, probed search through sl_vec_search) and its place
 * in the RAG index (core/rag/: written with the vectors, checked at load, every damage refused; version 1
 * files without it still load and search by brute force). */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/hash.h"
#include "common/vector.h"
#include "rag/index.h"
#include "rag/writer.h"
#include "test.h"

#define D 16
#define N 3000
#define CLUSTERS 30

static uint64_t rng = 0x2545f4914f6cdd1dull;

static float frand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0) * 2.0f - 1.0f;
}

/* n unit rows in CLUSTERS clusters (a centre plus noise), the cluster of row i being i % CLUSTERS. */
static float *clustered(size_t n)
{
    static float centre[CLUSTERS][D];
    for (int c = 0; c < CLUSTERS; c++)
        for (int j = 0; j < D; j++)
            centre[c][j] = frand();
    float *rows = malloc(n * D * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        for (int j = 0; j < D; j++)
            rows[i * D + j] = centre[i % CLUSTERS][j] + 0.25f * frand();
        sl_vec_normalize(rows + i * D, D);
    }
    return rows;
}

static size_t overlap(const sl_vec_hit_t *a, int na, const sl_vec_hit_t *b, int nb)
{
    size_t m = 0;
    for (int i = 0; i < na; i++)
        for (int j = 0; j < nb; j++)
            m += a[i].id == b[j].id;
    return m;
}

static void test_defaults(void)
{
    CHECK_INT(sl_ivf_default_lists(SL_IVF_MIN_ROWS - 1), 0);
    CHECK_INT(sl_ivf_default_lists(10000), 100);
    CHECK_INT(sl_ivf_default_lists(100000), 316);
    CHECK_INT(sl_ivf_default_probes(100), 8);
    CHECK_INT(sl_ivf_default_probes(316), 20);
    CHECK_INT(sl_ivf_default_probes(4), 4);
}

static void test_train_and_search(void)
{
    float *rows = clustered(N);
    const uint32_t nl = 40;
    float *cent = malloc(nl * D * sizeof(float)), *cent2 = malloc(nl * D * sizeof(float));
    uint32_t offs[41], offs2[41], *ids = malloc(N * 4), *ids2 = malloc(N * 4);
    CHECK_INT(sl_ivf_train(rows, N, D, nl, 7, cent, offs, ids), 0);
    CHECK_INT(sl_ivf_train(rows, N, D, nl, 7, cent2, offs2, ids2), 0); /* seeded: the same lists again */
    CHECK(memcmp(cent, cent2, nl * D * sizeof(float)) == 0 && memcmp(ids, ids2, N * 4) == 0);
    CHECK_INT(sl_ivf_train(rows, N, D, 0, 7, cent, offs, ids), -EINVAL);
    CHECK_INT(sl_ivf_train(rows, 10, D, 11, 7, cent, offs, ids), -EINVAL);
    /* a partition: every row once, ascending within its list, nearest to its own list's centroid */
    CHECK(offs[0] == 0 && offs[nl] == N);
    uint8_t seen[N] = {0};
    for (uint32_t l = 0; l < nl; l++)
        for (uint32_t j = offs[l]; j < offs[l + 1]; j++) {
            uint32_t r = ids[j];
            CHECK(r < N && !seen[r]);
            seen[r] = 1;
            CHECK(j == offs[l] || ids[j - 1] < r);
            float own = sl_vec_dot(rows + (size_t)r * D, cent + (size_t)l * D, D);
            for (uint32_t o = 0; o < nl; o++)
                CHECK(sl_vec_dot(rows + (size_t)r * D, cent + (size_t)o * D, D) <= own + 1e-6f);
        }
    sl_ivf_t ivf = {.centroids = cent, .offs = offs, .ids = ids, .nlist = nl, .nprobe = 4};
    sl_vecset_t brute = {.f32 = rows, .n = N, .dims = D}, s = brute;
    s.ivf = &ivf;
    sl_vec_hit_t want[10], got[10];
    size_t found = 0, total = 0;
    float q[D];
    for (int t = 0; t < 50; t++) {
        const float *base = rows + (size_t)(t * 61 % N) * D;
        for (int j = 0; j < D; j++)
            q[j] = base[j] + 0.05f * frand();
        sl_vec_normalize(q, D);
        int nw = sl_vec_search(&brute, q, 10, SL_VEC_EXACT, 0, -1, want);
        int ng = sl_vec_search(&s, q, 10, SL_VEC_EXACT, 0, -1, got);
        CHECK(nw == 10 && ng == 10);
        found += overlap(want, nw, got, ng);
        total += 10;
        for (int i = 0; i < ng; i++) /* exact scores, best first */
            CHECK(fabsf(got[i].score - sl_vec_dot(rows + (size_t)got[i].id * D, q, D)) < 1e-5f &&
                  (i == 0 || got[i - 1].score >= got[i].score));
        s.probes = nl; /* every list: the brute-force answer */
        ng = sl_vec_search(&s, q, 10, SL_VEC_EXACT, 0, -1, got);
        CHECK(ng == nw && memcmp(got, want, sizeof(want)) == 0);
        s.probes = 0;
    }
    CHECK((double)found / (double)total >= 0.95);
    /* the filter still applies: only allowed rows come out, from the probed lists */
    uint8_t allow[N / 8 + 1];
    for (size_t i = 0; i < sizeof(allow); i++)
        allow[i] = 0x55; /* even rows */
    s.allow = allow;
    for (int mode = SL_VEC_EXACT; mode <= SL_VEC_EXACT; mode++) {
        int ng = sl_vec_search(&s, rows, 10, mode, 0, -1, got);
        CHECK(ng == 10);
        for (int i = 0; i < ng; i++)
            CHECK(got[i].id % 2 == 0);
    }
    /* one probe: only rows of the query's nearest list */
    s.allow = NULL;
    s.probes = 1;
    int ng = sl_vec_search(&s, rows, 10, SL_VEC_EXACT, 0, -1, got);
    CHECK(ng > 0);
    uint32_t list = 0;
    for (uint32_t l = 0; l < nl; l++)
        for (uint32_t j = offs[l]; j < offs[l + 1]; j++)
            if (ids[j] == 0)
                list = l;
    for (int i = 0; i < ng; i++) {
        int in = 0;
        for (uint32_t j = offs[list]; j < offs[list + 1]; j++)
            in |= ids[j] == got[i].id;
        CHECK(in);
    }
    free(rows), free(cent), free(cent2), free(ids), free(ids2);
}

/* The quantised first passes inside the probed lists. */
static void test_quantised_probes(void)
{
    float *rows = clustered(N);
    int8_t *i8 = malloc(N * D);
    float *sc = malloc(N * sizeof(float)), *cent = malloc(40 * D * sizeof(float));
    uint64_t *bits = malloc(N * sizeof(uint64_t));
    uint32_t offs[41], *ids = malloc(N * 4);
    for (size_t i = 0; i < N; i++) {
        sc[i] = sl_vec_quantize_i8(rows + i * D, D, i8 + i * D);
        sl_vec_binarize(rows + i * D, D, bits + i);
    }
    CHECK_INT(sl_ivf_train(rows, N, D, 40, 1, cent, offs, ids), 0);
    sl_ivf_t ivf = {.centroids = cent, .offs = offs, .ids = ids, .nlist = 40, .nprobe = 6};
    sl_vecset_t s = {.f32 = rows, .i8 = i8, .i8_scale = sc, .bits = bits, .n = N, .dims = D, .ivf = &ivf};
    sl_vecset_t brute = s;
    brute.ivf = NULL;
    sl_vec_hit_t want[5], got[5];
    for (int mode = SL_VEC_AUTO; mode <= SL_VEC_BINARY; mode++) {
        size_t found = 0;
        for (int t = 0; t < 30; t++) {
            const float *q = rows + (size_t)(t * 97 % N) * D;
            int nw = sl_vec_search(&brute, q, 5, SL_VEC_EXACT, 0, -1, want);
            int ng = sl_vec_search(&s, q, 5, mode, 0, -1, got);
            CHECK(ng == 5);
            found += overlap(want, nw, got, ng);
            CHECK(got[0].id == (uint32_t)(t * 97 % N)); /* the row itself comes first */
        }
        CHECK(found >= 30 * 5 * 8 / 10);
    }
    free(rows), free(i8), free(sc), free(cent), free(bits), free(ids);
}

/* ---- the RAG index ---- */

static uint8_t *build(const float *rows, size_t n, int32_t lists, uint32_t probes, size_t *len)
{
    sl_rag_writer_t *w = sl_rag_writer_new(D, SL_RAG_HAS_I8 | SL_RAG_HAS_BITS);
    CHECK_INT(sl_rag_writer_source(w, "a.md", 4, "", 0, 1, 1, 1), 0);
    char text[64];
    for (size_t i = 0; i < n; i++) {
        int tl = snprintf(text, sizeof(text), "chunk number%zu about topic%zu", i, i % CLUSTERS);
        CHECK(sl_rag_writer_chunk(w, "", 0, text, (size_t)tl, rows + i * D) == (int)i);
    }
    CHECK_INT(sl_rag_writer_ivf(w, lists, probes), 0);
    CHECK_INT(sl_rag_writer_ivf(w, SL_IVF_MAX_LISTS + 1, 0), -EINVAL);
    uint8_t *b = NULL;
    CHECK_INT(sl_rag_writer_bytes(w, &b, len), 0);
    sl_rag_writer_free(w);
    return b;
}

static sl_rag_index_t *load(const uint8_t *b, size_t n, char *err)
{
    sl_rag_index_t *x = NULL;
    return sl_rag_load_mem(b, n, 0, &x, err, 256) == 0 ? x : NULL;
}

static void rehash(uint8_t *b, size_t n, size_t hsize)
{
    sl_rag_hdr_t *h = (sl_rag_hdr_t *)b;
    h->body_hash = sl_xxh64(b + hsize, n - hsize, 0);
    h->hdr_hash = 0;
    h->hdr_hash = sl_xxh64(h, hsize, 0);
}

static int refused(const uint8_t *b, size_t n, const char *want)
{
    char err[256] = "";
    sl_rag_index_t *x = load(b, n, err);
    if (x) {
        sl_rag_release(x);
        fprintf(stderr, "accepted a damaged index (want: %s)\n", want);
        return 0;
    }
    if (strstr(err, want) == NULL) {
        fprintf(stderr, "refused with \"%s\", want \"%s\"\n", err, want);
        return 0;
    }
    return 1;
}

static void test_index(void)
{
    float *rows = clustered(N);
    size_t n;
    char err[256] = "";
    uint8_t *b = build(rows, N, 30, 5, &n);
    sl_rag_index_t *x = load(b, n, err);
    CHECK(x != NULL);
    if (x == NULL) {
        fprintf(stderr, "load: %s\n", err);
        return;
    }
    CHECK_INT(sl_rag_ivf_lists(x), 30);
    CHECK_INT(sl_rag_ivf_probes(x), 5);
    CHECK_INT(sl_rag_version(x), SL_RAG_VERSION);
    CHECK(sl_rag_flags(x) & SL_RAG_HAS_IVF);
    /* dense through the probed lists: the query's own chunk first; probes >= lists is the brute-force answer;
     * a filter keeps out what it does not allow */
    uint8_t allow[N / 8 + 1];
    memset(allow, 0, sizeof(allow));
    for (uint32_t i = 0; i < N; i += 3)
        allow[i / 8] |= (uint8_t)(1u << (i % 8));
    for (int t = 0; t < 20; t++) {
        uint32_t row = (uint32_t)(t * 131 % N);
        sl_rag_query_t q = {.vec = rows + (size_t)row * D,
                            .dims = D,
                            .k = 5,
                            .mode = SL_RAG_DENSE,
                            .quant = SL_VEC_AUTO,
                            .min_dense = -1};
        sl_rag_hit_t hits[5], all[5];
        CHECK_INT(sl_rag_search(x, &q, hits), 5);
        CHECK_INT(hits[0].chunk, row);
        q.probes = 30;
        q.quant = SL_VEC_EXACT;
        CHECK_INT(sl_rag_search(x, &q, all), 5);
        q.probes = 0;
        q.quant = SL_VEC_INT8; /* the first pass over the lists' own int8 copy, rescored exactly */
        CHECK_INT(sl_rag_search(x, &q, hits), 5);
        CHECK_INT(hits[0].chunk, row);
        for (int i = 0; i < 5; i++)
            CHECK(fabsf(hits[i].dense -
                        sl_vec_dot(rows + (size_t)hits[i].chunk * D, rows + (size_t)row * D, D)) < 1e-5f);
        q.quant = SL_VEC_AUTO;
        q.allow = allow;
        int m = sl_rag_search(x, &q, hits);
        CHECK(m > 0);
        for (int i = 0; i < m; i++)
            CHECK(hits[i].chunk % 3 == 0);
        q.allow = NULL;
        q.mode = SL_RAG_HYBRID;
        char text[32];
        q.text = text;
        q.text_len = (size_t)snprintf(text, sizeof(text), "number%u", row);
        CHECK_INT(sl_rag_search(x, &q, hits), 5);
        CHECK_INT(hits[0].chunk, row); /* first in both lists */
    }
    sl_rag_release(x);

    /* damage to the inverted file, with the checksums made right again: each refused with its reason */
    uint8_t *c = malloc(n);
    sl_rag_hdr_t *h = (sl_rag_hdr_t *)c;
#define DAMAGE(stmt, want)                                                                                   \
    do {                                                                                                     \
        memcpy(c, b, n);                                                                                     \
        stmt;                                                                                                \
        rehash(c, n, sizeof(sl_rag_hdr_t));                                                                  \
        CHECK(refused(c, n, want));                                                                          \
    } while (0)
#define OFFS ((uint32_t *)(c + h->sec[SL_RAG_SEC_IVF_OFFS].off))
#define IDS ((uint32_t *)(c + h->sec[SL_RAG_SEC_IVF_IDS].off))
    DAMAGE(OFFS[30] = N - 1, "IVF lists cover");
    DAMAGE(OFFS[0] = 1, "IVF lists cover");
    DAMAGE((OFFS[3] = OFFS[5] + 1, OFFS[4] = OFFS[5] - 1), "IVF list 3 ends before");
    DAMAGE(IDS[7] = IDS[8], "twice");
    DAMAGE(IDS[N - 1] = N, "past the chunks");
    DAMAGE(((float *)(c + h->sec[SL_RAG_SEC_IVF_CENT].off))[D * 2 + 3] = NAN, "centroid 2 is not finite");
    DAMAGE(h->nprobe = 0, "IVF lists");
    DAMAGE(h->nprobe = 31, "IVF lists");
    DAMAGE(h->nlist = N + 1, "IVF lists");
    DAMAGE(h->nlist = 31, "section is");
    DAMAGE(h->flags &= ~(uint32_t)SL_RAG_HAS_IVF, "IVF lists");
    DAMAGE(h->sec[SL_RAG_SEC_IVF_IDS].size -= 4, "IVF rows section is");
    DAMAGE(h->sec[SL_RAG_SEC_IVF_I8].size = 0, "IVF int8 vectors section is");
    DAMAGE(h->sec[SL_RAG_SEC_IVF_I8S].off = n, "outside the");
    DAMAGE(h->sec[SL_RAG_SEC_IVF_OFFS].off = n - 8, "outside the");
    DAMAGE(h->version = 1, "header size");
    free(c);
    free(b);

    /* lists 0: no inverted file; the default leaves a set this small without one */
    b = build(rows, 100, 0, 0, &n);
    x = load(b, n, err);
    CHECK(x != NULL && sl_rag_ivf_lists(x) == 0 && !(sl_rag_flags(x) & SL_RAG_HAS_IVF));
    sl_rag_release(x);
    free(b);
    b = build(rows, 100, -1, 0, &n);
    x = load(b, n, err);
    CHECK(x != NULL && sl_rag_ivf_lists(x) == 0);
    sl_rag_release(x);
    free(b);
    free(rows);
}

/* A version 1 file (the layout before the inverted file: a shorter header) loads and searches by brute force;
 * a version 1 header that claims an inverted file is refused. */
static void test_version1(void)
{
    float *rows = clustered(200);
    size_t n;
    uint8_t *b = build(rows, 200, 0, 0, &n);
    sl_rag_hdr_t *h = (sl_rag_hdr_t *)b;
    h->version = 1;
    h->hdr_size = (uint32_t)SL_RAG_HDR_V1_SIZE;
    memset(b + SL_RAG_HDR_V1_SIZE, 0, sizeof(sl_rag_hdr_t) - SL_RAG_HDR_V1_SIZE);
    rehash(b, n, SL_RAG_HDR_V1_SIZE);
    char err[256] = "";
    sl_rag_index_t *x = load(b, n, err);
    CHECK(x != NULL);
    if (x) {
        CHECK_INT(sl_rag_version(x), 1);
        CHECK_INT(sl_rag_ivf_lists(x), 0);
        sl_rag_query_t q = {.vec = rows + 17 * D, .dims = D, .k = 3, .mode = SL_RAG_DENSE, .min_dense = -1};
        sl_rag_hit_t hits[3];
        CHECK_INT(sl_rag_search(x, &q, hits), 3);
        CHECK_INT(hits[0].chunk, 17);
        sl_rag_release(x);
    } else {
        fprintf(stderr, "version 1: %s\n", err);
    }
    uint8_t *c = malloc(n);
    memcpy(c, b, n);
    ((sl_rag_hdr_t *)c)->flags |= SL_RAG_HAS_IVF;
    rehash(c, n, SL_RAG_HDR_V1_SIZE);
    CHECK(refused(c, n, "unknown flags"));
    memcpy(c, b, n);
    ((sl_rag_hdr_t *)c)->hdr_size = sizeof(sl_rag_hdr_t);
    rehash(c, n, SL_RAG_HDR_V1_SIZE);
    CHECK(refused(c, n, "header size"));
    CHECK(refused(b, SL_RAG_HDR_V1_SIZE - 1, "truncated"));
    free(c);
    free(b);
    free(rows);
}

/* The default probes measured at build: where the lists hold a row's nearest rows (clusters) the default
 * stays; on random rows, whose nearest rows are spread over many lists, more are probed, up to a quarter. */
static void test_tune_probes(void)
{
    const uint32_t nl = 64, def = sl_ivf_default_probes(nl);
    float *cent = malloc(nl * D * sizeof(float));
    uint32_t offs[65], *ids = malloc(N * 4);
    float *rows = clustered(N);
    CHECK_INT(sl_ivf_train(rows, N, D, nl, 7, cent, offs, ids), 0);
    sl_ivf_t ivf = {.centroids = cent, .offs = offs, .ids = ids, .nlist = nl};
    uint32_t p = sl_ivf_tune_probes(rows, N, D, &ivf, 3);
    CHECK_INT(p, def);
    CHECK_INT(sl_ivf_tune_probes(rows, N, D, &ivf, 3), p); /* seeded */
    for (size_t i = 0; i < (size_t)N * D; i++)
        rows[i] = frand();
    for (size_t i = 0; i < N; i++)
        sl_vec_normalize(rows + i * D, D);
    CHECK_INT(sl_ivf_train(rows, N, D, nl, 7, cent, offs, ids), 0);
    p = sl_ivf_tune_probes(rows, N, D, &ivf, 3);
    CHECK(p > def && p <= nl / 4);
    ivf.nlist = 16; /* a quarter of 16 lists is under the default: nothing to raise */
    CHECK_INT(sl_ivf_tune_probes(rows, N, D, &ivf, 3), sl_ivf_default_probes(16));
    free(rows);
    free(cent);
    free(ids);
}

int main(void)
{
    test_defaults();
    test_train_and_search();
    test_quantised_probes();
    test_index();
    test_version1();
    test_tune_probes(); /* last: its random rows move the generator the others' data comes from */
    return sl_test_done();
}

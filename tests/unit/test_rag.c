/* core/rag/: the tokenizer, the index writer and loader (round trip, every kind of damage refused), BM25 /
 * dense / hybrid search, filters, and the registry's atomic replacement of an index. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/hash.h"
#include "rag/files.h"
#include "rag/index.h"
#include "rag/registry.h"
#include "rag/tokenize.h"
#include "rag/writer.h"
#include "test.h"

#define D 8

static const char *terms(const char *text)
{
    static char out[512];
    size_t n = sl_rag_terms(text, strlen(text), out, sizeof(out) - 1);
    out[n] = '\0';
    return out;
}

static void test_tokenize(void)
{
    CHECK_STR(terms("The Routes, routing and ROUTED!"), "rout\nrout\nrout");
    CHECK_STR(terms("caches caching cached cache"), "cach\ncach\ncach\ncach");
    CHECK_STR(terms("max_body_size x-api-key"), "max\nbody\nsiz\napi\nkey");
    CHECK_STR(terms("policies running calls"), "policy\nrun\ncall");
    CHECK_STR(terms("a I of to"), "");
    CHECK_STR(terms("größe 日本語"), "größe\n日本語"); /* UTF-8 words stay whole, not stemmed */
    char longw[100];
    memset(longw, 'x', sizeof(longw) - 1);
    longw[99] = '\0';
    CHECK_STR(terms(longw), "");
}

/* A small index: three sources, vectors along the axes so dense results are known. */
static sl_rag_writer_t *sample(uint32_t flags)
{
    sl_rag_writer_t *w = sl_rag_writer_new(D, flags);
    float v[D];
    const char meta_a[] = "lang\0en\0team\0docs";
    CHECK_INT(sl_rag_writer_source(w, "guide/admin.md", 14, meta_a, sizeof(meta_a), 11, 100, 2000), 0);
    memset(v, 0, sizeof(v));
    v[0] = 1;
    CHECK_INT(
        sl_rag_writer_chunk(w, "Admin API > Keys", 16, "Every request needs the X-API-KEY header.", 41, v),
        0);
    v[0] = 0, v[1] = 2;
    CHECK_INT(
        sl_rag_writer_chunk(w, "Admin API > State file", 22, "Changes persist in the state file.", 34, v), 1);
    const char meta_b[] = "lang\0de";
    CHECK_INT(sl_rag_writer_source(w, "guide/tls.md", 12, meta_b, sizeof(meta_b), 22, 100, 500), 1);
    v[1] = 0, v[2] = 1;
    CHECK_INT(sl_rag_writer_chunk(w, "TLS", 3,
                                  "Certificates are chosen by SNI. Certificates reload on SIGHUP.", 62, v),
              2);
    CHECK_INT(sl_rag_writer_source(w, "notes.txt", 9, "", 0, 33, 100, 10), 2);
    v[2] = 0, v[3] = 1, v[0] = 0.2f;
    CHECK_INT(sl_rag_writer_chunk(w, "", 0, "Streaming answers arrive as server-sent events.", 47, v), 3);
    CHECK_INT(sl_rag_writer_info(w, "{\"model\":\"m\"}", 13), 0);
    return w;
}

static sl_rag_index_t *load_bytes(uint8_t *b, size_t n)
{
    sl_rag_index_t *idx = NULL;
    char err[256];
    int rc = sl_rag_load_mem(b, n, 0, &idx, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "load: %s\n", err);
    return idx;
}

static void test_roundtrip_and_search(void)
{
    sl_rag_writer_t *w = sample(SL_RAG_HAS_I8 | SL_RAG_HAS_BITS);
    uint8_t *b;
    size_t n;
    CHECK_INT(sl_rag_writer_bytes(w, &b, &n), 0);
    sl_rag_writer_free(w);
    sl_rag_index_t *idx = load_bytes(b, n);
    CHECK(idx != NULL);
    if (!idx)
        return;
    CHECK_INT(sl_rag_nchunks(idx), 4);
    CHECK_INT(sl_rag_nsources(idx), 3);
    CHECK_INT(sl_rag_dims(idx), D);
    uint32_t il;
    const char *info = sl_rag_info(idx, &il);
    CHECK(il == 13 && memcmp(info, "{\"model\":\"m\"}", 13) == 0);
    sl_rag_chunk_view_t cv;
    CHECK_INT(sl_rag_chunk_get(idx, 1, &cv), 0);
    CHECK(cv.source_len == 14 && memcmp(cv.source, "guide/admin.md", 14) == 0);
    CHECK(cv.heading_len == 22 && cv.ordinal == 1);
    CHECK_INT(sl_rag_chunk_get(idx, 4, &cv), -ERANGE);
    CHECK(fabsf(sl_rag_chunk_vector(idx, 1)[1] - 1.0f) < 1e-6f); /* normalised on the way in */

    sl_rag_hit_t hits[4];
    sl_rag_query_t q = {.text = "how are certificates reloaded", .text_len = 29, .k = 3, .mode = SL_RAG_BM25};
    int m = sl_rag_search(idx, &q, hits);
    CHECK_INT(m, 1);
    CHECK_INT(hits[0].chunk, 2);
    CHECK(hits[0].bm25 > 0 && hits[0].bm25_rank == 1);
    float qv[D] = {0, 0, 0, 3, 0, 0, 0, 0};
    q = (sl_rag_query_t){
        .vec = qv, .dims = D, .k = 2, .mode = SL_RAG_DENSE, .quant = SL_VEC_EXACT, .min_dense = 0.5f};
    m = sl_rag_search(idx, &q, hits);
    CHECK_INT(m, 1);
    CHECK_INT(hits[0].chunk, 3);
    CHECK(hits[0].dense > 0.97f);
    q.quant = SL_VEC_BINARY;
    CHECK_INT(sl_rag_search(idx, &q, hits), 1);
    /* hybrid: "state file" by BM25 and axis 3 by vector; both appear, each signal reported */
    q = (sl_rag_query_t){.text = "state file",
                         .text_len = 10,
                         .vec = qv,
                         .dims = D,
                         .k = 4,
                         .mode = SL_RAG_HYBRID,
                         .quant = SL_VEC_AUTO,
                         .min_dense = 0.5f};
    m = sl_rag_search(idx, &q, hits);
    CHECK_INT(m, 2);
    int saw1 = 0, saw3 = 0;
    for (int i = 0; i < m; i++) {
        saw1 |= hits[i].chunk == 1 && hits[i].bm25_rank == 1 && hits[i].dense_rank == 0;
        saw3 |= hits[i].chunk == 3 && hits[i].dense_rank == 1 && hits[i].bm25 == 0;
        CHECK(fabsf(hits[i].score - 1.0f) < 1e-6f); /* each the best of its list, absent from the other */
    }
    CHECK(saw1 && saw3);
    /* weights: the dense signal counts 3 times (score fusion), or BM25 twice (reciprocal rank fusion) */
    q.w_dense = 3;
    CHECK_INT(sl_rag_search(idx, &q, hits), 2);
    CHECK(hits[0].chunk == 3 && fabsf(hits[0].score - 3.0f) < 1e-6f && fabsf(hits[1].score - 1.0f) < 1e-6f);
    q.w_dense = 0;
    q.w_bm25 = 2;
    q.fusion = SL_RAG_FUSE_RRF;
    CHECK_INT(sl_rag_search(idx, &q, hits), 2);
    CHECK(hits[0].chunk == 1 && fabsf(hits[0].score - 2.0f / 61.0f) < 1e-6f);
    CHECK(hits[1].chunk == 3 && fabsf(hits[1].score - 1.0f / 61.0f) < 1e-6f);
    q.rrf_k = 10;
    CHECK_INT(sl_rag_search(idx, &q, hits), 2);
    CHECK(fabsf(hits[0].score - 2.0f / 11.0f) < 1e-6f);
    /* a vector of other dimensions is refused */
    q.dims = D + 1;
    CHECK_INT(sl_rag_search(idx, &q, hits), -EINVAL);

    /* filters */
    uint8_t bm[1];
    const char *f1 = "source:guide/*";
    CHECK_INT(sl_rag_filter(idx, f1, strlen(f1), bm), 3);
    const char *f2 = "meta:lang=en";
    CHECK_INT(sl_rag_filter(idx, f2, strlen(f2), bm), 2);
    CHECK_INT(bm[0], 3);
    const char *f3 = "source:*.txt\nsource:guide/tls.md\nmeta:lang=de";
    CHECK_INT(sl_rag_filter(idx, f3, strlen(f3), bm), 1);
    CHECK_INT(bm[0], 4);
    CHECK_INT(sl_rag_filter(idx, "bogus", 5, bm), -EINVAL);
    q = (sl_rag_query_t){
        .text = "certificates state", .text_len = 18, .k = 3, .mode = SL_RAG_BM25, .allow = bm};
    CHECK_INT(sl_rag_filter(idx, f2, strlen(f2), bm), 2);
    m = sl_rag_search(idx, &q, hits);
    CHECK_INT(m, 1);
    CHECK_INT(hits[0].chunk, 1);
    sl_rag_release(idx);
    free(b);
}

/* Every damage is refused with a reason: truncation, a flipped byte (checksums), and with the checksums
 * recomputed (a file made by hand), each structural field out of range. */
static void rehash(uint8_t *b, size_t n)
{
    sl_rag_hdr_t *h = (sl_rag_hdr_t *)b;
    h->body_hash = sl_xxh64(b + sizeof(*h), n - sizeof(*h), 0);
    h->hdr_hash = 0;
    h->hdr_hash = sl_xxh64(h, sizeof(*h), 0);
}

static int refused(uint8_t *b, size_t n, const char *want)
{
    sl_rag_index_t *idx = NULL;
    char err[256] = "";
    int rc = sl_rag_load_mem(b, n, 0, &idx, err, sizeof(err));
    if (rc == 0) {
        sl_rag_release(idx);
        fprintf(stderr, "accepted a damaged index (want: %s)\n", want);
        return 0;
    }
    if (strstr(err, want) == NULL) {
        fprintf(stderr, "refused with \"%s\", want \"%s\"\n", err, want);
        return 0;
    }
    return 1;
}

static void test_damage(void)
{
    sl_rag_writer_t *w = sample(SL_RAG_HAS_BITS);
    uint8_t *b, *c;
    size_t n;
    CHECK_INT(sl_rag_writer_bytes(w, &b, &n), 0);
    sl_rag_writer_free(w);
    c = malloc(n);
    CHECK(refused(b, n - 1, "truncated"));
    CHECK(refused(b, 100, "truncated"));
    for (size_t i = 0; i < n; i += 7) { /* any changed byte */
        memcpy(c, b, n);
        c[i] ^= 0x40;
        if (!refused(c, n, "")) {
            CHECK(0);
            break;
        }
    }
    memcpy(c, b, n);
    c[n - 1] ^= 1;
    CHECK(refused(c, n, "checksum mismatch"));
    memcpy(c, b, n);
    c[0] = 'X';
    CHECK(refused(c, n, "bad magic"));
    sl_rag_hdr_t *h = (sl_rag_hdr_t *)c;
    memcpy(c, b, n);
    h->version = 3;
    rehash(c, n);
    CHECK(refused(c, n, "format version 3"));
    memcpy(c, b, n);
    h->nchunks += 1;
    rehash(c, n);
    CHECK(refused(c, n, "section is"));
    memcpy(c, b, n);
    h->sec[SL_RAG_SEC_F32].off = n - 8;
    rehash(c, n);
    CHECK(refused(c, n, "outside the"));
    memcpy(c, b, n);
    h->dims = 0;
    rehash(c, n);
    CHECK(refused(c, n, "dimensions"));
    memcpy(c, b, n);
    ((sl_rag_chunk_t *)(c + h->sec[SL_RAG_SEC_CHUNKS].off))[2].text.len = 1u << 30;
    rehash(c, n);
    CHECK(refused(c, n, "chunk 2: text outside"));
    memcpy(c, b, n);
    ((sl_rag_chunk_t *)(c + h->sec[SL_RAG_SEC_CHUNKS].off))[0].source = 2;
    rehash(c, n);
    CHECK(refused(c, n, "not among its source"));
    memcpy(c, b, n);
    ((sl_rag_posting_t *)(c + h->sec[SL_RAG_SEC_POSTINGS].off))[3].chunk = 99;
    rehash(c, n);
    CHECK(refused(c, n, "names chunk 99"));
    memcpy(c, b, n);
    ((sl_rag_term_t *)(c + h->sec[SL_RAG_SEC_TERMS].off))[1].df = 1000;
    rehash(c, n);
    CHECK(refused(c, n, "postings outside"));
    memcpy(c, b, n);
    sl_rag_term_t *t = (sl_rag_term_t *)(c + h->sec[SL_RAG_SEC_TERMS].off);
    sl_rag_str_t tmp = t[0].term;
    t[0].term = t[1].term;
    t[1].term = tmp;
    rehash(c, n);
    CHECK(refused(c, n, "out of order"));
    memcpy(c, b, n);
    ((sl_rag_source_t *)(c + h->sec[SL_RAG_SEC_SOURCES].off))[1].count = 1000;
    rehash(c, n);
    CHECK(refused(c, n, "past the"));
    free(c);
    free(b);
}

static int write_index(const char *path, uint32_t flags)
{
    sl_rag_writer_t *w = sample(flags);
    char err[256];
    int rc = sl_rag_writer_write(w, path, err, sizeof(err));
    sl_rag_writer_free(w);
    return rc;
}

/* A slot serves the file's index; a damaged replacement is refused and the old index keeps serving; a valid
 * one replaces it (new generation), while a reference taken before stays usable. */
static void test_registry(void)
{
    char dir[] = "/tmp/sluice-rag-test-XXXXXX", path[128], err[256];
    CHECK(mkdtemp(dir) != NULL);
    snprintf(path, sizeof(path), "%s/docs.idx", dir);
    sl_rag_slot_t *s = sl_rag_slot(path, strlen(path));
    CHECK(s != NULL && sl_rag_slot(path, strlen(path)) == s);
    uint64_t gen = 0;
    CHECK(sl_rag_slot_acquire(s, &gen, err, sizeof(err)) == NULL);
    CHECK(strstr(err, "cannot open") != NULL);
    CHECK_INT(write_index(path, 0), 0);
    sl_rag_index_t *a = sl_rag_slot_acquire(s, &gen, err, sizeof(err));
    CHECK(a != NULL && gen == 1 && sl_rag_slot_gen(s) == 1);
    CHECK_INT(sl_rag_slot_reload(s, 0, err, sizeof(err)), 0); /* unchanged */
    /* a truncated file renamed over it */
    char tmp[160];
    snprintf(tmp, sizeof(tmp), "%s.bad", path);
    FILE *f = fopen(tmp, "wb");
    fwrite("SLRAGIX\x01", 1, 8, f);
    fclose(f);
    CHECK(rename(tmp, path) == 0);
    CHECK(sl_rag_slot_reload(s, 0, err, sizeof(err)) < 0);
    CHECK(strstr(err, "truncated") != NULL);
    CHECK(sl_rag_slot_reload(s, 0, err, sizeof(err)) < 0); /* the same bad file: not read again */
    sl_rag_index_t *b = sl_rag_slot_acquire(s, &gen, err, sizeof(err));
    CHECK(b == a && gen == 1); /* the old index still serves */
    sl_rag_release(b);
    CHECK_INT(write_index(path, SL_RAG_HAS_I8), 0);
    CHECK_INT(sl_rag_slot_reload(s, 0, err, sizeof(err)), 1);
    b = sl_rag_slot_acquire(s, &gen, err, sizeof(err));
    CHECK(b != a && gen == 2 && (sl_rag_flags(b) & SL_RAG_HAS_I8));
    sl_rag_slot_error(s, err, sizeof(err));
    CHECK_STR(err, "");
    sl_rag_chunk_view_t cv; /* the old one is still mapped for its holder */
    CHECK_INT(sl_rag_chunk_get(a, 3, &cv), 0);
    CHECK(cv.text_len == 47 && memcmp(cv.text, "Streaming", 9) == 0);
    sl_rag_release(a);
    sl_rag_release(b);
    /* the folder walk */
    char *list;
    size_t len;
    CHECK_INT(sl_rag_list_files(dir, 100, &list, &len), 1);
    CHECK(len > 9 && memcmp(list, "docs.idx\t", 9) == 0);
    sl_rag_free(list);
    CHECK_INT(sl_rag_list_files("/nonexistent-sluice", 100, &list, &len), -ENOENT);
    unlink(path);
    rmdir(dir);
}

/* The BM25 search cuts work (max-score: terms by bound, only chunks that can still rank completed): its
 * results must be those of scoring every posting. A corpus of Zipf-like words (a few in nearly every chunk,
 * many rare), queries mixing both; every hit's score, and the k-th best, checked against a full scoring here.
 */
static float naive_bm25(const sl_rag_index_t *x, const char (*q)[16], int nq, uint32_t c)
{
    float s = 0, N = (float)x->hdr->nchunks, avgdl = x->hdr->avgdl;
    for (int i = 0; i < nq; i++) {
        for (uint32_t t = 0; t < x->hdr->nterms; t++) {
            const sl_rag_term_t *e = &x->terms[t];
            if (e->term.len != strlen(q[i]) || memcmp(x->str + e->term.off, q[i], e->term.len) != 0)
                continue;
            float idf = logf(1.0f + (N - (float)e->df + 0.5f) / ((float)e->df + 0.5f));
            for (uint32_t j = 0; j < e->df; j++) {
                const sl_rag_posting_t *p = &x->postings[e->post + j];
                if (p->chunk != c)
                    continue;
                float tf = (float)p->tf, dl = (float)x->chunks[c].length;
                s += idf * (tf * 2.2f / (tf + 1.2f * (0.25f + 0.75f * dl / avgdl)));
            }
        }
    }
    return s;
}

static void test_bm25_pruning_exact(void)
{
    enum { NCH = 3000, VOC = 400 };
    sl_rag_writer_t *w = sl_rag_writer_new(D, 0);
    CHECK_INT(sl_rag_writer_source(w, "a.md", 4, "", 0, 1, 1, 1), 0);
    uint64_t r = 12345;
    char text[4096];
    float v[D];
    for (uint32_t c = 0; c < NCH; c++) {
        size_t n = 0;
        int words = 20 + (int)(c % 60);
        for (int i = 0; i < words; i++) {
            r = r * 6364136223846793005ull + 1442695040888963407ull;
            double u = (double)(r >> 11) / (double)(1ull << 53);
            int id = (int)(pow(VOC, u * u * u)) - 1; /* skewed: low ids are common */
            n += (size_t)snprintf(text + n, sizeof(text) - n, "w%dz ", id);
        }
        for (int d = 0; d < D; d++)
            v[d] = (float)((c * 7 + (uint32_t)d * 3) % 11) - 5;
        CHECK(sl_rag_writer_chunk(w, "", 0, text, n, v) >= 0);
    }
    uint8_t *b = NULL;
    size_t nb = 0;
    CHECK_INT(sl_rag_writer_bytes(w, &b, &nb), 0);
    sl_rag_writer_free(w);
    sl_rag_index_t *x = load_bytes(b, nb);
    CHECK(x != NULL);
    if (x == NULL) {
        free(b);
        return;
    }
    static const char *queries[][6] = {
        {"w0z", "w1z", "w2z", "w150z", "w390z", NULL}, {"w0z", "w3z", "w77z", NULL},
        {"w0z", "w1z", "w2z", "w3z", "w4z", NULL},     {"w300z", "w0z", NULL},
        {"w399z", "w1z", "w5z", "w200z", NULL},        {"w9z", "w10z", "w11z", "w12z", "w250z", NULL},
    };
    float qv[D] = {1, -1, 2, 0, 1, 3, -2, 1};
    for (size_t qi = 0; qi < sizeof(queries) / sizeof(queries[0]); qi++) {
        char q[6][16], qtext[128];
        int nq = 0;
        size_t ql = 0;
        for (; queries[qi][nq]; nq++) {
            snprintf(q[nq], sizeof(q[nq]), "%s", queries[qi][nq]);
            ql += (size_t)snprintf(qtext + ql, sizeof(qtext) - ql, "%s ", q[nq]);
        }
        static float full[NCH];
        float sorted[NCH];
        for (uint32_t c = 0; c < NCH; c++)
            sorted[c] = full[c] = naive_bm25(x, (const char(*)[16])q, nq, c);
        for (uint32_t k = 1; k <= 20; k += 19) {
            for (int mode = SL_RAG_BM25; mode <= SL_RAG_HYBRID; mode += 2) {
                sl_rag_query_t sq = {.text = qtext,
                                     .text_len = ql,
                                     .vec = qv,
                                     .dims = D,
                                     .k = k,
                                     .mode = mode,
                                     .quant = SL_VEC_EXACT,
                                     .min_dense = -1};
                sl_rag_hit_t hits[20];
                int got = sl_rag_search(x, &sq, hits);
                CHECK(got == (int)k);
                for (int i = 0; i < got; i++) /* every score is the chunk's full BM25 */
                    CHECK(fabsf(hits[i].bm25 - full[hits[i].chunk]) <= 1e-4f * (1 + full[hits[i].chunk]));
                if (mode != SL_RAG_BM25)
                    continue;
                /* the k-th best of all chunks, and nothing better left out */
                for (uint32_t i = 0; i < k; i++)
                    for (uint32_t j = i + 1; j < NCH; j++)
                        if (sorted[j] > sorted[i]) {
                            float t = sorted[i];
                            sorted[i] = sorted[j];
                            sorted[j] = t;
                        }
                for (int i = 0; i < got; i++)
                    CHECK(fabsf(hits[i].bm25 - sorted[i]) <= 1e-4f * (1 + sorted[i]));
                /* a floor between the scores: exactly the chunks over it, still the best first */
                sq.min_bm25 = sorted[k / 2] + 1e-3f;
                got = sl_rag_search(x, &sq, hits);
                CHECK(got == (int)(k / 2) || (got < (int)(k / 2) && sorted[got] < sq.min_bm25));
                for (int i = 0; i < got; i++)
                    CHECK(hits[i].bm25 >= sq.min_bm25 &&
                          fabsf(hits[i].bm25 - sorted[i]) <= 1e-4f * (1 + sorted[i]));
            }
        }
    }
    sl_rag_release(x);
    free(b);
}

int main(void)
{
    test_tokenize();
    test_roundtrip_and_search();
    test_damage();
    test_bm25_pruning_exact();
    test_registry();
    return sl_test_done();
}

#ifndef SL_VECTOR_H
#define SL_VECTOR_H

#include <stddef.h>
#include <stdint.h>

/* k nearest neighbours by cosine similarity over rows of float32 vectors, brute force. Rows are expected to
 * be unit vectors (sl_vec_normalize), so cosine is the dot product. A row set may carry quantised copies that
 * make a faster first pass: int8 (a quarter of the bytes) or one sign bit per dimension (1/32), whose best
 * candidates are then scored again exactly. The RAG index (core/rag/) and the vector store (vstore.c: the
 * semantic cache) both search through sl_vec_search. docs/vector.md describes the API. */

/** How the first pass is made. */
enum { SL_VEC_EXACT = 0, SL_VEC_INT8 = 1, SL_VEC_BINARY = 2, SL_VEC_AUTO = -1 };

/** Most results one search returns, and most candidates a quantised first pass keeps. */
#define SL_VEC_MAX_K 1024
#define SL_VEC_MAX_CANDIDATES 8192
/** Most dimensions a vector may have. */
#define SL_VEC_MAX_DIMS 16384

/** An inverted-file partition of a row set (ivf.c): rows grouped by their nearest of nlist centroids, so a
 *  search scans only the lists whose centroids are nearest the query. Pointers borrowed. */
typedef struct sl_ivf {
    const float *centroids; /* nlist x dims unit vectors */
    const uint32_t *offs;   /* nlist + 1: list l holds ids[offs[l] .. offs[l + 1]) */
    const uint32_t *ids;    /* every row once, grouped by list: ids[p] is the row at place p */
    const int8_t *i8;       /* NULL, or the set's int8 rows in list order (place p: row ids[p]) */
    const float *i8_scale;  /* with i8: their scales, in list order */
    uint32_t nlist;
    uint32_t nprobe; /* lists a search probes when the set's probes is 0 */
} sl_ivf_t;

/** A set of rows to search (all pointers borrowed; none is written). */
typedef struct sl_vecset {
    const float *f32;      /* n rows of dims floats, unit length */
    const int8_t *i8;      /* NULL, or n rows of dims int8 (sl_vec_quantize_i8) */
    const float *i8_scale; /* with i8: each row's scale */
    const uint64_t *bits;  /* NULL, or n rows of sl_vec_words(dims) sign words (sl_vec_binarize) */
    const uint8_t *allow;  /* NULL, or a bitmap: row i is searched only when bit i is set */
    const double *expires; /* NULL, or per row: 0 never, else the row is skipped once now >= expires[i] */
    double now;
    const sl_ivf_t *ivf; /* NULL (brute force), or the rows' partition: only the nearest lists are searched */
    uint32_t probes;     /* with ivf: lists to search (0: ivf->nprobe; nlist or more: every row) */
    size_t n;
    uint32_t dims;
} sl_vecset_t;

/** One result: row and cosine similarity. */
typedef struct sl_vec_hit {
    uint32_t id;
    float score;
} sl_vec_hit_t;

/** Number of 64-bit words of a sign-bit copy of a dims vector. */
static inline size_t sl_vec_words(uint32_t dims)
{
    return ((size_t)dims + 63) / 64;
}

/** Dot product of two vectors of n floats. */
float sl_vec_dot(const float *a, const float *b, size_t n);
/** Scales v to unit length in place; returns its length before (0: v is left all zero). */
float sl_vec_normalize(float *v, size_t n);
/** Writes the int8 copy of v into q (n bytes); returns its scale (v[i] ~ q[i] * scale). */
float sl_vec_quantize_i8(const float *v, size_t n, int8_t *q);
/** Writes the sign bits of v into bits (sl_vec_words(n) words; bit set for v[i] > 0, unused bits 0). */
void sl_vec_binarize(const float *v, size_t n, uint64_t *bits);

/** The k rows nearest to the unit vector q (dims floats) with a score >= min_score, best first, into out
 *  (room for k). mode: SL_VEC_EXACT scans every row; SL_VEC_INT8 / SL_VEC_BINARY scan the quantised copy and
 *  score its best `candidates` rows exactly (0: 8 x k and at least 64; for SL_VEC_BINARY also at least n /
 * 64); SL_VEC_AUTO picks. NaN scores never come out. Returns the number of hits, or -EINVAL (k 0 or over
 *  SL_VEC_MAX_K, dims mismatch, a missing copy for the mode) or -ENOMEM. Thread-safe: it only reads the set.
 */
int sl_vec_search(const sl_vecset_t *s, const float *q, uint32_t k, int mode, uint32_t candidates,
                  float min_score, sl_vec_hit_t *out);

/* ---- inverted file (ivf.c) ---- */

/** Fewest rows the default partition is made for: under it a brute-force scan is as fast. */
#define SL_IVF_MIN_ROWS 4096
/** Most lists a partition may have. */
#define SL_IVF_MAX_LISTS 65536

/** The default number of lists for n rows: 0 (none) under SL_IVF_MIN_ROWS, else about sqrt(n). */
uint32_t sl_ivf_default_lists(size_t n);
/** The default number of lists a search probes out of nlist (recall@10 >= 0.95 on clustered data,
 *  docs/vector.md). */
uint32_t sl_ivf_default_probes(uint32_t nlist);
/** Partitions n unit rows of dims floats into nlist lists: spherical k-means (seeded, so the same rows give
 * the same lists) on a sample, then every row to its nearest centroid. Writes centroids (nlist x dims), offs
 *  (nlist + 1) and ids (n). Returns 0, -EINVAL (nlist 0, over n or SL_IVF_MAX_LISTS), -ENOMEM. */
int sl_ivf_train(const float *rows, size_t n, uint32_t dims, uint32_t nlist, uint64_t seed, float *centroids,
                 uint32_t *offs, uint32_t *ids);
/** The default probes of a partition v of the n rows it was trained on, measured: the default
 *  (sl_ivf_default_probes) where it reaches 90% of the exact 10 nearest rows of a sample of rows, else
 *  raised toward that, to at most a quarter of the lists (weak clusters: random-like vectors). Seeded. */
uint32_t sl_ivf_tune_probes(const float *rows, size_t n, uint32_t dims, const sl_ivf_t *v, uint64_t seed);
/** The places (in list order: ivf->ids[p] is the row) of the lists of s->ivf nearest to q (s->probes of them,
 *  or ivf->nprobe), for sl_vec_search: *pos points to them (per-thread memory, valid until the thread's next
 *  call). With a filter (allow, expires), lists further away are added while fewer than want rows of the
 *  probed ones pass it. Returns how many, or -ENOMEM. */
int sl__ivf_probe(const sl_vecset_t *s, const float *q, uint32_t want, const uint32_t **pos);

/** Whether row i passes the set's filters (allow bitmap, expiry). */
static inline int sl_vec_row_ok(const sl_vecset_t *s, size_t i)
{
    if (s->allow && !(s->allow[i / 8] & (1u << (i % 8))))
        return 0;
    if (s->expires && s->expires[i] != 0 && s->now >= s->expires[i])
        return 0;
    return 1;
}

/** The mode SL_VEC_AUTO uses for this set: exact while the rows are small enough to stay in cache, else the
 *  smallest quantised copy there is. */
int sl_vec_auto_mode(const sl_vecset_t *s);

/** A top-k selection (min-heap on score): the caller gives room for k hits. */
typedef struct sl_topk {
    sl_vec_hit_t *h;
    uint32_t n, k;
} sl_topk_t;

/** Starts an empty selection of at most k hits in room (k entries). */
void sl_topk_init(sl_topk_t *t, sl_vec_hit_t *room, uint32_t k);
/** Offers a hit (NaN is ignored); it stays when it is among the k best so far. */
void sl_topk_push(sl_topk_t *t, uint32_t id, float score);
/** Sorts the hits best first (ties: lower id first); returns how many. The selection is spent. */
uint32_t sl_topk_sort(sl_topk_t *t);

#endif

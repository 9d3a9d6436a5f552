/* Inverted-file partition of a row set (vector.h): spherical k-means makes nlist centroids, every row goes to
 * the list of its nearest one, and a search scores the query against the centroids and scans only the rows of
 * the nprobe nearest lists (sl_vec_search does the scan, with the first pass and rescoring it would do over
 * every row). It trades a little recall for a scan of nprobe / nlist of the rows: rows near the query almost
 * always share its nearest lists on embeddings, which cluster by topic; on uniformly random vectors (no
 * clusters) recall falls (bench/knn.c measures both). Built with the same flags as vector.c (CMakeLists.txt).
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/dot.h"
#include "common/vector.h"

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SL_IVF_NO_CLONES
#endif
#endif
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__SANITIZE_ADDRESS__) && !defined(SL_IVF_NO_CLONES)
#define CLONES __attribute__((target_clones("arch=haswell", "default")))
#else
#define CLONES
#endif

#define SAMPLE_PER_LIST 32 /* k-means trains on at most this many rows per list */
#define ITERATIONS 8
#define PROBE_SHARE 16 /* default probes: 1/16 of the lists ... */
#define MIN_PROBES 8   /* ... and at least this many */
/* probes measured at build (sl_ivf_tune_probes): rows of the set as queries, the lists that hold their
 * exact nearest neighbours, and the probes that reach TUNE_RECALL_PCT of them; raised at most to a quarter of
 * the lists, whose int8 pass keeps a query on 100,000 x 768 rows within a few ms of CPU */
#define TUNE_QUERIES 32
#define TUNE_K 10
#define TUNE_RECALL_PCT 90
#define TUNE_MAX_SHARE 4

uint32_t sl_ivf_default_lists(size_t n)
{
    if (n < SL_IVF_MIN_ROWS)
        return 0;
    double r = floor(sqrt((double)n) + 0.5);
    return r > SL_IVF_MAX_LISTS ? SL_IVF_MAX_LISTS : (uint32_t)r;
}

uint32_t sl_ivf_default_probes(uint32_t nlist)
{
    uint32_t p = (nlist + PROBE_SHARE - 1) / PROBE_SHARE;
    if (p < MIN_PROBES)
        p = MIN_PROBES;
    return p > nlist ? nlist : p;
}

/* The nearest centroid of each of the n rows (rows[ix[i]] when ix, else rows[i]) into label. */
CLONES static void assign(const float *rows, const uint32_t *ix, size_t n, uint32_t dims, const float *cent,
                          uint32_t nlist, uint32_t *label)
{
    for (size_t i = 0; i < n; i++) {
        const float *r = rows + (ix ? ix[i] : i) * (size_t)dims;
        float b = -INFINITY;
        uint32_t l = 0;
        for (uint32_t c = 0; c < nlist; c++) {
            float s = sl__dot(r, cent + (size_t)c * dims, dims);
            if (s > b) {
                b = s;
                l = c;
            }
        }
        label[i] = l;
    }
}

static uint64_t next(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* The centroids again from the rows of the sample assigned to them (sums, normalised). A list left with
 * under a quarter of its share of the sample (empty, or an outlier's: in many dimensions a few centroids draw
 * most rows, hubs, and the rest keep a handful) is moved to split the largest list instead: both take its
 * centroid, nudged apart, and the next assignment divides its rows (faiss does the same for empty lists). The
 * lists come out closer to equal, so a probe reads about its share of the rows. */
static void update(const float *rows, const uint32_t *ix, size_t ns, uint32_t dims, float *cent,
                   uint32_t nlist, const uint32_t *label, uint32_t *count)
{
    memset(cent, 0, (size_t)nlist * dims * sizeof(float));
    memset(count, 0, nlist * sizeof(*count));
    for (size_t i = 0; i < ns; i++) {
        const float *r = rows + (size_t)ix[i] * dims;
        float *c = cent + (size_t)label[i] * dims;
        for (uint32_t j = 0; j < dims; j++)
            c[j] += r[j];
        count[label[i]]++;
    }
    for (uint32_t l = 0; l < nlist; l++)
        sl_vec_normalize(cent + (size_t)l * dims, dims);
    const uint32_t small = (uint32_t)(ns / nlist / 4);
    for (uint32_t l = 0; l < nlist; l++) {
        if (count[l] > small && count[l] > 0)
            continue;
        uint32_t big = 0;
        for (uint32_t m = 1; m < nlist; m++)
            if (count[m] > count[big])
                big = m;
        if (count[big] < 2 * (small + 1))
            break; /* nothing large enough to split */
        float *c = cent + (size_t)l * dims, *b = cent + (size_t)big * dims;
        for (uint32_t j = 0; j < dims; j++) {
            float e = (j % 2 ? 1.0f : -1.0f) / 1024.0f;
            c[j] = b[j] * (1 + e);
            b[j] *= 1 - e;
        }
        sl_vec_normalize(c, dims);
        sl_vec_normalize(b, dims);
        count[l] = count[big] / 2;
        count[big] -= count[l];
    }
}

int sl_ivf_train(const float *rows, size_t n, uint32_t dims, uint32_t nlist, uint64_t seed, float *centroids,
                 uint32_t *offs, uint32_t *ids)
{
    if (nlist == 0 || nlist > n || nlist > SL_IVF_MAX_LISTS || n > UINT32_MAX || dims == 0)
        return -EINVAL;
    size_t ns = (size_t)nlist * SAMPLE_PER_LIST;
    if (ns > n)
        ns = n;
    uint32_t *ix = malloc(n * sizeof(*ix)), *label = malloc(n * sizeof(*label));
    uint32_t *count = malloc(nlist * sizeof(*count));
    int rc = -ENOMEM;
    if (ix == NULL || label == NULL || count == NULL)
        goto out;
    /* the sample: the first ns of a seeded shuffle (its first nlist rows are the first centroids) */
    uint64_t x = seed ? seed : 0x9e3779b97f4a7c15ull;
    for (size_t i = 0; i < n; i++)
        ix[i] = (uint32_t)i;
    for (size_t i = 0; i < ns; i++) {
        size_t j = i + (size_t)(next(&x) % (n - i));
        uint32_t t = ix[i];
        ix[i] = ix[j];
        ix[j] = t;
    }
    for (uint32_t l = 0; l < nlist; l++) {
        memcpy(centroids + (size_t)l * dims, rows + (size_t)ix[l] * dims, dims * sizeof(float));
        sl_vec_normalize(centroids + (size_t)l * dims, dims);
    }
    for (int it = 0; it < ITERATIONS; it++) {
        assign(rows, ix, ns, dims, centroids, nlist, label);
        update(rows, ix, ns, dims, centroids, nlist, label, count);
    }
    /* every row to its list; ids grouped by list, ascending within one (a counting sort) */
    assign(rows, NULL, n, dims, centroids, nlist, label);
    memset(offs, 0, ((size_t)nlist + 1) * sizeof(*offs));
    for (size_t i = 0; i < n; i++)
        offs[label[i] + 1]++;
    for (uint32_t l = 0; l < nlist; l++)
        offs[l + 1] += offs[l];
    memcpy(count, offs, nlist * sizeof(*count));
    for (size_t i = 0; i < n; i++)
        ids[count[label[i]]++] = (uint32_t)i;
    rc = 0;
out:
    free(ix);
    free(label);
    free(count);
    return rc;
}

/* The probes nearest lists of q, best first, into sel; returns how many. */
CLONES static uint32_t nearest_lists(const sl_ivf_t *v, uint32_t dims, const float *q, uint32_t probes,
                                     sl_vec_hit_t *sel)
{
    sl_topk_t t;
    sl_topk_init(&t, sel, probes);
    for (uint32_t l = 0; l < v->nlist; l++) {
        float s = sl__dot(v->centroids + (size_t)l * dims, q, dims);
        if (t.n < t.k || s > t.h[0].score)
            sl_topk_push(&t, l, s);
    }
    return sl_topk_sort(&t);
}

/* The top TUNE_K rows by dot product with row r (r itself left out) into t. */
CLONES static void exact_top(const float *rows, size_t n, uint32_t dims, size_t r, sl_topk_t *t)
{
    const float *q = rows + r * dims;
    for (size_t i = 0; i < n; i++) {
        if (i == r)
            continue;
        float s = sl__dot(rows + i * dims, q, dims);
        if (t->n < t->k || s > t->h[0].score)
            sl_topk_push(t, (uint32_t)i, s);
    }
}

static int cmp_u32(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

uint32_t sl_ivf_tune_probes(const float *rows, size_t n, uint32_t dims, const sl_ivf_t *v, uint64_t seed)
{
    const uint32_t def = sl_ivf_default_probes(v->nlist), cap = v->nlist / TUNE_MAX_SHARE;
    if (cap <= def || n <= TUNE_K + 1)
        return def;
    uint32_t *list_of = malloc(n * sizeof(*list_of)), *rank = malloc(v->nlist * sizeof(*rank));
    uint32_t *need = malloc(TUNE_QUERIES * TUNE_K * sizeof(*need));
    sl_vec_hit_t *sel = malloc(v->nlist * sizeof(*sel)), top[TUNE_K];
    uint32_t probes = def, m = 0;
    if (list_of == NULL || rank == NULL || need == NULL || sel == NULL)
        goto out;
    for (uint32_t l = 0; l < v->nlist; l++)
        for (uint32_t p = v->offs[l]; p < v->offs[l + 1]; p++)
            list_of[v->ids[p]] = l;
    uint64_t x = seed ? seed : 0x2545f4914f6cdd1dull;
    for (int qi = 0; qi < TUNE_QUERIES; qi++) {
        size_t r = (size_t)(next(&x) % n);
        sl_topk_t t;
        sl_topk_init(&t, top, TUNE_K);
        exact_top(rows, n, dims, r, &t);
        uint32_t nt = sl_topk_sort(&t), nl = nearest_lists(v, dims, rows + r * dims, v->nlist, sel);
        for (uint32_t j = 0; j < nl; j++)
            rank[sel[j].id] = j;
        for (uint32_t j = 0; j < nt; j++)
            need[m++] = rank[list_of[top[j].id]] + 1; /* the probes that reach this neighbour */
    }
    qsort(need, m, sizeof(*need), cmp_u32);
    uint32_t want = m ? need[(m * TUNE_RECALL_PCT + 99) / 100 - 1] : def;
    probes = want < def ? def : want > cap ? cap : want;
out:
    free(list_of);
    free(rank);
    free(need);
    free(sel);
    return probes;
}

/* Grows a per-thread array to n elements of size sz; 0 or -ENOMEM. */
static int reserve(void **p, size_t *cap, size_t n, size_t sz)
{
    if (n <= *cap)
        return 0;
    void *x = malloc(n * sz);
    if (x == NULL)
        return -ENOMEM;
    free(*p);
    *p = x;
    *cap = n;
    return 0;
}

int sl__ivf_probe(const sl_vecset_t *s, const float *q, uint32_t want, const uint32_t **pos)
{
    static __thread sl_vec_hit_t *sel;
    static __thread uint32_t *places;
    static __thread size_t sel_n, places_n;
    const sl_ivf_t *v = s->ivf;
    const int filtered = s->allow || s->expires;
    uint32_t probes = s->probes ? s->probes : v->nprobe;
    if (probes == 0)
        probes = 1;
    if (probes > v->nlist)
        probes = v->nlist;
    if (reserve((void **)&sel, &sel_n, filtered ? v->nlist : probes, sizeof(*sel)) != 0 ||
        reserve((void **)&places, &places_n, s->n, sizeof(*places)) != 0)
        return -ENOMEM;
    uint32_t np = nearest_lists(v, s->dims, q, probes, sel);
    size_t m = 0, pass = 0;
    for (uint32_t i = 0; i < np; i++)
        for (uint32_t p = v->offs[sel[i].id]; p < v->offs[sel[i].id + 1]; p++)
            places[m++] = p;
    if (filtered) {
        for (size_t j = 0; j < m; j++)
            pass += sl_vec_row_ok(s, v->ids[places[j]]);
        /* a filter that keeps out most of the nearest lists: the next lists, nearest first, until enough pass
         * (the lists in order again: a rare case, one more pass over the centroids) */
        if (pass < want && np < v->nlist) {
            np = nearest_lists(v, s->dims, q, v->nlist, sel);
            for (uint32_t i = probes; i < np && pass < want; i++)
                for (uint32_t p = v->offs[sel[i].id]; p < v->offs[sel[i].id + 1]; p++) {
                    places[m++] = p;
                    pass += sl_vec_row_ok(s, v->ids[p]);
                }
        }
    }
    *pos = places;
    return (int)m;
}

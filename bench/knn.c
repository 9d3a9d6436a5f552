/* k-NN speed of core/common/vector.c: N unit vectors of D dimensions (seeded), Q queries, top K by cosine, in
 * each mode (exact float32; int8 and sign-bit first passes rescored exactly; the inverted file of ivf.c with
 * the default probes the index writer measures on the rows (sl_ivf_tune_probes), then a sweep of probes).
 * Prints per-query p50 / p99 / max in milliseconds on one thread, and the recall@K of every approximate mode
 * against the exact answer.
 *
 *   build/bench_knn [N=100000] [D=768] [Q=200] [K=10] [--data random|clustered|both] [--lists L] [--sweep]
 *   build/bench_knn --index FILE [Q] [K] [--sweep]    the vectors (and inverted file) of a RAG index file
 *
 * Two data sets: `random` (directions uniform on the sphere: no clusters, the hard case for every approximate
 * pass and the worst for an inverted file, whose lists then mean nothing) and `clustered` (50 topics of 20
 * subtopics each; a row is its topic's direction + 0.7 x its subtopic's + 1.5 x noise, per component: rows
 * of one subtopic have cosine ~0.4, of one topic ~0.27, else ~0, as embeddings of related texts are nearer).
 * Queries are near a stored row (as a real query is near its answer), not copies of it. With --index, the
 * rows are the index's and a query is a row plus a random unit vector x 0.3 (cosine about 0.96 to its row).
 * Wall-clock numbers: run it on a quiet machine (bench/README.md). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/vector.h"
#include "rag/index.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static float gauss(void)
{
    /* sum of 4 uniforms: close enough to normal for direction sampling */
    float s = 0;
    for (int i = 0; i < 4; i++) {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        s += (float)(rng >> 11) / (float)(1ull << 53) - 0.5f;
    }
    return s;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* This thread's CPU time: on a loaded machine, what a query cost without the time others ran meanwhile. */
static double cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

#define TOPICS 50
#define SUBTOPICS 20

/* Fills the rows: random directions, or the clustered mix (see the top). */
static void make_rows(float *f32, size_t n, uint32_t d, int clustered)
{
    float *topic = NULL, *sub = NULL;
    if (clustered) {
        topic = malloc((size_t)TOPICS * d * sizeof(float));
        sub = malloc((size_t)TOPICS * SUBTOPICS * d * sizeof(float));
        for (size_t i = 0; i < (size_t)TOPICS * d; i++)
            topic[i] = gauss();
        for (size_t i = 0; i < (size_t)TOPICS * SUBTOPICS * d; i++)
            sub[i] = gauss();
    }
    for (size_t i = 0; i < n; i++) {
        float *v = f32 + i * d;
        size_t st = i * 7 % (TOPICS * SUBTOPICS); /* subtopics interleaved: not grouped by row number */
        for (uint32_t j = 0; j < d; j++)
            v[j] = clustered ? topic[(st / SUBTOPICS) * d + j] + 0.7f * sub[st * d + j] + 1.5f * gauss()
                             : gauss();
        sl_vec_normalize(v, d);
    }
    free(topic);
    free(sub);
}

typedef struct run {
    const sl_vecset_t *s;
    const float *qs;
    const sl_vec_hit_t *exact; /* NULL: this run is the exact one, it fills `into` */
    sl_vec_hit_t *into, *hits;
    double *t, *c;
    int q;
    uint32_t d, k;
} run_t;

/* One mode over every query: prints its times and (against the exact answer) recall; returns the recall, or
 * -1 when a search failed. */
static double measure(const run_t *r, const char *name, int mode)
{
    size_t found = 0;
    for (int i = 0; i < r->q; i++) {
        sl_vec_hit_t *out = r->exact ? r->hits : r->into + (size_t)i * r->k;
        double t0 = now_ms(), c0 = cpu_ms();
        int got = sl_vec_search(r->s, r->qs + (size_t)i * r->d, r->k, mode, 0, -1.0f, out);
        r->t[i] = now_ms() - t0;
        r->c[i] = cpu_ms() - c0;
        if (got < 0) {
            fprintf(stderr, "bench_knn: search failed (%d)\n", got);
            return -1;
        }
        if (r->exact)
            for (int a = 0; a < got; a++)
                for (uint32_t b = 0; b < r->k; b++)
                    found += out[a].id == r->exact[(size_t)i * r->k + b].id;
    }
    qsort(r->t, (size_t)r->q, sizeof(double), cmp_double);
    qsort(r->c, (size_t)r->q, sizeof(double), cmp_double);
    double recall = (double)found / ((double)r->q * r->k);
    printf("  %-14s p50 %7.3f p99 %7.3f max %7.3f ms | cpu p50 %7.3f p99 %7.3f ms", name, r->t[r->q / 2],
           r->t[(r->q * 99) / 100], r->t[r->q - 1], r->c[r->q / 2], r->c[(r->q * 99) / 100]);
    if (r->exact)
        printf("  recall@%u vs exact %.3f", r->k, recall);
    printf("\n");
    return recall;
}

/* The rows of a RAG index file: exact, its quantised passes, its inverted file (default probes, a sweep). */
static int index_bench(const char *path, int q, uint32_t k, int sweep)
{
    sl_rag_index_t *x = NULL;
    char err[256];
    if (sl_rag_load(path, &x, err, sizeof(err)) != 0) {
        fprintf(stderr, "bench_knn: %s: %s\n", path, err);
        return 1;
    }
    sl_vecset_t s = x->vecs, brute = x->vecs;
    brute.ivf = NULL;
    const uint32_t d = s.dims;
    const size_t n = s.n;
    float *qs = malloc((size_t)q * d * sizeof(float)), *noise = malloc(d * sizeof(float));
    double *t = malloc((size_t)q * sizeof(double)), *c = malloc((size_t)q * sizeof(double));
    sl_vec_hit_t *exact = malloc((size_t)q * k * sizeof(sl_vec_hit_t)),
                 *hits = malloc(k * sizeof(sl_vec_hit_t));
    if (n == 0 || !qs || !noise || !t || !exact || !hits) {
        fprintf(stderr, "bench_knn: empty index or out of memory\n");
        return 1;
    }
    for (int i = 0; i < q; i++) {
        const float *base = s.f32 + ((size_t)i * 7919 % n) * d;
        for (uint32_t j = 0; j < d; j++)
            noise[j] = gauss();
        sl_vec_normalize(noise, d);
        for (uint32_t j = 0; j < d; j++)
            qs[(size_t)i * d + j] = base[j] + 0.3f * noise[j];
        sl_vec_normalize(qs + (size_t)i * d, d);
    }
    printf("k-NN over the %zu x %u vectors of %s, %d queries, top %u, one thread\n", n, d, path, q, k);
    run_t r = {.s = &brute, .qs = qs, .into = exact, .hits = hits, .t = t, .c = c, .q = q, .d = d, .k = k};
    if (measure(&r, "exact", SL_VEC_EXACT) < 0)
        return 1;
    r.exact = exact;
    if (measure(&r, "auto", SL_VEC_AUTO) < 0)
        return 1;
    if (s.ivf == NULL) {
        printf("  (no inverted file)\n");
    } else {
        printf("  inverted file: %u lists, default probes %u\n", s.ivf->nlist, s.ivf->nprobe);
        r.s = &s;
        char name[32];
        snprintf(name, sizeof(name), "ivf%u+auto", s.ivf->nprobe);
        if (measure(&r, name, SL_VEC_AUTO) < 0)
            return 1;
        snprintf(name, sizeof(name), "ivf%u+int8", s.ivf->nprobe);
        if (s.i8 && measure(&r, name, SL_VEC_INT8) < 0)
            return 1;
        for (uint32_t p = 1; sweep && p < s.ivf->nlist; p *= 2) {
            s.probes = p;
            snprintf(name, sizeof(name), "ivf%u+auto", p);
            if (measure(&r, name, SL_VEC_AUTO) < 0)
                return 1;
        }
    }
    free(qs), free(noise), free(t), free(c), free(exact), free(hits);
    sl_rag_release(x);
    return 0;
}

int main(int argc, char **argv)
{
    size_t n = 100000;
    uint32_t d = 768, k = 10, lists = 0;
    int q = 200, pos = 0, sweep = 0;
    const char *data = "both", *index = NULL;
    for (int a = 1; a < argc; a++) {
        if (strcmp(argv[a], "--index") == 0 && a + 1 < argc) {
            index = argv[++a];
            pos = 2; /* then Q and K */
        } else if (strcmp(argv[a], "--data") == 0 && a + 1 < argc)
            data = argv[++a];
        else if (strcmp(argv[a], "--lists") == 0 && a + 1 < argc)
            lists = (uint32_t)strtoul(argv[++a], NULL, 10);
        else if (strcmp(argv[a], "--sweep") == 0)
            sweep = 1;
        else if (pos == 0 && ++pos)
            n = strtoul(argv[a], NULL, 10);
        else if (pos == 1 && ++pos)
            d = (uint32_t)strtoul(argv[a], NULL, 10);
        else if (pos == 2 && ++pos)
            q = atoi(argv[a]);
        else if (pos == 3 && ++pos)
            k = (uint32_t)strtoul(argv[a], NULL, 10);
        else
            n = 0;
    }
    if (n == 0 || d == 0 || d > SL_VEC_MAX_DIMS || q <= 0 || k == 0 || k > SL_VEC_MAX_K ||
        (strcmp(data, "random") != 0 && strcmp(data, "clustered") != 0 && strcmp(data, "both") != 0)) {
        fprintf(stderr, "usage: bench_knn [N] [D] [Q] [K] [--data random|clustered|both] [--lists L] "
                        "[--sweep]\n       bench_knn --index FILE [Q] [K] [--sweep]\n");
        return 2;
    }
    if (index)
        return index_bench(index, q, k, sweep);
    if (lists == 0)
        lists = sl_ivf_default_lists(n);
    if (lists > n)
        lists = (uint32_t)n;
    size_t words = sl_vec_words(d);
    float *f32 = malloc(n * d * sizeof(float)), *scale = malloc(n * sizeof(float));
    int8_t *i8 = malloc(n * d);
    uint64_t *bits = malloc(n * words * sizeof(uint64_t));
    float *qs = malloc((size_t)q * d * sizeof(float)), *cent = malloc((size_t)(lists ? lists : 1) * d * 4);
    uint32_t *offs = malloc(((size_t)lists + 1) * 4), *ids = malloc(n * 4);
    double *t = malloc((size_t)q * sizeof(double)), *c = malloc((size_t)q * sizeof(double));
    sl_vec_hit_t *exact = malloc((size_t)q * k * sizeof(sl_vec_hit_t)),
                 *hits = malloc(k * sizeof(sl_vec_hit_t));
    if (!f32 || !scale || !i8 || !bits || !qs || !cent || !offs || !ids || !t || !c || !exact || !hits) {
        fprintf(stderr, "bench_knn: out of memory\n");
        return 1;
    }
    printf("k-NN over %zu x %u float32 (%.0f MiB), %d queries, top %u, one thread\n", n, d,
           n * d * 4.0 / (1 << 20), q, k);
    for (int clustered = 0; clustered < 2; clustered++) {
        if (strcmp(data, "both") != 0 && (strcmp(data, "clustered") == 0) != clustered)
            continue;
        rng = 0x9e3779b97f4a7c15ull;
        make_rows(f32, n, d, clustered);
        for (size_t i = 0; i < n; i++) {
            scale[i] = sl_vec_quantize_i8(f32 + i * d, d, i8 + i * d);
            sl_vec_binarize(f32 + i * d, d, bits + i * words);
        }
        for (int i = 0; i < q; i++) {
            const float *base = f32 + ((size_t)i * 7919 % n) * d;
            for (uint32_t j = 0; j < d; j++)
                qs[(size_t)i * d + j] = base[j] + 0.5f * gauss() / 8;
            sl_vec_normalize(qs + (size_t)i * d, d);
        }
        printf("%s data:\n", clustered ? "clustered" : "random");
        sl_vecset_t s = {.f32 = f32, .i8 = i8, .i8_scale = scale, .bits = bits, .n = n, .dims = d};
        run_t r = {.s = &s, .qs = qs, .into = exact, .hits = hits, .t = t, .c = c, .q = q, .d = d, .k = k};
        if (measure(&r, "exact", SL_VEC_EXACT) < 0)
            return 1;
        r.exact = exact;
        if (measure(&r, "int8", SL_VEC_INT8) < 0 || measure(&r, "binary", SL_VEC_BINARY) < 0)
            return 1;
        if (lists == 0) {
            printf("  (no inverted file under %d rows)\n", SL_IVF_MIN_ROWS);
            continue;
        }
        double t0 = now_ms();
        if (sl_ivf_train(f32, n, d, lists, 0, cent, offs, ids) != 0) {
            fprintf(stderr, "bench_knn: k-means failed\n");
            return 1;
        }
        uint32_t big = 0;
        for (uint32_t l = 0; l < lists; l++)
            if (offs[l + 1] - offs[l] > big)
                big = offs[l + 1] - offs[l];
        /* the int8 rows again in list order, as an index file has them (IVF_I8, IVF_I8S) */
        int8_t *gi8 = malloc(n * d);
        float *gsc = malloc(n * sizeof(float));
        if (!gi8 || !gsc) {
            fprintf(stderr, "bench_knn: out of memory\n");
            return 1;
        }
        for (size_t p = 0; p < n; p++) {
            memcpy(gi8 + p * d, i8 + (size_t)ids[p] * d, d);
            gsc[p] = scale[ids[p]];
        }
        sl_ivf_t ivf = {.centroids = cent,
                        .offs = offs,
                        .ids = ids,
                        .i8 = gi8,
                        .i8_scale = gsc,
                        .nlist = lists,
                        .nprobe = 0};
        double t1 = now_ms();
        ivf.nprobe = sl_ivf_tune_probes(f32, n, d, &ivf, 0); /* as the index writer measures them */
        printf("  inverted file: %u lists (largest %u rows), k-means + assignment %.1f s, default probes %u "
               "(measured in %.1f s; %u before the measure)\n",
               lists, big, (t1 - t0) / 1e3, ivf.nprobe, (now_ms() - t1) / 1e3, sl_ivf_default_probes(lists));
        s.ivf = &ivf;
        char name[32];
        snprintf(name, sizeof(name), "ivf%u+int8", ivf.nprobe);
        if (measure(&r, name, SL_VEC_INT8) < 0)
            return 1;
        snprintf(name, sizeof(name), "ivf%u+binary", ivf.nprobe);
        if (measure(&r, name, SL_VEC_BINARY) < 0)
            return 1;
        snprintf(name, sizeof(name), "ivf%u+exact", ivf.nprobe);
        if (measure(&r, name, SL_VEC_EXACT) < 0)
            return 1;
        for (uint32_t p = 1; sweep && p < lists; p *= 2) {
            s.probes = p;
            snprintf(name, sizeof(name), "ivf%u+auto", p);
            if (measure(&r, name, SL_VEC_AUTO) < 0)
                return 1;
        }
        free(gi8);
        free(gsc);
    }
    free(f32), free(scale), free(i8), free(bits), free(qs), free(cent), free(offs), free(ids), free(t),
        free(c);
    free(exact), free(hits);
    return 0;
}

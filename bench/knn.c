/* k-NN speed of core/common/vector.c: N random unit vectors of D dimensions (seeded), Q random queries, top K
 * by cosine, in each mode (exact float32; int8 and sign-bit first passes rescored exactly). Prints per-query
 * p50 / p99 / max in milliseconds on one thread, and the recall@K of the quantised modes against the exact
 * answer. build/bench_knn [N=100000] [D=768] [Q=200] [K=10] Random vectors are the hard case for the
 * quantised passes (no clusters to find); real embeddings do better. Wall-clock numbers: run it on a quiet
 * machine (bench/README.md). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/vector.h"

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

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 100000;
    uint32_t d = argc > 2 ? (uint32_t)strtoul(argv[2], NULL, 10) : 768;
    int q = argc > 3 ? atoi(argv[3]) : 200;
    uint32_t k = argc > 4 ? (uint32_t)strtoul(argv[4], NULL, 10) : 10;
    if (n == 0 || d == 0 || d > SL_VEC_MAX_DIMS || q <= 0 || k == 0 || k > SL_VEC_MAX_K) {
        fprintf(stderr, "usage: bench_knn [N] [D] [Q] [K]\n");
        return 2;
    }
    size_t words = sl_vec_words(d);
    float *f32 = malloc(n * d * sizeof(float)), *scale = malloc(n * sizeof(float));
    int8_t *i8 = malloc(n * d);
    uint64_t *bits = malloc(n * words * sizeof(uint64_t));
    float *qs = malloc((size_t)q * d * sizeof(float));
    double *t = malloc((size_t)q * sizeof(double));
    sl_vec_hit_t *exact = malloc((size_t)q * k * sizeof(sl_vec_hit_t)),
                 *hits = malloc(k * sizeof(sl_vec_hit_t));
    if (!f32 || !scale || !i8 || !bits || !qs || !t || !exact || !hits) {
        fprintf(stderr, "bench_knn: out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        float *v = f32 + i * d;
        for (uint32_t j = 0; j < d; j++)
            v[j] = gauss();
        sl_vec_normalize(v, d);
        scale[i] = sl_vec_quantize_i8(v, d, i8 + i * d);
        sl_vec_binarize(v, d, bits + i * words);
    }
    for (int i = 0; i < q; i++) {
        /* a query near a stored row (as a real query is near its answer), not a copy of it */
        const float *base = f32 + ((size_t)i * 7919 % n) * d;
        for (uint32_t j = 0; j < d; j++)
            qs[(size_t)i * d + j] = base[j] + 0.5f * gauss() / 8;
        sl_vec_normalize(qs + (size_t)i * d, d);
    }
    sl_vecset_t s = {.f32 = f32, .i8 = i8, .i8_scale = scale, .bits = bits, .n = n, .dims = d};
    printf("k-NN over %zu x %u float32 (%.0f MiB), %d queries, top %u, one thread\n", n, d,
           n * d * 4.0 / (1 << 20), q, k);
    const char *names[] = {"exact", "int8", "binary"};
    int modes[] = {SL_VEC_EXACT, SL_VEC_INT8, SL_VEC_BINARY};
    for (int m = 0; m < 3; m++) {
        size_t found = 0;
        for (int i = 0; i < q; i++) {
            double t0 = now_ms();
            int got = sl_vec_search(&s, qs + (size_t)i * d, k, modes[m], 0, -1.0f,
                                    modes[m] ? hits : exact + (size_t)i * k);
            t[i] = now_ms() - t0;
            if (got < 0) {
                fprintf(stderr, "bench_knn: search failed (%d)\n", got);
                return 1;
            }
            if (modes[m])
                for (int a = 0; a < got; a++)
                    for (uint32_t b = 0; b < k; b++)
                        found += hits[a].id == exact[(size_t)i * k + b].id;
        }
        qsort(t, (size_t)q, sizeof(double), cmp_double);
        printf("  %-7s p50 %7.3f ms  p99 %7.3f ms  max %7.3f ms", names[m], t[q / 2], t[(q * 99) / 100],
               t[q - 1]);
        if (modes[m])
            printf("  recall@%u vs exact %.3f", k, (double)found / ((double)q * k));
        printf("\n");
    }
    free(f32), free(scale), free(i8), free(bits), free(qs), free(t), free(exact), free(hits);
    return 0;
}

/* core/common/vector.c (k-NN kernels, top-k), vstore.c (the node-wide vector store) and hash.c (XXH64). */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/hash.h"
#include "common/vector.h"
#include "common/vstore.h"
#include "test.h"

static uint64_t rng = 88172645463325252ull;

static float frand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((double)(rng >> 11) / 9007199254740992.0) * 2.0f - 1.0f;
}

static void random_unit(float *v, uint32_t d)
{
    for (uint32_t i = 0; i < d; i++)
        v[i] = frand();
    sl_vec_normalize(v, d);
}

static void test_xxh64(void)
{
    /* reference values of xxHash's XXH64 */
    CHECK(sl_xxh64("", 0, 0) == 0xEF46DB3751D8E999ull);
    CHECK(sl_xxh64("a", 1, 0) == 0xD24EC4F1A98C6E5Bull);
    CHECK(sl_xxh64("abc", 3, 0) == 0x44BC2CF5AD770999ull);
    const char *s = "Nobody inspects the spammish repetition";
    CHECK(sl_xxh64(s, strlen(s), 0) == 0xFBCEA83C8A378BF1ull);
    CHECK(sl_xxh64(s, strlen(s), 1) != sl_xxh64(s, strlen(s), 0));
}

static void test_topk(void)
{
    sl_vec_hit_t room[3];
    sl_topk_t t;
    sl_topk_init(&t, room, 3);
    float scores[] = {0.5f, 0.9f, NAN, 0.1f, 0.9f, 0.7f};
    for (uint32_t i = 0; i < 6; i++)
        sl_topk_push(&t, i, scores[i]);
    CHECK_INT(sl_topk_sort(&t), 3);
    CHECK_INT(room[0].id, 1); /* equal scores: the lower id first */
    CHECK_INT(room[1].id, 4);
    CHECK_INT(room[2].id, 5);
}

/* Exact search returns what a reference loop finds; the quantised first passes find the same best rows. */
static void test_search(void)
{
    const uint32_t n = 3000, d = 96, k = 10;
    float *rows = malloc((size_t)n * d * sizeof(float)), q[96];
    int8_t *i8 = malloc((size_t)n * d);
    float *sc = malloc(n * sizeof(float));
    uint64_t *bits = malloc((size_t)n * sl_vec_words(d) * 8);
    for (uint32_t i = 0; i < n; i++) {
        random_unit(rows + (size_t)i * d, d);
        sc[i] = sl_vec_quantize_i8(rows + (size_t)i * d, d, i8 + (size_t)i * d);
        sl_vec_binarize(rows + (size_t)i * d, d, bits + (size_t)i * sl_vec_words(d));
    }
    /* the query is close to row 1234 */
    for (uint32_t j = 0; j < d; j++)
        q[j] = rows[1234 * d + j] + 0.05f * frand();
    sl_vec_normalize(q, d);
    sl_vecset_t s = {.f32 = rows, .i8 = i8, .i8_scale = sc, .bits = bits, .n = n, .dims = d};
    sl_vec_hit_t exact[10], a[10], b[10];
    CHECK_INT(sl_vec_search(&s, q, k, SL_VEC_EXACT, 0, -2, exact), 10);
    CHECK_INT(exact[0].id, 1234);
    float best = -2;
    uint32_t best_i = 0;
    for (uint32_t i = 0; i < n; i++) {
        float x = sl_vec_dot(rows + (size_t)i * d, q, d);
        if (x > best)
            best = x, best_i = i;
    }
    CHECK_INT(exact[0].id, best_i);
    CHECK(fabsf(exact[0].score - best) < 1e-4f);
    for (int i = 1; i < 10; i++)
        CHECK(exact[i - 1].score >= exact[i].score);
    CHECK_INT(sl_vec_search(&s, q, k, SL_VEC_INT8, 0, -2, a), 10);
    CHECK_INT(sl_vec_search(&s, q, k, SL_VEC_BINARY, 200, -2, b), 10);
    CHECK_INT(a[0].id, 1234);
    CHECK_INT(b[0].id, 1234);
    CHECK(fabsf(a[0].score - exact[0].score) < 1e-5f); /* re-scored exactly */
    int same = 0;
    for (int i = 0; i < 10; i++)
        for (int j = 0; j < 10; j++)
            same += a[i].id == exact[j].id;
    CHECK(same >= 8);
    /* min_score cuts; a filter bitmap hides rows; k bounds */
    CHECK_INT(sl_vec_search(&s, q, k, SL_VEC_EXACT, 0, exact[0].score, a), 1);
    uint8_t *allow = calloc((n + 7) / 8, 1);
    allow[1234 / 8] = 0xff & (uint8_t) ~(1u << (1234 % 8));
    allow[0] = 1;
    s.allow = allow;
    int m = sl_vec_search(&s, q, k, SL_VEC_EXACT, 0, -2, a);
    CHECK_INT(m, 8); /* 7 rows of 1234's byte + row 0 */
    for (int i = 0; i < m; i++)
        CHECK(a[i].id != 1234);
    s.allow = NULL;
    CHECK_INT(sl_vec_search(&s, q, 0, SL_VEC_EXACT, 0, -2, a), -EINVAL);
    CHECK_INT(sl_vec_search(&s, q, SL_VEC_MAX_K + 1, SL_VEC_EXACT, 0, -2, a), -EINVAL);
    s.bits = NULL;
    CHECK_INT(sl_vec_search(&s, q, 3, SL_VEC_BINARY, 0, -2, a), -EINVAL);
    CHECK_INT(sl_vec_auto_mode(&s), SL_VEC_EXACT); /* 1.1 MB of rows: exact */
    free(allow);
    free(rows);
    free(i8);
    free(sc);
    free(bits);
}

static void test_normalize(void)
{
    float z[4] = {0, 0, 0, 0}, nan[2] = {NAN, 1}, v[2] = {3, 4};
    CHECK(sl_vec_normalize(z, 4) == 0);
    CHECK(sl_vec_normalize(nan, 2) == 0 && nan[0] == 0 && nan[1] == 0);
    CHECK(fabsf(sl_vec_normalize(v, 2) - 5) < 1e-6f);
    CHECK(fabsf(v[0] - 0.6f) < 1e-6f);
    int8_t q[2];
    float sc = sl_vec_quantize_i8(v, 2, q);
    CHECK_INT(q[1], 127);
    CHECK(fabsf(q[0] * sc - 0.6f) < 0.01f);
}

static void test_vstore(void)
{
    int err = 0;
    CHECK(sl_vstore_open("", 0, 4, 10, 0, &err) == NULL && err == -EINVAL);
    CHECK(sl_vstore_open("x", 1, 0, 10, 0, &err) == NULL && err == -EINVAL);
    sl_vstore_t *s = sl_vstore_open("cache", 5, 4, 3, SL_VSTORE_I8 | SL_VSTORE_BITS, &err);
    CHECK(s != NULL);
    sl_vstore_t *same = sl_vstore_open("cache", 5, 4, 3, SL_VSTORE_I8 | SL_VSTORE_BITS, &err);
    CHECK(same == s);
    sl_vstore_release(same);
    float a[4] = {1, 0, 0, 0}, b[4] = {0, 1, 0, 0}, c[4] = {0, 0, 1, 0}, d[4] = {0.9f, 0.1f, 0, 0};
    float zero[4] = {0, 0, 0, 0};
    char ev[SL_VSTORE_KEY_MAX];
    uint32_t evl = 0;
    CHECK_INT(sl_vstore_add(s, "a", 1, a, 0, ev, &evl), 0);
    CHECK_INT(sl_vstore_add(s, "b", 1, b, 0, ev, &evl), 0);
    CHECK_INT(sl_vstore_add(s, "a", 1, a, 0, ev, &evl), 1); /* replaced: now the newest */
    CHECK_INT(sl_vstore_add(s, "zero", 4, zero, 0, ev, &evl), -EINVAL);
    CHECK_INT(sl_vstore_count(s), 2);
    CHECK_INT(sl_vstore_add(s, "c", 1, c, 0, ev, &evl), 0);
    CHECK_INT(sl_vstore_add(s, "d", 1, d, 0, ev, &evl), 2); /* full: the oldest (b) goes */
    CHECK(evl == 1 && ev[0] == 'b');
    sl_vstore_hit_t hits[3];
    int n = sl_vstore_search(s, a, 3, 0.5f, SL_VEC_EXACT, hits);
    CHECK_INT(n, 2);
    CHECK(hits[0].key_len == 1 && hits[0].key[0] == 'a');
    CHECK(hits[1].key_len == 1 && hits[1].key[0] == 'd');
    CHECK(hits[1].score > 0.99f && hits[1].score < 1.0f);
    CHECK_INT(sl_vstore_remove(s, "a", 1), 0);
    CHECK_INT(sl_vstore_remove(s, "a", 1), -ENOENT);
    n = sl_vstore_search(s, a, 3, 0.5f, SL_VEC_BINARY, hits);
    CHECK_INT(n, 1);
    CHECK(hits[0].key[0] == 'd');
    /* an entry past its ttl is not found */
    CHECK_INT(sl_vstore_add(s, "old", 3, b, 1e-9, ev, &evl), 0);
    n = sl_vstore_search(s, b, 3, 0.5f, SL_VEC_EXACT, hits);
    CHECK_INT(n, 0);
    /* other settings under the same name: a new empty store; the old holder keeps its own */
    sl_vstore_t *s2 = sl_vstore_open("cache", 5, 8, 3, 0, &err);
    CHECK(s2 != NULL && s2 != s);
    CHECK_INT(sl_vstore_count(s2), 0);
    CHECK_INT(sl_vstore_count(s), 3);
    sl_vstore_clear(s);
    CHECK_INT(sl_vstore_count(s), 0);
    sl_vstore_release(s);
    sl_vstore_release(s2);
}

/* Many adds and removals keep the key index, the insertion list and the free list consistent. */
static void test_vstore_churn(void)
{
    int err;
    sl_vstore_t *s = sl_vstore_open("churn", 5, 16, 64, 0, &err);
    float v[16];
    char key[16];
    int removed = 0;
    for (int i = 0; i < 5000; i++) {
        random_unit(v, 16);
        int len = snprintf(key, sizeof(key), "k%d", i % 53);
        if (i % 5 == 4)
            removed += sl_vstore_remove(s, key, (size_t)len) == 0;
        else
            CHECK(sl_vstore_add(s, key, (size_t)len, v, 0, NULL, NULL) >= 0);
    }
    CHECK(sl_vstore_count(s) <= 64);
    CHECK(removed > 0);
    sl_vstore_hit_t hits[64];
    random_unit(v, 16);
    int n = sl_vstore_search(s, v, 64, -2, SL_VEC_EXACT, hits);
    CHECK_INT(n, (int)sl_vstore_count(s));
    sl_vstore_release(s);
}

/* Groups (a key prefix): at most gmax entries per group, the group's oldest evicted; a search sees one group.
 */
static void test_vstore_groups(void)
{
    int err;
    sl_vstore_t *s = sl_vstore_open("groups", 6, 2, 8, 0, &err);
    float a[2] = {1, 0}, b[2] = {0.9f, 0.1f}, c[2] = {0.8f, 0.2f};
    char ev[SL_VSTORE_KEY_MAX];
    uint32_t evl = 0;
    CHECK_INT(sl_vstore_add_in(s, "p1:a", 4, 3, 2, a, 0, ev, &evl), 0);
    CHECK_INT(sl_vstore_add_in(s, "p2:a", 4, 3, 2, a, 0, ev, &evl), 0);
    CHECK_INT(sl_vstore_add_in(s, "p1:b", 4, 3, 2, b, 0, ev, &evl), 0);
    CHECK_INT(sl_vstore_add_in(s, "p1:b", 4, 3, 2, b, 0, ev, &evl), 1); /* replaced, not evicted */
    CHECK_INT(sl_vstore_add_in(s, "p1:c", 4, 3, 2, c, 0, ev, &evl), 2); /* p1 full: p1:a goes, p2:a stays */
    CHECK(evl == 4 && memcmp(ev, "p1:a", 4) == 0);
    CHECK_INT(sl_vstore_count(s), 3);
    CHECK_INT(sl_vstore_add_in(s, "x", 1, 2, 1, a, 0, ev, &evl), -EINVAL); /* group longer than the key */
    sl_vstore_hit_t hits[4];
    int n = sl_vstore_search_in(s, "p1:", 3, a, 4, -1, SL_VEC_AUTO, hits);
    CHECK_INT(n, 2);
    CHECK(memcmp(hits[0].key, "p1:b", 4) == 0 && memcmp(hits[1].key, "p1:c", 4) == 0);
    n = sl_vstore_search_in(s, "p2:", 3, c, 4, -1, SL_VEC_EXACT, hits);
    CHECK(n == 1 && memcmp(hits[0].key, "p2:a", 4) == 0);
    CHECK_INT(sl_vstore_search_in(s, "p3:", 3, a, 4, -1, SL_VEC_EXACT, hits), 0);
    CHECK_INT(sl_vstore_search_in(s, NULL, 0, a, 4, -1, SL_VEC_EXACT, hits), 3);
    sl_vstore_release(s);
}

int main(void)
{
    test_xxh64();
    test_topk();
    test_normalize();
    test_search();
    test_vstore();
    test_vstore_churn();
    test_vstore_groups();
    return sl_test_done();
}

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>

#include "shared/shdict.h"
#include "test.h"

#define K(s) s, sizeof(s) - 1

static uint64_t fake_now = 1000000000u;

static uint64_t fake_clock(void)
{
    return fake_now;
}

static int set_str(sl_shdict_t *d, const char *k, const char *v, double ttl, int *forcible)
{
    return sl_shdict_set(d, k, strlen(k), SL_SHDICT_STRING, 0, v, strlen(v), ttl, 0, forcible);
}

static int set_num(sl_shdict_t *d, const char *k, double v, double ttl)
{
    return sl_shdict_set(d, k, strlen(k), SL_SHDICT_NUMBER, v, NULL, 0, ttl, 0, NULL);
}

/* Value of k as a string ("#n" for numbers, "" when absent), via a small buffer to exercise NOBUFS. */
static const char *get(sl_shdict_t *d, const char *k)
{
    static char out[4096];
    char small[4];
    int type = -1;
    double num = 0;
    size_t vlen = 0;
    uint32_t flags = 0;
    int rc = sl_shdict_get(d, k, strlen(k), &type, &num, small, sizeof(small), &vlen, &flags);

    if (rc == SL_SHDICT_NOBUFS) {
        char *big = malloc(vlen);
        rc = sl_shdict_get(d, k, strlen(k), &type, &num, big, vlen, &vlen, &flags);
        snprintf(out, sizeof(out), "%.*s", (int)vlen, big);
        free(big);
        return rc == 0 ? out : "?";
    }
    if (rc == SL_SHDICT_NOT_FOUND)
        return "";
    if (type == SL_SHDICT_STRING)
        snprintf(out, sizeof(out), "%.*s", (int)vlen, small);
    else
        snprintf(out, sizeof(out), "%c%g", type == SL_SHDICT_NUMBER ? '#' : 'b', num);
    return out;
}

static void test_registry(void)
{
    CHECK_INT(sl_shdict_create("basic", 1 << 20), 0);
    CHECK_INT(sl_shdict_create("basic", 1 << 20), -EEXIST);
    CHECK_INT(sl_shdict_create("tiny", 10), -EINVAL);
    CHECK_INT(sl_shdict_create("", 4096), -EINVAL);
    CHECK(sl_shdict_find(K("basic")) != NULL);
    CHECK(sl_shdict_find(K("bas")) == NULL);
    CHECK(sl_shdict_find(K("nope")) == NULL);
    CHECK_INT(sl_shdict_capacity(sl_shdict_find(K("basic"))), 1 << 20);
}

static void test_basic(void)
{
    sl_shdict_t *d = sl_shdict_find(K("basic"));
    int forcible = 7, type;
    double num, ttl;
    uint32_t flags;
    size_t vlen, before = sl_shdict_free_space(d);
    char buf[16];

    CHECK_INT(set_str(d, "a", "hello world", 0, &forcible), 0);
    CHECK_INT(forcible, 0);
    CHECK_STR(get(d, "a"), "hello world");
    CHECK(sl_shdict_free_space(d) < before);
    CHECK_INT(set_str(d, "a", "same size!!", 0, NULL), 0); /* in-place path */
    CHECK_STR(get(d, "a"), "same size!!");
    CHECK_INT(set_num(d, "n", 1.5, 0), 0);
    CHECK_STR(get(d, "n"), "#1.5");
    CHECK_INT(sl_shdict_set(d, K("b"), SL_SHDICT_BOOLEAN, 1, NULL, 0, 0, 42, NULL), 0);
    CHECK_INT(sl_shdict_get(d, K("b"), &type, &num, buf, sizeof(buf), &vlen, &flags), 0);
    CHECK_INT(type, SL_SHDICT_BOOLEAN);
    CHECK_INT(flags, 42);
    CHECK_INT(sl_shdict_add(d, K("a"), SL_SHDICT_NUMBER, 1, NULL, 0, 0, 0, NULL), SL_SHDICT_EXISTS);
    CHECK_INT(sl_shdict_replace(d, K("zz"), SL_SHDICT_NUMBER, 1, NULL, 0, 0, 0, NULL), SL_SHDICT_NOT_FOUND);
    CHECK_INT(sl_shdict_replace(d, K("a"), SL_SHDICT_NUMBER, 2, NULL, 0, 0, 0, NULL), 0);
    CHECK_STR(get(d, "a"), "#2");
    CHECK_INT(sl_shdict_add(d, K("c"), SL_SHDICT_STRING, 0, K("x"), 0, 0, NULL), 0);
    CHECK_INT(sl_shdict_set(d, K("c"), SL_SHDICT_NIL, 0, NULL, 0, 0, 0, NULL), 0); /* nil deletes */
    CHECK_STR(get(d, "c"), "");
    CHECK_INT(sl_shdict_delete(d, K("a")), 0);
    CHECK_INT(sl_shdict_delete(d, K("a")), SL_SHDICT_NOT_FOUND);
    CHECK_INT(sl_shdict_set(d, "", 0, SL_SHDICT_NUMBER, 1, NULL, 0, 0, 0, NULL), SL_SHDICT_INVALID);
    CHECK_INT(sl_shdict_set(d, K("x"), SL_SHDICT_NUMBER, 1, NULL, 0, -1, 0, NULL), SL_SHDICT_INVALID);

    CHECK_INT(sl_shdict_incr(d, K("cnt"), 1, 0, 0, 0, &num, NULL), SL_SHDICT_NOT_FOUND);
    CHECK_INT(sl_shdict_incr(d, K("cnt"), 2, 1, 10, 0, &num, NULL), 0);
    CHECK_INT(num, 12);
    CHECK_INT(sl_shdict_incr(d, K("cnt"), -5, 1, 10, 0, &num, NULL), 0);
    CHECK_INT(num, 7);
    CHECK_INT(sl_shdict_incr(d, K("b"), 1, 0, 0, 0, &num, NULL), SL_SHDICT_NOT_NUMBER);
    CHECK_INT(sl_shdict_ttl(d, K("cnt"), &ttl), 0);
    CHECK(ttl == 0);

    sl_shdict_flush_all(d);
    CHECK_STR(get(d, "n"), "");
    CHECK_INT(sl_shdict_free_space(d), before);
}

static void test_ttl(void)
{
    sl_shdict_t *d = sl_shdict_find(K("basic"));
    double ttl, num;
    char buf[1024];
    size_t needed;
    int count;

    sl__shdict_set_clock(fake_clock);
    CHECK_INT(set_str(d, "t", "v", 2, NULL), 0);
    CHECK_INT(set_str(d, "t2", "v", 1, NULL), 0);
    CHECK_INT(set_str(d, "forever", "v", 0, NULL), 0);
    CHECK_INT(sl_shdict_incr(d, K("ctr"), 1, 1, 0, 0.5, &num, NULL), 0);
    CHECK_INT(sl_shdict_ttl(d, K("t"), &ttl), 0);
    CHECK(ttl > 1.99 && ttl <= 2);
    fake_now += 1500000000u; /* +1.5 s */
    CHECK_STR(get(d, "t"), "v");
    CHECK_STR(get(d, "ctr"), "");
    CHECK_INT(sl_shdict_get_keys(d, 0, buf, sizeof(buf), &needed, &count), 0);
    CHECK_INT(count, 2); /* t and forever; t2 expired but still stored */
    CHECK_INT(sl_shdict_get_keys(d, 1, buf, sizeof(buf), &needed, &count), 0);
    CHECK_INT(count, 1);
    CHECK_INT(sl_shdict_get_keys(d, 0, buf, 3, &needed, &count), SL_SHDICT_NOBUFS);
    CHECK_INT(needed, 4 + 1 + 4 + 7);
    CHECK_INT(sl_shdict_flush_expired(d, 0), 1);                                       /* t2 */
    CHECK_INT(sl_shdict_add(d, K("t2"), SL_SHDICT_NUMBER, 1, NULL, 0, 0, 0, NULL), 0); /* add over expired */
    CHECK_INT(sl_shdict_expire(d, K("forever"), 1), 0);
    CHECK_INT(sl_shdict_expire(d, K("t"), 0), 0);
    fake_now += 1000000000u;
    CHECK_STR(get(d, "forever"), "");
    CHECK_STR(get(d, "t"), "v");
    CHECK_INT(sl_shdict_expire(d, K("forever"), 1), SL_SHDICT_NOT_FOUND);
    CHECK_INT(sl_shdict_ttl(d, K("forever"), &ttl), SL_SHDICT_NOT_FOUND);
    sl__shdict_set_clock(NULL);
    sl_shdict_flush_all(d);
}

static void test_lru(void)
{
    sl_shdict_t *d;
    char key[16], big[2048];
    int forcible = 0, evicted = 0;

    CHECK_INT(sl_shdict_create("small", 4096), 0);
    d = sl_shdict_find(K("small"));
    memset(big, 'v', sizeof(big) - 1);
    big[sizeof(big) - 1] = 0;
    CHECK_INT(set_str(d, "huge", big, 0, NULL), 0);
    big[100] = 0;
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        CHECK_INT(set_str(d, key, big, 0, &forcible), 0);
        evicted |= forcible;
        if (i == 5)
            CHECK_STR(get(d, "k0"), big); /* touch k0: it should survive longer than k1 */
    }
    CHECK(evicted);
    CHECK_STR(get(d, "huge"), "");
    CHECK_STR(get(d, "k99"), big);
    CHECK_STR(get(d, "k1"), "");

    /* expired entries go before live ones */
    sl_shdict_flush_all(d);
    sl__shdict_set_clock(fake_clock);
    big[1500] = 0;
    memset(big + 100, 'w', 1400);
    CHECK_INT(set_str(d, "live", "x", 0, NULL), 0);
    CHECK_INT(set_str(d, "old", big, 1, NULL), 0);
    CHECK_INT(set_str(d, "live2", "x", 0, NULL), 0);
    fake_now += 2000000000u;
    CHECK_INT(set_str(d, "new", big, 0, &forcible), 0);
    CHECK_INT(set_str(d, "new2", big, 0, &forcible), 0);
    CHECK_INT(forcible, 0);
    CHECK_STR(get(d, "live"), "x");
    sl__shdict_set_clock(NULL);

    big[sizeof(big) - 1] = 0;
    memset(big, 'z', sizeof(big) - 1);
    char *huge = malloc(8192);
    memset(huge, 'h', 8192);
    CHECK_INT(sl_shdict_set(d, K("toolarge"), SL_SHDICT_STRING, 0, huge, 8192, 0, 0, NULL), SL_SHDICT_TOOBIG);
    CHECK_STR(get(d, "live"), "x"); /* a hopeless set evicts nothing */
    /* max_item is exact: key + value of that size fits (evicting what it must), one byte more never does */
    {
        size_t m = sl_shdict_max_item(d), vlen = m - 3;
        char *v = malloc(vlen + 1);
        memset(v, 'm', vlen + 1);
        CHECK(m > 0 && m < 8192);
        CHECK_INT(sl_shdict_set(d, K("fit"), SL_SHDICT_STRING, 0, v, vlen, 0, 0, NULL), 0);
        CHECK_INT(sl_shdict_set(d, K("fit"), SL_SHDICT_STRING, 0, v, vlen + 1, 0, 0, NULL), SL_SHDICT_TOOBIG);
        {
            int type;
            double num;
            size_t got = 0;
            uint32_t flags;
            CHECK_INT(sl_shdict_get(d, K("fit"), &type, &num, v, vlen + 1, &got, &flags), 0);
            CHECK(got == vlen);
        }
        free(v);
    }
    free(huge);
}

#define THREADS 8
#define ROUNDS 20000

static void *incr_worker(void *arg)
{
    sl_shdict_t *d = arg;
    double out;
    for (int i = 0; i < ROUNDS; i++)
        sl_shdict_incr(d, K("hits"), 1, 1, 0, 0, &out, NULL);
    return NULL;
}

static void test_threads(void)
{
    sl_shdict_t *d = sl_shdict_find(K("basic"));
    pthread_t t[THREADS];
    double out = 0;

    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, incr_worker, d);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    CHECK_INT(sl_shdict_incr(d, K("hits"), 0, 0, 0, 0, &out, NULL), 0);
    CHECK_INT(out, THREADS * ROUNDS);
}

/* Compare-and-set: threads advancing one counter only through cas_num (read, then cas the next value, retry
 * on a change) lose no step, as a limiter's state machine must not. */
static void *cas_worker(void *arg)
{
    sl_shdict_t *d = arg;
    double cur = NAN;
    for (int i = 0; i < ROUNDS; i++) {
        for (;;) {
            int has = !isnan(cur);
            double next = (has ? cur : 0) + 1;
            if (sl_shdict_cas_num(d, K("cas"), has, cur, next, 0, &cur, NULL) == 0) {
                cur = next;
                break;
            }
        }
    }
    return NULL;
}

static void test_cas(void)
{
    sl_shdict_t *d = sl_shdict_find(K("basic"));
    pthread_t t[THREADS];
    double cur = 0;

    sl__shdict_set_clock(fake_clock);
    CHECK_INT(sl_shdict_cas_num(d, K("c1"), 1, 5, 6, 0, &cur, NULL),
              SL_SHDICT_EXISTS); /* absent, old given */
    CHECK(isnan(cur));
    CHECK_INT(sl_shdict_cas_num(d, K("c1"), 0, 0, 6, 0, &cur, NULL), 0); /* absent: created */
    CHECK_STR(get(d, "c1"), "#6");
    CHECK_INT(sl_shdict_cas_num(d, K("c1"), 0, 0, 7, 0, &cur, NULL), SL_SHDICT_EXISTS); /* present now */
    CHECK(cur == 6);
    CHECK_INT(sl_shdict_cas_num(d, K("c1"), 1, 5, 7, 0, &cur, NULL), SL_SHDICT_EXISTS); /* another value */
    CHECK(cur == 6);
    CHECK_STR(get(d, "c1"), "#6");
    CHECK_INT(sl_shdict_cas_num(d, K("c1"), 1, 6, 7, 1, &cur, NULL), 0); /* matched: stored with a ttl */
    CHECK_STR(get(d, "c1"), "#7");
    fake_now += 2000000000u;
    CHECK_STR(get(d, "c1"), ""); /* expired counts as absent */
    CHECK_INT(sl_shdict_cas_num(d, K("c1"), 1, 7, 8, 0, &cur, NULL), SL_SHDICT_EXISTS);
    CHECK_INT(sl_shdict_cas_num(d, K("c1"), 0, 0, 1, 0, &cur, NULL), 0);
    CHECK_INT(set_str(d, "c2", "text", 0, NULL), 0);
    CHECK_INT(sl_shdict_cas_num(d, K("c2"), 0, 0, 1, 0, &cur, NULL),
              SL_SHDICT_EXISTS); /* a string is there */
    CHECK(isnan(cur));
    CHECK_INT(sl_shdict_cas_num(d, K("c2"), 1, 0, 1, 0, &cur, NULL), SL_SHDICT_EXISTS);
    CHECK_STR(get(d, "c2"), "text");
    CHECK_INT(sl_shdict_cas_num(d, "", 0, 0, 0, 1, 0, &cur, NULL), SL_SHDICT_INVALID);
    CHECK_INT(sl_shdict_cas_num(d, K("c3"), 0, 0, 1, -1, &cur, NULL), SL_SHDICT_INVALID);

    sl__shdict_set_clock(NULL); /* the threads below need no fake time */
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, cas_worker, d);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    CHECK_INT(sl_shdict_cas_num(d, K("cas"), 1, THREADS * ROUNDS, 0, 0, &cur, NULL), 0);
}

int main(void)
{
    test_registry();
    test_basic();
    test_ttl();
    test_lru();
    test_threads();
    test_cas();
    sl_shdict_close_all();
    CHECK(sl_shdict_find(K("basic")) == NULL);
    return sl_test_done();
}

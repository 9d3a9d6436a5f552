/* core/shared/counters.c: a request's limits reserved in one call on a shared dict (all or nothing), window
 * keys as Lua writes them, the sliding weight, charges after the fact, keys that do not fit. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "shared/counters.h"
#include "shared/shdict.h"
#include "test.h"

static double count_of(sl_shdict_t *d, const char *key)
{
    int type = 0;
    double num = -1;
    size_t vlen = 0;
    uint32_t flags = 0;
    if (sl_shdict_get(d, key, strlen(key), &type, &num, NULL, 0, &vlen, &flags) != 0)
        return -1;
    return num;
}

static void item(sl_ctr_item_t *it, const char *prefix, double window, double limit, int sliding,
                 double amount)
{
    memset(it, 0, sizeof(*it));
    it->prefix = prefix;
    it->plen = (uint32_t)strlen(prefix);
    it->window = window;
    it->limit = limit;
    it->sliding = sliding;
    it->amount = amount;
}

static void test_fixed(sl_shdict_t *d)
{
    sl_ctr_item_t it[2];
    item(&it[0], "t:m:", 60, 10, 0, 4);
    item(&it[1], "t:h:", 3600, 100, 0, 4);
    double now = 7200 + 15; /* window 120 of the minute, 2 of the hour */
    CHECK_INT(sl_ctr_reserve(d, it, 2, now), 0);
    CHECK(it[0].ok == 1 && it[0].remaining == 6 && it[0].reset == 45 && it[0].idx == 120);
    CHECK(it[1].ok == 1 && it[1].remaining == 96 && it[1].idx == 2);
    CHECK(count_of(d, "t:m:120") == 4 && count_of(d, "t:h:2") == 4);
    CHECK_INT(sl_ctr_reserve(d, it, 2, now), 0);
    /* 4 more do not fit the minute: refused, and the hour's amount goes back too */
    CHECK_INT(sl_ctr_reserve(d, it, 2, now), 1);
    CHECK(it[0].ok == 0 && it[0].remaining == 2 && it[0].retry_after == 45);
    CHECK(it[1].ok == 1 && it[1].remaining == 92); /* what it has, the request not counted */
    CHECK(count_of(d, "t:m:120") == 8 && count_of(d, "t:h:2") == 8);
    /* larger than the limit: never fits */
    it[0].amount = 11;
    CHECK_INT(sl_ctr_reserve(d, it, 2, now), 1);
    CHECK_INT(it[0].ok, 2);
    CHECK(count_of(d, "t:m:120") == 8);
    /* the charge after the call lands in the window reserved in, never below zero */
    double deltas[2] = {-3, 5};
    sl_ctr_adjust(d, it, deltas, 2);
    CHECK(count_of(d, "t:m:120") == 5 && count_of(d, "t:h:2") == 13);
    deltas[0] = -50;
    deltas[1] = 0;
    sl_ctr_adjust(d, it, deltas, 2);
    CHECK(count_of(d, "t:m:120") == 0 && count_of(d, "t:h:2") == 13);
}

static void test_sliding(sl_shdict_t *d)
{
    sl_ctr_item_t it;
    item(&it, "t:s:", 60, 10, 1, 1);
    for (int i = 0; i < 10; i++)
        CHECK_INT(sl_ctr_reserve(d, &it, 1, 60 + 50), 0);
    /* 15 s into the next window, 3/4 of the previous 10 count: 2 fit, the third waits 3 s */
    CHECK_INT(sl_ctr_reserve(d, &it, 1, 120 + 15), 0);
    CHECK_INT(sl_ctr_reserve(d, &it, 1, 120 + 15), 0);
    CHECK_INT(sl_ctr_reserve(d, &it, 1, 120 + 15), 1);
    CHECK(it.ok == 0 && it.retry_after == 3 && it.remaining == 0);
    CHECK(count_of(d, "t:s:2") == 2);
}

static void test_keys(sl_shdict_t *d)
{
    static char long_prefix[600];
    memset(long_prefix, 'k', sizeof(long_prefix) - 1);
    sl_ctr_item_t it[2];
    item(&it[0], "t:ok:", 60, 10, 0, 3);
    item(&it[1], long_prefix, 60, 10, 0, 3);
    CHECK(sl_ctr_reserve(d, it, 2, 120) < 0);
    CHECK(count_of(d, "t:ok:2") == 0); /* counted, then taken back */
    char key[SL_CTR_KEY_MAX];
    size_t n = sl__ctr_key(key, &it[0], 1764720000);
    CHECK(n == 15 && memcmp(key, "t:ok:1764720000", n) == 0);
    CHECK(sl__ctr_key(key, &it[1], 1) == 0);
}

int main(void)
{
    CHECK_INT(sl_shdict_create("counters", 1024 * 1024), 0);
    sl_shdict_t *d = sl_shdict_find("counters", 8);
    CHECK(d != NULL);
    test_fixed(d);
    test_sliding(d);
    test_keys(d);
    sl_shdict_close_all();
    return sl_test_done();
}

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

#include "common/regex.h"
#include "test.h"

static char err[256];

static sl_regex_t *comp(const char *pat, const char *flags)
{
    sl_regex_t *re = NULL;
    int rc = sl_regex_compile(pat, strlen(pat), flags, strlen(flags), &re, err, sizeof(err));
    CHECK_INT(rc, 0);
    return re;
}

static int exec(sl_regex_t *re, const char *s, size_t start, int *ov, int pairs)
{
    return sl_regex_exec(re, s, strlen(s), start, ov, pairs);
}

static void test_basic(void)
{
    int ov[8];
    sl_regex_t *re = comp("(\\d+)-(x)?(\\d+)", "");

    CHECK_INT(sl_regex_ncaptures(re), 3);
    CHECK_INT(exec(re, "ab 12-34 cd", 0, ov, 4), 4);
    CHECK_INT(ov[0], 3);
    CHECK_INT(ov[1], 8);
    CHECK_INT(ov[2], 3);
    CHECK_INT(ov[3], 5);
    CHECK_INT(ov[4], -1); /* unset optional group */
    CHECK_INT(ov[6], 6);
    CHECK_INT(exec(re, "ab 12-34 cd", 4, ov, 4), 4); /* from an offset: "2-34" */
    CHECK_INT(ov[0], 4);
    CHECK_INT(exec(re, "none", 0, ov, 4), 0);
    CHECK_INT(exec(re, "x", 5, ov, 4), -EINVAL);
    sl_regex_free(re);

    re = comp("HELLO", "i");
    CHECK_INT(exec(re, "say hello", 0, ov, 1), 1);
    CHECK_INT(ov[0], 4);
    sl_regex_free(re);

    re = comp("^b$", "m");
    CHECK_INT(exec(re, "a\nb\nc", 0, ov, 1), 1);
    sl_regex_free(re);

    re = comp("a.c", "s");
    CHECK_INT(exec(re, "a\nc", 0, ov, 1), 1);
    sl_regex_free(re);

    re = comp("a b # comment", "x");
    CHECK_INT(exec(re, "xab", 0, ov, 1), 1);
    sl_regex_free(re);
}

static void test_names_utf(void)
{
    int ov[8];
    const char *name;
    size_t len;
    sl_regex_t *re = comp("(?<year>\\d{4})-(?<month>\\d\\d)", "");

    CHECK_INT(sl_regex_name_count(re), 2);
    int g0 = sl_regex_name(re, 0, &name, &len), g1;
    char n0[16];
    snprintf(n0, sizeof(n0), "%.*s", (int)len, name);
    g1 = sl_regex_name(re, 1, &name, &len);
    /* name table is sorted by name */
    CHECK_STR(n0, "month");
    CHECK_INT(g0, 2);
    CHECK_INT(g1, 1);
    CHECK_INT(sl_regex_name(re, 2, &name, &len), -EINVAL);
    sl_regex_free(re);

    re = comp("^.$", "u");
    CHECK_INT(exec(re, "\xc3\xa9", 0, ov, 1), 1); /* é is one character */
    int rc = exec(re, "\xc3(", 0, ov, 1);
    CHECK(rc <= SL_REGEX_PCRE_BASE);
    sl_regex_strerror(rc, err, sizeof(err));
    CHECK(strstr(err, "UTF-8") != NULL);
    sl_regex_free(re);
    re = comp("^.$", "");
    CHECK_INT(exec(re, "\xc3\xa9", 0, ov, 1), 0);
    sl_regex_free(re);
}

static void test_errors(void)
{
    sl_regex_t *re = (sl_regex_t *)1;

    CHECK_INT(sl_regex_compile("(a", 2, "", 0, &re, err, sizeof(err)), -EINVAL);
    CHECK(re == NULL);
    CHECK(strstr(err, "missing closing parenthesis") != NULL);
    CHECK(strstr(err, "offset 2") != NULL);
    CHECK_INT(sl_regex_compile("a", 1, "q", 1, &re, err, sizeof(err)), -EINVAL);
    CHECK_STR(err, "unknown flag 'q'");
    sl_regex_strerror(-E2BIG, err, sizeof(err));
    CHECK(err[0] != 0);
}

static void test_cache(void)
{
    sl_regex_t *a = comp("cache(d)?", "jo"), *b = comp("cache(d)?", "oj"), *c = comp("cache(d)?", "o"),
               *d = comp("cache(d)?", "io"), *e = comp("cache(d)?", "");
    int ov[4];

    CHECK(a == b);
    CHECK(a == c);
    CHECK(a != d);
    CHECK(a != e);
    sl_regex_free(b);
    sl_regex_free(c);
    sl_regex_free(d);
    sl_regex_free(e);
    /* push `a` out of the cache while still held: it must stay usable */
    for (int i = 0; i < SL_REGEX_CACHE_SIZE + 10; i++) {
        char pat[32];
        snprintf(pat, sizeof(pat), "p%d", i);
        sl_regex_free(comp(pat, "o"));
    }
    CHECK_INT(exec(a, "cached", 0, ov, 2), 2);
    b = comp("cache(d)?", "o");
    CHECK(b != NULL);
    sl_regex_free(a);
    sl_regex_free(b);
}

static void *thread_main(void *arg)
{
    int ov[2], *ok = arg;
    sl_regex_t *re = NULL;
    for (int i = 0; i < 1000; i++) {
        sl_regex_compile("w(o)rld", 7, "o", 1, &re, NULL, 0);
        *ok += sl_regex_exec(re, "hello world", 11, 0, ov, 1) == 2;
        sl_regex_free(re);
    }
    sl_regex_thread_cleanup();
    return NULL;
}

static void test_threads(void)
{
    pthread_t t[4];
    int ok[4] = {0};

    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, thread_main, &ok[i]);
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        CHECK_INT(ok[i], 1000);
    }
}

int main(void)
{
    test_basic();
    test_names_utf();
    test_errors();
    test_cache();
    test_threads();
    sl_regex_thread_cleanup();
    return sl_test_done();
}

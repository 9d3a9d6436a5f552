/* Candidate runs and run-restricted matching (core/common/runs.c): against a byte-at-a-time reference on
 * random text, and against a regex scan of the whole text. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/regex.h"
#include "common/runs.h"
#include "test.h"

static unsigned char cls[256];

static int counted(unsigned char c, int mark)
{
    return mark >= 0 ? c == mark : (c >= '0' && c <= '9');
}

/* The definition, byte by byte: maximal runs of class bytes in t[start..len) with `need` counted bytes. */
static int reference(const char *t, size_t len, size_t start, int mark, int need, int *out, int pairs)
{
    int n = 0;
    size_t i = start;
    while (i < len && n < pairs) {
        size_t from;
        int c = 0;
        if (!cls[(unsigned char)t[i]]) {
            i++;
            continue;
        }
        from = i;
        while (i < len && cls[(unsigned char)t[i]])
            c += counted((unsigned char)t[i++], mark);
        if (c >= need) {
            out[2 * n] = (int)from;
            out[2 * n + 1] = (int)i;
            n++;
        }
    }
    return n;
}

static void test_random_runs(void)
{
    static const char alphabet[] = "0123456789 ABCXYZ abcxyz+-.()/:@\n";
    char text[600];
    int a[2 * 400], b[2 * 400], bad = 0;

    memset(cls, 0, sizeof(cls));
    for (const char *p = "0123456789 ABCXYZ+-.()/@"; *p; p++)
        cls[(unsigned char)*p] = 1;
    srand(20261202);
    for (int round = 0; round < 20000 && !bad; round++) {
        size_t len = (size_t)(rand() % (int)sizeof(text)), start = len ? (size_t)(rand() % (int)len) : 0;
        int mark = rand() % 3 == 0 ? '@' : -1, need = 1 + rand() % 3, pairs = 1 + rand() % 400;
        for (size_t i = 0; i < len; i++) /* long stretches without digits too: the 8-byte skip */
            text[i] = rand() % 4 ? alphabet[10 + rand() % (int)(sizeof(alphabet) - 11)]
                                 : alphabet[rand() % (int)(sizeof(alphabet) - 1)];
        int na = sl_text_runs(text, len, start, cls, mark, need, a, pairs);
        int nb = reference(text, len, start, mark, need, b, pairs);
        if (na != nb || memcmp(a, b, sizeof(int) * 2 * (size_t)nb) != 0)
            bad = 1;
    }
    CHECK(!bad);
}

static void test_edges(void)
{
    int out[8];
    memset(cls, 0, sizeof(cls));
    for (const char *p = "0123456789 -"; *p; p++)
        cls[(unsigned char)*p] = 1;
    CHECK_INT(sl_text_runs("", 0, 0, cls, -1, 1, out, 4), 0);
    CHECK_INT(sl_text_runs("abc 12-34 x 5 y 67", 18, 0, cls, -1, 2, out, 4), 2);
    CHECK_INT(out[0], 3); /* " 12-34 ": the spaces are class bytes */
    CHECK_INT(out[1], 10);
    CHECK_INT(out[2], 15);
    CHECK_INT(out[3], 18);
    CHECK_INT(sl_text_runs("abc 12-34 x 5 y 67", 18, 0, cls, -1, 2, out, 1), 1); /* full: call again */
    CHECK_INT(sl_text_runs("abc 12-34 x 5 y 67", 18, 10, cls, -1, 2, out, 4), 1);
    CHECK_INT(sl_text_runs("abc 12-34", 9, 6, cls, -1, 2, out, 4), 1); /* from the middle of a run */
    CHECK_INT(out[0], 6);
    CHECK_INT(sl_text_runs("x", 1, 2, cls, -1, 1, out, 4), -EINVAL);
    CHECK_INT(sl_text_runs("x", 1, 0, cls, -1, 0, out, 4), -EINVAL);
}

static void test_match(void)
{
    sl_regex_t *re = NULL;
    char err[128];
    int out[3 * 4];
    size_t next = 0;
    /* digits in groups, a look-behind reading before the run and a look-ahead reading the byte after it */
    const char *pat = "(?<a>\\d(?<![\\w.]\\d)\\d\\.\\d\\d)(?![\\w])|(?<b>\\d(?<!\\w\\d)\\d{3})(?!x)";
    const char *text = "v12.34 12.34 1234x 5678 12.345 a1234 99.99";
    memset(cls, 0, sizeof(cls));
    for (const char *p = "0123456789."; *p; p++)
        cls[(unsigned char)*p] = 1;
    CHECK_INT(sl_regex_compile(pat, strlen(pat), "", 0, &re, err, sizeof(err)), 0);
    int n = sl_text_runs_match(re, text, strlen(text), 0, cls, -1, 4, out, 4, &next);
    CHECK_INT(n, 3); /* 12.34, 5678, 99.99 ("v12.34" fails its look-behind, "1234x" its look-ahead) */
    CHECK_INT(out[0], 7);
    CHECK_INT(out[1], 12);
    CHECK_INT(out[2], 1);
    CHECK_INT(out[3], 19);
    CHECK_INT(out[5], 2);
    CHECK_INT(out[6], 37);
    CHECK_INT(next, strlen(text));
    n = sl_text_runs_match(re, text, strlen(text), 0, cls, -1, 4, out, 1, &next); /* one at a time */
    CHECK_INT(n, 1);
    CHECK_INT(next, 13); /* where the next run starts */
    n = sl_text_runs_match(re, text, strlen(text), next, cls, -1, 4, out, 1, &next);
    CHECK_INT(n, 1);
    CHECK_INT(out[0], 19);
    sl_regex_free(re);
    sl_regex_thread_cleanup();
}

int main(void)
{
    test_random_runs();
    test_edges();
    test_match();
    return sl_test_done();
}

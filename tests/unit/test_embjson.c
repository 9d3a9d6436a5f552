/* core/rag/embjson.c: an OpenAI embeddings answer read straight into floats. Every number must come out as
 * strtof reads it (the float nearest to the decimal), the vectors in "index" order; whatever the reader does
 * not take in full (other shapes, malformed JSON, truncation) must be refused, never half read. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rag/embjson.h"
#include "test.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t next(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static int read1(const char *json, float *out, size_t cap, int64_t *tok)
{
    return sl_rag_embeddings_read(json, strlen(json), 1, out, cap, tok);
}

static int read2(const char *json, float *out, size_t cap, int64_t *tok)
{
    return sl_rag_embeddings_read(json, strlen(json), 2, out, cap, tok);
}

static void test_shapes(void)
{
    float v[8];
    int64_t tok;
    CHECK_INT(
        read1("{\"object\":\"list\",\"data\":[{\"object\":\"embedding\",\"index\":0,\"embedding\":[0.5,-1.25,"
              "3e-2,0]}],\"model\":\"m\",\"usage\":{\"prompt_tokens\":7,\"total_tokens\":7}}",
              v, 8, &tok),
        4);
    CHECK(v[0] == 0.5f && v[1] == -1.25f && v[2] == 0.03f && v[3] == 0.0f);
    CHECK_INT(tok, 7);
    /* white space anywhere, keys in any order, no usage, nested values skipped */
    CHECK_INT(read1(" {\n \"x\" : {\"a\":[1,{\"b\":null}],\"c\":\"\\u00e9\\\"\"} , \"data\" : [ { "
                    "\"embedding\" : [ 1 , 2 ] ,"
                    " \"index\" : 0 } ] , \"t\":true,\"f\":false } ",
                    v, 8, &tok),
              2);
    CHECK(v[0] == 1.0f && v[1] == 2.0f);
    CHECK_INT(tok, -1);
    /* two vectors given out of order land in index order */
    CHECK_INT(
        read2("{\"data\":[{\"index\":1,\"embedding\":[3,4]},{\"embedding\":[1,2],\"index\":0}]}", v, 8, &tok),
        2);
    CHECK(v[0] == 1 && v[1] == 2 && v[2] == 3 && v[3] == 4);
    /* refused: the general reader decides (or reports) */
    const char *bad[] = {
        "",
        "[]",
        "{}",
        "{\"data\":[]}",
        "{\"data\":[{\"embedding\":\"AAAAAA==\"}]}",      /* base64 */
        "{\"data\":[{\"embedding\":[]}]}",                /* empty */
        "{\"data\":[{\"index\":0}]}",                     /* no vector */
        "{\"data\":[{\"embedding\":[1,2]}],\"data\":[]}", /* repeated key */
        "{\"data\":[{\"embedding\":[1,2],\"embedding\":[1]}]}",
        "{\"data\":[{\"embedding\":[1,2],\"index\":1}]}", /* index out of range */
        "{\"data\":[{\"embedding\":[1,2],\"index\":-0}]}",
        "{\"data\":[{\"embedding\":[1,2],\"index\":\"0\"}]}",
        "{\"data\":[{\"embedding\":[1,2]},{\"embedding\":[1,2]}]}", /* more items than asked */
        "{\"d\\u0061ta\":[{\"embedding\":[1,2]}]}",                 /* an escaped key: not read here */
        "{\"data\":[{\"embedding\":[1,2]}]",                        /* truncated */
        "{\"data\":[{\"embedding\":[1,2]}]}x",                      /* trailing bytes */
        "{\"data\":[{\"embedding\":[1,2,]}]}",
        "{\"data\":[{\"embedding\":[01]}]}", /* leading zero */
        "{\"data\":[{\"embedding\":[1.]}]}",
        "{\"data\":[{\"embedding\":[.5]}]}",
        "{\"data\":[{\"embedding\":[1e]}]}",
        "{\"data\":[{\"embedding\":[+1]}]}",
        "{\"data\":[{\"embedding\":[NaN]}]}",
        "{\"data\":[{\"embedding\":[1e999]}]}",               /* not a finite float */
        "{\"data\":[{\"embedding\":[1,2]}],\"x\":\"a\\qb\"}", /* bad escape */
        "{\"data\":[{\"embedding\":[1,2]}],\"x\":\"a\\u12\"}",
        "{\"data\":[{\"embedding\":[1,2]}],\"x\":\"a\nb\"}", /* control character */
        "{\"data\":[{\"embedding\":[1,2]}],\"x\":tru}",
        "{\"data\":[{\"embedding\":[1,2]}],\"x\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
        "[[[[[[[[]]]]"
        "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}", /* deeper than the reader goes
                                                                                */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = read1(bad[i], v, 8, &tok);
        if (rc != -EINVAL)
            fprintf(stderr, "accepted or misread (%d): %s\n", rc, bad[i]);
        CHECK_INT(rc, -EINVAL);
    }
    CHECK_INT(read1("{\"data\":[{\"embedding\":[1,2,3]}]}", v, 2, &tok), -ENOSPC);
    CHECK_INT(read2("{\"data\":[{\"embedding\":[1,2]},{\"embedding\":[1,2,3]}]}", v, 8, &tok), -ERANGE);
    CHECK_INT(read2("{\"data\":[{\"embedding\":[1,2,3]},{\"embedding\":[1,2]}]}", v, 8, &tok), -ERANGE);
    CHECK_INT(
        read2("{\"data\":[{\"embedding\":[1],\"index\":0},{\"embedding\":[2],\"index\":0}]}", v, 8, &tok),
        -EINVAL); /* an index twice */
    CHECK_INT(sl_rag_embeddings_read(NULL, 0, 1, v, 8, &tok), -EINVAL);
}

/* Random numbers written every way a provider may write them: each reads back as strtof reads it. */
static void test_numbers(void)
{
    enum { N = 20000 };
    char *json = malloc((size_t)N * 48 + 128);
    float *want = malloc(N * sizeof(float)), *got = malloc(N * sizeof(float));
    size_t len = (size_t)sprintf(json, "{\"data\":[{\"embedding\":[");
    for (int i = 0; i < N; i++) {
        uint64_t r = next();
        double x = (double)(r >> 11) / 9007199254740992.0 - 0.5;
        char num[48];
        switch (i % 6) {
        case 0: /* OpenAI: a float32 in 17 digits */
            snprintf(num, sizeof num, "%.17g", (double)(float)x);
            break;
        case 1:
            snprintf(num, sizeof num, "%.6f", x);
            break;
        case 2:
            snprintf(num, sizeof num, "%.9e", x * 1e-5);
            break;
        case 3: /* a float's bits as a random pattern: any exponent, 9 digits */
        {
            uint32_t b = (uint32_t)(r >> 32);
            float f;
            memcpy(&f, &b, sizeof f);
            if (!(f == f) || f - f != 0)
                f = 1.5f;
            snprintf(num, sizeof num, "%.9g", (double)f);
            break;
        }
        case 4: /* a midpoint between two floats, written exactly enough to need care */
        {
            float f = (float)x;
            double mid = (double)f + (double)(nextafterf(f, 2.0f) - f) / 2;
            snprintf(num, sizeof num, "%.25g", mid);
            break;
        }
        default: /* long digit strings, integers */
            snprintf(num, sizeof num, i % 12 == 5 ? "%.30f" : "%.0f", x * 1e7);
        }
        want[i] = strtof(num, NULL);
        len += (size_t)sprintf(json + len, "%s%s", i ? "," : "", num);
    }
    len += (size_t)sprintf(json + len, "]}]}");
    int64_t tok;
    CHECK_INT(sl_rag_embeddings_read(json, len, 1, got, N, &tok), N);
    int wrong = 0;
    for (int i = 0; i < N; i++)
        if (memcmp(&want[i], &got[i], sizeof(float)) != 0 && wrong++ < 5)
            fprintf(stderr, "number %d: %.9g, expected %.9g\n", i, (double)got[i], (double)want[i]);
    CHECK_INT(wrong, 0);
    /* every prefix of a valid answer is refused, none read past its end */
    const char *ok = "{\"data\":[{\"index\":0,\"embedding\":[0.25,-1e-3]}],\"usage\":{\"prompt_tokens\":3}}";
    float v[4];
    for (size_t n = 0; n < strlen(ok); n++) {
        char *cut = malloc(n ? n : 1);
        memcpy(cut, ok, n);
        CHECK_INT(sl_rag_embeddings_read(cut, n, 1, v, 4, &tok), -EINVAL);
        free(cut);
    }
    CHECK_INT(sl_rag_embeddings_read(ok, strlen(ok), 1, v, 4, &tok), 2);
    free(json);
    free(want);
    free(got);
}

int main(void)
{
    test_shapes();
    test_numbers();
    return sl_test_done();
}

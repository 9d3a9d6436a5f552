/* Raw JSON checks of the AI hot path (core/common/json_check.c). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/json_check.h"
#include "test.h"

static int plain(const char *s)
{
    return sl_json_plain_object(s, strlen(s));
}

/* {"a": followed by k nested arrays */
static const char *nested(int k)
{
    static char buf[300];
    size_t n = (size_t)snprintf(buf, sizeof(buf), "{\"a\":");
    for (int i = 0; i < k; i++)
        buf[n++] = '[';
    for (int i = 0; i < k; i++)
        buf[n++] = ']';
    buf[n++] = '}';
    buf[n] = '\0';
    return buf;
}

static void test_plain_object(void)
{
    CHECK(plain("{}"));
    CHECK(plain(" \r\n\t{ } \n"));
    CHECK(plain(
        "{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],\"max_tokens\":32,"
        "\"temperature\":0,\"top_p\":0.5,\"seed\":-12e+3,\"stop\":null,\"stream\":true,\"x\":false}"));
    CHECK(plain(
        "{\"a\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\ud83d\\ude00\"}")); /* every escape, a surrogate pair */
    CHECK(plain("{\"a\":{\"k\":1},\"b\":{\"k\":2},\"k\":[{\"k\":1},{\"k\":2}]}")); /* one key per object, not
                                                                                      per text */
    CHECK(plain("{\"caf\xc3\xa9\":1,\"cafe\":2}"));
    /* not one object */
    CHECK(!plain(""));
    CHECK(!plain("[]"));
    CHECK(!plain("\"s\""));
    CHECK(!plain("{} {}"));
    CHECK(!plain("{}x"));
    CHECK(!plain("{"));
    CHECK(!plain("{\"a\":1"));
    CHECK(!plain("{\"a\":1,}"));
    CHECK(!plain("{\"a\":[1,]}"));
    CHECK(!plain("{\"a\" 1}"));
    CHECK(!plain("{a:1}"));
    /* repeated keys: the upstream could read another value than the gateway did */
    CHECK(!plain("{\"model\":\"a\",\"model\":\"b\"}"));
    CHECK(!plain("{\"m\":[{\"role\":\"user\",\"role\":\"system\"}]}"));
    CHECK(!plain("{\"model\":\"a\",\"mod\\u0065l\":\"b\"}")); /* an escaped key: not compared, refused */
    /* numbers and literals as RFC 8259 has them, nothing a lenient decoder takes */
    CHECK(!plain("{\"a\":01}"));
    CHECK(!plain("{\"a\":1.}"));
    CHECK(!plain("{\"a\":.5}"));
    CHECK(!plain("{\"a\":1e}"));
    CHECK(!plain("{\"a\":+1}"));
    CHECK(!plain("{\"a\":0x10}"));
    CHECK(!plain("{\"a\":NaN}"));
    CHECK(!plain("{\"a\":Infinity}"));
    CHECK(!plain("{\"a\":nul}"));
    CHECK(!plain("{\"a\":True}"));
    /* strings */
    CHECK(!plain("{\"a\":\"tab\there\"}"));       /* a raw control character */
    CHECK(!plain("{\"a\":\"\\x41\"}"));           /* not an escape */
    CHECK(!plain("{\"a\":\"\\u00g0\"}"));         /* not hex */
    CHECK(!plain("{\"a\":\"\\ud83d\"}"));         /* a high surrogate alone */
    CHECK(!plain("{\"a\":\"\\ud83dx\\ude00\"}")); /* ... not followed by its pair */
    CHECK(!plain("{\"a\":\"\\ude00\"}"));         /* a low surrogate alone */
    CHECK(!plain("{\"a\":\"open}"));
    /* depth: 64 levels pass (the object and 63 arrays in it), 65 do not */
    CHECK(plain(nested(63)));
    CHECK(!plain(nested(64)));
    CHECK(sl_json_plain_object(NULL, 0) == 0);
}

static int usage(const char *s, double *u)
{
    const char *at = strstr(s, "{");
    return sl_json_usage(s, strlen(s), (size_t)(at - s), u);
}

static void test_usage(void)
{
    double u[5];
    CHECK_INT(usage("{\"prompt_tokens\":24,\"completion_tokens\":9,\"total_tokens\":33}", u), 7);
    CHECK(u[0] == 24 && u[1] == 9 && u[2] == 33);
    CHECK_INT(usage("{}", u), 0);
    CHECK(u[0] == 0 && u[1] == 0);
    CHECK_INT(usage("{ \"prompt_tokens\" : 5 , \"completion_tokens\":null }", u), 1);
    CHECK(u[0] == 5 && u[1] == 0);
    /* details, DeepSeek's cache hits, repeated keys (the last counts, whatever its type) */
    CHECK_INT(usage("{\"prompt_tokens\":1,\"prompt_tokens_details\":{\"cached_tokens\":5,\"audio_tokens\":0},"
                    "\"completion_tokens_details\":{\"reasoning_tokens\":7}}",
                    u),
              1 | 8 | 16);
    CHECK(u[3] == 5 && u[4] == 7);
    CHECK_INT(usage("{\"prompt_cache_hit_tokens\":3,\"prompt_tokens_details\":{}}", u), 8);
    CHECK(u[3] == 3);
    CHECK_INT(usage("{\"prompt_tokens_details\":{\"cached_tokens\":4},\"prompt_tokens_details\":null}", u),
              0);
    CHECK_INT(usage("{\"prompt_tokens_details\":{\"cached_tokens\":4},\"prompt_tokens_details\":7}", u), 0);
    CHECK_INT(usage("{\"prompt_tokens\":2,\"prompt_tokens\":{\"x\":1}}", u), 0);
    CHECK_INT(usage("{\"prompt_tokens\":2,\"prompt_tokens\":3}", u), 1);
    CHECK(u[0] == 3);
    CHECK_INT(usage("{\"prompt_tokens\":-0}", u), 1);
    CHECK(u[0] == 0 && signbit(u[0]));
    CHECK_INT(usage("{\"prompt_tokens\":123456789012345}", u), 1);
    CHECK(u[0] == 123456789012345.0);
    /* anything else is the caller's to decode */
    CHECK_INT(usage("{\"prompt_tokens\":1234567890123456}", u), -1); /* 16 digits */
    CHECK_INT(usage("{\"prompt_tokens\":1.5}", u), -1);
    CHECK_INT(usage("{\"prompt_tokens\":1e3}", u), -1);
    CHECK_INT(usage("{\"prompt_tokens\":\"12\"}", u), -1);
    CHECK_INT(usage("{\"prompt_tokens\":[1]}", u), -1);
    CHECK_INT(usage("{\"prompt_tokens\":true}", u), -1);
    CHECK_INT(usage("{\"prompt_tokens\":01}", u), -1);
    CHECK_INT(usage("{\"a{\":1}", u), -1);
    CHECK_INT(usage("{\"p\\u0072ompt_tokens\":3}", u), -1);
    CHECK_INT(usage("{\"x\":{\"y\":{\"z\":1}}}", u), -1);
    CHECK_INT(usage("{\"prompt_tokens\":3,", u), -1);
    CHECK_INT(sl_json_usage("x{}", 3, 0, u), -1);
    CHECK_INT(sl_json_usage("{}", 2, 2, u), -1);
}

static long usage_at(const char *s, size_t from)
{
    return sl_json_usage_at(s, strlen(s), from);
}

static void test_usage_at(void)
{
    CHECK_INT(usage_at("{\"usage\":{\"prompt_tokens\":1}}", 0), 9);
    CHECK_INT(usage_at("{\"usage\" \t:\r\n {}}", 0), 14);
    /* the last one wins; null, a string or a number after the key is none */
    CHECK_INT(usage_at("{\"a\":{\"usage\":{}},\"usage\":{}}", 0), 26);
    CHECK_INT(usage_at("{\"a\":{\"usage\":{}},\"usage\":null}", 0), 14);
    CHECK_INT(usage_at("{\"usage\":null}", 0), -1);
    CHECK_INT(usage_at("{\"usage\":\"{\"}", 0), -1);
    CHECK_INT(usage_at("{\"usage\"}", 0), -1);
    CHECK_INT(usage_at("{\"usage\":", 0), -1);
    CHECK_INT(usage_at("{\"usage\"", 0), -1);
    CHECK_INT(usage_at("\"usage\"\"usage\":{}", 0), 15);
    /* keys sharing their quotes: a search from the front takes every other one */
    CHECK_INT(usage_at("\"usage\"usage\":{}", 0), -1);
    CHECK_INT(usage_at("\"usage\"usage\"usage\":{}", 0), 20);
    CHECK_INT(usage_at("\"usage\"usage\"usage\":{}", 6), -1);
    CHECK_INT(usage_at("\"usage\":{},\"usage\"usage\":{}", 0), 8);
    /* from: where the search starts */
    CHECK_INT(usage_at("{\"usage\":{}}", 1), 9);
    CHECK_INT(usage_at("{\"usage\":{}}", 2), -1);
    CHECK_INT(usage_at("{}", 2), -1);
    CHECK_INT(sl_json_usage_at(NULL, 0, 0), -1);
}

/* The string scan goes eight bytes at a time: an escape, a control byte or the closing quote at every offset
 * of a long string, and UTF-8 bytes beside them, are each seen where they are. */
static void test_string_offsets(void)
{
    for (int at = 0; at < 24; at++) {
        char buf[64];
        for (int kind = 0; kind < 4; kind++) {
            int n = snprintf(buf, sizeof(buf), "{\"a\":\"");
            static const char fill[] = "xx\xc3\xa9xxxx\xc3\xa9xxxxxx\xc3\xa9xxxxxxx"; /* 24 bytes */
            memcpy(buf + n, fill, 24);
            n += 24;
            int v = n - 24 + at;
            if (kind == 0) /* the closing quote early: what follows is not JSON */
                buf[v] = '"';
            else if (kind == 1) /* a control byte */
                buf[v] = '\n';
            else if (kind == 2) /* a bad escape */
                buf[v] = '\\';
            buf[n++] = '"';
            buf[n++] = '}';
            CHECK_INT(sl_json_plain_object(buf, (size_t)n), kind == 3);
        }
    }
}

int main(void)
{
    test_string_offsets();
    test_plain_object();
    test_usage();
    test_usage_at();
    return sl_test_done();
}

/* The raw JSON locator (core/common/json_locate.c). */
#include <string.h>

#include "common/json_locate.h"
#include "test.h"

#define K(s)                                                                                                 \
    {                                                                                                        \
        s, sizeof(s) - 1, 0                                                                                  \
    }
#define I(i)                                                                                                 \
    {                                                                                                        \
        NULL, 0, i                                                                                           \
    }

static char got[256];

/* The bytes of the value at path in s ("" and the code when not found). */
static int at(const char *s, const sl_json_step_t *path, int n)
{
    size_t from = 0, to = 0;
    int rc = sl_json_locate(s, strlen(s), path, n, &from, &to);
    got[0] = '\0';
    if (rc == 0) {
        memcpy(got, s + from, to - from);
        got[to - from] = '\0';
    }
    return rc;
}

static void test_found(void)
{
    const char *chat =
        " {\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"be \\\"nice\\\"\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\\\\\"},"
        "{\"type\":\"text\" , \"text\" : \"b}]\"}]}],\"n\":-1.5e3,\"x\":[true,null,{}]} ";
    sl_json_step_t p1[] = {K("messages"), I(0), K("content")};
    CHECK_INT(at(chat, p1, 3), 0);
    CHECK_STR(got, "\"be \\\"nice\\\"\"");
    sl_json_step_t p2[] = {K("messages"), I(1), K("content"), I(0), K("text")};
    CHECK_INT(at(chat, p2, 5), 0);
    CHECK_STR(got, "\"a\\\\\""); /* an escaped backslash before the closing quote */
    sl_json_step_t p3[] = {K("messages"), I(1), K("content"), I(1), K("text")};
    CHECK_INT(at(chat, p3, 5), 0);
    CHECK_STR(got, "\"b}]\""); /* brackets inside a string do not count */
    sl_json_step_t p4[] = {K("n")};
    CHECK_INT(at(chat, p4, 1), 0);
    CHECK_STR(got, "-1.5e3");
    sl_json_step_t p5[] = {K("x"), I(2)};
    CHECK_INT(at(chat, p5, 2), 0);
    CHECK_STR(got, "{}");
    sl_json_step_t p6[] = {K("messages"), I(1)};
    CHECK_INT(at(chat, p6, 2), 0);
    CHECK(strncmp(got, "{\"role\":\"user\"", 14) == 0 && got[strlen(got) - 1] == '}');
    CHECK_INT(at(chat, NULL, 0), 0); /* the whole value, without the whitespace around it */
    CHECK(got[0] == '{' && got[strlen(got) - 1] == '}');
    sl_json_step_t deep[] = {K("a"), I(0), I(0)};
    CHECK_INT(at("{\"a\":[[\"\\u00e9\\ud83d\\ude00\"]]}", deep, 3), 0);
    CHECK_STR(got, "\"\\u00e9\\ud83d\\ude00\"");
}

static void test_absent(void)
{
    sl_json_step_t k[] = {K("content")};
    CHECK_INT(at("{\"contents\":\"x\",\"b\":{\"content\":1}}", k, 1),
              SL_JSON_ABSENT); /* only this object's */
    CHECK_INT(at("{}", k, 1), SL_JSON_ABSENT);
    CHECK_INT(at("[\"content\"]", k, 1), SL_JSON_ABSENT);
    CHECK_INT(at("\"content\"", k, 1), SL_JSON_ABSENT);
    sl_json_step_t i[] = {I(2)};
    CHECK_INT(at("[1,2]", i, 1), SL_JSON_ABSENT);
    CHECK_INT(at("[ ]", i, 1), SL_JSON_ABSENT);
    CHECK_INT(at("{\"a\":1}", i, 1), SL_JSON_ABSENT);
}

static void test_unsure(void)
{
    sl_json_step_t k[] = {K("content")};
    CHECK_INT(at("{\"content\":\"a\",\"content\":\"b\"}", k, 1), SL_JSON_UNSURE); /* repeated */
    CHECK_INT(at("{\"con\\u0074ent\":\"a\",\"x\":\"b\"}", k, 1), SL_JSON_UNSURE); /* escaped: may spell it */
    CHECK_INT(at("{\"content\":\"a\",\"x\\n\":1}", k, 1), SL_JSON_UNSURE);
    CHECK_INT(at("{\"content\":\"a\"", k, 1), SL_JSON_UNSURE); /* cut short */
    CHECK_INT(at("{\"content\":\"a", k, 1), SL_JSON_UNSURE);
    CHECK_INT(at("{\"content\":\"a\\\"}", k, 1), SL_JSON_UNSURE); /* the quote is escaped */
    CHECK_INT(at("{\"content\" \"a\"}", k, 1), SL_JSON_UNSURE);
    CHECK_INT(at("{\"content\":}", k, 1), SL_JSON_UNSURE);
    CHECK_INT(at("{\"content\":\"a\" \"b\"}", k, 1), SL_JSON_UNSURE);
    CHECK_INT(at("{content:1}", k, 1), SL_JSON_UNSURE);
    CHECK_INT(at("", k, 1), SL_JSON_UNSURE);
    CHECK_INT(at("   ", NULL, 0), SL_JSON_UNSURE);
    /* a repeat elsewhere is not the path's business */
    sl_json_step_t p[] = {K("a"), K("b")};
    CHECK_INT(at("{\"a\":{\"b\":1},\"c\":{\"d\":1,\"d\":2}}", p, 2), 0);
    CHECK_STR(got, "1");
    CHECK_INT(at("{\"a\":{\"b\":1},\"a\":{\"b\":2}}", p, 2), SL_JSON_UNSURE);
    sl_json_step_t e[] = {I(1)};
    CHECK_INT(at("[{\"a\":[1,{\"b\":\"]\"}]}, \"x\"", e, 1), 0); /* the element is read, not the tail */
    CHECK_STR(got, "\"x\"");
    CHECK_INT(at("[1 2]", e, 1), SL_JSON_UNSURE);
}

/* Deep nesting costs no stack: 100000 brackets skipped. */
static void test_deep(void)
{
    size_t n = 100000;
    static char s[2 * 100000 + 64];
    size_t k = 0;
    k += (size_t)sprintf(s, "{\"a\":");
    for (size_t i = 0; i < n; i++)
        s[k++] = '[';
    for (size_t i = 0; i < n; i++)
        s[k++] = ']';
    k += (size_t)sprintf(s + k, ",\"b\":\"x\"}");
    sl_json_step_t b[] = {K("b")};
    size_t from, to;
    CHECK_INT(sl_json_locate(s, k, b, 1, &from, &to), 0);
    CHECK_INT(to - from, 3);
    CHECK_INT(sl_json_locate(s, k - 20, b, 1, &from, &to), SL_JSON_UNSURE); /* cut inside the brackets */
}

static void test_chat_spans(void)
{
    const char *s =
        "{\"model\":\"m\",\"messages\":[{\"content\":\"hi \\\"x\\\"\",\"role\":\"user\"},7,"
        "{\"role\":\"assistant\",\"tool_calls\":[{\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}],"
        "\"content\":[{\"type\":\"text\",\"text\":\"a\"},\"s\",{\"text\":1}]},"
        "{\"function_call\":{\"arguments\":\"[]\"},\"content\":{\"text\":\"no\"}}],"
        "\"prompt\":[\"p\",2,\"q\"],\"input\":\"i\",\"x\":{\"messages\":[{\"role\":\"no\"}]}}";
    sl_chat_span_t sp[32];
    int n = sl_chat_spans(s, strlen(s), sp, 32);
    CHECK_INT(n, 11);
    static const int want[][3] = {
        {SL_CHAT_CONTENT, 0, -1},  {SL_CHAT_ROLE, 0, -1},     {SL_CHAT_ROLE, 2, -1},
        {SL_CHAT_TOOL_ARGS, 2, 0}, {SL_CHAT_PART_TYPE, 2, 0}, {SL_CHAT_PART_TEXT, 2, 0},
        {SL_CHAT_PART_TEXT, 2, 2}, {SL_CHAT_FC_ARGS, 3, -1},  {SL_CHAT_PROMPT, -1, 0},
        {SL_CHAT_PROMPT, -1, 2},   {SL_CHAT_INPUT, -1, -1}};
    for (int i = 0; i < 11 && i < n; i++) {
        CHECK_INT(sp[i].kind, want[i][0]);
        CHECK_INT(sp[i].msg, want[i][1]);
        CHECK_INT(sp[i].sub, want[i][2]);
    }
    CHECK(strncmp(s + sp[0].from, "\"hi \\\"x\\\"\"", sp[0].to - sp[0].from) == 0);
    CHECK(strncmp(s + sp[6].from, "1", sp[6].to - sp[6].from) == 0);
    CHECK_INT(sl_chat_spans(s, strlen(s), sp, 5), -1); /* more than max */
    CHECK_INT(sl_chat_spans("[]", 2, sp, 32), -1);
    CHECK_INT(sl_chat_spans("{\"messages\":[{\"content\":\"a\"", 26, sp, 32), -1); /* cut short */
    CHECK_INT(sl_chat_spans("{}", 2, sp, 32), 0);
}

int main(void)
{
    test_chat_spans();
    test_found();
    test_absent();
    test_unsure();
    test_deep();
    return sl_test_done();
}

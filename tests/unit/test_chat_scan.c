/* The lean path's scan of OpenAI chat requests (core/common/chat_scan.c). */
#include <stdlib.h>
#include <string.h>

#include "common/chat_scan.h"
#include "test.h"

static sl_chat_scan_t out;

static int scan_deny(const char *s, const char *deny)
{
    return sl_chat_scan(s, strlen(s), deny, strlen(deny), &out);
}

static int scan(const char *s)
{
    return scan_deny(s, "thinking top_k");
}

#define MSGS "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]"
#define REQ(rest) "{\"model\":\"m\"," MSGS rest "}"

static void test_accepts(void)
{
    const char *s = " {\"model\":\"gpt-4o\", " MSGS ",\"max_tokens\":32,\"temperature\":0.5} \n";
    CHECK(scan(s));
    CHECK_INT(out.model_off, 11);
    CHECK_INT(out.model_len, 6);
    CHECK_INT(out.stream, 0);
    CHECK_INT(out.include_usage, 0);
    CHECK_INT(out.stop_n, -1);
    CHECK_INT(out.end_off, strlen(s) - 3);
    CHECK_INT(out.n_len, 0); /* absent */
    CHECK_INT(out.temp_len, 3);
    CHECK(memcmp(s + out.temp_off, "0.5", 3) == 0);
    CHECK(scan(REQ(",\"n\":12,\"temperature\":null")) && out.n_len == 2 && out.temp_len == 0);
    CHECK(memcmp(REQ(",\"n\":12,\"temperature\":null") + out.n_off, "12", 2) == 0);
    CHECK(scan(REQ(",\"stream\":true")) && out.stream == 1 && out.include_usage == 0);
    CHECK(scan(REQ(",\"stream\":true,\"stream_options\":{ \"include_usage\" : true }")) &&
          out.include_usage == 1);
    CHECK(scan(REQ(",\"stop\":[\"a\",\"b\\n\"]")) && out.stop_n == 2);
    CHECK(scan(REQ(",\"stop\":\"x\",\"n\":null,\"seed\":1,\"user\":\"u\\u00e9\"")) && out.stop_n == -1);
    CHECK(scan(REQ(",\"response_format\":{\"type\":\"json_object\"},\"logit_bias\":{\"1\":2}")));
    CHECK(scan(REQ(",\"max_tokens\":-0,\"n\":123456789012345,\"top_p\":1e-3,\"presence_penalty\":null")));
    /* every role and content shape validate.lua takes */
    CHECK(scan(
        "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"s\"},{\"role\":\"developer\","
        "\"content\":[]},{\"role\":\"user\",\"name\":\"n\",\"content\":[{\"type\":\"text\",\"text\":\"t\"},"
        "{\"type\":\"image_url\",\"image_url\":{\"url\":\"u\",\"detail\":\"low\"}},{\"type\":\"input_audio\","
        "\"input_audio\":{\"data\":\"x\"}},{\"type\":\"file\",\"file\":null},{\"type\":\"other\",\"x\":[1]}]}"
        ","
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"c1\",\"type\":\"function\","
        "\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},{\"role\":\"tool\",\"tool_call_id\":\"c1\","
        "\"content\":\"r\"},{\"role\":\"function\",\"name\":\"f\"}]}"));
    CHECK(scan(
        REQ(",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"description\":\"d\","
            "\"parameters\":{\"type\":\"object\",\"properties\":{\"is_error\":{}}}}},{\"type\":\"web\"}],"
            "\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"f\"}}")));
    CHECK(scan(REQ(",\"tool_choice\":\"auto\",\"tools\":null")));
    CHECK(scan_deny(REQ(",\"thinking\":{}"), "top_k"));
    CHECK(scan_deny(REQ(",\"top_k\":1"), ""));
}

static void test_slow_path(void)
{
    /* not JSON, not one object, not plain */
    CHECK(!scan(""));
    CHECK(!scan("[]"));
    CHECK(!scan(REQ("") "x"));
    CHECK(!scan(REQ(",")));
    CHECK(!scan(REQ(",\"max_tokens\":01")));
    CHECK(!scan(REQ(",\"model\":\"n\"")));             /* a repeated key */
    CHECK(!scan(REQ(",\"x\":{\"a\":1,\"a\":2}")));     /* one deeper */
    CHECK(!scan(REQ(",\"mod\\u0065l\":\"n\"")));       /* an escaped key */
    CHECK(!scan("{\"model\":\"m\xff\"," MSGS "}"));    /* not UTF-8 */
    CHECK(!scan("{\"model\":\"m\\u00e9\"," MSGS "}")); /* a model with an escape */
    CHECK(!scan("{" MSGS "}"));                        /* no model */
    CHECK(!scan("{\"model\":null," MSGS "}"));
    CHECK(!scan("{\"model\":1," MSGS "}"));
    /* what the drivers would change, or the slow path words as an error */
    CHECK(!scan(REQ(",\"stream\":false")));
    CHECK(!scan(REQ(",\"stream\":null")));
    CHECK(!scan(REQ(",\"stream_options\":{\"include_usage\":true}"))); /* without stream */
    CHECK(!scan(REQ(",\"stream\":true,\"stream_options\":{}")));
    CHECK(!scan(REQ(",\"stream\":true,\"stream_options\":{ }")));
    CHECK(!scan(REQ(",\"stream\":true,\"stream_options\":{\"include_usage\":false}")));
    CHECK(!scan(REQ(",\"stream\":true,\"stream_options\":{\"include_usage\":true,\"x\":1}")));
    CHECK(!scan(REQ(",\"top_k\":1")));
    CHECK(!scan(REQ(",\"thinking\":null")));
    CHECK(!scan(REQ(",\"max_tokens\":1.5")));
    CHECK(!scan(REQ(",\"max_tokens\":1e2")));
    CHECK(!scan(REQ(",\"n\":1234567890123456")));
    CHECK(!scan(REQ(",\"temperature\":\"1\"")));
    CHECK(!scan(REQ(",\"stop\":[1]")));
    CHECK(!scan(REQ(",\"stop\":{}")));
    CHECK(!scan(REQ(",\"response_format\":[]")));
    CHECK(!scan("{\"model\":\"m\",\"messages\":[]}"));
    CHECK(!scan("{\"model\":\"m\",\"messages\":{}}"));
    CHECK(!scan("{\"model\":\"m\",\"messages\":[null]}"));
    CHECK(!scan("{\"model\":\"m\",\"messages\":[{\"role\":\"bot\",\"content\":\"x\"}]}"));
    CHECK(!scan("{\"model\":\"m\",\"messages\":[{\"role\":\"us\\u0065r\",\"content\":\"x\"}]}"));
    CHECK(!scan("{\"model\":\"m\",\"messages\":[{\"content\":\"x\"}]}"));
    CHECK(!scan("{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}]}"));
    CHECK(!scan("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":null}]}"));
    CHECK(!scan("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":{}}]}"));
    CHECK(!scan("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\",\"name\":1}]}"));
    CHECK(!scan("{\"model\":\"m\",\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}"));
    CHECK(!scan("{\"model\":\"m\",\"messages\":[{\"role\":\"tool\",\"content\":\"x\",\"tool_call_id\":\"a__"
                "ts__b\"}]}"));
    CHECK(!scan("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\",\"tool_calls\":[]}]}"));
    CHECK(!scan("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"x\",\"is_error\":false}]}"));
    CHECK(!scan("{\"model\":\"m\",\"messages\":[{\"role\":\"assistant\",\"reasoning_content\":\"r\"}]}"));
    CHECK(!scan("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\"}]}]}"));
    CHECK(!scan("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"text\":\"t\"}]}]}"));
    CHECK(!scan(
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"t\","
        "\"cache_control\":{}}]}]}"));
    CHECK(
        !scan("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\"}]}]}"));
    CHECK(!scan("{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"input_audio\","
                "\"input_audio\":\"x\"}]}]}"));
    CHECK(!scan("{\"model\":\"m\",\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"id\":\"x__ts__y\","
                "\"function\":{\"name\":\"f\"}}]}]}"));
    CHECK(!scan(
        "{\"model\":\"m\",\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"function\":{}}]}]}"));
    CHECK(!scan(
        "{\"model\":\"m\",\"messages\":[{\"role\":\"assistant\",\"tool_calls\":[{\"function\":{\"name\":"
        "\"f\"},\"extra_content\":{}}]}]}"));
    CHECK(!scan(REQ(",\"tools\":[{\"type\":\"function\"}]")));
    CHECK(!scan(REQ(",\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"f\",\"parameters\":[]}}]")));
    CHECK(!scan(REQ(",\"tools\":[{\"type\":\"web\",\"cache_control\":{}}]")));
    CHECK(!scan(REQ(",\"tools\":{}")));
    CHECK(!scan(REQ(",\"tool_choice\":{\"type\":\"function\"}")));
    CHECK(!scan(REQ(",\"tool_choice\":1")));
    CHECK(!sl_chat_scan(NULL, 0, "", 0, &out));
}

/* Every cut of a valid request is refused without reading past it (run under ASan to see the reads). */
static void test_truncated(void)
{
    const char *s =
        "{\"model\":\"m\",\"stream\":true,\"stream_options\":{\"include_usage\":true},\"messages\":[{"
        "\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"t\"}]}],\"stop\":[\"a\"]}";
    size_t n = strlen(s);
    CHECK(scan(s));
    for (size_t i = 0; i < n; i++) {
        char *buf = malloc(i ? i : 1); /* exactly i bytes: ASan sees a read past them */
        memcpy(buf, s, i);
        CHECK(!sl_chat_scan(buf, i, "", 0, &out));
        free(buf);
    }
}

int main(void)
{
    test_accepts();
    test_slow_path();
    test_truncated();
    return sl_test_done();
}

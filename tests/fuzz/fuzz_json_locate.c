/* Harness: the raw JSON locator (core/common/json_locate.c: sl_json_locate), which reads request bodies a
 * plugin edits in place (ai-pii's masks spliced into the client's bytes).
 *
 * Input: byte 1 is the path length (mod 5), then one byte per step (bit 7 set: an element, index = the low
 * bits mod 4; else a member, its name picked from a few chat-request keys), then the JSON bytes. Invariants
 * (no crash or sanitizer report besides):
 *   * the answer is 0, SL_JSON_ABSENT or SL_JSON_UNSURE; a found value lies within the bytes, is not empty
 * and starts as a JSON value starts (a string found ends with a quote);
 *   * a found value lies within the value found for the path one step shorter (when that one is found);
 *   * on strict JSON with no repeated and no escaped key (sl_json_plain_object) the answer is never
 *     SL_JSON_UNSURE, and an object found is itself such JSON;
 *   * sl_chat_spans (the texts of a chat request) answers -1 or a count within its room, every span within
 * the bytes, in byte order, not empty, a string kind's span quoted at both ends; on such strict JSON never -1
 *     (the room is ample), and a span found is where sl_json_locate finds the same path. */
#include <string.h>

#include "common/json_check.h"
#include "common/json_locate.h"
#include "fuzz.h"

static const char *const KEYS[] = {"messages", "content", "text", "a", "", "role"};

static void chat_spans(const char *s, size_t len)
{
    static sl_chat_span_t sp[4096];
    int n = sl_chat_spans(s, len, sp, 4096);
    int plain = sl_json_plain_object(s, len);
    FZ_CHECK(n >= -1 && n <= 4096);
    if (plain)
        FZ_CHECK(n >= 0 || len > 4096);
    size_t last = 0;
    for (int i = 0; i < n; i++) {
        FZ_CHECK(sp[i].from < sp[i].to && sp[i].to <= len && sp[i].from >= last);
        last = sp[i].to;
        int k = sp[i].kind;
        FZ_CHECK(k >= SL_CHAT_ROLE && k <= SL_CHAT_INPUT);
        if (k == SL_CHAT_CONTENT || k == SL_CHAT_TOOL_ARGS || k == SL_CHAT_FC_ARGS || k == SL_CHAT_PROMPT ||
            k == SL_CHAT_INPUT)
            FZ_CHECK(s[sp[i].from] == '"' && s[sp[i].to - 1] == '"' && sp[i].to - sp[i].from >= 2);
        if (plain && k == SL_CHAT_CONTENT) {
            sl_json_step_t p[] = {{"messages", 8, 0}, {NULL, 0, (size_t)sp[i].msg}, {"content", 7, 0}};
            size_t f = 0, t = 0;
            FZ_CHECK(sl_json_locate(s, len, p, 3, &f, &t) == 0 && f == sp[i].from && t == sp[i].to);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_in_t in = {data, size};
    sl_json_step_t path[4];
    int n = fz_byte(&in) % 5;
    for (int i = 0; i < n; i++) {
        uint8_t b = fz_byte(&in);
        if (b & 0x80) {
            path[i] = (sl_json_step_t){NULL, 0, b & 3};
        } else {
            const char *k = KEYS[b % (sizeof(KEYS) / sizeof(KEYS[0]))];
            path[i] = (sl_json_step_t){k, strlen(k), 0};
        }
    }
    const char *s = (const char *)in.p;
    size_t len = in.n;
    size_t from = 0, to = 0;
    chat_spans(s, len);
    int rc = sl_json_locate(s, len, path, n, &from, &to);
    FZ_CHECK(rc == 0 || rc == SL_JSON_ABSENT || rc == SL_JSON_UNSURE);
    int plain = sl_json_plain_object(s, len);
    if (plain)
        FZ_CHECK(rc != SL_JSON_UNSURE);
    if (rc != 0)
        return 0;
    FZ_CHECK(from < to && to <= len);
    FZ_CHECK(strchr("\"{[-0123456789tfn", s[from]) || !plain);
    FZ_CHECK(s[from] != '"' || (to - from >= 2 && s[to - 1] == '"'));
    if (plain && s[from] == '{')
        FZ_CHECK(sl_json_plain_object(s + from, to - from));
    if (n > 0) {
        size_t pf = 0, pt = 0;
        if (sl_json_locate(s, len, path, n - 1, &pf, &pt) == 0) /* an array's tail is not read to its end */
            FZ_CHECK(pf <= from && to <= pt);
    }
    return 0;
}

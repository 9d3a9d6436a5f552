/* Buffers, the config snapshot store and response framing helpers. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "http/access_log.h"
#include "http/response.h"
#include "shared/snapshot.h"
#include "test.h"

static int notified;

static void on_publish(void)
{
    notified++;
}

static void test_buf(void)
{
    sl_buf_t b = {0};
    CHECK_INT(sl_buf_appends(&b, "hello"), 0);
    CHECK_INT(sl_buf_append(&b, " world", 6), 0);
    CHECK_INT(b.len, 11);
    CHECK(memcmp(b.base, "hello world", 11) == 0);
    sl_buf_consume(&b, 6);
    CHECK_INT(b.len, 5);
    CHECK(memcmp(b.base, "world", 5) == 0);
    sl_buf_consume(&b, 100);
    CHECK_INT(b.len, 0);
    for (int i = 0; i < 10000; i++)
        sl_buf_append(&b, "0123456789", 10);
    CHECK_INT(b.len, 100000);
    CHECK(b.cap >= b.len);
    CHECK(memcmp(b.base + 99990, "0123456789", 10) == 0);
    CHECK_INT(sl_buf_append(&b, NULL, 0), 0);
    sl_buf_free(&b);
    CHECK(b.base == NULL && b.len == 0 && b.cap == 0);
}

static void test_snapshot(void)
{
    uint64_t version = 0, seen = 0, cfg = 0, code = 0;
    char *json = NULL, err[8];
    size_t len = 0;
    CHECK_INT(sl_snapshot_fetch(&version, &json, &len), 0); /* nothing published yet */
    sl_snapshot_on_publish(on_publish);
    CHECK_INT(sl_snapshot_publish("{\"a\":1}", 7), 1);
    CHECK_INT(notified, 1);
    CHECK_INT(sl_snapshot_fetch(&version, &json, &len), 1);
    CHECK_INT(version, 1);
    CHECK_STR(json, "{\"a\":1}");
    free(json);
    CHECK_INT(sl_snapshot_fetch(&version, &json, &len), 0); /* same version: nothing to do */
    CHECK_INT(sl_snapshot_publish("{}", 2), 2);
    CHECK_INT(sl_snapshot_fetch(&version, &json, &len), 1);
    CHECK_INT(len, 2);
    free(json);
    CHECK_INT(sl_snapshot_next_code_version(), 1);
    CHECK_INT(sl_snapshot_next_code_version(), 2);
    /* worker reports: none yet, then the last one wins; errors are truncated; ids out of range refused */
    CHECK_INT(sl_snapshot_report_get(3, &seen, &cfg, &code, err, sizeof(err)), 0);
    sl_snapshot_report(3, 2, 1, 1, "refused: a long reason");
    CHECK_INT(sl_snapshot_report_get(3, &seen, &cfg, &code, err, sizeof(err)), 1);
    CHECK_INT(seen, 2);
    CHECK_INT(cfg, 1);
    CHECK_INT(code, 1);
    CHECK_STR(err, "refused");
    sl_snapshot_report(3, 2, 2, 2, NULL);
    CHECK_INT(sl_snapshot_report_get(3, &seen, &cfg, &code, err, sizeof(err)), 1);
    CHECK_INT(cfg, 2);
    CHECK_STR(err, "");
    sl_snapshot_report(SL_SNAPSHOT_MAX_WORKERS, 1, 1, 1, "x"); /* ignored */
    CHECK_INT(sl_snapshot_report_get(SL_SNAPSHOT_MAX_WORKERS, &seen, &cfg, &code, err, sizeof(err)), -EINVAL);
    CHECK_INT(sl_snapshot_report_get(-1, &seen, &cfg, &code, err, sizeof(err)), -EINVAL);
    sl_snapshot_on_publish(NULL);
    sl_snapshot_close();
}

static void test_response_helpers(void)
{
    char head[256];
    size_t n = sl__resp_head_prefix(head, sizeof(head), 1, 404);
    CHECK(n > 0 && strncmp(head, "HTTP/1.1 404 Not Found\r\nServer: sluice\r\nDate: ", 45) == 0);
    CHECK(strcmp(head + n - 6, "GMT\r\n\r\n") != 0 && strcmp(head + n - 5, "GMT\r\n") == 0);
    n = sl__resp_head_prefix(head, sizeof(head), 0, 200);
    CHECK(strncmp(head, "HTTP/1.0 200 OK\r\n", 17) == 0);
    CHECK_STR(sl_status_text(429), "Too Many Requests");
    CHECK_STR(sl_status_text(799), "Unknown");
    CHECK_INT(sl_access_log_field("latency_ms"), SL_ALOG_LATENCY);
    CHECK_INT(sl_access_log_field("route"), SL_ALOG_ROUTE);
    CHECK_INT(sl_access_log_field("nope"), 0);
}

int main(void)
{
    test_buf();
    test_snapshot();
    test_response_helpers();
    return sl_test_done();
}

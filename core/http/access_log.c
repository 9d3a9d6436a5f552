/* Access log as JSON lines. Each worker thread buffers its lines and writes them in batches (a flush timer
 * bounds the delay), so logging costs no syscall per request. */
#include "http/access_log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/log.h"

static int alog_fd = -1;
static int alog_fields;
static __thread sl_buf_t tbuf;

static const char *const names[] = {"time",          "client", "method",     "path",
                                    "query",         "status", "bytes",      "request_bytes",
                                    "latency_ms",    "upstream_latency_ms", "route", "upstream",
                                    "request_id",    "user_agent", "upstream_status"};

int sl_access_log_field(const char *name)
{
    for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(names[i], name) == 0)
            return 1 << i;
    return 0;
}

int sl_access_log_open(const char *path, int fields)
{
    alog_fields = fields;
    if (path == NULL || strcmp(path, "off") == 0 || fields == 0) {
        alog_fd = -1;
        return 0;
    }
    if (strcmp(path, "stdout") == 0) {
        alog_fd = 1;
        return 0;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    alog_fd = fd;
    return 0;
}

/* A JSON string of bytes from a client or an upstream: valid UTF-8 as it is, control characters (C0, DEL, C1)
 * as \u00XX, and each byte that is not UTF-8 as the text \xNN (JSON must be UTF-8, and a reader should still
 * see which byte it was). */
static void put_str(sl_buf_t *b, const char *key, const char *s, size_t len, int *first)
{
    char tmp[8];
    sl_buf_appends(b, *first ? "\"" : ",\"");
    *first = 0;
    sl_buf_appends(b, key);
    sl_buf_appends(b, "\":\"");
    for (size_t i = 0; i < len;) {
        unsigned char ch = (unsigned char)s[i];
        size_t k = sl_utf8_printable(s + i, len - i);
        if (ch == '"' || ch == '\\') {
            char e[2] = {'\\', (char)ch};
            sl_buf_append(b, e, 2);
            i++;
        } else if (k > 0) {
            sl_buf_append(b, s + i, k);
            i += k;
        } else if (ch < 0x80) {
            int n = snprintf(tmp, sizeof(tmp), "\\u%04x", ch);
            sl_buf_append(b, tmp, (size_t)n);
            i++;
        } else if (ch == 0xc2 && i + 1 < len && (unsigned char)s[i + 1] >= 0x80 &&
                   (unsigned char)s[i + 1] <= 0x9f) { /* a C1 control, well encoded */
            int n = snprintf(tmp, sizeof(tmp), "\\u%04x", (unsigned char)s[i + 1]);
            sl_buf_append(b, tmp, (size_t)n);
            i += 2;
        } else {
            int n = snprintf(tmp, sizeof(tmp), "\\\\x%02x", ch);
            sl_buf_append(b, tmp, (size_t)n);
            i++;
        }
    }
    sl_buf_append(b, "\"", 1);
}

static void put_num(sl_buf_t *b, const char *key, const char *fmt, double v, int *first)
{
    char tmp[64];
    int n = snprintf(tmp, sizeof(tmp), "%s\"%s\":", *first ? "" : ",", key);
    sl_buf_append(b, tmp, (size_t)n);
    n = snprintf(tmp, sizeof(tmp), fmt, v);
    sl_buf_append(b, tmp, (size_t)n);
    *first = 0;
}

int sl_access_log_enabled(void)
{
    return alog_fd >= 0;
}

void sl_access_log(sl_worker_t *w, const sl_req_t *r)
{
    (void)w;
    if (alog_fd < 0 || (r->status == 0 && !r->client_gone))
        return; /* nothing was answered (connection refused before a request) */
    int f = alog_fields, first = 1;
    sl_buf_t *b = &tbuf;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    double now = (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
    sl_buf_append(b, "{", 1);
    if (f & SL_ALOG_TIME) {
        char ts[40];
        time_t t = (time_t)r->start_time;
        struct tm tm;
        gmtime_r(&t, &tm);
        int n = snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                         tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                         (int)((r->start_time - (double)t) * 1000));
        put_str(b, "time", ts, (size_t)n, &first);
    }
    if (f & SL_ALOG_CLIENT)
        put_str(b, "client", r->client_ip, r->client_ip_len, &first);
    if (f & SL_ALOG_METHOD)
        put_str(b, "method", r->method, r->method_len, &first);
    if (f & SL_ALOG_PATH)
        put_str(b, "path", r->path, r->path_len, &first);
    if (f & SL_ALOG_QUERY)
        put_str(b, "query", r->query, r->query_len, &first);
    if (f & SL_ALOG_STATUS)
        put_num(b, "status", "%.0f", r->client_abort ? 499 : r->status ? r->status : r->client_gone ? 499 : 0,
                &first);
    if (f & SL_ALOG_BYTES)
        put_num(b, "bytes", "%.0f", (double)r->bytes_sent, &first);
    if (f & SL_ALOG_REQUEST_BYTES)
        put_num(b, "request_bytes", "%.0f", (double)(r->head.len + r->body_received), &first);
    if (f & SL_ALOG_LATENCY)
        put_num(b, "latency_ms", "%.3f", (now - r->start_time) * 1000, &first);
    if (f & SL_ALOG_UPSTREAM_LATENCY)
        put_num(b, "upstream_latency_ms", "%.3f", r->upstream_time * 1000, &first);
    if (f & SL_ALOG_UPSTREAM_STATUS)
        put_num(b, "upstream_status", "%.0f", r->upstream_status, &first);
    if (f & SL_ALOG_UPSTREAM)
        put_str(b, "upstream", r->upstream_addr, strlen(r->upstream_addr), &first);
    if (f & SL_ALOG_ROUTE)
        put_str(b, "route", r->route_id, r->route_id_len, &first);
    if (f & SL_ALOG_REQUEST_ID) {
        char id[24];
        int n = snprintf(id, sizeof(id), "%016llx", (unsigned long long)r->id);
        put_str(b, "request_id", id, (size_t)n, &first);
    }
    if (f & SL_ALOG_USER_AGENT) {
        const sl_header_t *ua = sl_req_header(r, "user-agent", 10);
        put_str(b, "user_agent", ua ? ua->value : "", ua ? ua->value_len : 0, &first);
    }
    if (r->log_extra.len > 0)
        sl_buf_append(b, first ? r->log_extra.base + 1 : r->log_extra.base, r->log_extra.len - (first ? 1 : 0));
    sl_buf_append(b, "}\n", 2);
    if (b->len >= 16384)
        sl_access_log_flush();
}

void sl_access_log_flush(void)
{
    sl_buf_t *b = &tbuf;
    size_t off = 0;
    while (alog_fd >= 0 && off < b->len) {
        ssize_t n = write(alog_fd, b->base + off, b->len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    b->len = 0;
}

void sl_access_log_thread_close(void)
{
    sl_access_log_flush();
    sl_buf_free(&tbuf);
}

void sl_access_log_close(void)
{
    sl_access_log_flush();
    sl_buf_free(&tbuf);
    if (alog_fd > 2)
        close(alog_fd);
    alog_fd = -1;
}

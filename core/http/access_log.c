/* Access log as JSON lines. Each worker thread buffers its lines and writes them in batches (a flush timer
 * bounds the delay), so logging costs no syscall per request. */
#include "http/access_log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
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

static const char *const names[] = {
    "time",   "client",   "method",        "path",       "query",
    "status", "bytes",    "request_bytes", "latency_ms", "upstream_latency_ms",
    "route",  "upstream", "request_id",    "user_agent", "upstream_status"};

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

/* Numbers are written by hand: printf's float formatting was a tenth of the cost of a logged request. */

static void put_key(sl_buf_t *b, const char *key, int *first)
{
    sl_buf_appends(b, *first ? "\"" : ",\"");
    sl_buf_appends(b, key);
    sl_buf_append(b, "\":", 2);
    *first = 0;
}

/* The decimal digits of v into the end of tmp (20 bytes); returns where they start. */
static char *digits(char *end, uint64_t v)
{
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    return end;
}

static void put_uint(sl_buf_t *b, const char *key, uint64_t v, int *first)
{
    char tmp[24];
    char *p = digits(tmp + sizeof(tmp), v);
    put_key(b, key, first);
    sl_buf_append(b, p, (size_t)(tmp + sizeof(tmp) - p));
}

/* A duration in milliseconds with 3 decimals, as "%.3f" writes it. */
static void put_ms(sl_buf_t *b, const char *key, double ms, int *first)
{
    char tmp[48];
    if (!(ms > -1e15 && ms < 1e15)) { /* absurd (or NaN): printf's business */
        int n = snprintf(tmp, sizeof(tmp), "%.3f", ms);
        put_key(b, key, first);
        sl_buf_append(b, tmp, (size_t)(n > 0 && n < (int)sizeof(tmp) ? n : 0));
        return;
    }
    int neg = ms < 0;
    uint64_t thousandths = (uint64_t)((neg ? -ms : ms) * 1000 + 0.5);
    char *end = tmp + sizeof(tmp);
    char *p = digits(end - 4, thousandths / 1000);
    if (neg)
        *--p = '-';
    uint64_t f = thousandths % 1000;
    end[-4] = '.';
    end[-3] = (char)('0' + f / 100);
    end[-2] = (char)('0' + f / 10 % 10);
    end[-1] = (char)('0' + f % 10);
    put_key(b, key, first);
    sl_buf_append(b, p, (size_t)(end - p));
}

static void two(char *p, int v)
{
    p[0] = (char)('0' + v / 10 % 10);
    p[1] = (char)('0' + v % 10);
}

/* "YYYY-MM-DDTHH:MM:SS.mmmZ" of t (seconds); the date and time of day are made once a second. */
static void put_time(sl_buf_t *b, double t, int *first)
{
    static __thread time_t last = -1;
    static __thread char ts[24];
    time_t sec = (time_t)t;
    if (sec != last) {
        struct tm tm;
        gmtime_r(&sec, &tm);
        int y = tm.tm_year + 1900;
        two(ts, y / 100);
        two(ts + 2, y % 100);
        ts[4] = '-';
        two(ts + 5, tm.tm_mon + 1);
        ts[7] = '-';
        two(ts + 8, tm.tm_mday);
        ts[10] = 'T';
        two(ts + 11, tm.tm_hour);
        ts[13] = ':';
        two(ts + 14, tm.tm_min);
        ts[16] = ':';
        two(ts + 17, tm.tm_sec);
        ts[19] = '.';
        ts[23] = 'Z';
        last = sec;
    }
    int ms = (int)((t - (double)sec) * 1000);
    ms = ms < 0 ? 0 : ms > 999 ? 999 : ms;
    ts[20] = (char)('0' + ms / 100);
    two(ts + 21, ms % 100);
    put_key(b, "time", first);
    sl_buf_append(b, "\"", 1);
    sl_buf_append(b, ts, sizeof(ts));
    sl_buf_append(b, "\"", 1);
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
    if (f & SL_ALOG_TIME)
        put_time(b, r->start_time, &first);
    if (f & SL_ALOG_CLIENT)
        put_str(b, "client", r->client_ip, r->client_ip_len, &first);
    if (f & SL_ALOG_METHOD)
        put_str(b, "method", r->method, r->method_len, &first);
    if (f & SL_ALOG_PATH)
        put_str(b, "path", r->path, r->path_len, &first);
    if (f & SL_ALOG_QUERY)
        put_str(b, "query", r->query, r->query_len, &first);
    if (f & SL_ALOG_STATUS)
        put_uint(b, "status",
                 r->client_abort  ? 499
                 : r->status > 0  ? (uint64_t)r->status
                 : r->client_gone ? 499
                                  : 0,
                 &first);
    if (f & SL_ALOG_BYTES)
        put_uint(b, "bytes", r->bytes_sent, &first);
    if (f & SL_ALOG_REQUEST_BYTES)
        put_uint(b, "request_bytes", r->head.len + r->body_received, &first);
    if (f & SL_ALOG_LATENCY)
        put_ms(b, "latency_ms", (now - r->start_time) * 1000, &first);
    if (f & SL_ALOG_UPSTREAM_LATENCY)
        put_ms(b, "upstream_latency_ms", r->upstream_time * 1000, &first);
    if (f & SL_ALOG_UPSTREAM_STATUS)
        put_uint(b, "upstream_status", r->upstream_status, &first);
    if (f & SL_ALOG_UPSTREAM)
        put_str(b, "upstream", r->upstream_addr, strlen(r->upstream_addr), &first);
    if (f & SL_ALOG_ROUTE)
        put_str(b, "route", r->route_id, r->route_id_len, &first);
    if (f & SL_ALOG_REQUEST_ID) {
        char id[16];
        for (int i = 0; i < 16; i++)
            id[i] = "0123456789abcdef"[(r->id >> (60 - 4 * i)) & 15];
        put_str(b, "request_id", id, sizeof(id), &first);
    }
    if (f & SL_ALOG_USER_AGENT) {
        const sl_header_t *ua = sl_req_header(r, "user-agent", 10);
        put_str(b, "user_agent", ua ? ua->value : "", ua ? ua->value_len : 0, &first);
    }
    if (r->log_extra.len > 0)
        sl_buf_append(b, first ? r->log_extra.base + 1 : r->log_extra.base,
                      r->log_extra.len - (first ? 1 : 0));
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

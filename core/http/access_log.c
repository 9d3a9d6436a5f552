/* Access log as JSON lines. Each worker thread buffers its lines and writes them in batches (a flush timer
 * bounds the delay), so logging costs no syscall per request. */
#include "http/access_log.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdint.h>
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

/* The line is written straight into the thread's buffer through a cursor, after one reservation for the
 * longest line these fields can make: appending field by field (a bounds check, a call and a strlen for every
 * key and value) was most of what logging cost. Each field is written with its leading comma; the first one's
 * comma becomes the '{'. */

/* The longest line without its strings: the keys (about 200 bytes), numbers (20 digits each), time. */
#define FIXED_MAX 512
/* The most one byte of a string can become: "\u00XX". */
#define ESC_MAX 6

/* Writes a key given as a string literal: ,"name": */
#define KEY(p, lit)                                                                                          \
    ((p) = (char *)memcpy((p), ",\"" lit "\":", sizeof(",\"" lit "\":") - 1) + sizeof(",\"" lit "\":") - 1)

static const char hexd[] = "0123456789abcdef";

/* Bytes of a word: whether one is below 0x20 ((x - 0x20..) & ~x & HIGH), has its high bit, or equals c. */
#define ONES 0x0101010101010101ULL
#define HIGH 0x8080808080808080ULL
#define HAS_BYTE(x, c) ((((x) ^ (ONES * (c))) - ONES) & ~((x) ^ (ONES * (c))) & HIGH)

/* s as the inside of a JSON string, from bytes of a client or an upstream: valid UTF-8 as it is, control
 * characters (C0, DEL, C1) as \u00XX, and each byte that is not UTF-8 as the text \xNN (JSON must be UTF-8,
 * and a reader should still see which byte it was). At most ESC_MAX bytes per byte of s. */
static char *put_chars(char *p, const char *s, size_t len)
{
    size_t i = 0;
    for (; i + 8 <= len; i += 8) { /* 8 bytes at a time while they are all printable ASCII but '"' and '\' */
        uint64_t x;
        memcpy(&x, s + i, 8);
        if (((x - ONES * 0x20) & ~x & HIGH) | (x & HIGH) | HAS_BYTE(x, '"') | HAS_BYTE(x, '\\') |
            HAS_BYTE(x, 0x7f))
            break;
        memcpy(p, &x, 8);
        p += 8;
    }
    while (i < len) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') { /* most bytes: printable ASCII */
            *p++ = (char)ch;
            i++;
            continue;
        }
        size_t k = sl_utf8_printable(s + i, len - i);
        if (ch == '"' || ch == '\\') {
            *p++ = '\\';
            *p++ = (char)ch;
            i++;
        } else if (k > 0) {
            memcpy(p, s + i, k);
            p += k;
            i += k;
        } else if (ch < 0x80 ||
                   (ch == 0xc2 && i + 1 < len && (unsigned char)s[i + 1] >= 0x80 &&
                    (unsigned char)s[i + 1] <= 0x9f)) { /* C0 or DEL, or a C1 control well encoded */
            unsigned c = ch < 0x80 ? ch : (unsigned char)s[i + 1];
            memcpy(p, "\\u00", 4);
            p[4] = hexd[c >> 4];
            p[5] = hexd[c & 15];
            p += 6;
            i += ch < 0x80 ? 1 : 2;
        } else {
            memcpy(p, "\\\\x", 3);
            p[3] = hexd[ch >> 4];
            p[4] = hexd[ch & 15];
            p += 5;
            i++;
        }
    }
    return p;
}

static char *put_str(char *p, const char *s, size_t len)
{
    *p++ = '"';
    p = put_chars(p, s, len);
    *p++ = '"';
    return p;
}

/* Numbers are written by hand: printf's float formatting was a tenth of the cost of a logged request. */

static char *put_uint(char *p, uint64_t v)
{
    char tmp[24];
    char *end = tmp + sizeof(tmp), *d = end;
    do {
        *--d = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0);
    memcpy(p, d, (size_t)(end - d));
    return p + (end - d);
}

/* A duration in milliseconds with 3 decimals, as "%.3f" writes it; null when it is not a number or absurd. */
static char *put_ms(char *p, double ms)
{
    if (!(ms > -1e15 && ms < 1e15)) {
        memcpy(p, "null", 4);
        return p + 4;
    }
    if (ms < 0) {
        *p++ = '-';
        ms = -ms;
    }
    uint64_t thousandths = (uint64_t)(ms * 1000 + 0.5);
    p = put_uint(p, thousandths / 1000);
    unsigned f = (unsigned)(thousandths % 1000);
    p[0] = '.';
    p[1] = (char)('0' + f / 100);
    p[2] = (char)('0' + f / 10 % 10);
    p[3] = (char)('0' + f % 10);
    return p + 4;
}

static void two(char *p, int v)
{
    p[0] = (char)('0' + v / 10 % 10);
    p[1] = (char)('0' + v % 10);
}

/* "YYYY-MM-DDTHH:MM:SS.mmmZ" of t (seconds), quoted; the date and time of day are made once a second. */
static char *put_time(char *p, double t)
{
    static __thread time_t last = -1;
    static __thread char ts[26];
    time_t sec = (time_t)t;
    if (sec != last) {
        struct tm tm;
        gmtime_r(&sec, &tm);
        int y = tm.tm_year + 1900;
        ts[0] = '"';
        two(ts + 1, y / 100);
        two(ts + 3, y % 100);
        ts[5] = '-';
        two(ts + 6, tm.tm_mon + 1);
        ts[8] = '-';
        two(ts + 9, tm.tm_mday);
        ts[11] = 'T';
        two(ts + 12, tm.tm_hour);
        ts[14] = ':';
        two(ts + 15, tm.tm_min);
        ts[17] = ':';
        two(ts + 18, tm.tm_sec);
        ts[20] = '.';
        ts[24] = 'Z';
        ts[25] = '"';
        last = sec;
    }
    int ms = (int)((t - (double)sec) * 1000);
    ms = ms < 0 ? 0 : ms > 999 ? 999 : ms;
    ts[21] = (char)('0' + ms / 100);
    two(ts + 22, ms % 100);
    memcpy(p, ts, sizeof(ts));
    return p + sizeof(ts);
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
    int f = alog_fields;
    const sl_header_t *ua = (f & SL_ALOG_USER_AGENT) ? sl_req_header(r, "user-agent", 10) : NULL;
    size_t ua_len = ua ? ua->value_len : 0;
    size_t up_len = (f & SL_ALOG_UPSTREAM) ? strnlen(r->upstream_addr, sizeof(r->upstream_addr)) : 0;
    size_t strings =
        r->client_ip_len + r->method_len + r->path_len + r->query_len + r->route_id_len + ua_len + up_len;
    sl_buf_t *b = &tbuf;
    if (sl_buf_reserve(b, FIXED_MAX + ESC_MAX * strings + r->log_extra.len) != 0)
        return; /* out of memory: the line is lost, not the request */
    char *start = b->base + b->len, *p = start;
    if (f & SL_ALOG_TIME) {
        KEY(p, "time");
        p = put_time(p, r->start_time);
    }
    if (f & SL_ALOG_CLIENT) {
        KEY(p, "client");
        p = put_str(p, r->client_ip, r->client_ip_len);
    }
    if (f & SL_ALOG_METHOD) {
        KEY(p, "method");
        p = put_str(p, r->method, r->method_len);
    }
    if (f & SL_ALOG_PATH) {
        KEY(p, "path");
        p = put_str(p, r->path, r->path_len);
    }
    if (f & SL_ALOG_QUERY) {
        KEY(p, "query");
        p = put_str(p, r->query, r->query_len);
    }
    if (f & SL_ALOG_STATUS) {
        KEY(p, "status");
        p = put_uint(p, r->client_abort  ? 499
                        : r->status > 0  ? (uint64_t)r->status
                        : r->client_gone ? 499
                                         : 0);
    }
    if (f & SL_ALOG_BYTES) {
        KEY(p, "bytes");
        p = put_uint(p, r->bytes_sent);
    }
    if (f & SL_ALOG_REQUEST_BYTES) {
        KEY(p, "request_bytes");
        p = put_uint(p, r->head.len + r->body_received);
    }
    if (f & SL_ALOG_LATENCY) {
        struct timeval tv;
        gettimeofday(&tv, NULL);
        KEY(p, "latency_ms");
        p = put_ms(p, ((double)tv.tv_sec + (double)tv.tv_usec / 1e6 - r->start_time) * 1000);
    }
    if (f & SL_ALOG_UPSTREAM_LATENCY) {
        KEY(p, "upstream_latency_ms");
        p = put_ms(p, r->upstream_time * 1000);
    }
    if (f & SL_ALOG_UPSTREAM_STATUS) {
        KEY(p, "upstream_status");
        p = put_uint(p, r->upstream_status);
    }
    if (f & SL_ALOG_UPSTREAM) {
        KEY(p, "upstream");
        p = put_str(p, r->upstream_addr, up_len);
    }
    if (f & SL_ALOG_ROUTE) {
        KEY(p, "route");
        p = put_str(p, r->route_id, r->route_id_len);
    }
    if (f & SL_ALOG_REQUEST_ID) {
        KEY(p, "request_id");
        *p++ = '"';
        for (int i = 0; i < 16; i++)
            *p++ = hexd[(r->id >> (60 - 4 * i)) & 15];
        *p++ = '"';
    }
    if (f & SL_ALOG_USER_AGENT) {
        KEY(p, "user_agent");
        p = put_str(p, ua ? ua->value : "", ua_len);
    }
    if (r->log_extra.len > 0) { /* ,"name":json pairs */
        memcpy(p, r->log_extra.base, r->log_extra.len);
        p += r->log_extra.len;
    }
    if (p == start)
        *p++ = '{';
    else
        *start = '{'; /* the first field's comma */
    memcpy(p, "}\n", 2);
    p += 2;
    b->len = (size_t)(p - b->base);
    if (b->len >= 16384)
        sl_access_log_flush();
}

/* v as cjson writes a number ("%.14g"): integers by hand (token counts, statuses), fractions (costs) by
 * printf. */
static char *put_num(char *p, double v)
{
    if (v == (double)(int64_t)v && v > -1e15 && v < 1e15) {
        if (v < 0) {
            *p++ = '-';
            v = -v;
        }
        return put_uint(p, (uint64_t)v);
    }
    return p + snprintf(p, 32, "%.14g", v);
}

#define AI_STR(field)                                                                                        \
    if (a->field != NULL) {                                                                                  \
        KEY(p, #field);                                                                                      \
        p = put_str(p, a->field, a->field##_len);                                                            \
    }
#define AI_NUM(field, put)                                                                                   \
    if (isfinite(a->field)) {                                                                                \
        KEY(p, #field);                                                                                      \
        p = put(p, a->field);                                                                                \
    }

int sl_req_log_ai(sl_req_t *r, const sl_log_ai_t *a)
{
    size_t strs = (size_t)a->provider_len + a->model_len + a->requested_model_len + a->cut_len + a->cache_len;
    size_t max = FIXED_MAX + strs * ESC_MAX;
    if (r->log_extra.len + strs > 16384) /* the bound of sl_req_log_field: a line stays a line */
        return -1;
    if (sl_buf_reserve(&r->log_extra, max))
        return -1;
    char *start = r->log_extra.base + r->log_extra.len;
    char *p = start;
    memcpy(p, ",\"ai\":", 6);
    p += 6;
    char *first = p; /* the first member's comma becomes the '{' */
    AI_STR(provider)
    AI_STR(model)
    AI_STR(requested_model)
    AI_NUM(status, put_num)
    AI_NUM(prompt_tokens, put_num)
    AI_NUM(completion_tokens, put_num)
    AI_NUM(cost, put_num)
    if (a->estimated) {
        KEY(p, "estimated");
        memcpy(p, "true", 4);
        p += 4;
    }
    if (a->stream) {
        KEY(p, "stream");
        memcpy(p, "true", 4);
        p += 4;
    }
    AI_STR(cut)
    AI_NUM(ttft_ms, put_ms)
    AI_NUM(latency_ms, put_ms)
    AI_STR(cache)
    AI_NUM(saved_tokens, put_num)
    AI_NUM(saved_cost, put_num)
    if (p == first) {
        *p++ = '{';
    } else {
        *first = '{';
    }
    *p++ = '}';
    r->log_extra.len += (size_t)(p - start);
    return 0;
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

/* Error log: whole lines written with one write(2) so threads never interleave inside a line, every byte that
 * is not printable UTF-8 escaped (\xNN) so a message carrying what a client or an upstream sent stays one
 * honest line. Text that is several lines on purpose goes through sl_log_lines. */
#include "common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int log_fd = 2;
static int log_level = SL_LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

int sl_log_open(const char *path)
{
    if (path == NULL || strcmp(path, "stderr") == 0) {
        sl_log_close();
        return 0;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    sl_log_close();
    log_fd = fd;
    return 0;
}

void sl_log_close(void)
{
    if (log_fd > 2)
        close(log_fd);
    log_fd = 2;
}

void sl_log_set_level(int level)
{
    log_level = level;
}

int sl_log_level_parse(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(name, level_names[i]) == 0)
            return i;
    return -1;
}

int sl_log_enabled(int level)
{
    return level >= log_level;
}

size_t sl_utf8_printable(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    unsigned c = s[0], cp;
    size_t len;
    if (c < 0x80)
        return c >= 0x20 && c != 0x7f;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    /* overlong forms, surrogates, past U+10FFFF, and the C1 controls (some terminals obey U+009B as CSI) */
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff) || cp <= 0x9f)
        return 0;
    return len;
}

/* Appends src to line[n, cap) with every byte that is not printable UTF-8 written as \xNN: whatever a client
 * or an upstream put in a message cannot end the line (forging the next one) nor drive the terminal reading
 * it. Stops before a character that would not fit; returns the new length. */
static size_t put_escaped(char *line, size_t n, size_t cap, const char *src, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < len;) {
        size_t k = sl_utf8_printable(src + i, len - i);
        if (k > 0) {
            if (n + k > cap)
                break;
            memcpy(line + n, src + i, k);
            n += k;
            i += k;
            continue;
        }
        if (n + 4 > cap)
            break;
        unsigned char ch = (unsigned char)src[i++];
        line[n++] = '\\';
        line[n++] = 'x';
        line[n++] = hex[ch >> 4];
        line[n++] = hex[ch & 15];
    }
    return n;
}

/* One line "TIME [level] PREFIXMESSAGE\n" (both escaped), written with one write(2). */
static void emit(int level, const char *prefix, size_t plen, const char *msg, size_t len)
{
    char line[4096];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ [%s] ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                     level_names[level < 0   ? 0
                                 : level > 3 ? 3
                                             : level]);
    size_t end = put_escaped(line, (size_t)n, sizeof(line) - 1, prefix, plen);
    end = put_escaped(line, end, sizeof(line) - 1, msg, len);
    line[end++] = '\n';
    ssize_t r;
    do
        r = write(log_fd, line, end);
    while (r < 0 && errno == EINTR);
}

void sl_log(int level, const char *fmt, ...)
{
    if (level < log_level)
        return;
    char msg[3072];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    emit(level, "", 0, msg, (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1);
}

void sl_log_write(int level, const char *msg, unsigned long len)
{
    if (level >= log_level)
        emit(level, "", 0, msg, len);
}

void sl_log_lines(int level, const char *prefix, const char *text, size_t len)
{
    if (level < log_level)
        return;
    size_t plen = strlen(prefix);
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *stop = nl ? nl : end;
        /* a traceback indents with tabs: two spaces read the same and are not escaped */
        char lead[64];
        size_t ntab = 0;
        while (p < stop && *p == '\t' && ntab < sizeof(lead) / 2) {
            lead[2 * ntab] = lead[2 * ntab + 1] = ' ';
            ntab++;
            p++;
        }
        if (stop > p || ntab > 0) {
            char head[512];
            size_t hlen = plen < sizeof(head) - sizeof(lead) ? plen : sizeof(head) - sizeof(lead);
            memcpy(head, prefix, hlen);
            memcpy(head + hlen, lead, 2 * ntab);
            emit(level, head, hlen + 2 * ntab, p, (size_t)(stop - p));
        }
        p = nl ? nl + 1 : end;
    }
}

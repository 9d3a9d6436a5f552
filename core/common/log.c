/* Error log: whole lines written with one write(2) so threads never interleave inside a line. */
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

static void emit(int level, const char *msg, size_t len)
{
    char line[4096];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ [%s] ", tm.tm_year + 1900,
                     tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                     level_names[level < 0 ? 0 : level > 3 ? 3 : level]);
    if (len > sizeof(line) - (size_t)n - 1)
        len = sizeof(line) - (size_t)n - 1;
    memcpy(line + n, msg, len);
    n += (int)len;
    line[n++] = '\n';
    ssize_t r;
    do
        r = write(log_fd, line, (size_t)n);
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
    emit(level, msg, (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1);
}

void sl_log_write(int level, const char *msg, unsigned long len)
{
    if (level >= log_level)
        emit(level, msg, len);
}

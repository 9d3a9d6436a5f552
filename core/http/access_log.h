#ifndef SL_ACCESS_LOG_H
#define SL_ACCESS_LOG_H

#include "http/request.h"
#include "server/worker.h"

enum {
    SL_ALOG_TIME = 1 << 0,
    SL_ALOG_CLIENT = 1 << 1,
    SL_ALOG_METHOD = 1 << 2,
    SL_ALOG_PATH = 1 << 3,
    SL_ALOG_QUERY = 1 << 4,
    SL_ALOG_STATUS = 1 << 5,
    SL_ALOG_BYTES = 1 << 6,
    SL_ALOG_REQUEST_BYTES = 1 << 7,
    SL_ALOG_LATENCY = 1 << 8,
    SL_ALOG_UPSTREAM_LATENCY = 1 << 9,
    SL_ALOG_ROUTE = 1 << 10,
    SL_ALOG_UPSTREAM = 1 << 11,
    SL_ALOG_REQUEST_ID = 1 << 12,
    SL_ALOG_USER_AGENT = 1 << 13,
    SL_ALOG_UPSTREAM_STATUS = 1 << 14,
};

/** Maps an access_log field name to its SL_ALOG_* bit, or 0 when unknown. */
int sl_access_log_field(const char *name);
/** Opens the access log ("stdout", "off", or a file path); returns 0 or -errno. Call before workers start. */
int sl_access_log_open(const char *path, int fields);
/** Non-zero when an access log is written (so plugins can skip building fields for it). */
int sl_access_log_enabled(void);
/** Appends one JSON line for a finished request to this thread's buffer (flushed when large or by timer). */
void sl_access_log(sl_worker_t *w, const sl_req_t *r);
/** Writes out this thread's buffered lines. */
void sl_access_log_flush(void);
/** Flushes and frees the calling thread's buffer (a worker thread at exit). */
void sl_access_log_thread_close(void);
/** Closes the access log file. */
void sl_access_log_close(void);

#endif

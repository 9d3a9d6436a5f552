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

/* The usage of one AI request for its access log line's "ai" object (FFI: lua/sluice/pdk/base.lua). A string
 * is left out when its pointer is NULL, a number when it is NaN (or not finite); the flags are written only
 * when set. The members go into the object in this order. */
typedef struct sl_log_ai {
    const char *provider, *model, *requested_model, *cut, *cache;
    uint32_t provider_len, model_len, requested_model_len, cut_len, cache_len;
    double status, prompt_tokens, completion_tokens, cost, ttft_ms, latency_ms, saved_tokens, saved_cost;
    int32_t estimated, stream;
} sl_log_ai_t;

/** Maps an access_log field name to its SL_ALOG_* bit, or 0 when unknown. */
int sl_access_log_field(const char *name);
/** Opens the access log ("stdout", "off", or a file path); returns 0 or -errno. Call before workers start. */
int sl_access_log_open(const char *path, int fields);
/** Non-zero when an access log is written (so plugins can skip building fields for it). */
int sl_access_log_enabled(void);
/** Adds ,"ai":{...} of a to r's access log line (one FFI call instead of a Lua table and its encoding);
 *  0, or -1 when the line would grow past its bound or on out of memory. */
int sl_req_log_ai(sl_req_t *r, const sl_log_ai_t *a);
/** Appends one JSON line for a finished request to this thread's buffer (flushed when large or by timer). */
void sl_access_log(sl_worker_t *w, const sl_req_t *r);
/** Writes out this thread's buffered lines. */
void sl_access_log_flush(void);
/** Flushes and frees the calling thread's buffer (a worker thread at exit). */
void sl_access_log_thread_close(void);
/** Closes the access log file. */
void sl_access_log_close(void);

#endif

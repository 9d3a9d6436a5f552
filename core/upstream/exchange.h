/* Private to core/upstream: one HTTP/1.1 exchange with an upstream, the state machine that the proxy of a
 * client request (proxy.c) and the plugins' HTTP client (client.c) are thin owners of (see exchange.c). */
#ifndef SL_EXCHANGE_H
#define SL_EXCHANGE_H

#include <llhttp.h>
#include <stdint.h>
#include <uv.h>

#include "common/buf.h"
#include "server/worker.h"
#include "upstream/pool.h"
#include "upstream/upbody.h"
#include "upstream/uphdrs.h"

typedef struct sl_exchange sl_exchange_t;

/* sl_exchange_ops_t.head: stop parsing after the head until the owner goes on (sl__exchange_process). */
#define SL_EXCHANGE_PAUSE HPE_PAUSED

/** What an exchange tells its owner. Called from libuv callbacks (or, for head and body, from the parse that
 *  the owner started); each libuv callback into the exchange is bracketed by hold and release. */
typedef struct sl_exchange_ops {
    /** Takes whatever must outlive the callback (the owner's memory may be given up inside it); returns a
     *  token for release. May be NULL. */
    void *(*hold)(sl_exchange_t *x);
    /** Drops what hold took. May be NULL. */
    void (*release)(void *token);
    /** The deferred work the owner asked for with sl__exchange_kick (sl__exchange_open, _process, ...). */
    void (*kick)(sl_exchange_t *x);
    /** The final response head is in x->hdrs (status, content_length set): 0 to go on with the body,
     *  SL_EXCHANGE_PAUSE to stop parsing until the owner goes on, -1 to fail the exchange (bad_response). */
    int (*head)(sl_exchange_t *x);
    /** Response body bytes (valid during the call only): 0, or -1 to fail the exchange (bad_response). */
    int (*body)(sl_exchange_t *x, const char *at, size_t len);
    /** Whether the owner takes more of the response now; while 0, the bytes wait on the connection. May be
     *  NULL (always). */
    int (*room)(sl_exchange_t *x);
    /** Bytes were parsed and the response goes on: the owner hands on what it has, holds the reading back
     *  (sl__exchange_hold) if it must. May be NULL. */
    void (*parsed)(sl_exchange_t *x);
    /** Around the parse of what one read brought (read_begin, parse, read_end). May be NULL. */
    void (*read_begin)(sl_exchange_t *x);
    void (*read_end)(sl_exchange_t *x);
    /** The exchange is over, once: error 0 (the whole response was parsed) or SL_UPERR_*, with what failed
     *  (static text or NULL) and code (a libuv error, or 0). The connection is detached (pooled or closed).
     */
    void (*end)(sl_exchange_t *x, int error, const char *what, int code);
} sl_exchange_ops_t;

/** One exchange: embedded in its owner, set up by sl__exchange_init, given up with sl__exchange_close. */
struct sl_exchange {
    const sl_exchange_ops_t *ops;
    const sl_upnet_t *net; /* how connections are had: the worker's pool, or a test's fake */
    sl_worker_t *w;
    sl_upconn_t *uc;
    llhttp_t parser;
    sl_uptarget_t target;
    sl_buf_t out;     /* request bytes, kept to resend once if a reused connection was stale */
    sl_upbody_t body; /* the client's body, streamed after out (upbody.c); zeroed when none */
    sl_uphdrs_t hdrs; /* response headers (hdrs.list once the head is complete) */
    uv_timer_t kick;  /* runs deferred work outside of FFI calls */
    void (*on_closed)(sl_exchange_t *x); /* sl__exchange_close's */
    int status;                          /* response status, once headers_done */
    int64_t content_length;              /* -1 when unknown */
    double send_timeout, read_timeout;
    double header_timeout; /* the whole response head (interim ones included) within this; 0: none */
    double idle_timeout;   /* of the connection back in the pool */
    int pool_size;
    uint64_t head_by;     /* loop time (ms) the head is due by; 0 until the request is sent or a byte came */
    uint8_t is_head;      /* a HEAD request: the response has no body whatever it says */
    uint8_t opening;      /* waiting for the connection's ready */
    uint8_t sent;         /* the request head is written on the current connection */
    uint8_t got_bytes;    /* any response byte seen on this attempt */
    uint8_t retried;      /* replayed once on a fresh connection already */
    uint8_t reused;       /* the current attempt went over a kept-alive connection */
    uint8_t held;         /* reading stopped for the owner (sl__exchange_hold) */
    uint8_t head_armed;   /* the timer armed last is the head deadline, not the read timeout */
    uint8_t headers_done; /* the final head is parsed */
    uint8_t msg_done;     /* the parser saw the end of the final response */
    uint8_t head_paused; /* the parse stopped after the head: going on may need no byte (Content-Length: 0) */
    uint8_t done;        /* ended (ops->end was called) */
    uint8_t closed;      /* given up by its owner */
};

/** Sets up an exchange on worker w (target, timeouts and out are the caller's to fill before the kick).
 *  Returns 0 (the kick timer is then to be closed with sl__exchange_close). */
int sl__exchange_init(sl_exchange_t *x, sl_worker_t *w, const sl_exchange_ops_t *ops);
/** Runs ops->kick from a zero-delay timer: work asked for inside an FFI call goes on outside it. */
void sl__exchange_kick(sl_exchange_t *x);
/** Gets a connection (pooled unless retried) and sends the request once it is ready. */
void sl__exchange_open(sl_exchange_t *x);
/** Parses what waits on the connection, as far as the owner takes it (ops->room). */
void sl__exchange_process(sl_exchange_t *x);
/** Back-pressure: stops reading the upstream (and its read timeout) until sl__exchange_resume_reads. */
void sl__exchange_hold(sl_exchange_t *x);
/** Reads the upstream again after sl__exchange_hold; the read timeout starts over. */
void sl__exchange_resume_reads(sl_exchange_t *x);
/** More of a streamed request body arrived (or all of it): written now unless a write is queued. */
void sl__exchange_body_more(sl_exchange_t *x);
/** Ends the exchange with error (SL_UPERR_*; a stale kept-alive connection is retried on a fresh one instead
 *  when the request can be replayed): what and code as for ops->end. */
void sl__exchange_fail(sl_exchange_t *x, int error, const char *what, int code);
/** Gives the exchange up (its connection closed unless it was pooled already); on_closed(x) runs from the
 *  loop once nothing refers to x any more: the owner frees its memory there. */
void sl__exchange_close(sl_exchange_t *x, void (*on_closed)(sl_exchange_t *x));
/** Frees what the exchange holds (request bytes, headers): for on_closed. */
void sl__exchange_free(sl_exchange_t *x);
/** Whether a request may be sent again after a kept-alive connection failed before any response byte:
 *  idempotent methods, or an Idempotency-Key header (as Go's transport; looked for in the head only, up to
 *  its blank line, never in the body that may follow in the same buffer). A POST is not replayed otherwise:
 *  the upstream may have acted on it before the connection died. */
int sl__http_replayable(const char *head, size_t len);
/** The llhttp settings of upstream responses (parser->data is the sl_exchange_t), shared by all workers. */
const llhttp_settings_t *sl__exchange_parser_settings(void);

#endif

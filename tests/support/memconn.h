/* An in-memory transport for client connections (sl_conn_io_t, core/http/conn.h), for C tests and the fuzz
 * harness: conn.c and parser.c run as they do over TCP, on a real uv loop, without a socket. The test plays
 * the client: it queues what the client sends, chooses how the bytes are cut into reads, whether the client
 * reads what the connection writes (back-pressure), and whether it leaves. */
#ifndef SL_TEST_MEMCONN_H
#define SL_TEST_MEMCONN_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "http/conn.h"

/** One connection over memory. The test owns it; the sl_conn_t is the connection's own (freed when it closes,
 *  after which c is NULL and closed is set). */
typedef struct sl_memconn {
    sl_conn_t *c;
    sl_buf_t in; /* what the client sent; in.base + in_pos on is not delivered yet */
    size_t in_pos;
    size_t piece; /* deliver input in reads of at most this many bytes; 0: all there is */
    sl_buf_t out; /* what the client has received */
    size_t room;  /* the socket buffer: bytes taken at once and not read yet; 0: no limit (read at once) */
    sl_buf_t sockbuf; /* those bytes (room > 0), read by the client in a step */
    int client_reads; /* queued writes complete (the client reads); 0: they wait (a client not reading) */
    sl_conn_wreq_t *queue, *queue_tail; /* writes waiting for the client, oldest first (linked by w.data) */
    uint64_t queued;                    /* their bytes */
    int eof;                            /* the client closed its side: an EOF once its input is delivered */
    int reset;              /* the client reset the connection: the next read fails with ECONNRESET */
    int reading;            /* the connection asked for input */
    int closed;             /* the connection closed its transport */
    uint64_t reads, writes; /* reads delivered, writes taken (at once or queued) */
} sl_memconn_t;

/** Opens a connection on worker w (its loop must run) whose requests go to handler. NULL on out of memory. */
sl_memconn_t *sl_memconn_open(sl_worker_t *w, const sl_handler_t *handler);
/** The client sends bytes (delivered by later steps). */
void sl_memconn_send(sl_memconn_t *m, const void *data, size_t len);
/** One I/O event, as a loop turn would bring it: a read (one piece of input, or the EOF or reset once input
 * is delivered) if the connection reads, else a queued write completing if the client reads. Returns 1 when
 *  something happened, 0 when nothing could. */
int sl_memconn_step(sl_memconn_t *m);
/** Steps and runs the loop's due callbacks (zero-delay timers) until nothing happens (at most max rounds);
 *  returns the rounds done. */
int sl_memconn_run(sl_memconn_t *m, uv_loop_t *loop, int max);
/** Frees the test's side (after the connection closed, or with it still open: it is closed first). */
void sl_memconn_free(sl_memconn_t *m, uv_loop_t *loop);

#endif

#ifndef SL_CONN_H
#define SL_CONN_H

#include <llhttp.h>
#include <stddef.h>
#include <uv.h>

#include "http/request.h"
#include "server/worker.h"

struct sl_conn;

/** One write the transport did not take at once, queued with a copy of its bytes (conn.c frees it). */
typedef struct sl_conn_wreq {
    uv_write_t w; /* the TCP transport's request; another transport may use w.data */
    struct sl_conn *c;
    size_t len;
    char data[];
} sl_conn_wreq_t;

/** A client connection's byte transport: its TCP socket (conn_tcp.c; TLS runs above it, in conn_tls.c) or, in
 *  C tests and the fuzz harness, memory. One indirect call per I/O. */
typedef struct sl_conn_io {
    /** Starts delivering input from the loop: sl__conn_on_alloc for a buffer, then sl__conn_on_read. 0 or a
     *  negative code. */
    int (*read_start)(struct sl_conn *c);
    /** Stops delivering input. */
    void (*read_stop)(struct sl_conn *c);
    /** Writes what the transport takes at once: the byte count, UV_EAGAIN for none, or a negative code. */
    int (*try_write)(struct sl_conn *c, const uv_buf_t *bufs, unsigned n);
    /** Queues wr->len bytes of wr->data; sl__conn_on_write(wr, status) follows from the loop. 0, or a
     *  negative code (no callback then). */
    int (*write)(struct sl_conn *c, sl_conn_wreq_t *wr);
    /** Bytes taken (at once or queued) that the peer has not received yet. */
    uint64_t (*unsent)(struct sl_conn *c);
    /** Whether the peer has closed or reset the connection (asked of connections that are not being read). */
    int (*peer_closed)(struct sl_conn *c);
    /** Closes the transport; done(c) follows from the loop, and the connection's memory goes then. */
    void (*close)(struct sl_conn *c, void (*done)(struct sl_conn *c));
} sl_conn_io_t;

/** A client connection: reads and parses requests one at a time (pipelined ones wait in the read buffer, so
 *  responses go out in order), writes responses, enforces limits and timeouts. Freed in its close callback.
 */
typedef struct sl_conn {
    uv_tcp_t tcp;                /* the TCP transport's handle (unused by others) */
    const sl_conn_io_t *io;      /* how bytes come and go */
    void *io_data;               /* the transport's own state (another than TCP's) */
    const sl_handler_t *handler; /* who runs the requests: sl_vm_handler, or a test's stub */
    sl_worker_t *w;
    struct sl_conn *prev, *next;
    llhttp_t parser;
    uv_timer_t timer;
    char *rbuf; /* input not parsed yet: the thread's read buffer during a read (rbuf_shared), else our own */
    size_t rlen, rpos, rcap;
    sl_req_t *req;        /* the request being parsed or served */
    size_t write_pending; /* bytes handed to uv_write and not yet written */
    uint64_t wrote_total; /* bytes ever written or queued toward the socket */
    uint64_t send_mark;   /* bytes the client had received when the send timer was last armed */
    sl_buf_t wbuf;        /* writes gathered while corked, sent with one syscall at uncork */
    int corked;
    struct sockaddr_storage peer;
    char peer_ip[48];    /* peer's address as text, made by the connection's first request (sl_req_new) */
    uint8_t peer_ip_len; /* 0 until then */
    uint16_t peer_port;
    int peer_len;
    struct sl_proxy *blocked_proxy; /* an upstream stopped reading until we drain */
    sl_req_t *drain_wait;           /* a coroutine waits (sl_resp_wait_drain) for the client to catch up */
    struct sl_tls *tls;             /* HTTPS: rbuf holds decrypted bytes, writes are encrypted; else NULL */
    unsigned nrequests;
    int err_status; /* set by a parser callback that rejects the request */
    int timer_kind;
    uint8_t is_admin;
    uint8_t busy; /* a complete request was handed to Lua and its response is not finished */
    uint8_t closing;
    uint8_t eof;
    uint8_t reading;
    uint8_t peer_gone;   /* sl_conn_sweep found the client gone */
    uint8_t rbuf_shared; /* rbuf is the worker thread's read buffer, for this read only (conn.c: settle) */
} sl_conn_t;

/* A request body that arrives while the request is handled: the client is not read while this much of it
 * waits for the upstream (see conn_body.c). */
#define SL_BODY_HIGH_WATER (128 * 1024)

/* Pipelined input read ahead while a request is served: beyond this the client is not read until the requests
 * before it are answered (a client that sends without reading costs at most about twice this). */
#define SL_PIPELINE_MAX (64 * 1024)

/* What a connection's timer is counting; TIMER_GONE closes a connection whose client a write found gone. */
enum { TIMER_NONE, TIMER_IDLE, TIMER_HEADER, TIMER_BODY, TIMER_SEND, TIMER_GONE };

/** (Re)arms the connection's timer for kind; TIMER_NONE or seconds <= 0 stops it. */
void sl__conn_timer(sl_conn_t *c, int kind, double seconds);
/** Serves a connection accepted on listener l (fd non-blocking, peer its address) over TCP (TLS when the
 *  listener has it), its requests run by the worker's Lua VM (conn_tcp.c); takes fd (closed on failure). */
void sl_conn_accept(sl_listener_t *l, int fd, const struct sockaddr *peer, int peer_len);
/** Serves a connection over transport io with its requests run by handler: c is zeroed memory from calloc
 *  (peer, tls and the transport's own fields already set), owned from now on by the connection, freed after
 *  io->close. Starts reading. */
void sl__conn_start(sl_conn_t *c, sl_worker_t *w, const sl_conn_io_t *io, const sl_handler_t *handler,
                    int is_admin);
/** The transport's input: a buffer for the next read (base NULL: none now, out of memory). */
void sl__conn_on_alloc(sl_conn_t *c, uv_buf_t *buf);
/** The transport's input: nread bytes landed in buf (from sl__conn_on_alloc), or nread < 0: EOF or an error.
 */
void sl__conn_on_read(sl_conn_t *c, ssize_t nread, const uv_buf_t *buf);
/** A queued write (io->write) finished (status 0) or failed. */
void sl__conn_on_write(sl_conn_wreq_t *wr, int status);
/** Queues bytes to the client (copied when the socket cannot take them now); returns 0 or a negative code. */
int sl__conn_write(sl_conn_t *c, const uv_buf_t *bufs, unsigned n);
/** Gathers the following writes until sl__conn_uncork (nests); saves syscalls when a response is written in
 *  pieces. */
void sl__conn_cork(sl_conn_t *c);
/** Sends what was gathered since the matching sl__conn_cork. */
int sl__conn_uncork(sl_conn_t *c);
/** Finishes the current request if its response is complete and flushed, then reads the next one. Must not be
 *  called from inside Lua (it may start the next request's coroutine). */
void sl__conn_progress(sl_conn_t *c);
/** Starts reading from the socket unless closing, at EOF or already reading. */
void sl__conn_read_start(sl_conn_t *c);
/** Stops reading from the socket; no-op when not reading. */
void sl__conn_read_stop(sl_conn_t *c);
/** The upstream took a streamed request body below the high-water mark: read the client again. */
void sl__conn_body_resume(sl_conn_t *c);
/** The client left (EOF, reset, or found gone): closes the connection at once; a request in progress ends
 *  as client_abort (499). See conn_gone.c. */
void sl__conn_client_left(sl_conn_t *c);
/** A write found the client gone: the request is marked client_gone at once, the connection closes from its
 *  timer on the next loop turn (the caller may be Lua or the upstream parser). */
void sl__conn_write_failed(sl_conn_t *c);
/** Closes the connection at once (in-flight request is marked client_gone). */
void sl__conn_close(sl_conn_t *c);
/** Ends the requests of connections that are not being read (pipelined requests waiting, an upload held back)
 *  and whose client has gone (the kernel saw its FIN or reset): reading would have told, but it is stopped.
 *  Called once a second. */
void sl_conn_sweep(sl_worker_t *w);
/** Starts a graceful close: idle connections close now, busy ones after their response. */
void sl__conn_drain(sl_conn_t *c);
/** Writes a complete JSON error response in OpenAI error shape and marks the connection to close after it. */
void sl__conn_send_error(sl_conn_t *c, int status, const char *message);

#endif

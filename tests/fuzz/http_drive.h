/* Drivers of the HTTP/1.1 parsers for the harnesses: the request parser of client connections
 * (core/http/parser.c) and the upstream response parsers (core/upstream/proxy_parse.c and client.c), fed the
 * way conn.c, proxy.c and client.c feed them, with their invariants checked as they go. */
#ifndef SL_FUZZ_HTTP_DRIVE_H
#define SL_FUZZ_HTTP_DRIVE_H

#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "fuzz.h"

/** Sets up the worker loop and settings the parsers need (once). */
void fz_http_init(void);

/** What a run of the request parser produced: compared between whole and cut feeds. */
typedef struct fz_req_result {
    uint64_t fp;    /* fingerprint of every request handed on: method, URL, headers, body, flags */
    int nreq;       /* requests handed on */
    int status;     /* 0, or the status the connection would answer a rejected request with */
    sl_buf_t body0; /* body of the first request (the caller frees it) */
} fz_req_result_t;

/** Feeds data to a fresh server connection's parser in the pieces of cuts, handing each parsed request on
 *  as conn.c does (checked, then released); small: tight size limits. */
void fz_req_run(const uint8_t *data, size_t len, const fz_cuts_t *cuts, int small, fz_req_result_t *res);
/** Fails unless two runs over the same bytes agree. */
void fz_req_same(const fz_req_result_t *a, const fz_req_result_t *b);

/* Who parses an upstream response. */
enum { FZ_RESP_FILTER, FZ_RESP_PASS, FZ_RESP_CLIENT, FZ_RESP_CLIENT_STREAM };

/** What a run of an upstream response parser produced. */
typedef struct fz_resp_result {
    int ok;          /* a complete response (or one ended by the connection's end) */
    int status;      /* final status (0 before the headers) */
    uint64_t fp;     /* fingerprint of the final head: status and headers */
    int odd_headers; /* headers no longer readable (a known finding, tolerated by SLUICE_FUZZ_KNOWN) */
    int refused;     /* PASS: a header could not go to our client (core/http/field.h): a 500 went instead */
    sl_buf_t body;   /* the body as the parser's user received it (the caller frees it) */
} fz_resp_result_t;

/** Feeds data as an upstream's response on one connection (then its end) to the parser of mode; is_head:
 *  the request was a HEAD; client_minor: HTTP minor version of our client (PASS re-frames for it). In PASS
 *  mode what the client receives is parsed again and must be one well-framed response carrying the body. */
void fz_resp_run(int mode, int is_head, int client_minor, const uint8_t *data, size_t len,
                 const fz_cuts_t *cuts, fz_resp_result_t *res);
/** Fails unless two runs over the same response agree (status, head, body, outcome). */
void fz_resp_same(const fz_resp_result_t *a, const fz_resp_result_t *b, const char *what);

#endif

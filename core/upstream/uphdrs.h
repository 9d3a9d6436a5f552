/* The response heads of an upstream exchange (proxy.c, client.c): headers collected from llhttp's callbacks
 * into one buffer, and each head checked as it ends (version, status, interim responses), with one cap on the
 * header bytes of all heads of the exchange together. */
#ifndef SL_UPHDRS_H
#define SL_UPHDRS_H

#include <llhttp.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"
#include "http/hdrs.h"
#include "http/request.h"

/* Response header bytes of an exchange, its interim (1xx) responses' included, and how many of those it takes
 * before its final one. */
#define SL_UP_MAX_HEAD 65536
#define SL_UP_MAX_INTERIM 16

/** Response headers of an exchange, collected by llhttp callbacks into one buffer. */
typedef struct sl_uphdrs {
    sl_buf_t bytes;
    sl_hdrs_t list;     /* the final head's headers once sl__uphdrs_finish made them pointers */
    uint32_t ninterim;  /* interim (1xx) responses so far */
    size_t prior;       /* header bytes of those: the cap is for all heads of the exchange together */
    const char *why;    /* why a head was refused (static text), for the error; NULL otherwise */
    uint8_t value_done; /* the last field's value ended: a value now without a field first has no name */
    uint8_t done;       /* the final head is finished (pointers made): what follows are trailers, dropped */
    size_t trailer;     /* trailer bytes seen (dropped, but bounded like the head) */
} sl_uphdrs_t;

/** llhttp header callbacks' bodies; return 0 or -1 (too many, too large together with the interim
 *  responses' headers, a field without a name, out of memory: why says which). Trailer fields (after the
 *  final head) are dropped within a cap of their own: the head handed on does not change once complete. */
int sl__uphdrs_field(sl_uphdrs_t *h, const char *at, size_t len, size_t max_bytes);
int sl__uphdrs_value(sl_uphdrs_t *h, const char *at, size_t len, size_t max_bytes);
/** The upstream closed the connection: ends a body delimited by that close. A parser paused at the end of a
 *  head that ended where the bytes ended has not decided about the body yet (llhttp_finish alone reports an
 *  invalid EOF state): it is run over no bytes first. Returns 1 when the message is complete, else 0. */
int sl__up_parser_eof(llhttp_t *hp);
/** llhttp's on_header_value_complete: the current field is whole. Returns 0. */
int sl__uphdrs_value_done(sl_uphdrs_t *h);
/** Turns the stored offsets into pointers (at the final head's end). */
void sl__uphdrs_finish(sl_uphdrs_t *h);
/** At the end of each response head (llhttp on_headers_complete): refuses a version other than HTTP/1.0 or
 *  1.1, a status outside 100-599 and more than SL_UP_MAX_INTERIM interim responses, and keeps an interim
 *  one's header bytes counted. Returns 1 for an interim response, 0 for the final one, -1 (h->why set) for
 *  one to refuse. Shared by the proxy and the client. */
int sl__uphdrs_head_done(sl_uphdrs_t *h, const llhttp_t *hp);
/** Forgets the previous message's headers (llhttp on_message_begin); interim responses stay counted. */
void sl__uphdrs_reset(sl_uphdrs_t *h);
/** Starts over for a new attempt of the exchange (also the interim count). */
void sl__uphdrs_restart(sl_uphdrs_t *h);
/** Frees what the headers hold (the struct is left zeroed). */
void sl__uphdrs_free(sl_uphdrs_t *h);

#endif

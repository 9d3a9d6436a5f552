/* The upstream response of a proxied exchange, parsed by llhttp: headers collected for Lua, and in PASS mode
 * the head and body written to the client as they are parsed (re-framed by core/http/response.c). */
#include "upstream/proxy_parse.h"

#include <pthread.h>
#include <string.h>
#include <strings.h>

#include "http/response.h"
#include "upstream/forward.h"

static llhttp_settings_t psettings;

static sl_proxy_t *of(llhttp_t *hp)
{
    return ((sl_upconn_t *)hp->data)->owner;
}

static int on_pbegin(llhttp_t *hp)
{
    sl_proxy_t *p = of(hp);
    p->resp.nheaders = 0;
    sl__uphdrs_reset(&p->hdrs);
    return 0;
}

static int on_hfield(llhttp_t *hp, const char *at, size_t len)
{
    sl_proxy_t *p = of(hp);
    return sl__uphdrs_field(&p->hdrs, at, len, SL_UP_MAX_HEAD);
}

static int on_hvalue(llhttp_t *hp, const char *at, size_t len)
{
    sl_proxy_t *p = of(hp);
    return sl__uphdrs_value(&p->hdrs, at, len, SL_UP_MAX_HEAD);
}

static int on_hvalue_done(llhttp_t *hp)
{
    return sl__uphdrs_value_done(&of(hp)->hdrs);
}

static int hop_by_hop(const sl_header_t *h, const sl_header_t *conn)
{
    if (conn && sl__http_token_listed(conn->value, conn->value_len, h->name, h->name_len))
        return 1;
    static const char *const names[] = {"connection", "keep-alive", "proxy-connection", "transfer-encoding",
                                        "te",         "trailer",    "upgrade",          "content-length",
                                        "date",       "server"};
    for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (h->name_len == strlen(names[i]) && strncasecmp(h->name, names[i], h->name_len) == 0)
            return 1;
    return 0;
}

/* PASS mode: the upstream's head goes to the client, re-framed by our response code. */
static int send_head(sl_proxy_t *p)
{
    sl_req_t *r = p->req;
    if (r->conn == NULL)
        return -1;
    sl_buf_t h = {0};
    uint32_t n = 0;
    const sl_header_t *conn = NULL;
    for (uint32_t i = 0; i < p->resp.nheaders; i++)
        if (p->resp.headers[i].name_len == 10 && strncasecmp(p->resp.headers[i].name, "connection", 10) == 0)
            conn = &p->resp.headers[i];
    for (uint32_t i = 0; i < p->resp.nheaders; i++) {
        const sl_header_t *hd = &p->resp.headers[i];
        if (hop_by_hop(hd, conn))
            continue;
        sl_buf_append(&h, hd->name, hd->name_len);
        sl_buf_append(&h, ": ", 2);
        sl_buf_append(&h, hd->value, hd->value_len);
        sl_buf_append(&h, "\r\n", 2);
        n++;
    }
    int rc = sl_resp_start(r, p->resp.status, h.base ? h.base : "", h.len, n, p->resp.content_length);
    sl_buf_free(&h);
    p->head_sent = rc != SL_ERR_HEADER; /* refused: a whole 500 went out instead, not to be cut short */
    return rc;
}

static int on_headers_done(llhttp_t *hp)
{
    sl_proxy_t *p = of(hp);
    int interim = sl__uphdrs_head_done(&p->hdrs, hp);
    if (interim < 0)
        return -1;
    if (interim)
        return 0; /* 100 Continue, 103 Early Hints...: the real response follows */
    sl__uphdrs_finish(&p->hdrs);
    p->resp.headers = p->hdrs.list;
    p->resp.nheaders = p->hdrs.n;
    p->resp.status = llhttp_get_status_code(hp);
    p->resp.content_length = (hp->flags & F_CONTENT_LENGTH) ? (int64_t)hp->content_length : -1;
    p->resp.headers_done = 1;
    int nobody = p->is_head || p->resp.status == 204 || p->resp.status == 304;
    if (p->mode == SL_PROXY_PASS) {
        if (send_head(p) != 0)
            return -1;
        return nobody ? 1 : 0;
    }
    /* an empty body ends here too: paused at a head that ends where the read ends, the parser would not run
     * again to see the message complete, and Lua would wait for the read timeout */
    if (nobody || ((hp->flags & F_CONTENT_LENGTH) && hp->content_length == 0))
        return 1;
    return HPE_PAUSED;
}

static int on_pbody(llhttp_t *hp, const char *at, size_t len)
{
    sl_proxy_t *p = of(hp);
    if (p->mode == SL_PROXY_PASS)
        return p->req->conn && sl_resp_write(p->req, at, len) == 0 ? 0 : -1;
    return sl_buf_append(&p->chunkbuf, at, len) == 0 ? 0 : -1;
}

static int on_pcomplete(llhttp_t *hp)
{
    sl_proxy_t *p = of(hp);
    if (!p->resp.headers_done)
        return 0; /* an interim response */
    p->msg_done = 1;
    return HPE_PAUSED; /* stop exactly at the end: bytes after it make the connection unusable */
}

static void settings_init(void)
{
    llhttp_settings_init(&psettings);
    psettings.on_message_begin = on_pbegin;
    psettings.on_header_field = on_hfield;
    psettings.on_header_value = on_hvalue;
    psettings.on_header_value_complete = on_hvalue_done;
    psettings.on_headers_complete = on_headers_done;
    psettings.on_body = on_pbody;
    psettings.on_message_complete = on_pcomplete;
}

const llhttp_settings_t *sl__proxy_parser_settings(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, settings_init); /* workers start their first exchanges concurrently */
    return &psettings;
}

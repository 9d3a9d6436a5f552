#include "http/request.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>

#include "http/conn.h"
#include "upstream/proxy.h"

sl_req_t *sl_req_new(sl_conn_t *conn, uint64_t id)
{
    sl_req_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->refs = 1;
    r->co_ref = -2; /* LUA_NOREF */
    r->conn = conn;
    r->handler = conn ? conn->handler : NULL;
    r->id = id;
    r->method = r->path = r->query = r->host = r->body = "";
    r->client_ip = r->client_ip_buf;
    r->is_admin = conn ? conn->is_admin : 0;
    struct timeval tv;
    gettimeofday(&tv, NULL);
    r->start_time = (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
    if (conn && conn->peer_len > 0) {
        if (conn->peer_ip_len == 0) { /* formatted once per connection: inet_ntop is not cheap */
            const struct sockaddr_storage *ssp = &conn->peer;
            if (ssp->ss_family == AF_INET6) {
                const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ssp;
                uv_ip6_name(a, conn->peer_ip, sizeof(conn->peer_ip));
                conn->peer_port = ntohs(a->sin6_port);
            } else {
                const struct sockaddr_in *a = (const struct sockaddr_in *)ssp;
                uv_ip4_name(a, conn->peer_ip, sizeof(conn->peer_ip));
                conn->peer_port = ntohs(a->sin_port);
            }
            conn->peer_ip_len = (uint8_t)strlen(conn->peer_ip);
        }
        memcpy(r->client_ip_buf, conn->peer_ip, conn->peer_ip_len + 1u);
        r->client_ip_len = conn->peer_ip_len;
        r->client_port = conn->peer_port;
    }
    return r;
}

void sl_req_release(sl_req_t *r)
{
    if (--r->refs > 0)
        return;
    if (r->proxy)
        sl__proxy_free(r->proxy);
    sl_buf_free(&r->head);
    sl_buf_free(&r->bodybuf);
    sl_buf_free(&r->scratch);
    sl_buf_free(&r->log_extra);
    sl__hdrs_free(&r->hdrs);
    free(r);
}

int sl_req_log_field(sl_req_t *r, const char *name, size_t nlen, const char *json, size_t jlen)
{
    if (r->log_extra.len + nlen + jlen > 16384)
        return -1; /* an access log line stays a line, not a dump */
    if (sl_buf_append(&r->log_extra, ",\"", 2) || sl_buf_append(&r->log_extra, name, nlen) ||
        sl_buf_append(&r->log_extra, "\":", 2) || sl_buf_append(&r->log_extra, json, jlen))
        return -1;
    return 0;
}

const sl_header_t *sl_req_header(const sl_req_t *r, const char *name, uint32_t len)
{
    if (r->headers == NULL) /* refused before its head was complete: headers are still offsets */
        return NULL;
    for (uint32_t i = 0; i < r->nheaders; i++) {
        const sl_header_t *h = &r->headers[i];
        if (h->name_len == len && strncasecmp(h->name, name, len) == 0)
            return h;
    }
    return NULL;
}

void sl_req_set_route(sl_req_t *r, const char *id, size_t len)
{
    if (len >= sizeof(r->route_id))
        len = sizeof(r->route_id) - 1;
    memcpy(r->route_id, id, len);
    r->route_id_len = (uint32_t)len;
}

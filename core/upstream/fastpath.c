/* Routes that run no Lua (see fastpath.h): the request goes from the parser to the upstream and back without
 * entering the VM. What is done here is what lua/sluice/proxy.lua does for a route without plugins, and
 * nothing more: node choice (smooth weighted round-robin), strip_prefix, the request line and Host, the
 * client's headers forwarded by sl__forward_headers, the body as it came (or as it comes), PASS streaming.
 * Anything else (plugins, global plugins, the Admin API, no route, errors of routing) stays with Lua. */
#include "upstream/fastpath.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/buf.h"
#include "common/log.h"
#include "http/response.h"
#include "upstream/proxy.h"
#include "upstream/url.h"

typedef struct fast_node {
    char *host;
    size_t hostlen;
    int port, weight, current;
} fast_node_t;

typedef struct fast_route {
    int used;
    char route_id[64];
    size_t route_id_len;
    char *host, *ca_file, *sni;
    int pass_host, tls, verify, pool_size;
    double connect_timeout, send_timeout, read_timeout, header_timeout, idle_timeout;
    fast_node_t *nodes;
    int nnodes, total_weight;
    char **prefixes; /* strip_prefix: the "/api" of a path "/api/ *", in path order */
    size_t *prefix_lens;
    int nprefixes;
} fast_route_t;

typedef struct fast_table {
    fast_route_t *routes; /* [id], 1..n */
    int n;
    const sl_router_t *router;
} fast_table_t;

/* per worker thread: the table in service and the one being built */
static __thread fast_table_t *live, *building;

static void route_free(fast_route_t *fr)
{
    for (int i = 0; i < fr->nnodes; i++)
        free(fr->nodes[i].host);
    for (int i = 0; i < fr->nprefixes; i++)
        free(fr->prefixes[i]);
    free(fr->nodes);
    free(fr->prefixes);
    free(fr->prefix_lens);
    free(fr->host);
    free(fr->ca_file);
    free(fr->sni);
}

static void table_free(fast_table_t *t)
{
    if (t == NULL)
        return;
    for (int i = 0; i <= t->n; i++)
        if (t->routes[i].used)
            route_free(&t->routes[i]);
    free(t->routes);
    free(t);
}

int sl_fast_begin(int nroutes)
{
    table_free(building);
    building = NULL;
    if (nroutes < 0)
        return -EINVAL;
    fast_table_t *t = calloc(1, sizeof(*t));
    if (t == NULL || (t->routes = calloc((size_t)nroutes + 1, sizeof(*t->routes))) == NULL) {
        free(t);
        return -ENOMEM;
    }
    t->n = nroutes;
    building = t;
    return 0;
}

static fast_route_t *route_of(int id)
{
    if (building == NULL || id < 1 || id > building->n)
        return NULL;
    return &building->routes[id];
}

static char *dup_opt(const char *s, int *failed)
{
    if (s == NULL || *s == '\0')
        return NULL;
    char *d = strdup(s);
    if (d == NULL)
        *failed = 1;
    return d;
}

int sl_fast_route(int id, const sl_fast_route_opts_t *o)
{
    fast_route_t *fr = route_of(id);
    if (fr == NULL || fr->used)
        return -EINVAL;
    int failed = 0;
    memset(fr, 0, sizeof(*fr));
    fr->used = 1;
    size_t n = o->route_id ? strlen(o->route_id) : 0;
    fr->route_id_len = n < sizeof(fr->route_id) ? n : sizeof(fr->route_id) - 1;
    memcpy(fr->route_id, o->route_id ? o->route_id : "", fr->route_id_len);
    fr->host = dup_opt(o->host, &failed);
    fr->ca_file = dup_opt(o->ca_file, &failed);
    fr->sni = dup_opt(o->sni, &failed);
    fr->pass_host = o->pass_host;
    fr->tls = o->tls;
    fr->verify = o->verify;
    fr->pool_size = o->pool_size;
    fr->connect_timeout = o->connect_timeout;
    fr->send_timeout = o->send_timeout;
    fr->read_timeout = o->read_timeout;
    fr->header_timeout = o->header_timeout;
    fr->idle_timeout = o->idle_timeout;
    return failed ? -ENOMEM : 0;
}

int sl_fast_node(int id, const char *host, size_t hostlen, int port, int weight)
{
    fast_route_t *fr = route_of(id);
    if (fr == NULL || !fr->used || weight < 0 || hostlen == 0)
        return -EINVAL;
    fast_node_t *nodes = realloc(fr->nodes, ((size_t)fr->nnodes + 1) * sizeof(*nodes));
    if (nodes == NULL)
        return -ENOMEM;
    fr->nodes = nodes;
    fast_node_t *nd = &nodes[fr->nnodes];
    if ((nd->host = malloc(hostlen + 1)) == NULL)
        return -ENOMEM;
    memcpy(nd->host, host, hostlen);
    nd->host[hostlen] = '\0';
    nd->hostlen = hostlen;
    nd->port = port;
    nd->weight = weight;
    nd->current = 0;
    fr->nnodes++;
    fr->total_weight += weight;
    return 0;
}

int sl_fast_prefix(int id, const char *prefix, size_t len)
{
    fast_route_t *fr = route_of(id);
    if (fr == NULL || !fr->used)
        return -EINVAL;
    char **p = realloc(fr->prefixes, ((size_t)fr->nprefixes + 1) * sizeof(*p));
    if (p == NULL)
        return -ENOMEM;
    fr->prefixes = p;
    size_t *l = realloc(fr->prefix_lens, ((size_t)fr->nprefixes + 1) * sizeof(*l));
    if (l == NULL)
        return -ENOMEM;
    fr->prefix_lens = l;
    if ((p[fr->nprefixes] = malloc(len + 1)) == NULL)
        return -ENOMEM;
    memcpy(p[fr->nprefixes], prefix, len);
    p[fr->nprefixes][len] = '\0';
    l[fr->nprefixes++] = len;
    return 0;
}

void sl_fast_commit(const sl_router_t *router)
{
    table_free(live);
    live = router ? building : NULL;
    if (live)
        live->router = router;
    else
        table_free(building);
    building = NULL;
}

void sl_fast_close(void)
{
    table_free(live);
    table_free(building);
    live = building = NULL;
}

/* Smooth weighted round-robin (as lua/sluice/wrr.lua): every node gains its weight, the richest is taken and
 * pays the total. NULL when no node has a weight. */
static fast_node_t *pick(fast_route_t *fr)
{
    if (fr->nnodes == 1)
        return fr->nodes[0].weight > 0 ? &fr->nodes[0] : NULL;
    fast_node_t *best = NULL;
    for (int i = 0; i < fr->nnodes; i++) {
        fast_node_t *nd = &fr->nodes[i];
        if (nd->weight <= 0)
            continue;
        nd->current += nd->weight;
        if (best == NULL || nd->current > best->current)
            best = nd;
    }
    if (best)
        best->current -= fr->total_weight;
    return best;
}

/* The path the upstream gets: the route's first matching prefix stripped (strip_prefix), "/" at least. */
static void upstream_path(const fast_route_t *fr, const sl_req_t *r, const char **path, size_t *len)
{
    *path = r->path;
    *len = r->path_len;
    for (int i = 0; i < fr->nprefixes; i++) {
        size_t n = fr->prefix_lens[i];
        if (r->path_len >= n && memcmp(r->path, fr->prefixes[i], n) == 0) {
            *path += n;
            *len -= n;
            break;
        }
    }
}

/* The request line and Host, as lua/sluice/proxy.lua's build_head writes them for a route without plugins. */
static int build_head(sl_buf_t *b, const fast_route_t *fr, const fast_node_t *nd, const sl_req_t *r)
{
    const char *path;
    size_t plen;
    upstream_path(fr, r, &path, &plen);
    int rc = sl_buf_append(b, r->method, r->method_len);
    rc |= sl_buf_append(b, " ", 1);
    if (plen == 0 || path[0] != '/')
        rc |= sl_buf_append(b, "/", 1);
    rc |= sl_buf_append(b, path, plen);
    if (r->query_len > 0) {
        rc |= sl_buf_append(b, "?", 1);
        rc |= sl_buf_append(b, r->query, r->query_len);
    }
    rc |= sl_buf_appends(b, " HTTP/1.1\r\nHost: ");
    if (fr->pass_host == SL_FAST_HOST_REWRITE && fr->host) {
        rc |= sl_buf_appends(b, fr->host);
    } else if (fr->pass_host == SL_FAST_HOST_NODE) {
        char auth[300];
        rc |=
            sl_buf_appends(b, sl_url_authority(auth, sizeof(auth), nd->host, nd->hostlen, nd->port, fr->tls));
    } else {
        const sl_header_t *h = sl_req_header(r, "host", 4);
        if (h)
            rc |= sl_buf_append(b, h->value, h->value_len);
        else
            rc |= sl_buf_append(b, nd->host, nd->hostlen);
    }
    rc |= sl_buf_append(b, "\r\n", 2);
    return rc ? -1 : 0;
}

/* A gateway error in the shape Lua's sluice.response.send_error gives it (the connection stays open, unlike
 * sl_resp_send_error's answers to requests that could not be parsed). message: fixed text, no quotes. */
static void send_error(sl_req_t *r, int status, const char *message)
{
    char body[256];
    static const char hdr[] = "Content-Type: application/json\r\n";
    int n = snprintf(body, sizeof(body), "{\"error\":{\"message\":\"%s\",\"type\":\"%s\",\"code\":%d}}",
                     message, status >= 500 ? "server_error" : "invalid_request_error", status);
    if (n < 0 || (size_t)n >= sizeof(body))
        n = 0;
    sl_resp_send(r, status, hdr, sizeof(hdr) - 1, 1, body, (size_t)n);
}

static int is_method(const sl_req_t *r, const char *m)
{
    size_t n = strlen(m);
    return r->method_len == n && memcmp(r->method, m, n) == 0;
}

int sl_fast_serve(sl_worker_t *w, sl_req_t *r)
{
    fast_table_t *t = live;
    if (t == NULL || r->is_admin || r->conn == NULL)
        return 0;
    sl_route_match_t m;
    unsigned mbit = sl_http_method_bit(r->method, r->method_len);
    if (sl_router_match(t->router, mbit, r->path, r->path_len, r->host_len ? r->host : NULL, r->host_len,
                        &m) != 0 ||
        m.id < 1 || m.id > t->n || !t->routes[m.id].used)
        return 0; /* no route, or a route with Lua phases: Lua answers */
    fast_route_t *fr = &t->routes[m.id];
    memcpy(r->route_id, fr->route_id, fr->route_id_len);
    r->route_id_len = (uint32_t)fr->route_id_len;
    r->fast = 1;
    fast_node_t *nd = pick(fr);
    if (nd == NULL) {
        send_error(r, 503, "upstream has no node with weight > 0");
        return 1;
    }
    sl_buf_t head = {0};
    if (build_head(&head, fr, nd, r) != 0) {
        sl_buf_free(&head);
        send_error(r, 500, "out of memory");
        return 1;
    }
    int flags = SL_PROXY_FORWARD;
    if (fr->tls)
        flags |= fr->verify ? SL_PROXY_TLS : SL_PROXY_TLS | SL_PROXY_NO_VERIFY;
    if (r->body_len > 0 || is_method(r, "POST") || is_method(r, "PUT") || is_method(r, "PATCH"))
        flags |= SL_PROXY_LENGTH;
    if (r->body_pending)
        flags |= SL_PROXY_STREAM; /* no plugin reads it: it goes upstream as it arrives */
    sl_proxy_opts_t o = {
        .host = nd->host,
        .hostlen = nd->hostlen,
        .port = nd->port,
        .flags = flags,
        .ca_file = fr->ca_file,
        /* the name the certificate must carry: tls.sni, else the rewritten Host, else the node's host */
        .sni = fr->sni ? fr->sni : (fr->pass_host == SL_FAST_HOST_REWRITE ? fr->host : NULL),
        .head = head.base,
        .headlen = head.len,
        .nfields = 1,
        .body = r->body,
        .bodylen = r->body_len,
        .mode = SL_PROXY_PASS,
        .connect_timeout = fr->connect_timeout,
        .send_timeout = fr->send_timeout,
        .read_timeout = fr->read_timeout,
        .header_timeout = fr->header_timeout,
        .pool_size = fr->pool_size,
        .idle_timeout = fr->idle_timeout,
    };
    sl_proxy_t *p = sl_proxy_start(r, &o);
    sl_buf_free(&head);
    if (p == NULL) {
        char msg[96]; /* out of memory, or a head that must not reach the wire (logged with the id) */
        snprintf(msg, sizeof(msg), "cannot start the upstream request (id %016llx)",
                 (unsigned long long)r->id);
        send_error(r, 500, msg);
    }
    (void)w;
    return 1;
}

void sl__fast_resume(sl_req_t *r)
{
    const sl_upresp_t *u = (const sl_upresp_t *)r->proxy; /* the proxy's first member, as Lua reads it */
    if (u == NULL || !u->done || u->error == 0 || u->error == SL_UPERR_CLIENT_GONE || r->resp_started ||
        r->conn == NULL)
        return;
    char msg[96];
    snprintf(msg, sizeof(msg), "upstream %s", sl_uperr_text(u->error));
    send_error(r, u->error == SL_UPERR_TIMEOUT ? 504 : 502, msg);
}

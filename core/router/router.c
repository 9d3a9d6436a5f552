/* Router: routes are grouped by host (exact hosts, then wildcard hosts by longest suffix, then host-less);
 * inside a group exact paths live in an open-addressing hash, parameter and prefix patterns in arrays
 * already sorted by precedence, so matching is a hash probe plus short linear scans and never allocates. */
#include "router/router.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum { SEG_LIT, SEG_PARAM, SEG_REST };
enum { KIND_EXACT, KIND_PARAM, KIND_PREFIX };
/* Order matters: it is the host precedence used when sorting groups. */
enum { HOST_EXACT, HOST_WILD, HOST_ANY };

#define MAX_HOST 255

typedef struct {
    uint16_t off, len; /* into the pattern; for PARAM/REST this includes the leading ':' or '*' */
    uint8_t type;
} seg_t;

typedef struct {
    int id, entry, priority, kind, host_kind, nsegs, nlit;
    unsigned methods;
    char *pat;
    size_t pat_len, lit_len;
    char *host; /* lower-cased; for HOST_WILD the suffix starting at '.' */
    size_t host_len;
    seg_t *segs;
} route_t;

typedef struct {
    const char *key; /* NULL = empty slot */
    size_t len;
    uint32_t hash;
    int start, count; /* range of the group's sorted routes */
} xslot_t;

typedef struct {
    int host_kind;
    const char *host;
    size_t host_len;
    route_t **exact, **params, **prefixes;
    int nexact, nparams, nprefixes;
    xslot_t *xtab;
    uint32_t xmask;
} group_t;

struct sl_router {
    route_t *routes;
    int nroutes, cap, compiled;
    route_t **sorted;
    group_t *groups;
    int ngroups, nexact_hosts, nwild, any_group;
};

static uint32_t fnv1a(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static int cmp_bytes(const char *a, size_t an, const char *b, size_t bn)
{
    int c = memcmp(a ? a : "", b ? b : "", an < bn ? an : bn);
    if (c)
        return c;
    return an < bn ? -1 : an > bn;
}

static char lower(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
}

/* Strips the port and trailing dots, lower-cases into out[MAX_HOST]; -1 when too long to be a host. */
static long norm_host(const char *h, size_t n, char *out)
{
    if (n && h[0] == '[') {
        const char *e = memchr(h, ']', n);
        if (e)
            n = (size_t)(e - h) + 1;
    } else {
        const char *c = memchr(h, ':', n);
        if (c)
            n = (size_t)(c - h);
    }
    while (n && h[n - 1] == '.')
        n--;
    if (n > MAX_HOST)
        return -1;
    for (size_t i = 0; i < n; i++)
        out[i] = lower(h[i]);
    return (long)n;
}

static int name_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
              c == '-'))
            return 0;
    }
    return 1;
}

/* Splits a pattern into segments and classifies the route; the pattern is already copied into rt->pat. */
static int parse_pattern(route_t *rt)
{
    const char *p = rt->pat;
    size_t n = rt->pat_len, pos = 0;
    int nsegs = 0, nparams = 0;

    if (n == 0 || p[0] != '/')
        return -EINVAL;
    if (n > UINT16_MAX)
        return -ENAMETOOLONG;
    for (size_t i = 0; i < n; i++)
        nsegs += p[i] == '/';
    rt->segs = calloc((size_t)nsegs, sizeof(seg_t));
    if (!rt->segs)
        return -ENOMEM;
    rt->kind = KIND_EXACT;
    rt->nsegs = 0;
    while (pos < n) {
        size_t start = pos + 1;
        const char *slash = memchr(p + start, '/', n - start);
        size_t end = slash ? (size_t)(slash - p) : n;
        seg_t *s = &rt->segs[rt->nsegs++];
        s->off = (uint16_t)start;
        s->len = (uint16_t)(end - start);
        if (end > start && p[start] == ':') {
            if (end - start < 2 || !name_ok(p + start + 1, end - start - 1))
                return -EINVAL;
            s->type = SEG_PARAM;
            nparams++;
            if (rt->kind == KIND_EXACT)
                rt->kind = KIND_PARAM;
        } else if (end > start && p[start] == '*') {
            if (end != n || !name_ok(p + start + 1, end - start - 1))
                return -EINVAL;
            s->type = SEG_REST;
            nparams += end - start > 1;
            rt->kind = KIND_PREFIX;
            rt->lit_len = start;
        } else {
            if (memchr(p + start, '*', end - start))
                return -EINVAL;
            s->type = SEG_LIT;
            rt->nlit++;
        }
        pos = end;
    }
    return nparams > SL_ROUTER_MAX_PARAMS ? -E2BIG : 0;
}

static int parse_host(route_t *rt, const char *host, size_t len)
{
    char buf[MAX_HOST];
    long n;

    rt->host_kind = HOST_ANY;
    if (!host || len == 0 || (len == 1 && host[0] == '*'))
        return 0;
    n = norm_host(host, len, buf);
    if (n <= 0)
        return -EINVAL;
    if (buf[0] == '*') {
        if (n < 3 || buf[1] != '.' || memchr(buf + 1, '*', (size_t)n - 1))
            return -EINVAL;
        rt->host_kind = HOST_WILD;
        rt->host_len = (size_t)n - 1;
        rt->host = malloc(rt->host_len);
        if (rt->host)
            memcpy(rt->host, buf + 1, rt->host_len);
    } else {
        if (memchr(buf, '*', (size_t)n))
            return -EINVAL;
        rt->host_kind = HOST_EXACT;
        rt->host_len = (size_t)n;
        rt->host = malloc(rt->host_len);
        if (rt->host)
            memcpy(rt->host, buf, rt->host_len);
    }
    return rt->host ? 0 : -ENOMEM;
}

static void route_clear(route_t *rt)
{
    free(rt->pat);
    free(rt->host);
    free(rt->segs);
}

sl_router_t *sl_router_new(void)
{
    sl_router_t *r = calloc(1, sizeof(*r));
    if (r)
        r->any_group = -1;
    return r;
}

int sl_router_add(sl_router_t *r, int id, const char *path, size_t path_len, unsigned methods,
                  const char *host, size_t host_len, int priority)
{
    route_t rt = {0};
    int rc;

    if (!r || !path)
        return -EINVAL;
    if (r->compiled)
        return -EBUSY;
    if (r->nroutes == r->cap) {
        int cap = r->cap ? r->cap * 2 : 16;
        route_t *nr = realloc(r->routes, (size_t)cap * sizeof(*nr));
        if (!nr)
            return -ENOMEM;
        r->routes = nr;
        r->cap = cap;
    }
    rt.id = id;
    rt.entry = r->nroutes;
    rt.methods = methods;
    rt.priority = priority;
    rt.pat_len = path_len;
    rt.pat = malloc(path_len ? path_len : 1);
    if (!rt.pat) {
        rc = -ENOMEM;
        goto fail;
    }
    memcpy(rt.pat, path, path_len);
    if ((rc = parse_pattern(&rt)) != 0 || (rc = parse_host(&rt, host, host_len)) != 0)
        goto fail;
    r->routes[r->nroutes++] = rt;
    return 0;
fail:
    route_clear(&rt);
    return rc;
}

/* Total order = precedence: host kind, host, path kind, then kind-specific specificity, priority, insertion.
 */
static int cmp_route(const void *a, const void *b)
{
    const route_t *x = *(route_t *const *)a, *y = *(route_t *const *)b;
    int c;

    if (x->host_kind != y->host_kind)
        return x->host_kind - y->host_kind;
    if (x->host_kind == HOST_WILD && x->host_len != y->host_len)
        return x->host_len > y->host_len ? -1 : 1;
    if ((c = cmp_bytes(x->host, x->host_len, y->host, y->host_len)) != 0)
        return c;
    if (x->kind != y->kind)
        return x->kind - y->kind;
    if (x->kind == KIND_EXACT && (c = cmp_bytes(x->pat, x->pat_len, y->pat, y->pat_len)) != 0)
        return c;
    if (x->kind == KIND_PARAM && x->nlit != y->nlit)
        return y->nlit - x->nlit;
    if (x->kind == KIND_PREFIX && x->lit_len != y->lit_len)
        return x->lit_len > y->lit_len ? -1 : 1;
    if (x->priority != y->priority)
        return x->priority > y->priority ? -1 : 1;
    return x->entry - y->entry;
}

static int build_exact(group_t *g)
{
    uint32_t size = 8;

    while (size < (uint32_t)g->nexact * 2)
        size <<= 1;
    g->xtab = calloc(size, sizeof(xslot_t));
    if (!g->xtab)
        return -ENOMEM;
    g->xmask = size - 1;
    for (int i = 0; i < g->nexact;) {
        route_t *rt = g->exact[i];
        int j = i + 1;
        while (j < g->nexact && cmp_bytes(rt->pat, rt->pat_len, g->exact[j]->pat, g->exact[j]->pat_len) == 0)
            j++;
        uint32_t h = fnv1a(rt->pat, rt->pat_len), k = h & g->xmask;
        while (g->xtab[k].key)
            k = (k + 1) & g->xmask;
        g->xtab[k] = (xslot_t){rt->pat, rt->pat_len, h, i, j - i};
        i = j;
    }
    return 0;
}

int sl_router_compile(sl_router_t *r)
{
    int rc = 0, ng = 0;

    if (!r)
        return -EINVAL;
    if (r->compiled)
        return -EBUSY;
    r->sorted = malloc((size_t)(r->nroutes ? r->nroutes : 1) * sizeof(route_t *));
    r->groups = calloc((size_t)(r->nroutes ? r->nroutes : 1), sizeof(group_t));
    if (!r->sorted || !r->groups) {
        rc = -ENOMEM;
        goto out;
    }
    for (int i = 0; i < r->nroutes; i++)
        r->sorted[i] = &r->routes[i];
    qsort(r->sorted, (size_t)r->nroutes, sizeof(route_t *), cmp_route);
    for (int i = 0; i < r->nroutes;) {
        route_t *first = r->sorted[i];
        group_t *g = &r->groups[ng];
        int j = i;
        while (j < r->nroutes && r->sorted[j]->host_kind == first->host_kind &&
               cmp_bytes(r->sorted[j]->host, r->sorted[j]->host_len, first->host, first->host_len) == 0)
            j++;
        g->host_kind = first->host_kind;
        g->host = first->host;
        g->host_len = first->host_len;
        for (int k = i; k < j; k++) {
            int kind = r->sorted[k]->kind;
            if (kind == KIND_EXACT)
                g->nexact++;
            else if (kind == KIND_PARAM)
                g->nparams++;
            else
                g->nprefixes++;
        }
        g->exact = r->sorted + i;
        g->params = g->exact + g->nexact;
        g->prefixes = g->params + g->nparams;
        if ((rc = build_exact(g)) != 0)
            goto out;
        if (g->host_kind == HOST_EXACT)
            r->nexact_hosts++;
        else if (g->host_kind == HOST_WILD)
            r->nwild++;
        else
            r->any_group = ng;
        ng++;
        i = j;
    }
    r->ngroups = ng;
    r->compiled = 1;
out:
    if (rc)
        r->ngroups = ng + 1; /* so sl_router_free releases a partially built group */
    return rc;
}

static int method_ok(const route_t *rt, unsigned method)
{
    return rt->methods == 0 || (rt->methods & method) != 0;
}

static void add_param(const route_t *rt, const seg_t *s, size_t off, size_t len, sl_route_match_t *m, int *np)
{
    m->params[*np].name_off = (uint16_t)(s->off + 1);
    m->params[*np].name_len = (uint16_t)(s->len - 1);
    m->params[*np].val_off = (uint32_t)off;
    m->params[*np].val_len = (uint32_t)len;
    (*np)++;
}

static int match_segs(const route_t *rt, const char *p, size_t n, sl_route_match_t *m)
{
    size_t pos = 0;
    int np = 0;

    for (int i = 0; i < rt->nsegs; i++) {
        const seg_t *s = &rt->segs[i];
        if (s->type == SEG_REST) {
            if (pos < n && p[pos] != '/')
                return 0;
            if (s->len > 1)
                add_param(rt, s, pos < n ? pos + 1 : n, pos < n ? n - pos - 1 : 0, m, &np);
            m->nparams = np;
            return 1;
        }
        if (pos >= n || p[pos] != '/')
            return 0;
        pos++;
        const char *slash = memchr(p + pos, '/', n - pos);
        size_t end = slash ? (size_t)(slash - p) : n, len = end - pos;
        if (s->type == SEG_LIT) {
            if (len != s->len || memcmp(p + pos, rt->pat + s->off, len) != 0)
                return 0;
        } else {
            if (len == 0)
                return 0;
            add_param(rt, s, pos, len, m, &np);
        }
        pos = end;
    }
    if (pos != n)
        return 0;
    m->nparams = np;
    return 1;
}

static int found(const route_t *rt, sl_route_match_t *m)
{
    m->id = rt->id;
    m->entry = rt->entry;
    return 0;
}

static int match_group(const group_t *g, unsigned method, const char *p, size_t n, sl_route_match_t *m,
                       int *seen)
{
    uint32_t h = fnv1a(p, n);

    for (uint32_t k = h & g->xmask; g->xtab[k].key; k = (k + 1) & g->xmask) {
        const xslot_t *x = &g->xtab[k];
        if (x->hash != h || x->len != n || memcmp(x->key, p, n) != 0)
            continue;
        for (int i = x->start; i < x->start + x->count; i++) {
            *seen = 1;
            if (method_ok(g->exact[i], method)) {
                m->nparams = 0;
                return found(g->exact[i], m);
            }
        }
        break;
    }
    for (int i = 0; i < g->nparams; i++) {
        if (match_segs(g->params[i], p, n, m)) {
            *seen = 1;
            if (method_ok(g->params[i], method))
                return found(g->params[i], m);
        }
    }
    for (int i = 0; i < g->nprefixes; i++) {
        if (match_segs(g->prefixes[i], p, n, m)) {
            *seen = 1;
            if (method_ok(g->prefixes[i], method))
                return found(g->prefixes[i], m);
        }
    }
    return SL_ROUTER_NOT_FOUND;
}

static const group_t *find_exact_host(const sl_router_t *r, const char *h, size_t n)
{
    int lo = 0, hi = r->nexact_hosts - 1;

    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        int c = cmp_bytes(r->groups[mid].host, r->groups[mid].host_len, h, n);
        if (c == 0)
            return &r->groups[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return NULL;
}

int sl_router_match(const sl_router_t *r, unsigned method, const char *path, size_t path_len,
                    const char *host, size_t host_len, sl_route_match_t *m)
{
    int seen = 0;

    if (!r || !r->compiled || !m || (!path && path_len))
        return -EINVAL;
    if (!path)
        path = "";
    if (host && host_len && r->nexact_hosts + r->nwild > 0) {
        char buf[MAX_HOST];
        long hl = norm_host(host, host_len, buf);
        if (hl > 0) {
            const group_t *g = find_exact_host(r, buf, (size_t)hl);
            if (g && match_group(g, method, path, path_len, m, &seen) == 0)
                return 0;
            for (int i = r->nexact_hosts; i < r->nexact_hosts + r->nwild; i++) {
                g = &r->groups[i];
                if ((size_t)hl > g->host_len && memcmp(buf + hl - g->host_len, g->host, g->host_len) == 0 &&
                    match_group(g, method, path, path_len, m, &seen) == 0)
                    return 0;
            }
        }
    }
    if (r->any_group >= 0 && match_group(&r->groups[r->any_group], method, path, path_len, m, &seen) == 0)
        return 0;
    return seen ? SL_ROUTER_METHOD_NOT_ALLOWED : SL_ROUTER_NOT_FOUND;
}

void sl_router_free(sl_router_t *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->nroutes; i++)
        route_clear(&r->routes[i]);
    for (int i = 0; i < r->ngroups && r->groups; i++)
        free(r->groups[i].xtab);
    free(r->routes);
    free(r->sorted);
    free(r->groups);
    free(r);
}

unsigned sl_http_method_bit(const char *m, size_t len)
{
    static const struct {
        const char *name;
        size_t len;
        unsigned bit;
    } tab[] = {
        {"GET", 3, SL_HTTP_GET},         {"POST", 4, SL_HTTP_POST},       {"PUT", 3, SL_HTTP_PUT},
        {"DELETE", 6, SL_HTTP_DELETE},   {"PATCH", 5, SL_HTTP_PATCH},     {"HEAD", 4, SL_HTTP_HEAD},
        {"OPTIONS", 7, SL_HTTP_OPTIONS}, {"CONNECT", 7, SL_HTTP_CONNECT}, {"TRACE", 5, SL_HTTP_TRACE},
    };

    if (!m)
        return 0;
    for (size_t i = 0; i < sizeof(tab) / sizeof(tab[0]); i++)
        if (tab[i].len == len && memcmp(tab[i].name, m, len) == 0)
            return tab[i].bit;
    return 0;
}

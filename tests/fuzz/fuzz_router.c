/* Harness: the router (core/router/router.c). A fuzzed route table is compiled, then fuzzed requests are
 * matched against it and against a slow reference matcher written here from the router's stated rules.
 *
 * Input: lines. "R<m><p><host>|<path>" adds a route path (m: methods, '*' any, else bits (m - '@') & 0x1ff:
 * 'A' GET, 'B' POST, 'C' both...; p: priority p - '0'; host may be empty, "*" or "*.suffix"; without '|' the
 * rest is the path). "M<m><host>|<path>" matches a request (method bit (m % 9)). Other lines are ignored.
 * Invariants: no crash or sanitizer report; sl_router_match never allocates; its answer (route entry, 404,
 * 405) and parameters are those of the reference: candidates are the routes whose host and path match, ranked
 * by host (exact, then wildcard by longest suffix, then any host), path kind (exact, then parameters by most
 * literal segments, then prefixes by longest literal part), priority (highest first), then order of adding; a
 * route failing only on the method makes a 405. */
#include <errno.h>
#include <sanitizer/allocator_interface.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "router/router.h"

#define MAX_ROUTES 64
#define MAX_MATCHES 64

static int counting, allocs;

static void on_malloc(const volatile void *p, size_t n)
{
    (void)p;
    (void)n;
    if (counting)
        allocs++;
}

static void on_free(const volatile void *p)
{
    (void)p;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    __sanitizer_install_malloc_and_free_hooks(on_malloc, on_free);
    return 0;
}

/* ---- the reference ---- */

enum { H_EXACT, H_WILD, H_ANY };
enum { K_EXACT, K_PARAM, K_PREFIX };

typedef struct {
    const char *s;
    size_t n;
} str_t;

typedef struct ref_route {
    int entry, prio, hkind, kind, nlit;
    unsigned methods;
    size_t lit_len; /* prefix routes: bytes before the '*' */
    char host[256];
    size_t hlen;
    str_t pat;
    str_t segs[4100]; /* pattern segments (after each '/') */
    int nsegs;
} ref_route_t;

static char lc(char c)
{
    return c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
}

/* Host as matched: port and trailing dots dropped, lower case; -1 when longer than a host can be. */
static long host_norm(const char *h, size_t n, char *out)
{
    if (n && h[0] == '[') {
        const char *e = memchr(h, ']', n);
        if (e)
            n = (size_t)(e - h) + 1;
    } else {
        for (size_t i = 0; i < n; i++)
            if (h[i] == ':') {
                n = i;
                break;
            }
    }
    while (n && h[n - 1] == '.')
        n--;
    if (n > 255)
        return -1;
    for (size_t i = 0; i < n; i++)
        out[i] = lc(h[i]);
    return (long)n;
}

static int split(str_t s, str_t *segs, int max)
{
    int n = 0;
    size_t i = 0;
    if (s.n == 0)
        return 0;
    while (i < s.n) { /* s.s[i] == '/' */
        size_t j = i + 1;
        while (j < s.n && s.s[j] != '/')
            j++;
        if (n == max)
            return -1;
        segs[n++] = (str_t){s.s + i + 1, j - i - 1};
        i = j;
    }
    return n;
}

static void ref_add(ref_route_t *rt, int entry, const char *path, size_t plen, unsigned methods,
                    const char *host, size_t hlen, int prio)
{
    memset(rt, 0, sizeof(*rt));
    rt->entry = entry;
    rt->prio = prio;
    rt->methods = methods;
    rt->pat = (str_t){path, plen};
    rt->nsegs = split(rt->pat, rt->segs, 4100);
    rt->kind = K_EXACT;
    for (int i = 0; i < rt->nsegs; i++) {
        if (rt->segs[i].n && rt->segs[i].s[0] == '*') {
            rt->kind = K_PREFIX;
            rt->lit_len = (size_t)(rt->segs[i].s - path);
        } else if (rt->segs[i].n && rt->segs[i].s[0] == ':') {
            if (rt->kind == K_EXACT)
                rt->kind = K_PARAM;
        } else {
            rt->nlit++;
        }
    }
    rt->hkind = H_ANY;
    if (hlen && !(hlen == 1 && host[0] == '*')) {
        long n = host_norm(host, hlen, rt->host);
        if (n > 0 && rt->host[0] == '*') {
            rt->hkind = H_WILD;
            memmove(rt->host, rt->host + 1, (size_t)n - 1); /* ".suffix" */
            rt->hlen = (size_t)n - 1;
        } else {
            rt->hkind = H_EXACT;
            rt->hlen = (size_t)n;
        }
    }
}

typedef struct {
    str_t name, value;
} ref_param_t;

/* Whether the route's path pattern matches path; fills its parameters. */
static int ref_path(const ref_route_t *rt, str_t path, ref_param_t *ps, int *np)
{
    static str_t segs[70000];
    *np = 0;
    if (path.n && path.s[0] != '/')
        return 0;
    int n = split(path, segs, 70000);
    int fixed = rt->kind == K_PREFIX ? rt->nsegs - 1 : rt->nsegs;
    if (rt->kind == K_PREFIX ? n < fixed : n != fixed)
        return 0;
    for (int i = 0; i < fixed; i++) {
        str_t p = rt->segs[i];
        if (p.n && p.s[0] == ':') {
            if (segs[i].n == 0)
                return 0;
            ps[(*np)++] = (ref_param_t){{p.s + 1, p.n - 1}, segs[i]};
        } else if (p.n != segs[i].n || memcmp(p.s, segs[i].s, p.n) != 0) {
            return 0;
        }
    }
    if (rt->kind == K_PREFIX) {
        str_t star = rt->segs[rt->nsegs - 1];
        if (star.n > 1) { /* named: the rest after the '/' that follows the literal part */
            str_t v = {"", 0};
            if (n > fixed)
                v = (str_t){segs[fixed].s, (size_t)(path.s + path.n - segs[fixed].s)};
            ps[(*np)++] = (ref_param_t){{star.s + 1, star.n - 1}, v};
        }
    }
    return 1;
}

static int ref_host(const ref_route_t *rt, const char *h, long hl)
{
    if (rt->hkind == H_ANY)
        return 1;
    if (hl <= 0)
        return 0;
    if (rt->hkind == H_EXACT)
        return (size_t)hl == rt->hlen && memcmp(h, rt->host, rt->hlen) == 0;
    return (size_t)hl > rt->hlen && memcmp(h + hl - rt->hlen, rt->host, rt->hlen) == 0;
}

/* Negative when a ranks before b. */
static int rank(const ref_route_t *a, const ref_route_t *b)
{
    if (a->hkind != b->hkind)
        return a->hkind - b->hkind;
    if (a->hkind == H_WILD && a->hlen != b->hlen)
        return a->hlen > b->hlen ? -1 : 1;
    if (a->kind != b->kind)
        return a->kind - b->kind;
    if (a->kind == K_PARAM && a->nlit != b->nlit)
        return b->nlit - a->nlit;
    if (a->kind == K_PREFIX && a->lit_len != b->lit_len)
        return a->lit_len > b->lit_len ? -1 : 1;
    if (a->prio != b->prio)
        return a->prio > b->prio ? -1 : 1;
    return a->entry - b->entry;
}

/* ---- the harness ---- */

static ref_route_t routes[MAX_ROUTES];

static int next_line(fz_in_t *in, str_t *line)
{
    if (in->n == 0)
        return 0;
    const uint8_t *nl = memchr(in->p, '\n', in->n);
    size_t len = nl ? (size_t)(nl - in->p) : in->n;
    *line = (str_t){(const char *)in->p, len};
    in->p += nl ? len + 1 : len;
    in->n -= nl ? len + 1 : len;
    return 1;
}

/* host|path, or the whole rest as path */
static void host_path(str_t rest, str_t *host, str_t *path)
{
    const char *bar = memchr(rest.s, '|', rest.n);
    if (bar) {
        *host = (str_t){rest.s, (size_t)(bar - rest.s)};
        *path = (str_t){bar + 1, rest.n - (size_t)(bar - rest.s) - 1};
    } else {
        *host = (str_t){NULL, 0};
        *path = rest;
    }
}

static void check_match(sl_router_t *r, int nroutes, unsigned method, str_t host, str_t path)
{
    sl_route_match_t m;
    memset(&m, 0, sizeof(m));
    allocs = 0;
    counting = 1;
    int rc = sl_router_match(r, method, path.s ? path.s : "", path.n, host.s, host.n, &m);
    counting = 0;
    if (allocs)
        fz_fail("sl_router_match allocated %d time(s)", allocs);

    char hbuf[256];
    long hl = host.n ? host_norm(host.s, host.n, hbuf) : 0;
    const ref_route_t *best = NULL;
    int seen = 0;
    ref_param_t ps[SL_ROUTER_MAX_PARAMS + 1], best_ps[SL_ROUTER_MAX_PARAMS + 1];
    int np, best_np = 0;
    for (int i = 0; i < nroutes; i++) {
        const ref_route_t *rt = &routes[i];
        if (!ref_host(rt, hbuf, hl) || !ref_path(rt, path, ps, &np))
            continue;
        seen = 1;
        if (rt->methods && !(rt->methods & method))
            continue;
        if (best == NULL || rank(rt, best) < 0) {
            best = rt;
            best_np = np;
            memcpy(best_ps, ps, sizeof(ps));
        }
    }
    int want = best ? 0 : seen ? SL_ROUTER_METHOD_NOT_ALLOWED : SL_ROUTER_NOT_FOUND;
    if (rc != want || (best && m.entry != best->entry))
        fz_fail("router: method %u host '%.*s' path '%.*s': got %d (entry %d), reference %d (entry %d)",
                method, (int)host.n, host.s ? host.s : "", (int)path.n, path.s ? path.s : "", rc,
                rc == 0 ? m.entry : -1, want, best ? best->entry : -1);
    if (!best)
        return;
    FZ_CHECK(m.id == best->entry * 7);
    if (m.nparams != best_np)
        fz_fail("router: entry %d: %d parameters, reference %d", m.entry, m.nparams, best_np);
    for (int i = 0; i < best_np; i++) {
        const char *name = best->pat.s + m.params[i].name_off;
        FZ_CHECK(m.params[i].name_off + m.params[i].name_len <= best->pat.n);
        FZ_CHECK(m.params[i].val_off + m.params[i].val_len <= path.n);
        if (m.params[i].name_len != best_ps[i].name.n || memcmp(name, best_ps[i].name.s, best_ps[i].name.n) ||
            m.params[i].val_len != best_ps[i].value.n ||
            memcmp(path.s + m.params[i].val_off, best_ps[i].value.s, best_ps[i].value.n))
            fz_fail("router: entry %d parameter %d: '%.*s'='%.*s', reference '%.*s'='%.*s'", m.entry, i,
                    (int)m.params[i].name_len, name, (int)m.params[i].val_len, path.s + m.params[i].val_off,
                    (int)best_ps[i].name.n, best_ps[i].name.s, (int)best_ps[i].value.n, best_ps[i].value.s);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sl_router_t *r = sl_router_new();
    FZ_CHECK(r != NULL);
    fz_in_t in = {data, size};
    str_t line, host, path;
    int nroutes = 0, nmatch = 0, compiled = 0;
    while (next_line(&in, &line)) {
        if (line.n >= 3 && line.s[0] == 'R' && nroutes < MAX_ROUTES && !compiled) {
            unsigned methods = line.s[1] == '*' ? 0 : (unsigned)(line.s[1] - '@') & 0x1ff;
            int prio = line.s[2] - '0';
            host_path((str_t){line.s + 3, line.n - 3}, &host, &path);
            int rc = sl_router_add(r, nroutes * 7, path.s, path.n, methods, host.s, host.n, prio);
            if (path.n == 0 || path.s[0] != '/')
                FZ_CHECK(rc == -EINVAL);
            if (rc == 0) {
                ref_add(&routes[nroutes], nroutes, path.s, path.n, methods, host.s, host.n, prio);
                nroutes++;
            } else {
                FZ_CHECK(rc == -EINVAL || rc == -E2BIG || rc == -ENAMETOOLONG);
            }
        } else if (line.n >= 2 && line.s[0] == 'M' && nmatch < MAX_MATCHES) {
            if (!compiled) {
                FZ_CHECK(sl_router_compile(r) == 0);
                compiled = 1;
            }
            host_path((str_t){line.s + 2, line.n - 2}, &host, &path);
            check_match(r, nroutes, 1u << ((unsigned char)line.s[1] % 9), host, path);
            nmatch++;
        }
    }
    sl_router_free(r);
    return 0;
}

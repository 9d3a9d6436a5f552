#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "router/router.h"
#include "test.h"

#define S(s) s, sizeof(s) - 1
#define GET SL_HTTP_GET
#define POST SL_HTTP_POST

static sl_router_t *R;
static sl_route_match_t M;
/* Patterns by entry, to resolve parameter names in the tests. */
static const char *PAT[2048];
static int NENT;

static void add(int id, const char *path, unsigned methods, const char *host, int prio)
{
    PAT[NENT++] = path;
    CHECK_INT(sl_router_add(R, id, path, strlen(path), methods, host, host ? strlen(host) : 0, prio), 0);
}

static int match(unsigned method, const char *path, const char *host)
{
    int rc = sl_router_match(R, method, path, strlen(path), host, host ? strlen(host) : 0, &M);
    return rc == 0 ? M.id : rc;
}

static void reset(void)
{
    sl_router_free(R);
    R = sl_router_new();
    NENT = 0;
}

/* "name=value" of parameter i of the last match against path. */
static const char *param(const char *path, int i)
{
    static char buf[256];
    const char *pat = PAT[M.entry];
    snprintf(buf, sizeof(buf), "%.*s=%.*s", M.params[i].name_len, pat + M.params[i].name_off,
             (int)M.params[i].val_len, path + M.params[i].val_off);
    return buf;
}

static void test_kinds(void)
{
    reset();
    add(1, "/v1/models", 0, NULL, 0);
    add(2, "/users/:id/posts", 0, NULL, 0);
    add(3, "/api/*", 0, NULL, 0);
    add(4, "/files/*path", 0, NULL, 0);
    add(5, "/", 0, NULL, 0);
    CHECK_INT(sl_router_compile(R), 0);

    CHECK_INT(match(GET, "/v1/models", NULL), 1);
    CHECK_INT(match(GET, "/v1/models/", NULL), SL_ROUTER_NOT_FOUND);
    CHECK_INT(match(GET, "/v1/model", NULL), SL_ROUTER_NOT_FOUND);
    CHECK_INT(match(GET, "/users/42/posts", NULL), 2);
    CHECK_INT(M.nparams, 1);
    CHECK_STR(param("/users/42/posts", 0), "id=42");
    CHECK_INT(match(GET, "/users//posts", NULL), SL_ROUTER_NOT_FOUND);
    CHECK_INT(match(GET, "/users/1/2/posts", NULL), SL_ROUTER_NOT_FOUND);
    CHECK_INT(match(GET, "/users/a%2Fb/posts", NULL), 2);
    CHECK_STR(param("/users/a%2Fb/posts", 0), "id=a%2Fb");
    CHECK_INT(match(GET, "/api", NULL), 3);
    CHECK_INT(match(GET, "/api/", NULL), 3);
    CHECK_INT(match(GET, "/api/x/y", NULL), 3);
    CHECK_INT(M.nparams, 0);
    CHECK_INT(match(GET, "/apix", NULL), SL_ROUTER_NOT_FOUND);
    CHECK_INT(match(GET, "/files/a/b.txt", NULL), 4);
    CHECK_STR(param("/files/a/b.txt", 0), "path=a/b.txt");
    CHECK_INT(match(GET, "/files", NULL), 4);
    CHECK_STR(param("/files", 0), "path=");
    CHECK_INT(match(GET, "/", NULL), 5);
    CHECK_INT(match(GET, "", NULL), SL_ROUTER_NOT_FOUND);
    CHECK_INT(match(GET, "//", NULL), SL_ROUTER_NOT_FOUND);
}

static void test_precedence(void)
{
    reset();
    add(1, "/*", 0, NULL, 0);
    add(2, "/a/*", 0, NULL, 0);
    add(3, "/a/b/*", 0, NULL, 0);
    add(4, "/a/:x", 0, NULL, 0);
    add(5, "/a/b", 0, NULL, 0);
    add(6, "/a/b", 0, "example.com", 0);
    add(7, "/a/*", 0, "*.example.com", 0);
    add(8, "/p/*", 0, NULL, 1);
    add(9, "/p/*", 0, NULL, 5);
    add(10, "/q/*", 0, NULL, 0);
    add(11, "/q/*", 0, NULL, 0);
    add(12, "/:a/:b", 0, NULL, 0);
    add(13, "/c/:b", 0, NULL, 0);
    add(14, "/a/*", 0, "x.y.example.com", 0);
    CHECK_INT(sl_router_compile(R), 0);

    CHECK_INT(match(GET, "/a/b", NULL), 5);   /* exact over param over prefix */
    CHECK_INT(match(GET, "/a/c", NULL), 4);   /* param over prefix */
    CHECK_INT(match(GET, "/a/b/c", NULL), 3); /* longest prefix */
    CHECK_INT(match(GET, "/a/c/d", NULL), 2);
    CHECK_INT(match(GET, "/zzz", NULL), 1);
    CHECK_INT(match(GET, "/p/1/x", NULL), 9);  /* priority */
    CHECK_INT(match(GET, "/q/1/x", NULL), 10); /* insertion order */
    CHECK_INT(match(GET, "/c/d", NULL), 13);   /* more literal segments */
    CHECK_INT(match(GET, "/d/d", NULL), 12);
    CHECK_INT(match(GET, "/a/b", "Example.COM:8080"), 6); /* host-specific first, case and port */
    CHECK_INT(match(GET, "/a/b", "example.com."), 6);
    CHECK_INT(match(GET, "/a/b", "www.example.com"), 7);  /* wildcard host prefix beats host-less exact */
    CHECK_INT(match(GET, "/a/b", "x.y.example.com"), 14); /* exact host before wildcard */
    CHECK_INT(match(GET, "/a/b", "a.b.example.com"), 7);
    CHECK_INT(match(GET, "/a/b", "notexample.com"), 5);
    CHECK_INT(match(GET, "/zzz", "example.com"), 1); /* falls back to host-less */
    CHECK_INT(match(GET, "/a/b", "[::1]:80"), 5);
}

static void test_methods(void)
{
    reset();
    add(1, "/m", GET, NULL, 0);
    add(2, "/m", POST, NULL, 0);
    add(3, "/only", SL_HTTP_PUT | SL_HTTP_DELETE, NULL, 0);
    add(4, "/x/*", POST, NULL, 0);
    add(5, "/x/:id", GET, NULL, 0);
    add(6, "/h", GET, "h.com", 0);
    CHECK_INT(sl_router_compile(R), 0);
    CHECK_INT(match(GET, "/m", NULL), 1);
    CHECK_INT(match(POST, "/m", NULL), 2);
    CHECK_INT(match(SL_HTTP_PATCH, "/m", NULL), SL_ROUTER_METHOD_NOT_ALLOWED);
    CHECK_INT(match(SL_HTTP_DELETE, "/only", NULL), 3);
    CHECK_INT(match(GET, "/only", NULL), SL_ROUTER_METHOD_NOT_ALLOWED);
    CHECK_INT(match(0, "/only", NULL), SL_ROUTER_METHOD_NOT_ALLOWED);
    CHECK_INT(match(POST, "/x/1", NULL), 4); /* param fails on method, prefix takes it */
    CHECK_INT(match(GET, "/x/1", NULL), 5);
    CHECK_INT(match(GET, "/nothing", NULL), SL_ROUTER_NOT_FOUND);
    CHECK_INT(match(POST, "/h", "h.com"), SL_ROUTER_METHOD_NOT_ALLOWED);
    CHECK_INT(match(GET, "/h", "other.com"), SL_ROUTER_NOT_FOUND);
    CHECK_INT(sl_http_method_bit(S("GET")), SL_HTTP_GET);
    CHECK_INT(sl_http_method_bit(S("OPTIONS")), SL_HTTP_OPTIONS);
    CHECK_INT(sl_http_method_bit(S("get")), 0);
    CHECK_INT(sl_http_method_bit(S("BREW")), 0);
}

static void test_invalid(void)
{
    reset();
    CHECK_INT(sl_router_add(R, 1, S("noslash"), 0, NULL, 0, 0), -EINVAL);
    CHECK_INT(sl_router_add(R, 1, "", 0, 0, NULL, 0, 0), -EINVAL);
    CHECK_INT(sl_router_add(R, 1, S("/a/*/b"), 0, NULL, 0, 0), -EINVAL);
    CHECK_INT(sl_router_add(R, 1, S("/a/:"), 0, NULL, 0, 0), -EINVAL);
    CHECK_INT(sl_router_add(R, 1, S("/a/:b c"), 0, NULL, 0, 0), -EINVAL);
    CHECK_INT(sl_router_add(R, 1, S("/a/x*"), 0, NULL, 0, 0), -EINVAL);
    CHECK_INT(sl_router_add(R, 1, S("/:a/:b/:c/:d/:e/:f/:g/:h/:i"), 0, NULL, 0, 0), -E2BIG);
    CHECK_INT(sl_router_add(R, 1, S("/a"), 0, S("a.*.com"), 0), -EINVAL);
    CHECK_INT(sl_router_add(R, 1, S("/a"), 0, S("*.com"), 0), 0);
    CHECK_INT(sl_router_add(R, 1, S("/a"), 0, S("*x.com"), 0), -EINVAL);
    CHECK_INT(sl_router_match(R, GET, S("/a"), NULL, 0, &M), -EINVAL); /* not compiled */
    CHECK_INT(sl_router_compile(R), 0);
    CHECK_INT(sl_router_add(R, 1, S("/b"), 0, NULL, 0, 0), -EBUSY);

    reset(); /* empty router */
    CHECK_INT(sl_router_compile(R), 0);
    CHECK_INT(match(GET, "/", NULL), SL_ROUTER_NOT_FOUND);
}

static void test_scale(void)
{
    char path[64], *big;
    size_t n = 100000;

    reset();
    for (int i = 0; i < 1000; i++) {
        int len = snprintf(path, sizeof(path),
                           i % 3 == 0   ? "/svc%d/items"
                           : i % 3 == 1 ? "/svc%d/:id"
                                        : "/svc%d/*",
                           i);
        CHECK_INT(sl_router_add(R, i, path, (size_t)len, 0, NULL, 0, 0), 0);
    }
    CHECK_INT(sl_router_compile(R), 0);
    CHECK_INT(match(GET, "/svc999/items", NULL), 999); /* 999 % 3 == 0 -> exact */
    CHECK_INT(match(GET, "/svc999/items/x", NULL), SL_ROUTER_NOT_FOUND);
    CHECK_INT(match(GET, "/svc0/items", NULL), 0);
    CHECK_INT(match(GET, "/svc1/42", NULL), 1);
    CHECK_INT(match(GET, "/svc998/a/b/c", NULL), 998);
    CHECK_INT(match(GET, "/svc997/z", NULL), 997);

    big = malloc(n + 1);
    memcpy(big, "/svc2/", 6);
    memset(big + 6, 'x', n - 6);
    big[n] = 0;
    CHECK_INT(match(GET, big, NULL), 2);
    big[5] = 'y';
    CHECK_INT(match(GET, big, NULL), SL_ROUTER_NOT_FOUND);
    free(big);
}

int main(void)
{
    test_kinds();
    test_precedence();
    test_methods();
    test_invalid();
    test_scale();
    sl_router_free(R);
    return sl_test_done();
}

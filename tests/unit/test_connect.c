/* Opening upstream connections over several addresses (core/upstream/connect.c) on a real libuv loop: the
 * next address after a refused one, all refused, and the connection closed by its owner while the socket of a
 * failed attempt is still closing (run under ASan/LSan by scripts/test.sh: no leak, no use after free).
 * The addresses are put in the worker's DNS cache by hand; 127.0.0.2 and 127.0.0.3 refuse (nothing listens
 * there), 127.0.0.1 has our listener. */
#include <arpa/inet.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>

#include "lua/vm.h"
#include "test.h"
#include "upstream/connect.h"
#include "upstream/pool.h"

static sl_worker_t w;
static uv_tcp_t listener;
static int port;

typedef struct {
    int calls, error;
    char why[400];
} outcome_t;

static void on_ready(sl_upconn_t *uc, int error, const char *why)
{
    outcome_t *o = uc->owner;
    o->calls++;
    o->error = error;
    snprintf(o->why, sizeof(o->why), "%s", why ? why : "");
    if (error == 0)
        sl__upconn_close(uc);
}

static void on_read(sl_upconn_t *uc, ssize_t n)
{
}

static const sl_upconn_ops_t ops = {.ready = on_ready, .read = on_read};

static void free_handle(uv_handle_t *h)
{
    free(h);
}

/* Accepts and closes at once: the tests only need the connect to succeed. */
static void on_accept(uv_stream_t *s, int status)
{
    uv_tcp_t *c = malloc(sizeof(*c));
    if (c == NULL)
        return;
    uv_tcp_init(s->loop, c);
    uv_accept(s, (uv_stream_t *)c);
    uv_close((uv_handle_t *)c, free_handle);
}

/* Caches host -> the given IPv4 addresses, in that order. */
static void seed(const char *host, const char *const *ips, int n)
{
    struct sockaddr_in a[SL_DNS_MAX_ADDRS];
    struct addrinfo ai[SL_DNS_MAX_ADDRS];
    memset(ai, 0, sizeof(ai));
    for (int i = 0; i < n; i++) {
        uv_ip4_addr(ips[i], 0, &a[i]);
        ai[i].ai_family = AF_INET;
        ai[i].ai_addrlen = sizeof(a[i]);
        ai[i].ai_addr = (struct sockaddr *)&a[i];
        ai[i].ai_next = i + 1 < n ? &ai[i + 1] : NULL;
    }
    CHECK_INT(sl_dns_store(&sl__pool(&w)->dns, host, ai, sl_now(), 60), 0);
}

static sl_upconn_t *open_to(const char *host, outcome_t *o)
{
    sl_uptarget_t t = {.port = port, .connect_timeout = 5};
    snprintf(t.host, sizeof(t.host), "%s", host);
    return sl__upconn_open(&w, &t, &ops, o, 0);
}

static void run_until(const int *flag)
{
    for (int i = 0; i < 1000 && !*flag; i++)
        uv_run(&w.loop, UV_RUN_ONCE);
}

static void test_next_address(void)
{
    const char *ips[] = {"127.0.0.2", "127.0.0.3", "127.0.0.1"};
    seed("multi.test", ips, 3);
    outcome_t o = {0};
    sl_upconn_t *uc = open_to("multi.test", &o);
    CHECK(uc != NULL);
    run_until(&o.calls);
    CHECK_INT(o.calls, 1);
    CHECK_INT(o.error, 0);
    /* the two that refused now come last, whatever the round-robin start */
    struct sockaddr_storage out[SL_DNS_MAX_ADDRS];
    for (int k = 0; k < 3; k++) {
        CHECK_INT(sl_dns_lookup(&sl__pool(&w)->dns, "multi.test", port, sl_now(), out, SL_DNS_MAX_ADDRS), 3);
        CHECK_INT(ntohl(((struct sockaddr_in *)&out[0])->sin_addr.s_addr), 0x7f000001);
    }
}

static void test_all_refused(void)
{
    const char *ips[] = {"127.0.0.2", "127.0.0.3"};
    seed("dead.test", ips, 2);
    outcome_t o = {0};
    CHECK(open_to("dead.test", &o) != NULL);
    run_until(&o.calls);
    CHECK_INT(o.calls, 1);
    CHECK_INT(o.error, SL_UPERR_CONNECT);
    char want[200];
    snprintf(want, sizeof(want), "connect to dead.test:%d (2 addresses tried, last 127.0.0.", port);
    CHECK(strstr(o.why, want) != NULL);
    CHECK(strstr(o.why, "connection refused") != NULL);
}

/* Closing while a failed attempt's socket closes (ST_REOPENING): from a check handle, which runs after the
 * connect callback and before the loop's close callbacks. via_close: close it from another close callback
 * that runs first, so the socket's callback sees it closing before its timer is closed. */
static sl_upconn_t *victim;
static int via_close, closed_it;
static uv_check_t check;
static uv_idle_t dummy;

static void close_victim(uv_handle_t *h)
{
    sl__upconn_close(victim);
    closed_it = 1;
}

static void on_check(uv_check_t *c)
{
    if (closed_it || victim == NULL || victim->state != ST_REOPENING)
        return;
    if (via_close) {
        uv_idle_init(&w.loop, &dummy);
        uv_close((uv_handle_t *)&dummy, close_victim);
    } else {
        sl__upconn_close(victim);
        closed_it = 1;
    }
}

static void test_close_while_reopening(int how)
{
    const char *ips[] = {"127.0.0.2", "127.0.0.1"};
    char host[32];
    snprintf(host, sizeof(host), "close%d.test", how);
    seed(host, ips, 2);
    outcome_t o = {0};
    via_close = how;
    closed_it = 0;
    victim = open_to(host, &o);
    CHECK(victim != NULL);
    run_until(&closed_it);
    CHECK_INT(closed_it, 1);
    for (int i = 0; i < 5; i++)
        uv_run(&w.loop, UV_RUN_NOWAIT);
    CHECK_INT(o.calls, 0); /* a closed connection tells its (former) owner nothing */
    victim = NULL;
}

static void walk_count(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        ++*(int *)arg;
}

int main(void)
{
    uv_loop_init(&w.loop);
    uv_tcp_init(&w.loop, &listener);
    struct sockaddr_in a;
    uv_ip4_addr("127.0.0.1", 0, &a);
    CHECK_INT(uv_tcp_bind(&listener, (struct sockaddr *)&a, 0), 0);
    CHECK_INT(uv_listen((uv_stream_t *)&listener, 16, on_accept), 0);
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    uv_tcp_getsockname(&listener, (struct sockaddr *)&ss, &len);
    port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    uv_check_init(&w.loop, &check);
    uv_check_start(&check, on_check);

    test_next_address();
    test_all_refused();
    test_close_while_reopening(0);
    test_close_while_reopening(1);

    uv_close((uv_handle_t *)&check, NULL);
    uv_close((uv_handle_t *)&listener, NULL);
    sl__pool_close(&w);
    uv_run(&w.loop, UV_RUN_DEFAULT);
    int open = 0;
    uv_walk(&w.loop, walk_count, &open);
    CHECK_INT(open, 0);
    CHECK_INT(uv_loop_close(&w.loop), 0);
    return sl_test_done();
}

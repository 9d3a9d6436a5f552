/* URL parsing, NO_PROXY matching and the per-worker DNS cache (core/upstream/url.c, dns.c). */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdlib.h>

#include "test.h"
#include "upstream/dns.h"
#include "upstream/url.h"

static int parse(const char *s, sl_url_t *u)
{
    return sl_url_parse(s, strlen(s), u);
}

static void test_url(void)
{
    sl_url_t u;
    CHECK_INT(parse("http://example.com", &u), 0);
    CHECK_STR(u.host, "example.com");
    CHECK_INT(u.port, 80);
    CHECK_INT(u.tls, 0);
    CHECK_INT((int)u.target_len, 1);
    CHECK_INT(parse("https://api.openai.com/v1/chat?x=1#frag", &u), 0);
    CHECK_INT(u.port, 443);
    CHECK_INT(u.tls, 1);
    CHECK(u.target_len == 12 && memcmp(u.target, "/v1/chat?x=1", 12) == 0);
    CHECK_INT(parse("HTTP://user:pw@h:8080/p", &u), 0);
    CHECK_STR(u.host, "h");
    CHECK_INT(u.port, 8080);
    CHECK_INT(parse("http://[::1]:9000/x", &u), 0);
    CHECK_STR(u.host, "::1");
    CHECK_INT(u.ipv6, 1);
    CHECK_INT(u.port, 9000);
    CHECK_INT(parse("ftp://h/", &u), -EINVAL);
    CHECK_INT(parse("http://", &u), -EINVAL);
    CHECK_INT(parse("http://h:0/", &u), -EINVAL);
    CHECK_INT(parse("http://h:65536/", &u), -EINVAL);
    CHECK_INT(parse("http://h:8x/", &u), -EINVAL);
    CHECK_INT(parse("http://h/a b", &u), -EINVAL);
    CHECK_INT(parse("http://h/a\r\nX: y", &u), -EINVAL);
    CHECK_INT(parse("http://h?q=1", &u), -EINVAL);
    CHECK_INT(parse("http://[::1/", &u), -EINVAL);
}

static void test_no_proxy(void)
{
    CHECK_INT(sl_no_proxy_match("", "a.com", 80), 0);
    CHECK_INT(sl_no_proxy_match("*", "a.com", 80), 1);
    CHECK_INT(sl_no_proxy_match("a.com", "a.com", 80), 1);
    CHECK_INT(sl_no_proxy_match("a.com", "x.a.com", 80), 1);
    CHECK_INT(sl_no_proxy_match(".a.com", "x.a.com", 80), 1);
    CHECK_INT(sl_no_proxy_match("a.com", "xa.com", 80), 0);
    CHECK_INT(sl_no_proxy_match("b.org, 10.0.0.1 ,a.com", "10.0.0.1", 80), 1);
    CHECK_INT(sl_no_proxy_match("a.com:8080", "a.com", 80), 0);
    CHECK_INT(sl_no_proxy_match("a.com:8080", "a.com", 8080), 1);
    CHECK_INT(sl_no_proxy_match("*.a.com", "x.a.com", 80), 1);
    CHECK_INT(sl_no_proxy_match("*.a.com", "a.com", 80), 1);
    CHECK_INT(sl_no_proxy_match("A.COM", "x.a.com", 80), 1);
    /* IP hosts: the address itself or a CIDR block, never a "domain suffix" */
    CHECK_INT(sl_no_proxy_match("0.1", "10.0.0.1", 80), 0);
    CHECK_INT(sl_no_proxy_match("10.0.0.1", "10.0.0.1", 80), 1);
    CHECK_INT(sl_no_proxy_match("10.0.0.0/8", "10.200.3.4", 80), 1);
    CHECK_INT(sl_no_proxy_match("10.0.0.0/8", "11.0.0.1", 80), 0);
    CHECK_INT(sl_no_proxy_match("192.168.1.0/23", "192.168.0.7", 80), 1);
    CHECK_INT(sl_no_proxy_match("192.168.1.0/23", "192.168.2.7", 80), 0);
    CHECK_INT(sl_no_proxy_match("0.0.0.0/0", "8.8.8.8", 80), 1);
    CHECK_INT(sl_no_proxy_match("10.0.0.0/33", "10.0.0.1", 80), 0);
    CHECK_INT(sl_no_proxy_match("10.0.0.0/8", "ten.example", 80), 0);
    CHECK_INT(sl_no_proxy_match("127.0.0.1:8080", "127.0.0.1", 8080), 1);
    CHECK_INT(sl_no_proxy_match("127.0.0.1:8080", "127.0.0.1", 80), 0);
    /* IPv6: bare, bracketed, with a port, CIDR */
    CHECK_INT(sl_no_proxy_match("::1", "::1", 80), 1);
    CHECK_INT(sl_no_proxy_match("[::1]", "::1", 80), 1);
    CHECK_INT(sl_no_proxy_match("[::1]:8080", "::1", 8080), 1);
    CHECK_INT(sl_no_proxy_match("[::1]:8080", "::1", 80), 0);
    CHECK_INT(sl_no_proxy_match("fd00::/8", "fd12:3456::1", 80), 1);
    CHECK_INT(sl_no_proxy_match("fd00::/8", "fe80::1", 80), 0);
    CHECK_INT(sl_no_proxy_match("fd00::/8", "10.0.0.1", 80), 0);
    CHECK_INT(sl_no_proxy_match("[::1", "::1", 80), 0);
    CHECK_INT(sl_no_proxy_match(" , ,", "a.com", 80), 0);
}

static void test_env_proxy(void)
{
    sl_url_t p;
    unsetenv("http_proxy");
    unsetenv("https_proxy");
    unsetenv("no_proxy");
    unsetenv("HTTP_PROXY");
    unsetenv("HTTPS_PROXY");
    unsetenv("NO_PROXY");
    sl_env_proxy_reread();
    CHECK_INT(sl_env_proxy(0, "a.com", 80, &p), 0);
    setenv("HTTP_PROXY", "http://proxy:3128", 1);
    setenv("https_proxy", "proxy2:8443", 1);
    setenv("NO_PROXY", "internal.lan", 1);
    sl_env_proxy_reread();
    CHECK_INT(sl_env_proxy(0, "a.com", 80, &p), 1);
    CHECK_STR(p.host, "proxy");
    CHECK_INT(p.port, 3128);
    sl_env_proxy_reread();
    CHECK_INT(sl_env_proxy(1, "a.com", 443, &p), 1);
    CHECK_STR(p.host, "proxy2");
    CHECK_INT(p.port, 8443);
    sl_env_proxy_reread();
    CHECK_INT(sl_env_proxy(0, "db.internal.lan", 80, &p), 0);
    /* lower-case first; an empty one falls back to the upper-case one */
    setenv("http_proxy", "http://[::1]:8888/", 1);
    sl_env_proxy_reread();
    CHECK_INT(sl_env_proxy(0, "a.com", 80, &p), 1);
    CHECK_STR(p.host, "::1");
    CHECK_INT(p.port, 8888);
    setenv("http_proxy", "", 1);
    sl_env_proxy_reread();
    CHECK_INT(sl_env_proxy(0, "a.com", 80, &p), 1);
    CHECK_STR(p.host, "proxy");
    setenv("HTTP_PROXY", "http://user:pw@proxy", 1); /* default port 80; credentials are not used */
    sl_env_proxy_reread();
    CHECK_INT(sl_env_proxy(0, "a.com", 80, &p), 1);
    CHECK_STR(p.host, "proxy");
    CHECK_INT(p.port, 80);
    /* set but unusable: an error, never a silent direct connection */
    setenv("https_proxy", "https://proxy:443", 1);
    sl_env_proxy_reread();
    CHECK_INT(sl_env_proxy(1, "a.com", 443, &p), -EINVAL);
    setenv("https_proxy", "socks5://proxy:1080", 1);
    sl_env_proxy_reread();
    CHECK_INT(sl_env_proxy(1, "a.com", 443, &p), -EINVAL);
    setenv("https_proxy", "proxy 2:80", 1);
    sl_env_proxy_reread();
    CHECK_INT(sl_env_proxy(1, "a.com", 443, &p), -EINVAL);
    sl_env_proxy_reread();
    CHECK_INT(sl_env_proxy(1, "x.internal.lan", 443, &p), 0); /* NO_PROXY first */
    unsetenv("http_proxy");
    unsetenv("HTTP_PROXY");
    unsetenv("https_proxy");
    unsetenv("NO_PROXY");
}

static void test_dns(void)
{
    sl_dns_cache_t c = {.max = 2};
    struct sockaddr_storage ss;
    CHECK_INT(sl_dns_literal("127.0.0.1", 80, &ss), 0);
    CHECK_INT(ss.ss_family, AF_INET);
    CHECK_INT(sl_dns_literal("::1", 80, &ss), 0);
    CHECK_INT(ss.ss_family, AF_INET6);
    CHECK_INT(sl_dns_literal("localhost", 80, &ss), -EINVAL);

    struct sockaddr_in a1 = {.sin_family = AF_INET}, a2 = {.sin_family = AF_INET};
    a1.sin_addr.s_addr = htonl(0x0a000001);
    a2.sin_addr.s_addr = htonl(0x0a000002);
    struct addrinfo i2 = {.ai_family = AF_INET, .ai_addrlen = sizeof(a2), .ai_addr = (struct sockaddr *)&a2};
    struct addrinfo i1 = {
        .ai_family = AF_INET, .ai_addrlen = sizeof(a1), .ai_addr = (struct sockaddr *)&a1, .ai_next = &i2};
    CHECK_INT(sl_dns_lookup(&c, "a.test", 80, 100, &ss, 1), -ENOENT);
    CHECK_INT(sl_dns_store(&c, "a.test", &i1, 100, 30), 0);
    CHECK_INT(sl_dns_lookup(&c, "A.TEST", 8080, 110, &ss, 1), 1);
    CHECK_INT(ntohs(((struct sockaddr_in *)&ss)->sin_port), 8080);
    uint32_t first = ((struct sockaddr_in *)&ss)->sin_addr.s_addr;
    CHECK_INT(sl_dns_lookup(&c, "a.test", 80, 111, &ss, 1), 1);
    CHECK(((struct sockaddr_in *)&ss)->sin_addr.s_addr != first);     /* round robin */
    CHECK_INT(sl_dns_lookup(&c, "a.test", 80, 131, &ss, 1), -ENOENT); /* expired */
    CHECK_INT(c.n, 0);
    CHECK_INT(sl_dns_store(&c, "b.test", &i1, 100, 30), 0);
    CHECK_INT(sl_dns_store(&c, "c.test", &i1, 100, 30), 0);
    CHECK_INT(sl_dns_store(&c, "d.test", &i1, 100, 30), 0); /* over max: the oldest goes */
    CHECK_INT(c.n, 2);
    CHECK_INT(sl_dns_lookup(&c, "b.test", 80, 101, &ss, 1), -ENOENT);
    CHECK_INT(sl_dns_lookup(&c, "d.test", 80, 101, &ss, 1), 1);
    CHECK_INT(sl_dns_store(&c, "d.test", &i2, 102, 30), 0); /* replaced */
    CHECK_INT(c.n, 2);
    sl_dns_clear(&c);
    CHECK_INT(c.n, 0);
}

static int port_of(const struct sockaddr_storage *ss)
{
    return ntohs(ss->ss_family == AF_INET ? ((const struct sockaddr_in *)ss)->sin_port
                                          : ((const struct sockaddr_in6 *)ss)->sin6_port);
}

/* Index of a in the test's addresses (0: ::1, 1: 10.0.0.1, 2: 10.0.0.2), or -1. */
static int which(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET6)
        return memcmp(&((const struct sockaddr_in6 *)ss)->sin6_addr, &in6addr_loopback, 16) == 0 ? 0 : -1;
    uint32_t ip = ntohl(((const struct sockaddr_in *)ss)->sin_addr.s_addr);
    return ip == 0x0a000001 ? 1 : ip == 0x0a000002 ? 2 : -1;
}

/* Every address of a name, for the connect fallback: round-robin start, the rest in getaddrinfo's order after
 * it, those that refused lately last until SL_DNS_DOWN passes. */
static void test_dns_all(void)
{
    sl_dns_cache_t c = {0};
    struct sockaddr_in6 a0 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    struct sockaddr_in a1 = {.sin_family = AF_INET}, a2 = {.sin_family = AF_INET};
    a1.sin_addr.s_addr = htonl(0x0a000001);
    a2.sin_addr.s_addr = htonl(0x0a000002);
    struct addrinfo i2 = {.ai_family = AF_INET, .ai_addrlen = sizeof(a2), .ai_addr = (struct sockaddr *)&a2};
    struct addrinfo i1 = {
        .ai_family = AF_INET, .ai_addrlen = sizeof(a1), .ai_addr = (struct sockaddr *)&a1, .ai_next = &i2};
    struct addrinfo i0 = {
        .ai_family = AF_INET6, .ai_addrlen = sizeof(a0), .ai_addr = (struct sockaddr *)&a0, .ai_next = &i1};
    struct sockaddr_storage out[SL_DNS_MAX_ADDRS];
    CHECK_INT(sl_dns_store(&c, "m.test", &i0, 100, 30), 0);

    CHECK_INT(sl_dns_lookup(&c, "m.test", 8080, 100, out, SL_DNS_MAX_ADDRS), 3);
    CHECK(which(&out[0]) == 0 && which(&out[1]) == 1 && which(&out[2]) == 2);
    CHECK(port_of(&out[0]) == 8080 && port_of(&out[1]) == 8080 && port_of(&out[2]) == 8080);
    CHECK_INT(sl_dns_lookup(&c, "m.test", 80, 100, out, SL_DNS_MAX_ADDRS), 3); /* next start */
    CHECK(which(&out[0]) == 1 && which(&out[1]) == 2 && which(&out[2]) == 0);
    CHECK_INT(sl_dns_lookup(&c, "m.test", 80, 100, out, 2), 2); /* bounded by max */
    CHECK(which(&out[0]) == 2 && which(&out[1]) == 0);

    /* ::1 refused (any port): it goes last while 10.0.0.x are tried first, whatever the start */
    struct sockaddr_in6 refused = a0;
    refused.sin6_port = htons(443);
    sl_dns_failed(&c, "M.TEST", (struct sockaddr *)&refused, 100);
    for (int k = 0; k < 3; k++) {
        CHECK_INT(sl_dns_lookup(&c, "m.test", 80, 101, out, SL_DNS_MAX_ADDRS), 3);
        CHECK(which(&out[0]) != 0 && which(&out[1]) != 0 && which(&out[2]) == 0);
    }
    sl_dns_failed(&c, "m.test", (struct sockaddr *)&a1, 102); /* two down: the working one first */
    CHECK_INT(sl_dns_lookup(&c, "m.test", 80, 103, out, SL_DNS_MAX_ADDRS), 3);
    CHECK(which(&out[0]) == 2);
    CHECK_INT(sl_dns_lookup(&c, "m.test", 80, 103, out, 1), 1);
    CHECK(which(&out[0]) == 2);
    /* every address down: all of them still come back (round robin), nothing is left out */
    sl_dns_failed(&c, "m.test", (struct sockaddr *)&a2, 103);
    CHECK_INT(sl_dns_lookup(&c, "m.test", 80, 104, out, SL_DNS_MAX_ADDRS), 3);
    CHECK(which(&out[0]) + which(&out[1]) + which(&out[2]) == 3);
    /* SL_DNS_DOWN after the last failure all are back in plain rotation */
    for (int k = 0; k < 3; k++) {
        unsigned start = c.head->rr;
        CHECK_INT(sl_dns_lookup(&c, "m.test", 80, 103 + SL_DNS_DOWN + 0.5, out, SL_DNS_MAX_ADDRS), 3);
        CHECK_INT(which(&out[0]), (int)(start % 3));
        CHECK_INT(which(&out[1]), (int)((start + 1) % 3));
    }

    /* unknown hosts and addresses are ignored */
    struct sockaddr_in other = {.sin_family = AF_INET};
    other.sin_addr.s_addr = htonl(0x0a000009);
    sl_dns_failed(&c, "m.test", (struct sockaddr *)&other, 120);
    sl_dns_failed(&c, "nope.test", (struct sockaddr *)&a1, 120);
    CHECK_INT(sl_dns_lookup(&c, "nope.test", 80, 120, out, SL_DNS_MAX_ADDRS), -ENOENT);
    CHECK_INT(sl_dns_lookup(&c, "m.test", 80, 120, out, SL_DNS_MAX_ADDRS), 3);
    /* a fresh resolution forgets the failures */
    sl_dns_failed(&c, "m.test", (struct sockaddr *)&a0, 120);
    CHECK_INT(sl_dns_store(&c, "m.test", &i0, 121, 30), 0);
    CHECK_INT(sl_dns_lookup(&c, "m.test", 80, 121, out, SL_DNS_MAX_ADDRS), 3);
    CHECK_INT(which(&out[0]), 0);
    sl_dns_clear(&c);
}

int main(void)
{
    test_url();
    test_no_proxy();
    test_env_proxy();
    test_dns();
    test_dns_all();
    return sl_test_done();
}

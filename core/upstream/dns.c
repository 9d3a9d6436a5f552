/* A small per-worker cache in front of uv_getaddrinfo (which runs on the thread pool): a name is resolved at
 * most once per TTL per worker, so a busy upstream by name costs no resolver round trip per request. */
#include "upstream/dns.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void set_port(struct sockaddr_storage *ss, int port)
{
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
}

int sl_dns_literal(const char *host, int port, struct sockaddr_storage *out)
{
    memset(out, 0, sizeof(*out));
    struct sockaddr_in *a4 = (struct sockaddr_in *)out;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)out;
    if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
    } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
    } else {
        return -EINVAL;
    }
    set_port(out, port);
    return 0;
}

static void unlink_entry(sl_dns_cache_t *c, sl_dns_entry_t **pp)
{
    sl_dns_entry_t *e = *pp;
    *pp = e->next;
    free(e);
    c->n--;
}

static sl_dns_entry_t *find(sl_dns_cache_t *c, const char *host)
{
    for (sl_dns_entry_t *e = c->head; e; e = e->next)
        if (strcasecmp(e->host, host) == 0)
            return e;
    return NULL;
}

int sl_dns_lookup(sl_dns_cache_t *c, const char *host, int port, double now, struct sockaddr_storage *out,
                  int max)
{
    for (sl_dns_entry_t **pp = &c->head; *pp; pp = &(*pp)->next) {
        sl_dns_entry_t *e = *pp;
        if (strcasecmp(e->host, host) != 0)
            continue;
        if (e->expires <= now || e->naddrs == 0) {
            unlink_entry(c, pp);
            return -ENOENT;
        }
        unsigned start = e->rr++;
        int n = 0;
        for (int pass = 0; pass < 2; pass++) /* working addresses first, then the ones that failed lately */
            for (int i = 0; i < e->naddrs && n < max; i++) {
                int k = (int)((start + (unsigned)i) % (unsigned)e->naddrs);
                if ((e->down_until[k] > now) != (pass == 1))
                    continue;
                out[n] = e->addrs[k];
                set_port(&out[n++], port);
            }
        return n > 0 ? n : -ENOENT;
    }
    return -ENOENT;
}

static int same_ip(const struct sockaddr_storage *a, const struct sockaddr *b)
{
    if (a->ss_family != b->sa_family)
        return 0;
    if (b->sa_family == AF_INET)
        return memcmp(&((const struct sockaddr_in *)a)->sin_addr, &((const struct sockaddr_in *)b)->sin_addr,
                      sizeof(struct in_addr)) == 0;
    return b->sa_family == AF_INET6 &&
           memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr, &((const struct sockaddr_in6 *)b)->sin6_addr,
                  sizeof(struct in6_addr)) == 0;
}

void sl_dns_failed(sl_dns_cache_t *c, const char *host, const struct sockaddr *addr, double now)
{
    sl_dns_entry_t *e = find(c, host);
    for (int i = 0; e && i < e->naddrs; i++)
        if (same_ip(&e->addrs[i], addr))
            e->down_until[i] = now + SL_DNS_DOWN;
}

int sl_dns_store(sl_dns_cache_t *c, const char *host, const struct addrinfo *res, double now, double ttl)
{
    if (strlen(host) >= sizeof(((sl_dns_entry_t *)0)->host))
        return -ENAMETOOLONG;
    int max = c->max > 0 ? c->max : 256;
    for (sl_dns_entry_t **pp = &c->head; *pp;) {
        if (strcasecmp((*pp)->host, host) == 0 || (*pp)->expires <= now)
            unlink_entry(c, pp);
        else
            pp = &(*pp)->next;
    }
    while (c->n >= max) { /* newest first: drop the tail */
        sl_dns_entry_t **pp = &c->head;
        while ((*pp)->next)
            pp = &(*pp)->next;
        unlink_entry(c, pp);
    }
    sl_dns_entry_t *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return -ENOMEM;
    strcpy(e->host, host);
    for (const struct addrinfo *a = res; a && e->naddrs < SL_DNS_MAX_ADDRS; a = a->ai_next) {
        if ((a->ai_family != AF_INET && a->ai_family != AF_INET6) || a->ai_addrlen > sizeof(e->addrs[0]))
            continue;
        memcpy(&e->addrs[e->naddrs++], a->ai_addr, a->ai_addrlen);
    }
    e->expires = now + ttl;
    e->next = c->head;
    c->head = e;
    c->n++;
    return 0;
}

void sl_dns_clear(sl_dns_cache_t *c)
{
    while (c->head)
        unlink_entry(c, &c->head);
}

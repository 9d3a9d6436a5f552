#ifndef SL_DNS_H
#define SL_DNS_H

#include <netinet/in.h>
#include <stddef.h>
#include <sys/socket.h>

#define SL_DNS_MAX_ADDRS 4
#define SL_DNS_TTL 30.0
#define SL_DNS_DOWN 10.0 /* seconds an address that refused a connect is tried last */

struct addrinfo;

/** One resolved name: up to SL_DNS_MAX_ADDRS addresses (port 0) in getaddrinfo's order, used round-robin. */
typedef struct sl_dns_entry {
    struct sl_dns_entry *next;
    char host[256];
    struct sockaddr_storage addrs[SL_DNS_MAX_ADDRS];
    double down_until[SL_DNS_MAX_ADDRS]; /* a failed connect puts the address last until then */
    int naddrs;
    unsigned rr;
    double expires;
} sl_dns_entry_t;

/** A per-worker cache of resolved names (no locking: one worker only). */
typedef struct sl_dns_cache {
    sl_dns_entry_t *head;
    int n, max;
} sl_dns_cache_t;

/** Looks host up at time now; fills out[0..max) with the addresses to try in order (port set): round-robin
 *  from the next start, those that failed within SL_DNS_DOWN last. Returns how many (> 0), or -ENOENT. */
int sl_dns_lookup(sl_dns_cache_t *c, const char *host, int port, double now, struct sockaddr_storage *out,
                  int max);
/** Notes that a connect to addr (a cached address of host, any port) failed at time now: it is tried last
 *  until now + SL_DNS_DOWN. Unknown hosts and addresses are ignored. */
void sl_dns_failed(sl_dns_cache_t *c, const char *host, const struct sockaddr *addr, double now);
/** Stores the addresses of res for host until now + ttl (replacing an older entry); returns 0 or -ENOMEM.
 *  Past max entries, expired ones and then the oldest are dropped. */
int sl_dns_store(sl_dns_cache_t *c, const char *host, const struct addrinfo *res, double now, double ttl);
/** Frees every entry. */
void sl_dns_clear(sl_dns_cache_t *c);
/** Fills out with a literal IPv4/IPv6 address and port; returns 0, or -EINVAL when host is a name. */
int sl_dns_literal(const char *host, int port, struct sockaddr_storage *out);

#endif

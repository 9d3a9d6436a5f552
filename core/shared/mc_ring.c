/* The memcached ring and its per-server circuits (mc_ring.h). The ring is built once before the workers start
 * and only read afterwards; the circuits are atomics, so every worker and thread-pool thread shares them. */
#include "shared/mc_ring.h"

#include <errno.h>
#include <mbedtls/md5.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "lua/vm.h"
#include "shared/memcached.h"

#define POINTS_PER_HASH 4
#define HASHES_PER_SERVER 40 /* 160 points per server, as ketama */

typedef struct point {
    uint32_t hash;
    int server;
} point_t;

typedef struct server {
    char name[128];
    atomic_int failures;
    atomic_int probing;
    _Atomic double open_until; /* 0: closed */
} server_t;

static server_t *servers;
static int nservers;
static point_t *ring;
static int npoints;
static int threshold = 5;
static double retry_after = 5;

static int cmp_point(const void *a, const void *b)
{
    uint32_t x = ((const point_t *)a)->hash, y = ((const point_t *)b)->hash;
    return x < y ? -1 : x > y;
}

static uint32_t point_of(const unsigned char *d, int k)
{
    return ((uint32_t)d[3 + k * 4] << 24) | ((uint32_t)d[2 + k * 4] << 16) | ((uint32_t)d[1 + k * 4] << 8) |
           d[k * 4];
}

int sl__mc_ring_init(const char *const *names, int n, int fail_threshold, double retry)
{
    if (n <= 0 || n > SL_MC_MAX_SERVERS)
        return -EINVAL;
    server_t *s = calloc((size_t)n, sizeof(*s));
    point_t *p = calloc((size_t)n * HASHES_PER_SERVER * POINTS_PER_HASH, sizeof(*p));
    if (s == NULL || p == NULL) {
        free(s);
        free(p);
        return -ENOMEM;
    }
    int np = 0;
    for (int i = 0; i < n; i++) {
        snprintf(s[i].name, sizeof(s[i].name), "%s", names[i]);
        for (int h = 0; h < HASHES_PER_SERVER; h++) {
            char label[160];
            int len = snprintf(label, sizeof(label), "%s-%d", s[i].name, h);
            unsigned char d[16];
            mbedtls_md5_ret((const unsigned char *)label, (size_t)len, d);
            for (int k = 0; k < POINTS_PER_HASH; k++)
                p[np++] = (point_t){point_of(d, k), i};
        }
    }
    qsort(p, (size_t)np, sizeof(*p), cmp_point);
    sl__mc_ring_free();
    servers = s;
    nservers = n;
    ring = p;
    npoints = np;
    threshold = fail_threshold > 0 ? fail_threshold : 5;
    retry_after = retry > 0 ? retry : 5;
    return 0;
}

void sl__mc_ring_free(void)
{
    free(servers);
    free(ring);
    servers = NULL;
    ring = NULL;
    nservers = npoints = 0;
}

/* May a call go to server s now? Sets *probe when it is the probe of an open circuit. */
static int allows(server_t *s, int *probe)
{
    *probe = 0;
    double until = atomic_load(&s->open_until);
    if (until == 0)
        return 1;
    if (sl_now() < until)
        return 0;
    int expected = 0;
    if (!atomic_compare_exchange_strong(&s->probing, &expected, 1))
        return 0; /* another probe is out */
    *probe = 1;
    return 1;
}

int sl__mc_ring_pick(const char *key, size_t klen, int *probe)
{
    *probe = 0;
    if (nservers == 1)
        return allows(&servers[0], probe) ? 0 : -1;
    unsigned char d[16];
    mbedtls_md5_ret((const unsigned char *)key, klen, d);
    uint32_t h = point_of(d, 0);
    int lo = 0, hi = npoints; /* the first point >= h, wrapping to 0 */
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (ring[mid].hash < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    uint64_t tried = 0;
    int left = nservers;
    for (int i = 0; i < npoints && left > 0; i++) {
        int s = ring[(lo + i) % npoints].server;
        if (tried & (1ULL << s))
            continue;
        tried |= 1ULL << s;
        left--;
        if (allows(&servers[s], probe))
            return s;
    }
    return -1;
}

void sl__mc_ring_result(int i, int ok, int probe)
{
    if (i < 0 || i >= nservers)
        return;
    server_t *s = &servers[i];
    if (ok) {
        atomic_store(&s->failures, 0);
        if (atomic_load(&s->open_until) != 0) {
            atomic_store(&s->open_until, 0);
            sl_log(SL_LOG_INFO, "memcached %s: circuit closed, its keys are back on it", s->name);
        }
    } else {
        int n = atomic_fetch_add(&s->failures, 1) + 1;
        if (probe || n >= threshold) {
            if (atomic_load(&s->open_until) == 0)
                sl_log(SL_LOG_WARN,
                       "memcached %s: circuit open after %d failures, its keys go to the next servers (retry "
                       "in %gs)",
                       s->name, n, retry_after);
            atomic_store(&s->open_until, sl_now() + retry_after);
        }
    }
    if (probe)
        atomic_store(&s->probing, 0);
}

void sl__mc_ring_unprobe(int i)
{
    if (i >= 0 && i < nservers)
        atomic_store(&servers[i].probing, 0);
}

int sl_mc_server_count(void)
{
    return nservers;
}

int sl_mc_server_info(int i, char *addr, size_t len, int *state, int *failures)
{
    if (i < 0 || i >= nservers)
        return -1;
    server_t *s = &servers[i];
    if (addr && len)
        snprintf(addr, len, "%s", s->name);
    if (state)
        *state = atomic_load(&s->open_until) == 0 ? SL_MC_SERVER_UP
                 : atomic_load(&s->probing)       ? SL_MC_SERVER_PROBING
                                                  : SL_MC_SERVER_DOWN;
    if (failures)
        *failures = atomic_load(&s->failures);
    return 0;
}

int sl_mc_circuit_state(void)
{
    int down = 0, probing = 0;
    for (int i = 0; i < nservers; i++) {
        int st;
        sl_mc_server_info(i, NULL, 0, &st, NULL);
        down += st != SL_MC_SERVER_UP;
        probing += st == SL_MC_SERVER_PROBING;
    }
    if (down == 0)
        return 0;
    return down == nservers && probing == 0 ? 1 : 2;
}

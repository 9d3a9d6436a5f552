/* Shared dicts. The registry is written only by the main thread before workers start, so lookups take
 * no lock. Each dict is split in up to 16 shards; small dicts get fewer shards so that one value can
 * still use most of the budget. Memory is accounted per entry (header + key + value, rounded), and the
 * bucket arrays are paid for up front out of the budget. */
#include "shared/shdict.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_DICTS 64
#define MAX_SHARDS 16
#define SHARD_MIN_BYTES (64 * 1024)
#define EXPIRE_SCAN 64 /* expired entries looked at from the LRU tail before evicting live ones */

typedef struct ent {
    struct ent *hnext, *prev, *next;
    uint64_t expires; /* monotonic ns; 0 = never */
    double num;
    uint32_t hash, klen, vlen, flags;
    int type;
    char data[]; /* key, then string value */
} ent_t;

typedef struct {
    pthread_mutex_t lock;
    ent_t **buckets;
    uint32_t mask;
    ent_t lru; /* sentinel: next = most recently used, prev = least */
    size_t budget, used;
} shard_t;

struct sl_shdict {
    char name[SL_SHDICT_MAX_NAME + 1];
    size_t size;
    unsigned nshards;
    shard_t shards[MAX_SHARDS];
};

enum { MODE_SET, MODE_ADD, MODE_REPLACE };

static sl_shdict_t *dicts[MAX_DICTS];
static int ndicts;

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static uint64_t (*now_ns)(void) = mono_ns;

void sl__shdict_set_clock(uint64_t (*fn)(void))
{
    now_ns = fn ? fn : mono_ns;
}

static uint32_t hash_key(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static size_t cost(size_t klen, size_t vlen)
{
    return (sizeof(ent_t) + klen + vlen + 15) & ~(size_t)15;
}

static int expired(const ent_t *e, uint64_t now)
{
    return e->expires && e->expires <= now;
}

/* ttl seconds -> absolute deadline; -1 for a bad ttl. */
static int deadline(double ttl, uint64_t now, uint64_t *out)
{
    if (isnan(ttl) || ttl < 0 || ttl > 1e9)
        return -1;
    if (ttl == 0) {
        *out = 0;
        return 0;
    }
    /* a ttl below 1ns must still expire, and 0 would mean "never" */
    *out = now + ((uint64_t)(ttl * 1e9) ? (uint64_t)(ttl * 1e9) : 1);
    return 0;
}

static shard_t *shard_of(sl_shdict_t *d, uint32_t h)
{
    return &d->shards[(h >> 24) & (d->nshards - 1)];
}

static void lru_unlink(ent_t *e)
{
    e->prev->next = e->next;
    e->next->prev = e->prev;
}

static void lru_push(shard_t *s, ent_t *e)
{
    e->next = s->lru.next;
    e->prev = &s->lru;
    s->lru.next->prev = e;
    s->lru.next = e;
}

static void touch(shard_t *s, ent_t *e)
{
    lru_unlink(e);
    lru_push(s, e);
}

static ent_t *lookup(shard_t *s, const char *key, size_t klen, uint32_t h)
{
    for (ent_t *e = s->buckets[h & s->mask]; e; e = e->hnext)
        if (e->hash == h && e->klen == klen && memcmp(e->data, key, klen) == 0)
            return e;
    return NULL;
}

static void remove_ent(shard_t *s, ent_t *e)
{
    ent_t **pp = &s->buckets[e->hash & s->mask];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    lru_unlink(e);
    s->used -= cost(e->klen, e->vlen);
    free(e);
}

/* The live entry of key, or NULL: an expired one found on the way is dropped. */
static ent_t *lookup_live(shard_t *s, const char *key, size_t klen, uint32_t h, uint64_t now)
{
    ent_t *e = lookup(s, key, klen, h);
    if (e && expired(e, now)) {
        remove_ent(s, e);
        e = NULL;
    }
    return e;
}

/* Makes room for `need` bytes: expired entries first, then least recently used ones. */
static int make_room(shard_t *s, size_t need, uint64_t now, int *forcible)
{
    ent_t *e = s->lru.prev;

    if (need > s->budget)
        return SL_SHDICT_NOMEM;
    for (int i = 0; i < EXPIRE_SCAN && e != &s->lru && s->used + need > s->budget; i++) {
        ent_t *prev = e->prev;
        if (expired(e, now))
            remove_ent(s, e);
        e = prev;
    }
    while (s->used + need > s->budget && s->lru.prev != &s->lru) {
        remove_ent(s, s->lru.prev);
        if (forcible)
            *forcible = 1;
    }
    return s->used + need > s->budget ? SL_SHDICT_NOMEM : 0;
}

/* Inserts a new entry; the caller removed any previous one under the same key. */
static int insert(shard_t *s, const char *key, size_t klen, uint32_t h, int type, double num, const char *str,
                  size_t slen, uint64_t expires, uint32_t flags, uint64_t now, int *forcible)
{
    size_t need = cost(klen, slen);
    int rc = make_room(s, need, now, forcible);
    ent_t *e;

    if (rc)
        return rc;
    e = malloc(need);
    if (!e)
        return SL_SHDICT_NOMEM;
    e->hash = h;
    e->klen = (uint32_t)klen;
    e->vlen = (uint32_t)slen;
    e->type = type;
    e->num = num;
    e->flags = flags;
    e->expires = expires;
    memcpy(e->data, key, klen);
    if (slen)
        memcpy(e->data + klen, str, slen);
    e->hnext = s->buckets[h & s->mask];
    s->buckets[h & s->mask] = e;
    lru_push(s, e);
    s->used += need;
    return 0;
}

int sl_shdict_create(const char *name, size_t size)
{
    size_t nlen = name ? strlen(name) : 0, per;
    sl_shdict_t *d = NULL;
    int rc = 0;
    unsigned i;

    if (nlen == 0 || nlen > SL_SHDICT_MAX_NAME || size < SL_SHDICT_MIN_SIZE)
        return -EINVAL;
    if (sl_shdict_find(name, nlen))
        return -EEXIST;
    if (ndicts == MAX_DICTS)
        return -ENOSPC;
    d = calloc(1, sizeof(*d));
    if (!d)
        return -ENOMEM;
    memcpy(d->name, name, nlen);
    d->size = size;
    d->nshards = 1;
    while (d->nshards < MAX_SHARDS && size / (d->nshards * 2) >= SHARD_MIN_BYTES)
        d->nshards *= 2;
    per = size / d->nshards;
    for (i = 0; i < d->nshards; i++) {
        shard_t *s = &d->shards[i];
        uint32_t nb = 8;
        while ((size_t)nb * 256 < per)
            nb <<= 1;
        s->lru.next = s->lru.prev = &s->lru;
        s->mask = nb - 1;
        s->budget = per - nb * sizeof(ent_t *);
        s->buckets = calloc(nb, sizeof(ent_t *));
        if (!s->buckets || pthread_mutex_init(&s->lock, NULL) != 0) {
            free(s->buckets);
            rc = -ENOMEM;
            goto fail;
        }
    }
    dicts[ndicts++] = d;
    return 0;
fail:
    while (i-- > 0) {
        pthread_mutex_destroy(&d->shards[i].lock);
        free(d->shards[i].buckets);
    }
    free(d);
    return rc;
}

sl_shdict_t *sl_shdict_find(const char *name, size_t len)
{
    for (int i = 0; i < ndicts; i++)
        if (strlen(dicts[i]->name) == len && memcmp(dicts[i]->name, name, len) == 0)
            return dicts[i];
    return NULL;
}

int sl_shdict_get(sl_shdict_t *d, const char *key, size_t klen, int *type, double *num, char *buf,
                  size_t buflen, size_t *vlen, uint32_t *flags)
{
    uint32_t h = hash_key(key, klen);
    shard_t *s = shard_of(d, h);
    int rc = 0;
    ent_t *e;

    pthread_mutex_lock(&s->lock);
    e = lookup_live(s, key, klen, h, now_ns());
    if (!e) {
        rc = SL_SHDICT_NOT_FOUND;
        goto out;
    }
    *vlen = e->vlen;
    if (e->vlen > buflen) {
        rc = SL_SHDICT_NOBUFS;
        goto out;
    }
    if (e->vlen)
        memcpy(buf, e->data + e->klen, e->vlen);
    *type = e->type;
    *num = e->num;
    *flags = e->flags;
    touch(s, e);
out:
    pthread_mutex_unlock(&s->lock);
    return rc;
}

static int store(sl_shdict_t *d, int mode, const char *key, size_t klen, int type, double num,
                 const char *str, size_t slen, double ttl, uint32_t flags, int *forcible)
{
    uint32_t h = hash_key(key, klen);
    shard_t *s;
    uint64_t now, expires;
    int rc = 0;
    ent_t *e;

    if (forcible)
        *forcible = 0;
    if (!d || klen == 0 || klen > UINT16_MAX || type < SL_SHDICT_NIL || type > SL_SHDICT_BOOLEAN ||
        slen > UINT32_MAX || (slen && !str))
        return SL_SHDICT_INVALID;
    if (type != SL_SHDICT_STRING)
        slen = 0;
    s = shard_of(d, h);
    pthread_mutex_lock(&s->lock);
    now = now_ns();
    if (deadline(ttl, now, &expires) != 0) {
        rc = SL_SHDICT_INVALID;
        goto out;
    }
    e = lookup_live(s, key, klen, h, now);
    if ((mode == MODE_ADD && e) || (mode == MODE_REPLACE && !e)) {
        rc = e ? SL_SHDICT_EXISTS : SL_SHDICT_NOT_FOUND;
        goto out;
    }
    if (e && type != SL_SHDICT_NIL && e->vlen == slen) {
        /* same size: rewrite in place, no allocator round trip */
        if (slen)
            memcpy(e->data + klen, str, slen);
        e->type = type;
        e->num = num;
        e->flags = flags;
        e->expires = expires;
        touch(s, e);
        goto out;
    }
    if (cost(klen, slen) > s->budget) {
        rc = SL_SHDICT_TOOBIG; /* checked first so a hopeless set keeps the old value */
        goto out;
    }
    if (e)
        remove_ent(s, e);
    if (type != SL_SHDICT_NIL)
        rc = insert(s, key, klen, h, type, num, str, slen, expires, flags, now, forcible);
out:
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int sl_shdict_set(sl_shdict_t *d, const char *key, size_t klen, int type, double num, const char *str,
                  size_t slen, double ttl, uint32_t flags, int *forcible)
{
    return store(d, MODE_SET, key, klen, type, num, str, slen, ttl, flags, forcible);
}

int sl_shdict_add(sl_shdict_t *d, const char *key, size_t klen, int type, double num, const char *str,
                  size_t slen, double ttl, uint32_t flags, int *forcible)
{
    return store(d, MODE_ADD, key, klen, type, num, str, slen, ttl, flags, forcible);
}

int sl_shdict_replace(sl_shdict_t *d, const char *key, size_t klen, int type, double num, const char *str,
                      size_t slen, double ttl, uint32_t flags, int *forcible)
{
    return store(d, MODE_REPLACE, key, klen, type, num, str, slen, ttl, flags, forcible);
}

int sl_shdict_incr(sl_shdict_t *d, const char *key, size_t klen, double delta, int has_init, double init,
                   double init_ttl, double *out, int *forcible)
{
    uint32_t h = hash_key(key, klen);
    shard_t *s = shard_of(d, h);
    uint64_t now, expires;
    int rc = 0;
    ent_t *e;

    if (forcible)
        *forcible = 0;
    if (klen == 0 || klen > UINT16_MAX)
        return SL_SHDICT_INVALID;
    pthread_mutex_lock(&s->lock);
    now = now_ns();
    e = lookup_live(s, key, klen, h, now);
    if (e) {
        if (e->type != SL_SHDICT_NUMBER) {
            rc = SL_SHDICT_NOT_NUMBER;
            goto out;
        }
        e->num += delta;
        *out = e->num;
        touch(s, e);
        goto out;
    }
    if (!has_init) {
        rc = SL_SHDICT_NOT_FOUND;
        goto out;
    }
    if (deadline(init_ttl, now, &expires) != 0) {
        rc = SL_SHDICT_INVALID;
        goto out;
    }
    *out = init + delta;
    rc = insert(s, key, klen, h, SL_SHDICT_NUMBER, *out, NULL, 0, expires, 0, now, forcible);
out:
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int sl_shdict_cas_num(sl_shdict_t *d, const char *key, size_t klen, int has_old, double old, double num,
                      double ttl, double *cur, int *forcible)
{
    uint32_t h = hash_key(key, klen);
    shard_t *s;
    uint64_t now, expires;
    int rc = 0, match;
    ent_t *e;

    if (forcible)
        *forcible = 0;
    *cur = NAN;
    if (!d || klen == 0 || klen > UINT16_MAX)
        return SL_SHDICT_INVALID;
    s = shard_of(d, h);
    pthread_mutex_lock(&s->lock);
    now = now_ns();
    if (deadline(ttl, now, &expires) != 0) {
        rc = SL_SHDICT_INVALID;
        goto out;
    }
    e = lookup_live(s, key, klen, h, now);
    if (e && e->type == SL_SHDICT_NUMBER)
        *cur = e->num;
    match = has_old ? (e && e->type == SL_SHDICT_NUMBER && e->num == old) : (e == NULL);
    if (!match) {
        rc = SL_SHDICT_EXISTS;
        goto out;
    }
    if (e && e->vlen == 0) { /* a number in place: no allocator round trip */
        e->type = SL_SHDICT_NUMBER;
        e->num = num;
        e->flags = 0;
        e->expires = expires;
        touch(s, e);
        goto out;
    }
    if (e)
        remove_ent(s, e);
    rc = insert(s, key, klen, h, SL_SHDICT_NUMBER, num, NULL, 0, expires, 0, now, forcible);
out:
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int sl_shdict_delete(sl_shdict_t *d, const char *key, size_t klen)
{
    uint32_t h = hash_key(key, klen);
    shard_t *s = shard_of(d, h);
    int rc = SL_SHDICT_NOT_FOUND;
    ent_t *e;

    pthread_mutex_lock(&s->lock);
    e = lookup(s, key, klen, h);
    if (e) {
        rc = expired(e, now_ns()) ? SL_SHDICT_NOT_FOUND : 0;
        remove_ent(s, e);
    }
    pthread_mutex_unlock(&s->lock);
    return rc;
}

/* Shared body of ttl and expire: finds a live entry, reading or rewriting its deadline. */
static int ttl_op(sl_shdict_t *d, const char *key, size_t klen, double *get, const double *set)
{
    uint32_t h = hash_key(key, klen);
    shard_t *s = shard_of(d, h);
    uint64_t now, expires = 0;
    int rc = 0;
    ent_t *e;

    pthread_mutex_lock(&s->lock);
    now = now_ns();
    if (set && deadline(*set, now, &expires) != 0) {
        rc = SL_SHDICT_INVALID;
        goto out;
    }
    e = lookup_live(s, key, klen, h, now);
    if (!e) {
        rc = SL_SHDICT_NOT_FOUND;
        goto out;
    }
    if (set)
        e->expires = expires;
    else
        *get = e->expires ? (double)(e->expires - now) / 1e9 : 0;
out:
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int sl_shdict_ttl(sl_shdict_t *d, const char *key, size_t klen, double *ttl)
{
    return ttl_op(d, key, klen, ttl, NULL);
}

int sl_shdict_expire(sl_shdict_t *d, const char *key, size_t klen, double ttl)
{
    return ttl_op(d, key, klen, NULL, &ttl);
}

void sl_shdict_flush_all(sl_shdict_t *d)
{
    for (unsigned i = 0; i < d->nshards; i++) {
        shard_t *s = &d->shards[i];
        pthread_mutex_lock(&s->lock);
        while (s->lru.next != &s->lru)
            remove_ent(s, s->lru.next);
        pthread_mutex_unlock(&s->lock);
    }
}

int sl_shdict_flush_expired(sl_shdict_t *d, int max)
{
    int n = 0;

    for (unsigned i = 0; i < d->nshards && (max <= 0 || n < max); i++) {
        shard_t *s = &d->shards[i];
        uint64_t now;
        pthread_mutex_lock(&s->lock);
        now = now_ns();
        for (ent_t *e = s->lru.prev; e != &s->lru && (max <= 0 || n < max);) {
            ent_t *prev = e->prev;
            if (expired(e, now)) {
                remove_ent(s, e);
                n++;
            }
            e = prev;
        }
        pthread_mutex_unlock(&s->lock);
    }
    return n;
}

int sl_shdict_get_keys(sl_shdict_t *d, int max, char *buf, size_t buflen, size_t *needed, int *count)
{
    size_t off = 0;
    int n = 0;

    for (unsigned i = 0; i < d->nshards && (max <= 0 || n < max); i++) {
        shard_t *s = &d->shards[i];
        uint64_t now;
        pthread_mutex_lock(&s->lock);
        now = now_ns();
        for (ent_t *e = s->lru.next; e != &s->lru && (max <= 0 || n < max); e = e->next) {
            uint32_t kl = e->klen;
            if (expired(e, now))
                continue;
            if (off + sizeof(kl) + kl <= buflen) {
                memcpy(buf + off, &kl, sizeof(kl));
                memcpy(buf + off + sizeof(kl), e->data, kl);
            }
            off += sizeof(kl) + kl;
            n++;
        }
        pthread_mutex_unlock(&s->lock);
    }
    *needed = off;
    *count = n;
    return off > buflen ? SL_SHDICT_NOBUFS : 0;
}

size_t sl_shdict_capacity(const sl_shdict_t *d)
{
    return d->size;
}

size_t sl_shdict_max_item(const sl_shdict_t *d)
{
    /* cost() rounds up to 16: an entry fits when header + key + value <= the budget rounded down to 16 */
    size_t b = d->shards[0].budget & ~(size_t)15; /* every shard has the same budget */
    return b > sizeof(ent_t) ? b - sizeof(ent_t) : 0;
}

size_t sl_shdict_free_space(sl_shdict_t *d)
{
    size_t total = 0;

    for (unsigned i = 0; i < d->nshards; i++) {
        shard_t *s = &d->shards[i];
        pthread_mutex_lock(&s->lock);
        total += s->budget - s->used;
        pthread_mutex_unlock(&s->lock);
    }
    return total;
}

void sl_shdict_close_all(void)
{
    for (int i = 0; i < ndicts; i++) {
        sl_shdict_t *d = dicts[i];
        sl_shdict_flush_all(d);
        for (unsigned j = 0; j < d->nshards; j++) {
            pthread_mutex_destroy(&d->shards[j].lock);
            free(d->shards[j].buckets);
        }
        free(d);
        dicts[i] = NULL;
    }
    ndicts = 0;
}

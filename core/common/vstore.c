/* The node-wide vector store (vstore.h). Slots hold rows; a key index (chained hash over slot ids) finds a
 * key's slot; a doubly linked list keeps slots in insertion order, so the oldest is evicted first when the
 * store is full; a bitmap marks the live slots the search scans. One rwlock: searches share it, changes take
 * it alone. */
#include "common/vstore.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "common/hash.h"

#define NONE UINT32_MAX
#define NAME_MAX_LEN 128

struct sl_vstore {
    struct sl_vstore *next; /* registry list */
    int refs;               /* atomic */
    pthread_rwlock_t lock;
    uint32_t dims, cap, flags, count;
    uint32_t nbuckets;                   /* power of two */
    uint32_t *bucket, *chain;            /* key index: slot ids */
    uint32_t *prev, *nextin, head, tail; /* insertion order of live slots */
    uint32_t *freelist, nfree;
    float *f32, *i8s;
    int8_t *i8;
    uint64_t *bits;
    uint8_t *live;
    double *expires;
    uint8_t *klen;
    char *keys; /* cap x SL_VSTORE_KEY_MAX */
    char name[NAME_MAX_LEN + 1];
};

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static sl_vstore_t *reg;

static double wall(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static void store_free(sl_vstore_t *s)
{
    pthread_rwlock_destroy(&s->lock);
    free(s->bucket);
    free(s->chain);
    free(s->prev);
    free(s->nextin);
    free(s->freelist);
    free(s->f32);
    free(s->i8s);
    free(s->i8);
    free(s->bits);
    free(s->live);
    free(s->expires);
    free(s->klen);
    free(s->keys);
    free(s);
}

static void reset(sl_vstore_t *s)
{
    for (uint32_t i = 0; i < s->nbuckets; i++)
        s->bucket[i] = NONE;
    for (uint32_t i = 0; i < s->cap; i++)
        s->freelist[i] = s->cap - 1 - i; /* slot 0 first */
    s->nfree = s->cap;
    s->head = s->tail = NONE;
    s->count = 0;
    memset(s->live, 0, ((size_t)s->cap + 7) / 8);
}

static sl_vstore_t *store_new(const char *name, size_t nlen, uint32_t dims, uint32_t cap, uint32_t flags)
{
    sl_vstore_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    pthread_rwlock_init(&s->lock, NULL);
    memcpy(s->name, name, nlen);
    s->dims = dims;
    s->cap = cap;
    s->flags = flags;
    s->refs = 1;
    s->nbuckets = 16;
    while (s->nbuckets < cap)
        s->nbuckets *= 2;
    s->bucket = malloc(s->nbuckets * sizeof(uint32_t));
    s->chain = malloc(cap * sizeof(uint32_t));
    s->prev = malloc(cap * sizeof(uint32_t));
    s->nextin = malloc(cap * sizeof(uint32_t));
    s->freelist = malloc(cap * sizeof(uint32_t));
    s->f32 = calloc((size_t)cap * dims, sizeof(float));
    s->live = calloc(((size_t)cap + 7) / 8, 1);
    s->expires = calloc(cap, sizeof(double));
    s->klen = calloc(cap, 1);
    s->keys = malloc((size_t)cap * SL_VSTORE_KEY_MAX);
    if (flags & SL_VSTORE_I8) {
        s->i8 = calloc((size_t)cap, dims);
        s->i8s = calloc(cap, sizeof(float));
    }
    if (flags & SL_VSTORE_BITS)
        s->bits = calloc((size_t)cap * sl_vec_words(dims), 8);
    if (!s->bucket || !s->chain || !s->prev || !s->nextin || !s->freelist || !s->f32 || !s->live ||
        !s->expires || !s->klen || !s->keys || ((flags & SL_VSTORE_I8) && (!s->i8 || !s->i8s)) ||
        ((flags & SL_VSTORE_BITS) && !s->bits)) {
        store_free(s);
        return NULL;
    }
    reset(s);
    return s;
}

sl_vstore_t *sl_vstore_open(const char *name, size_t nlen, uint32_t dims, uint32_t capacity, uint32_t flags,
                            int *err)
{
    *err = 0;
    if (nlen == 0 || nlen > NAME_MAX_LEN || memchr(name, '\0', nlen) || dims == 0 || dims > SL_VEC_MAX_DIMS ||
        capacity == 0 || capacity > SL_VSTORE_MAX_CAPACITY ||
        (flags & ~(uint32_t)(SL_VSTORE_I8 | SL_VSTORE_BITS))) {
        *err = -EINVAL;
        return NULL;
    }
    pthread_mutex_lock(&reg_lock);
    sl_vstore_t **pp = &reg;
    while (*pp && !(strlen((*pp)->name) == nlen && memcmp((*pp)->name, name, nlen) == 0))
        pp = &(*pp)->next;
    sl_vstore_t *s = *pp;
    if (s && s->dims == dims && s->cap == capacity && s->flags == flags) {
        __atomic_add_fetch(&s->refs, 1, __ATOMIC_RELAXED);
        pthread_mutex_unlock(&reg_lock);
        return s;
    }
    sl_vstore_t *n = store_new(name, nlen, dims, capacity, flags);
    if (n == NULL) {
        pthread_mutex_unlock(&reg_lock);
        *err = -ENOMEM;
        return NULL;
    }
    n->refs = 2; /* the registry's and the caller's */
    if (s) {     /* other settings: the new store takes the name */
        n->next = s->next;
        *pp = n;
    } else {
        n->next = reg;
        reg = n;
    }
    pthread_mutex_unlock(&reg_lock);
    sl_vstore_release(s); /* the registry's reference to the replaced one */
    return n;
}

void sl_vstore_release(sl_vstore_t *s)
{
    if (s && __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) == 0)
        store_free(s);
}

static uint32_t bucket_of(const sl_vstore_t *s, const char *key, size_t klen)
{
    return (uint32_t)sl_xxh64(key, klen, 0) & (s->nbuckets - 1);
}

static uint32_t find(const sl_vstore_t *s, const char *key, size_t klen)
{
    for (uint32_t i = s->bucket[bucket_of(s, key, klen)]; i != NONE; i = s->chain[i])
        if (s->klen[i] == klen && memcmp(s->keys + (size_t)i * SL_VSTORE_KEY_MAX, key, klen) == 0)
            return i;
    return NONE;
}

/* Takes slot i out of the key index, the insertion list and the live set; puts it on the free list. */
static void drop(sl_vstore_t *s, uint32_t i)
{
    uint32_t *pp = &s->bucket[bucket_of(s, s->keys + (size_t)i * SL_VSTORE_KEY_MAX, s->klen[i])];
    while (*pp != i)
        pp = &s->chain[*pp];
    *pp = s->chain[i];
    if (s->prev[i] != NONE)
        s->nextin[s->prev[i]] = s->nextin[i];
    else
        s->head = s->nextin[i];
    if (s->nextin[i] != NONE)
        s->prev[s->nextin[i]] = s->prev[i];
    else
        s->tail = s->prev[i];
    s->live[i / 8] &= (uint8_t) ~(1u << (i % 8));
    s->freelist[s->nfree++] = i;
    s->count--;
}

static int key_has_prefix(const sl_vstore_t *s, uint32_t i, const char *prefix, size_t plen)
{
    return s->klen[i] >= plen && memcmp(s->keys + (size_t)i * SL_VSTORE_KEY_MAX, prefix, plen) == 0;
}

/* The oldest live slot whose key starts with prefix when at least max such keys are live, else NONE: the walk
 * goes in insertion order and stops at the max-th match. Linear in the store's entries. */
static uint32_t group_full(const sl_vstore_t *s, const char *prefix, size_t plen, uint32_t max)
{
    uint32_t oldest = NONE, n = 0;
    for (uint32_t i = s->head; i != NONE; i = s->nextin[i]) {
        if (!key_has_prefix(s, i, prefix, plen))
            continue;
        if (oldest == NONE)
            oldest = i;
        if (++n >= max)
            return oldest;
    }
    return NONE;
}

static void evict(sl_vstore_t *s, uint32_t i, char *evicted, uint32_t *evicted_len)
{
    if (evicted && evicted_len) {
        memcpy(evicted, s->keys + (size_t)i * SL_VSTORE_KEY_MAX, s->klen[i]);
        *evicted_len = s->klen[i];
    }
    drop(s, i);
}

int sl_vstore_add(sl_vstore_t *s, const char *key, size_t klen, const float *v, double ttl, char *evicted,
                  uint32_t *evicted_len)
{
    return sl_vstore_add_in(s, key, klen, 0, 0, v, ttl, evicted, evicted_len);
}

int sl_vstore_add_in(sl_vstore_t *s, const char *key, size_t klen, size_t glen, uint32_t gmax, const float *v,
                     double ttl, char *evicted, uint32_t *evicted_len)
{
    if (klen == 0 || klen > SL_VSTORE_KEY_MAX || glen > klen)
        return -EINVAL;
    float *tmp = malloc(s->dims * sizeof(float));
    if (tmp == NULL)
        return -ENOMEM;
    memcpy(tmp, v, s->dims * sizeof(float));
    if (sl_vec_normalize(tmp, s->dims) == 0) {
        free(tmp);
        return -EINVAL;
    }
    int rc = 0;
    pthread_rwlock_wrlock(&s->lock);
    uint32_t i = find(s, key, klen);
    if (i != NONE) {
        drop(s, i);
        rc = 1;
    }
    uint32_t old = glen && gmax ? group_full(s, key, glen, gmax) : NONE;
    if (old == NONE && s->nfree == 0)
        old = s->head;
    if (old != NONE) { /* the group's oldest, else the store's: either frees the one slot needed */
        evict(s, old, evicted, evicted_len);
        rc = 2;
    }
    i = s->freelist[--s->nfree];
    memcpy(s->keys + (size_t)i * SL_VSTORE_KEY_MAX, key, klen);
    s->klen[i] = (uint8_t)klen;
    uint32_t b = bucket_of(s, key, klen);
    s->chain[i] = s->bucket[b];
    s->bucket[b] = i;
    s->prev[i] = s->tail;
    s->nextin[i] = NONE;
    if (s->tail != NONE)
        s->nextin[s->tail] = i;
    else
        s->head = i;
    s->tail = i;
    float *row = s->f32 + (size_t)i * s->dims;
    memcpy(row, tmp, s->dims * sizeof(float));
    if (s->i8)
        s->i8s[i] = sl_vec_quantize_i8(row, s->dims, s->i8 + (size_t)i * s->dims);
    if (s->bits)
        sl_vec_binarize(row, s->dims, s->bits + (size_t)i * sl_vec_words(s->dims));
    s->expires[i] = ttl > 0 ? wall() + ttl : 0;
    s->live[i / 8] |= (uint8_t)(1u << (i % 8));
    s->count++;
    pthread_rwlock_unlock(&s->lock);
    free(tmp);
    return rc;
}

int sl_vstore_remove(sl_vstore_t *s, const char *key, size_t klen)
{
    if (klen == 0 || klen > SL_VSTORE_KEY_MAX)
        return -ENOENT;
    pthread_rwlock_wrlock(&s->lock);
    uint32_t i = find(s, key, klen);
    if (i != NONE)
        drop(s, i);
    pthread_rwlock_unlock(&s->lock);
    return i == NONE ? -ENOENT : 0;
}

int sl_vstore_search(sl_vstore_t *s, const float *q, uint32_t k, float min_score, int mode,
                     sl_vstore_hit_t *out)
{
    return sl_vstore_search_in(s, NULL, 0, q, k, min_score, mode, out);
}

int sl_vstore_search_in(sl_vstore_t *s, const char *prefix, size_t plen, const float *q, uint32_t k,
                        float min_score, int mode, sl_vstore_hit_t *out)
{
    if (k == 0 || k > SL_VEC_MAX_K || plen > SL_VSTORE_KEY_MAX)
        return -EINVAL;
    float *qn = malloc(s->dims * sizeof(float));
    sl_vec_hit_t *hits = malloc(k * sizeof(*hits));
    uint8_t *allow = plen ? calloc(((size_t)s->cap + 7) / 8, 1) : NULL;
    if (qn == NULL || hits == NULL || (plen && allow == NULL)) {
        free(qn);
        free(hits);
        free(allow);
        return -ENOMEM;
    }
    memcpy(qn, q, s->dims * sizeof(float));
    sl_vec_normalize(qn, s->dims);
    pthread_rwlock_rdlock(&s->lock);
    uint32_t rows = s->count;
    if (allow) { /* the live rows of the group only */
        rows = 0;
        for (uint32_t i = s->head; i != NONE; i = s->nextin[i])
            if (key_has_prefix(s, i, prefix, plen)) {
                allow[i / 8] |= (uint8_t)(1u << (i % 8));
                rows++;
            }
    }
    sl_vecset_t vs = {.f32 = s->f32,
                      .i8 = s->i8,
                      .i8_scale = s->i8s,
                      .bits = s->bits,
                      .allow = allow ? allow : s->live,
                      .expires = s->expires,
                      .now = wall(),
                      .n = s->cap,
                      .dims = s->dims};
    if (mode == SL_VEC_AUTO && (double)rows * 4 < (double)s->cap)
        mode =
            SL_VEC_EXACT; /* a mostly empty store (or a small group): the quantised pass would gain nothing */
    int n = rows ? sl_vec_search(&vs, qn, k, mode, 0, min_score, hits) : 0;
    for (int j = 0; j < n; j++) {
        uint32_t i = hits[j].id;
        memcpy(out[j].key, s->keys + (size_t)i * SL_VSTORE_KEY_MAX, s->klen[i]);
        out[j].key_len = s->klen[i];
        out[j].score = hits[j].score;
    }
    pthread_rwlock_unlock(&s->lock);
    free(qn);
    free(hits);
    free(allow);
    return n;
}

uint32_t sl_vstore_count(sl_vstore_t *s)
{
    pthread_rwlock_rdlock(&s->lock);
    uint32_t n = s->count;
    pthread_rwlock_unlock(&s->lock);
    return n;
}

uint32_t sl_vstore_dims(const sl_vstore_t *s)
{
    return s->dims;
}

uint32_t sl_vstore_capacity(const sl_vstore_t *s)
{
    return s->cap;
}

void sl_vstore_clear(sl_vstore_t *s)
{
    pthread_rwlock_wrlock(&s->lock);
    reset(s);
    pthread_rwlock_unlock(&s->lock);
}

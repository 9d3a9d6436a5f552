/* Regex over PCRE2. Workers are threads with one Lua VM each, so the compiled-pattern cache and the
 * match data are thread-local: no locks, and a regex is only ever used by the thread that made it.
 * Reference counts let a caller keep a cached regex (gmatch iterators) across later evictions. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "common/regex.h"

#include <errno.h>
#include <limits.h>
#include <pcre2.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CACHE_BUCKETS 512
#define MATCH_LIMIT 10000000

struct sl_regex {
    pcre2_code *code;
    uint32_t ncap, opts, hash, name_count, name_size;
    const unsigned char *name_table;
    int refs, cached;
    struct sl_regex *hnext, *prev, *next; /* cache links while cached */
    size_t plen;
    char pat[];
};

typedef struct {
    sl_regex_t *buckets[CACHE_BUCKETS];
    sl_regex_t *head, *tail; /* most / least recently used */
    int n;
} cache_t;

static __thread cache_t tl_cache;
static __thread pcre2_match_data *tl_md;
static __thread uint32_t tl_md_pairs;
static __thread pcre2_match_context *tl_mctx;

static uint32_t hash_pat(const char *s, size_t n, uint32_t opts)
{
    uint32_t h = 2166136261u ^ opts;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static int parse_flags(const char *f, size_t n, uint32_t *opts, int *cache, char *err, size_t errlen)
{
    *opts = 0;
    *cache = 0;
    for (size_t i = 0; i < n; i++) {
        /* clang-format off */
        switch (f[i]) {
        case 'i': *opts |= PCRE2_CASELESS; break;
        case 'm': *opts |= PCRE2_MULTILINE; break;
        case 's': *opts |= PCRE2_DOTALL; break;
        case 'x': *opts |= PCRE2_EXTENDED; break;
        case 'u': *opts |= PCRE2_UTF; break;
        case 'a': *opts |= PCRE2_ANCHORED; break;
        case 'D': *opts |= PCRE2_DUPNAMES; break;
        case 'j': break; /* JIT is always attempted */
        case 'o': *cache = 1; break;
        default:
            if (err && errlen)
                snprintf(err, errlen, "unknown flag '%c'", f[i]);
            return -EINVAL;
        }
        /* clang-format on */
    }
    return 0;
}

static void destroy(sl_regex_t *re)
{
    pcre2_code_free(re->code);
    free(re);
}

static void cache_unlink(cache_t *c, sl_regex_t *re)
{
    sl_regex_t **pp = &c->buckets[re->hash % CACHE_BUCKETS];
    while (*pp != re)
        pp = &(*pp)->hnext;
    *pp = re->hnext;
    if (re->prev)
        re->prev->next = re->next;
    else
        c->head = re->next;
    if (re->next)
        re->next->prev = re->prev;
    else
        c->tail = re->prev;
    re->prev = re->next = re->hnext = NULL;
    c->n--;
}

static void cache_push(cache_t *c, sl_regex_t *re)
{
    re->prev = NULL;
    re->next = c->head;
    if (c->head)
        c->head->prev = re;
    c->head = re;
    if (!c->tail)
        c->tail = re;
}

static sl_regex_t *cache_get(cache_t *c, const char *pat, size_t len, uint32_t opts, uint32_t h)
{
    for (sl_regex_t *re = c->buckets[h % CACHE_BUCKETS]; re; re = re->hnext) {
        if (re->hash == h && re->opts == opts && re->plen == len && memcmp(re->pat, pat, len) == 0) {
            if (c->head != re) {
                /* move to front without touching the hash chain */
                re->prev->next = re->next;
                if (re->next)
                    re->next->prev = re->prev;
                else
                    c->tail = re->prev;
                cache_push(c, re);
            }
            return re;
        }
    }
    return NULL;
}

static void cache_put(cache_t *c, sl_regex_t *re)
{
    if (c->n >= SL_REGEX_CACHE_SIZE) {
        sl_regex_t *old = c->tail;
        cache_unlink(c, old);
        old->cached = 0;
        sl_regex_free(old);
    }
    re->hnext = c->buckets[re->hash % CACHE_BUCKETS];
    c->buckets[re->hash % CACHE_BUCKETS] = re;
    cache_push(c, re);
    re->cached = 1;
    re->refs++;
    c->n++;
}

int sl_regex_compile(const char *pat, size_t len, const char *flags, size_t flen, sl_regex_t **out, char *err,
                     size_t errlen)
{
    uint32_t opts, h = 0;
    int cache, errcode, rc = 0;
    PCRE2_SIZE erroff;
    sl_regex_t *re = NULL;

    if (!out || (!pat && len))
        return -EINVAL;
    *out = NULL;
    if ((rc = parse_flags(flags ? flags : "", flags ? flen : 0, &opts, &cache, err, errlen)) != 0)
        return rc;
    if (cache) {
        h = hash_pat(pat, len, opts);
        re = cache_get(&tl_cache, pat, len, opts, h);
        if (re) {
            re->refs++;
            *out = re;
            return 0;
        }
    }
    re = calloc(1, sizeof(*re) + len);
    if (!re)
        return -ENOMEM;
    re->code = pcre2_compile((PCRE2_SPTR)(pat ? pat : ""), len, opts, &errcode, &erroff, NULL);
    if (!re->code) {
        if (err && errlen) {
            char msg[200];
            pcre2_get_error_message(errcode, (PCRE2_UCHAR *)msg, sizeof(msg));
            snprintf(err, errlen, "%s at offset %zu", msg, (size_t)erroff);
        }
        rc = errcode == PCRE2_ERROR_NOMEMORY ? -ENOMEM : -EINVAL;
        goto fail;
    }
    /* JIT is a speed-up only: when unavailable, pcre2_match interprets. */
    (void)pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE);
    pcre2_pattern_info(re->code, PCRE2_INFO_CAPTURECOUNT, &re->ncap);
    pcre2_pattern_info(re->code, PCRE2_INFO_NAMECOUNT, &re->name_count);
    pcre2_pattern_info(re->code, PCRE2_INFO_NAMEENTRYSIZE, &re->name_size);
    pcre2_pattern_info(re->code, PCRE2_INFO_NAMETABLE, &re->name_table);
    re->opts = opts;
    re->hash = h;
    re->plen = len;
    if (len)
        memcpy(re->pat, pat, len);
    re->refs = 1;
    if (cache)
        cache_put(&tl_cache, re);
    *out = re;
    return 0;
fail:
    if (re->code)
        pcre2_code_free(re->code);
    free(re);
    return rc;
}

int sl_regex_ncaptures(const sl_regex_t *re)
{
    return (int)re->ncap;
}

int sl_regex_name_count(const sl_regex_t *re)
{
    return (int)re->name_count;
}

int sl_regex_name(const sl_regex_t *re, int i, const char **name, size_t *len)
{
    const unsigned char *e;

    if (i < 0 || (uint32_t)i >= re->name_count)
        return -EINVAL;
    /* PCRE2 name table entry: 2-byte big-endian group number, then the NUL-terminated name */
    e = re->name_table + (size_t)i * re->name_size;
    *name = (const char *)e + 2;
    *len = strlen(*name);
    return (e[0] << 8) | e[1];
}

static int ensure_match_data(uint32_t pairs)
{
    if (!tl_mctx) {
        tl_mctx = pcre2_match_context_create(NULL);
        if (!tl_mctx)
            return -ENOMEM;
        /* bound catastrophic backtracking from user-supplied patterns */
        pcre2_set_match_limit(tl_mctx, MATCH_LIMIT);
    }
    if (tl_md && tl_md_pairs >= pairs)
        return 0;
    pcre2_match_data_free(tl_md);
    tl_md_pairs = pairs < 32 ? 32 : pairs;
    tl_md = pcre2_match_data_create(tl_md_pairs, NULL);
    if (!tl_md) {
        tl_md_pairs = 0;
        return -ENOMEM;
    }
    return 0;
}

int sl_regex_exec(const sl_regex_t *re, const char *subj, size_t len, size_t start, int *ovec, int pairs)
{
    PCRE2_SIZE *ov;
    int rc;

    if (!re || (!subj && len) || start > len || pairs < 0 || (pairs && !ovec))
        return -EINVAL;
    if (len > INT_MAX)
        return -E2BIG;
    if ((rc = ensure_match_data(re->ncap + 1)) != 0)
        return rc;
    rc = pcre2_match(re->code, (PCRE2_SPTR)(subj ? subj : ""), len, start, 0, tl_md, tl_mctx);
    if (rc == PCRE2_ERROR_NOMATCH)
        return 0;
    if (rc < 0)
        return SL_REGEX_PCRE_BASE + rc;
    ov = pcre2_get_ovector_pointer(tl_md);
    for (int i = 0; i < pairs; i++) {
        if (i < rc && ov[2 * i] != PCRE2_UNSET) {
            ovec[2 * i] = (int)ov[2 * i];
            ovec[2 * i + 1] = (int)ov[2 * i + 1];
        } else {
            ovec[2 * i] = ovec[2 * i + 1] = -1;
        }
    }
    return rc;
}

int sl_regex_strerror(int code, char *buf, size_t len)
{
    if (!buf || !len)
        return -EINVAL;
    if (code <= SL_REGEX_PCRE_BASE) {
        if (pcre2_get_error_message(code - SL_REGEX_PCRE_BASE, (PCRE2_UCHAR *)buf, len) < 0)
            snprintf(buf, len, "pcre2 error %d", code - SL_REGEX_PCRE_BASE);
    } else {
        snprintf(buf, len, "%s", strerror(-code));
    }
    return 0;
}

void sl_regex_free(sl_regex_t *re)
{
    if (re && --re->refs == 0)
        destroy(re);
}

void sl_regex_thread_cleanup(void)
{
    cache_t *c = &tl_cache;

    while (c->head) {
        sl_regex_t *re = c->head;
        cache_unlink(c, re);
        re->cached = 0;
        sl_regex_free(re);
    }
    pcre2_match_data_free(tl_md);
    tl_md = NULL;
    tl_md_pairs = 0;
    pcre2_match_context_free(tl_mctx);
    tl_mctx = NULL;
}

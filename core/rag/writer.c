/* The RAG index writer (writer.h): chunks and vectors in memory, postings grown per term while chunks are
 * added (chunk ids ascend, so each term's postings come out sorted), then one layout pass on write. */
#include "rag/writer.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/hash.h"
#include "common/vector.h"
#include "rag/format.h"
#include "rag/tokenize.h"

#define MAX_ITEMS 0x7fffffffu

typedef struct wterm {
    uint64_t off; /* in w->termtext */
    uint32_t len;
    uint32_t n, cap; /* postings */
    sl_rag_posting_t *post;
} wterm_t;

struct sl_rag_writer {
    uint32_t dims, flags;
    sl_buf_t str;      /* STR section as it grows (chunk texts, paths, ...) */
    sl_buf_t termtext; /* term bytes until write */
    sl_rag_source_t *sources;
    uint32_t nsources, cap_sources;
    sl_rag_chunk_t *chunks;
    float *vecs;
    uint32_t nchunks, cap_chunks;
    wterm_t *terms; /* open addressing, cap_terms a power of two */
    uint32_t nterms, cap_terms;
    uint64_t npostings, total_len;
    sl_rag_str_t info;
    uint32_t cur_chunk; /* the chunk being tokenized */
    int32_t ivf_lists;  /* < 0: the default for the count (sl_ivf_default_lists), 0: none */
    uint32_t ivf_probes;
    int oom;
};

static int grow(void **p, uint32_t *cap, uint32_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    uint32_t c = *cap ? *cap : 64;
    while (c < need)
        c = c > MAX_ITEMS / 2 ? MAX_ITEMS : c * 2;
    void *n = realloc(*p, (size_t)c * elem);
    if (n == NULL)
        return -ENOMEM;
    *p = n;
    *cap = c;
    return 0;
}

static int add_str(sl_buf_t *b, const void *p, size_t n, sl_rag_str_t *out)
{
    if (n > UINT32_MAX)
        return -E2BIG;
    out->off = b->len;
    out->len = (uint32_t)n;
    out->reserved = 0;
    return sl_buf_append(b, p, n);
}

sl_rag_writer_t *sl_rag_writer_new(uint32_t dims, uint32_t flags)
{
    if (dims == 0 || dims > SL_VEC_MAX_DIMS || (flags & ~(uint32_t)(SL_RAG_HAS_I8 | SL_RAG_HAS_BITS)))
        return NULL;
    sl_rag_writer_t *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return NULL;
    w->dims = dims;
    w->flags = flags;
    w->ivf_lists = -1;
    return w;
}

int sl_rag_writer_ivf(sl_rag_writer_t *w, int32_t lists, uint32_t probes)
{
    if (lists > SL_IVF_MAX_LISTS || probes > SL_IVF_MAX_LISTS)
        return -EINVAL;
    w->ivf_lists = lists;
    w->ivf_probes = probes;
    return 0;
}

uint32_t sl_rag_writer_lists(const sl_rag_writer_t *w)
{
    if (w->ivf_lists < 0)
        return sl_ivf_default_lists(w->nchunks);
    /* a list of one row or none partitions nothing */
    return w->nchunks >= 2 * (uint32_t)w->ivf_lists ? (uint32_t)w->ivf_lists : 0;
}

int sl_rag_writer_source(sl_rag_writer_t *w, const char *path, size_t plen, const char *meta, size_t mlen,
                         uint64_t hash, int64_t mtime, uint64_t size)
{
    if (w->nsources >= MAX_ITEMS)
        return -E2BIG;
    if (grow((void **)&w->sources, &w->cap_sources, w->nsources + 1, sizeof(sl_rag_source_t)) != 0)
        return -ENOMEM;
    sl_rag_source_t *s = &w->sources[w->nsources];
    memset(s, 0, sizeof(*s));
    if (add_str(&w->str, path, plen, &s->path) != 0 || add_str(&w->str, meta, mlen, &s->meta) != 0)
        return -ENOMEM;
    s->hash = hash;
    s->mtime = mtime;
    s->size = size;
    s->first = w->nchunks;
    return (int)w->nsources++;
}

static uint64_t term_hash(const char *t, size_t n)
{
    return sl_xxh64(t, n, 0x5eed);
}

static int rehash(sl_rag_writer_t *w)
{
    uint32_t cap = w->cap_terms ? w->cap_terms * 2 : 1024;
    wterm_t *t = calloc(cap, sizeof(*t));
    if (t == NULL)
        return -ENOMEM;
    for (uint32_t i = 0; i < w->cap_terms; i++) {
        wterm_t *e = &w->terms[i];
        if (e->len == 0)
            continue;
        uint64_t h = term_hash(w->termtext.base + e->off, e->len);
        uint32_t j = (uint32_t)h & (cap - 1);
        while (t[j].len)
            j = (j + 1) & (cap - 1);
        t[j] = *e;
    }
    free(w->terms);
    w->terms = t;
    w->cap_terms = cap;
    return 0;
}

static void on_term(const char *t, size_t n, void *arg)
{
    sl_rag_writer_t *w = arg;
    if (w->oom)
        return;
    if ((w->nterms + 1) * 2 > w->cap_terms && rehash(w) != 0) {
        w->oom = 1;
        return;
    }
    uint32_t j = (uint32_t)term_hash(t, n) & (w->cap_terms - 1);
    wterm_t *e;
    for (;; j = (j + 1) & (w->cap_terms - 1)) {
        e = &w->terms[j];
        if (e->len == 0) {
            e->off = w->termtext.len;
            e->len = (uint32_t)n;
            if (sl_buf_append(&w->termtext, t, n) != 0) {
                e->len = 0;
                w->oom = 1;
                return;
            }
            w->nterms++;
            break;
        }
        if (e->len == n && memcmp(w->termtext.base + e->off, t, n) == 0)
            break;
    }
    w->total_len++;
    w->chunks[w->cur_chunk].length++;
    if (e->n && e->post[e->n - 1].chunk == w->cur_chunk) {
        e->post[e->n - 1].tf++;
        return;
    }
    if (grow((void **)&e->post, &e->cap, e->n + 1, sizeof(sl_rag_posting_t)) != 0) {
        w->oom = 1;
        return;
    }
    e->post[e->n++] = (sl_rag_posting_t){w->cur_chunk, 1};
    w->npostings++;
}

int sl_rag_writer_chunk(sl_rag_writer_t *w, const char *heading, size_t hlen, const char *text, size_t tlen,
                        const float *vec)
{
    if (w->nsources == 0)
        return -EINVAL;
    if (w->nchunks >= MAX_ITEMS)
        return -E2BIG;
    uint32_t old = w->cap_chunks;
    if (grow((void **)&w->chunks, &w->cap_chunks, w->nchunks + 1, sizeof(sl_rag_chunk_t)) != 0)
        return -ENOMEM;
    if (w->cap_chunks != old) {
        float *v = realloc(w->vecs, (size_t)w->cap_chunks * w->dims * sizeof(float));
        if (v == NULL)
            return -ENOMEM;
        w->vecs = v;
    }
    uint32_t id = w->nchunks;
    sl_rag_chunk_t *c = &w->chunks[id];
    memset(c, 0, sizeof(*c));
    if (add_str(&w->str, heading, hlen, &c->heading) != 0 || add_str(&w->str, text, tlen, &c->text) != 0)
        return -ENOMEM;
    sl_rag_source_t *s = &w->sources[w->nsources - 1];
    c->source = w->nsources - 1;
    c->ordinal = s->count;
    float *v = w->vecs + (size_t)id * w->dims;
    memcpy(v, vec, w->dims * sizeof(float));
    sl_vec_normalize(v, w->dims);
    w->cur_chunk = id;
    w->nchunks++;
    s->count++;
    /* the heading counts twice: a section's title says what its text is about */
    for (int i = 0; i < 2; i++)
        sl_rag_tokenize(heading, hlen, on_term, w);
    sl_rag_tokenize(text, tlen, on_term, w);
    return w->oom ? -ENOMEM : (int)id;
}

int sl_rag_writer_info(sl_rag_writer_t *w, const char *json, size_t len)
{
    return add_str(&w->str, json, len, &w->info);
}

uint32_t sl_rag_writer_count(const sl_rag_writer_t *w)
{
    return w->nchunks;
}

static const sl_rag_writer_t *sort_w; /* qsort has no argument: writing is not concurrent per process */

static int cmp_terms(const void *a, const void *b)
{
    const wterm_t *x = a, *y = b;
    uint32_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(sort_w->termtext.base + x->off, sort_w->termtext.base + y->off, n);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

static size_t align(size_t n)
{
    return (n + SL_RAG_ALIGN - 1) & ~(size_t)(SL_RAG_ALIGN - 1);
}

int sl_rag_writer_bytes(sl_rag_writer_t *w, uint8_t **out, size_t *len)
{
    static pthread_mutex_t sort_lock = PTHREAD_MUTEX_INITIALIZER;
    *out = NULL;
    if (w->oom)
        return -ENOMEM;
    /* terms into a dense sorted array; their text into STR */
    wterm_t *sorted = malloc(((size_t)w->nterms + 1) * sizeof(*sorted));
    if (sorted == NULL)
        return -ENOMEM;
    uint32_t nt = 0;
    for (uint32_t i = 0; i < w->cap_terms; i++)
        if (w->terms[i].len)
            sorted[nt++] = w->terms[i];
    pthread_mutex_lock(&sort_lock);
    sort_w = w;
    qsort(sorted, nt, sizeof(*sorted), cmp_terms);
    pthread_mutex_unlock(&sort_lock);

    const uint32_t n = w->nchunks, d = w->dims;
    uint64_t sizes[SL_RAG_NSEC] = {0};
    size_t str_len = w->str.len + w->termtext.len;
    sizes[SL_RAG_SEC_STR] = str_len;
    sizes[SL_RAG_SEC_SOURCES] = (uint64_t)w->nsources * sizeof(sl_rag_source_t);
    sizes[SL_RAG_SEC_CHUNKS] = (uint64_t)n * sizeof(sl_rag_chunk_t);
    sizes[SL_RAG_SEC_TERMS] = (uint64_t)nt * sizeof(sl_rag_term_t);
    sizes[SL_RAG_SEC_POSTINGS] = w->npostings * sizeof(sl_rag_posting_t);
    sizes[SL_RAG_SEC_F32] = (uint64_t)n * d * sizeof(float);
    if (w->flags & SL_RAG_HAS_I8) {
        sizes[SL_RAG_SEC_I8] = (uint64_t)n * d;
        sizes[SL_RAG_SEC_I8S] = (uint64_t)n * sizeof(float);
    }
    if (w->flags & SL_RAG_HAS_BITS)
        sizes[SL_RAG_SEC_BITS] = (uint64_t)n * sl_vec_words(d) * 8;
    const uint32_t nlist = sl_rag_writer_lists(w);
    if (nlist) {
        sizes[SL_RAG_SEC_IVF_CENT] = (uint64_t)nlist * d * sizeof(float);
        sizes[SL_RAG_SEC_IVF_OFFS] = ((uint64_t)nlist + 1) * sizeof(uint32_t);
        sizes[SL_RAG_SEC_IVF_IDS] = (uint64_t)n * sizeof(uint32_t);
        if (w->flags & SL_RAG_HAS_I8) {
            sizes[SL_RAG_SEC_IVF_I8] = (uint64_t)n * d;
            sizes[SL_RAG_SEC_IVF_I8S] = (uint64_t)n * sizeof(float);
        }
    }
    sl_rag_hdr_t h;
    memset(&h, 0, sizeof(h));
    size_t pos = align(sizeof(h));
    for (int s = 0; s < SL_RAG_NSEC; s++) {
        h.sec[s].off = sizes[s] ? pos : 0;
        h.sec[s].size = sizes[s];
        pos = align(pos + sizes[s]);
    }
    uint8_t *b = calloc(1, pos);
    if (b == NULL) {
        free(sorted);
        return -ENOMEM;
    }
#define AT(s) (b + h.sec[s].off)
    if (w->str.len)
        memcpy(AT(SL_RAG_SEC_STR), w->str.base, w->str.len);
    if (w->termtext.len)
        memcpy(AT(SL_RAG_SEC_STR) + w->str.len, w->termtext.base, w->termtext.len);
    if (w->nsources)
        memcpy(AT(SL_RAG_SEC_SOURCES), w->sources, sizes[SL_RAG_SEC_SOURCES]);
    if (n)
        memcpy(AT(SL_RAG_SEC_CHUNKS), w->chunks, sizes[SL_RAG_SEC_CHUNKS]);
    sl_rag_term_t *terms = (sl_rag_term_t *)AT(SL_RAG_SEC_TERMS);
    sl_rag_posting_t *post = (sl_rag_posting_t *)AT(SL_RAG_SEC_POSTINGS);
    uint64_t p = 0;
    for (uint32_t i = 0; i < nt; i++) {
        terms[i].term.off = w->str.len + sorted[i].off;
        terms[i].term.len = sorted[i].len;
        terms[i].post = p;
        terms[i].df = sorted[i].n;
        memcpy(post + p, sorted[i].post, (size_t)sorted[i].n * sizeof(*post));
        p += sorted[i].n;
    }
    if (n)
        memcpy(AT(SL_RAG_SEC_F32), w->vecs, sizes[SL_RAG_SEC_F32]);
    for (uint32_t i = 0; i < n; i++) {
        const float *v = w->vecs + (size_t)i * d;
        if (w->flags & SL_RAG_HAS_I8)
            ((float *)AT(SL_RAG_SEC_I8S))[i] =
                sl_vec_quantize_i8(v, d, (int8_t *)AT(SL_RAG_SEC_I8) + (size_t)i * d);
        if (w->flags & SL_RAG_HAS_BITS)
            sl_vec_binarize(v, d, (uint64_t *)AT(SL_RAG_SEC_BITS) + (size_t)i * sl_vec_words(d));
    }
    free(sorted);
    if (nlist && sl_ivf_train(w->vecs, n, d, nlist, 0, (float *)AT(SL_RAG_SEC_IVF_CENT),
                              (uint32_t *)AT(SL_RAG_SEC_IVF_OFFS), (uint32_t *)AT(SL_RAG_SEC_IVF_IDS)) != 0) {
        free(b);
        return -ENOMEM;
    }
    uint32_t nprobe = 0; /* the default probes: the writer's, else measured on these rows */
    if (nlist) {
        sl_ivf_t iv = {(const float *)AT(SL_RAG_SEC_IVF_CENT),
                       (const uint32_t *)AT(SL_RAG_SEC_IVF_OFFS),
                       (const uint32_t *)AT(SL_RAG_SEC_IVF_IDS),
                       NULL,
                       NULL,
                       nlist,
                       0};
        nprobe = !w->ivf_probes          ? sl_ivf_tune_probes(w->vecs, n, d, &iv, 0)
                 : w->ivf_probes > nlist ? nlist
                                         : w->ivf_probes;
    }
    if (nlist && (w->flags & SL_RAG_HAS_I8)) /* the int8 rows again in list order */
        for (uint32_t p = 0; p < n; p++) {
            uint32_t r = ((const uint32_t *)AT(SL_RAG_SEC_IVF_IDS))[p];
            memcpy((int8_t *)AT(SL_RAG_SEC_IVF_I8) + (size_t)p * d,
                   (int8_t *)AT(SL_RAG_SEC_I8) + (size_t)r * d, d);
            ((float *)AT(SL_RAG_SEC_IVF_I8S))[p] = ((const float *)AT(SL_RAG_SEC_I8S))[r];
        }
#undef AT
    memcpy(h.magic, SL_RAG_MAGIC, 8);
    h.version = SL_RAG_VERSION;
    h.hdr_size = sizeof(h);
    h.file_size = pos;
    h.dims = d;
    h.nchunks = n;
    h.nsources = w->nsources;
    h.nterms = nt;
    h.npostings = w->npostings;
    h.flags = w->flags | (nlist ? SL_RAG_HAS_IVF : 0);
    h.nlist = nlist;
    h.nprobe = nprobe;
    h.avgdl = n ? (float)((double)w->total_len / n) : 0;
    h.info = w->info;
    h.body_hash = sl_xxh64(b + sizeof(h), pos - sizeof(h), 0);
    h.hdr_hash = sl_xxh64(&h, sizeof(h), 0);
    memcpy(b, &h, sizeof(h));
    *out = b;
    *len = pos;
    return 0;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t k = write(fd, p, n > (1u << 30) ? (1u << 30) : n);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

int sl_rag_writer_write(sl_rag_writer_t *w, const char *path, char *err, size_t errlen)
{
    uint8_t *b = NULL;
    size_t n = 0;
    char tmp[PATH_MAX], dir[PATH_MAX];
    int fd = -1, rc = sl_rag_writer_bytes(w, &b, &n);
    if (rc != 0) {
        snprintf(err, errlen, "out of memory");
        return rc;
    }
    if (snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()) >= (int)sizeof(tmp)) {
        rc = -ENAMETOOLONG;
        snprintf(err, errlen, "path too long");
        goto out;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = -errno;
        snprintf(err, errlen, "cannot create %s: %s", tmp, strerror(errno));
        goto out;
    }
    if ((rc = write_all(fd, b, n)) != 0 || (fsync(fd) != 0 && (rc = -errno))) {
        snprintf(err, errlen, "cannot write %s: %s", tmp, strerror(-rc));
        goto out;
    }
    close(fd);
    fd = -1;
    if (rename(tmp, path) != 0) {
        rc = -errno;
        snprintf(err, errlen, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
        goto out;
    }
    snprintf(dir, sizeof(dir), "%s", path);
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) { /* the rename itself is durable only once the folder is */
        fsync(dfd);
        close(dfd);
    }
out:
    if (fd >= 0) {
        close(fd);
        unlink(tmp);
    } else if (rc != 0) {
        unlink(tmp);
    }
    free(b);
    return rc;
}

void sl_rag_writer_free(sl_rag_writer_t *w)
{
    if (w == NULL)
        return;
    for (uint32_t i = 0; i < w->cap_terms; i++)
        free(w->terms[i].post);
    free(w->terms);
    free(w->sources);
    free(w->chunks);
    free(w->vecs);
    sl_buf_free(&w->str);
    sl_buf_free(&w->termtext);
    free(w);
}

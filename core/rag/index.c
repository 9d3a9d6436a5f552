/* Loading a RAG index file (format.h): read into memory, then every byte the search will read is checked
 * once, so the search code can trust offsets and ids. A file is untrusted input (cut short by a full disk,
 * damaged, or made by hand): it is refused with a one-line reason, never read out of bounds.
 * tests/fuzz/fuzz_rag_index.c feeds this loader fuzzed files (with the checksums off, so the fuzzer gets past
 * them) and searches what it accepts. */
#include "rag/index.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/hash.h"
#include "rag/tokenize.h"

static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

static const char *const SEC_NAME[SL_RAG_NSEC] = {
    "strings",        "sources",      "chunks",           "terms",          "postings",
    "vectors",        "int8 vectors", "int8 scales",      "sign bits",      "IVF centroids",
    "IVF list table", "IVF rows",     "IVF int8 vectors", "IVF int8 scales"};

/* The size section s must have for the header's counts. */
static uint64_t want_size(const sl_rag_hdr_t *h, int s)
{
    uint64_t n = h->nchunks;
    switch (s) {
    case SL_RAG_SEC_SOURCES:
        return (uint64_t)h->nsources * sizeof(sl_rag_source_t);
    case SL_RAG_SEC_CHUNKS:
        return n * sizeof(sl_rag_chunk_t);
    case SL_RAG_SEC_TERMS:
        return (uint64_t)h->nterms * sizeof(sl_rag_term_t);
    case SL_RAG_SEC_POSTINGS:
        return h->npostings * sizeof(sl_rag_posting_t);
    case SL_RAG_SEC_F32:
        return n * h->dims * sizeof(float);
    case SL_RAG_SEC_I8:
        return (h->flags & SL_RAG_HAS_I8) ? n * h->dims : 0;
    case SL_RAG_SEC_I8S:
        return (h->flags & SL_RAG_HAS_I8) ? n * sizeof(float) : 0;
    case SL_RAG_SEC_BITS:
        return (h->flags & SL_RAG_HAS_BITS) ? n * sl_vec_words(h->dims) * 8 : 0;
    case SL_RAG_SEC_IVF_CENT:
        return (uint64_t)h->nlist * h->dims * sizeof(float);
    case SL_RAG_SEC_IVF_OFFS:
        return h->nlist ? ((uint64_t)h->nlist + 1) * sizeof(uint32_t) : 0;
    case SL_RAG_SEC_IVF_IDS:
        return h->nlist ? n * sizeof(uint32_t) : 0;
    case SL_RAG_SEC_IVF_I8:
        return h->nlist && (h->flags & SL_RAG_HAS_I8) ? n * h->dims : 0;
    case SL_RAG_SEC_IVF_I8S:
        return h->nlist && (h->flags & SL_RAG_HAS_I8) ? n * sizeof(float) : 0;
    default:
        return 0;
    }
}

static int str_ok(const sl_rag_index_t *x, sl_rag_str_t s)
{
    return s.off <= x->strsize && s.len <= x->strsize - s.off;
}

static int term_cmp(const sl_rag_index_t *x, const sl_rag_term_t *a, const sl_rag_term_t *b)
{
    uint32_t n = a->term.len < b->term.len ? a->term.len : b->term.len;
    int c = memcmp(x->str + a->term.off, x->str + b->term.off, n);
    if (c != 0)
        return c;
    return a->term.len < b->term.len ? -1 : a->term.len > b->term.len;
}

/* Cross references: every string inside STR, every id inside its table, terms sorted. */
static int check_records(sl_rag_index_t *x, char *err, size_t errlen)
{
    const sl_rag_hdr_t *h = x->hdr;
    if (!str_ok(x, h->info))
        return fail(err, errlen, -EBADMSG, "corrupt: build information outside the strings section");
    for (uint32_t i = 0; i < h->nsources; i++) {
        const sl_rag_source_t *s = &x->sources[i];
        if (!str_ok(x, s->path) || !str_ok(x, s->meta))
            return fail(err, errlen, -EBADMSG, "corrupt: source %u: text outside the strings section", i);
        if ((uint64_t)s->first + s->count > h->nchunks)
            return fail(err, errlen, -EBADMSG, "corrupt: source %u: chunks %u+%u past the %u chunks", i,
                        s->first, s->count, h->nchunks);
    }
    for (uint32_t i = 0; i < h->nchunks; i++) {
        const sl_rag_chunk_t *c = &x->chunks[i];
        if (!str_ok(x, c->heading) || !str_ok(x, c->text))
            return fail(err, errlen, -EBADMSG, "corrupt: chunk %u: text outside the strings section", i);
        if (c->source >= h->nsources)
            return fail(err, errlen, -EBADMSG, "corrupt: chunk %u: source %u of %u", i, c->source,
                        h->nsources);
        const sl_rag_source_t *s = &x->sources[c->source];
        if (i < s->first || i - s->first >= s->count)
            return fail(err, errlen, -EBADMSG, "corrupt: chunk %u is not among its source's chunks", i);
    }
    for (uint32_t i = 0; i < h->nterms; i++) {
        const sl_rag_term_t *t = &x->terms[i];
        if (!str_ok(x, t->term) || t->term.len == 0 || t->term.len > SL_RAG_TERM_MAX)
            return fail(err, errlen, -EBADMSG, "corrupt: term %u: bad text", i);
        if (t->df == 0 || t->post > h->npostings || t->df > h->npostings - t->post)
            return fail(err, errlen, -EBADMSG, "corrupt: term %u: postings outside the postings section", i);
        if (i > 0 && term_cmp(x, &x->terms[i - 1], t) >= 0)
            return fail(err, errlen, -EBADMSG, "corrupt: terms out of order at %u", i);
    }
    for (uint64_t i = 0; i < h->npostings; i++)
        if (x->postings[i].chunk >= h->nchunks)
            return fail(err, errlen, -EBADMSG, "corrupt: posting %llu names chunk %u of %u",
                        (unsigned long long)i, x->postings[i].chunk, h->nchunks);
    return 0;
}

/* The inverted file: lists that cover every chunk exactly once, finite centroids. */
static int check_ivf(sl_rag_index_t *x, char *err, size_t errlen)
{
    const sl_rag_hdr_t *h = x->hdr;
    const uint32_t nl = h->nlist, n = h->nchunks;
    const uint32_t *offs = (const uint32_t *)(x->base + h->sec[SL_RAG_SEC_IVF_OFFS].off);
    const uint32_t *ids = (const uint32_t *)(x->base + h->sec[SL_RAG_SEC_IVF_IDS].off);
    const float *cent = (const float *)(x->base + h->sec[SL_RAG_SEC_IVF_CENT].off);
    if (offs[0] != 0 || offs[nl] != n)
        return fail(err, errlen, -EBADMSG, "corrupt: IVF lists cover rows %u..%u of %u chunks", offs[0],
                    offs[nl], n);
    for (uint32_t l = 0; l < nl; l++)
        if (offs[l + 1] < offs[l])
            return fail(err, errlen, -EBADMSG, "corrupt: IVF list %u ends before it starts", l);
    for (uint64_t i = 0; i < (uint64_t)nl * h->dims; i++)
        if (!isfinite(cent[i]))
            return fail(err, errlen, -EBADMSG, "corrupt: IVF centroid %llu is not finite",
                        (unsigned long long)(i / h->dims));
    uint8_t *seen = calloc((size_t)n / 8 + 1, 1);
    if (seen == NULL)
        return fail(err, errlen, -ENOMEM, "out of memory");
    int rc = 0;
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        uint32_t c = ids[i];
        if (c >= n || (seen[c / 8] & (1u << (c % 8))))
            rc = fail(err, errlen, -EBADMSG, "corrupt: IVF row %u names chunk %u %s", i, c,
                      c >= n ? "past the chunks" : "twice");
        else
            seen[c / 8] |= (uint8_t)(1u << (c % 8));
    }
    free(seen);
    if (rc == 0) {
        x->ivf = (sl_ivf_t){.centroids = cent, .offs = offs, .ids = ids, .nlist = nl, .nprobe = h->nprobe};
        if (h->flags & SL_RAG_HAS_I8) { /* any bytes are an int8 row; a NaN scale gives a NaN, dropped */
            x->ivf.i8 = (const int8_t *)(x->base + h->sec[SL_RAG_SEC_IVF_I8].off);
            x->ivf.i8_scale = (const float *)(x->base + h->sec[SL_RAG_SEC_IVF_I8S].off);
        }
        x->vecs.ivf = &x->ivf;
    }
    return rc;
}

int sl_rag_load_mem(const void *p, size_t n, unsigned flags, sl_rag_index_t **out, char *err, size_t errlen)
{
    *out = NULL;
    const uint8_t *b = p;
    if (n < SL_RAG_HDR_V1_SIZE)
        return fail(err, errlen, -EBADMSG, "truncated: %zu bytes, less than the %zu-byte header", n,
                    (size_t)SL_RAG_HDR_V1_SIZE);
    if (((uintptr_t)p & 7) != 0)
        return fail(err, errlen, -EINVAL, "index memory is not 8-byte aligned");
    /* a version 1 header is a prefix of this one: read into a zeroed one, its IVF fields stay 0 */
    sl_rag_hdr_t h;
    memset(&h, 0, sizeof(h));
    memcpy(&h, b, SL_RAG_HDR_V1_SIZE);
    if (memcmp(h.magic, SL_RAG_MAGIC, 8) != 0)
        return fail(err, errlen, -EBADMSG, "not a Sluice RAG index (bad magic)");
    if (h.version != 1 && h.version != SL_RAG_VERSION)
        return fail(err, errlen, -EPROTO,
                    "index format version %u, this build reads versions 1 to %d: rebuild it with "
                    "`sluice rag build`",
                    h.version, SL_RAG_VERSION);
    const size_t hsize = h.version == 1 ? SL_RAG_HDR_V1_SIZE : sizeof(sl_rag_hdr_t);
    if (h.hdr_size != hsize)
        return fail(err, errlen, -EBADMSG, "corrupt: header size %u", h.hdr_size);
    if (n < hsize)
        return fail(err, errlen, -EBADMSG, "truncated: %zu bytes, less than the %zu-byte header", n, hsize);
    memcpy(&h, b, hsize);
    if (h.file_size != n)
        return fail(err, errlen, -EBADMSG, "%s: %zu bytes, the header says %llu",
                    n < h.file_size ? "truncated" : "trailing bytes", n, (unsigned long long)h.file_size);
    if (!(flags & SL_RAG_NO_CHECKSUM)) {
        sl_rag_hdr_t z = h;
        z.hdr_hash = 0;
        if (sl_xxh64(&z, hsize, 0) != h.hdr_hash)
            return fail(err, errlen, -EBADMSG, "corrupt: header checksum mismatch");
        if (sl_xxh64(b + hsize, n - hsize, 0) != h.body_hash)
            return fail(err, errlen, -EBADMSG,
                        "corrupt: checksum mismatch (the file was changed or damaged)");
    }
    if (h.dims == 0 || h.dims > SL_VEC_MAX_DIMS)
        return fail(err, errlen, -EBADMSG, "corrupt: %u dimensions", h.dims);
    if (h.flags & ~(uint32_t)(SL_RAG_HAS_I8 | SL_RAG_HAS_BITS | SL_RAG_HAS_IVF) ||
        (h.version == 1 && (h.flags & SL_RAG_HAS_IVF)))
        return fail(err, errlen, -EBADMSG, "corrupt: unknown flags %#x", h.flags);
    if ((h.flags & SL_RAG_HAS_IVF) ? h.nlist == 0 || h.nlist > h.nchunks || h.nlist > SL_IVF_MAX_LISTS ||
                                         h.nprobe == 0 || h.nprobe > h.nlist
                                   : h.nlist != 0 || h.nprobe != 0)
        return fail(err, errlen, -EBADMSG, "corrupt: %u IVF lists, %u probes, for %u chunks", h.nlist,
                    h.nprobe, h.nchunks);
    if (h.npostings > n / sizeof(sl_rag_posting_t))
        return fail(err, errlen, -EBADMSG, "corrupt: %llu postings in %zu bytes",
                    (unsigned long long)h.npostings, n);
    if (!isfinite(h.avgdl) || h.avgdl < 0)
        return fail(err, errlen, -EBADMSG, "corrupt: average chunk length");
    for (int s = 0; s < SL_RAG_NSEC; s++) {
        uint64_t off = h.sec[s].off, size = h.sec[s].size;
        if (s != SL_RAG_SEC_STR && size != want_size(&h, s))
            return fail(err, errlen, -EBADMSG, "corrupt: %s section is %llu bytes, expected %llu",
                        SEC_NAME[s], (unsigned long long)size, (unsigned long long)want_size(&h, s));
        if (size == 0)
            continue;
        if (off % 8 != 0 || off < hsize || off > n || size > n - off)
            return fail(err, errlen, -EBADMSG, "corrupt: %s section at %llu+%llu outside the %zu-byte file",
                        SEC_NAME[s], (unsigned long long)off, (unsigned long long)size, n);
    }
    sl_rag_index_t *x = calloc(1, sizeof(*x));
    if (x == NULL)
        return fail(err, errlen, -ENOMEM, "out of memory");
    x->base = b;
    x->size = n;
    x->refs = 1;
    x->hdr_mem = h;
    x->hdr = &x->hdr_mem;
#define AT(s) (b + h.sec[s].off)
    x->str = (const char *)AT(SL_RAG_SEC_STR);
    x->strsize = h.sec[SL_RAG_SEC_STR].size;
    x->sources = (const sl_rag_source_t *)AT(SL_RAG_SEC_SOURCES);
    x->chunks = (const sl_rag_chunk_t *)AT(SL_RAG_SEC_CHUNKS);
    x->terms = (const sl_rag_term_t *)AT(SL_RAG_SEC_TERMS);
    x->postings = (const sl_rag_posting_t *)AT(SL_RAG_SEC_POSTINGS);
    x->vecs.f32 = (const float *)AT(SL_RAG_SEC_F32);
    if (h.flags & SL_RAG_HAS_I8) {
        x->vecs.i8 = (const int8_t *)AT(SL_RAG_SEC_I8);
        x->vecs.i8_scale = (const float *)AT(SL_RAG_SEC_I8S);
    }
    if (h.flags & SL_RAG_HAS_BITS)
        x->vecs.bits = (const uint64_t *)AT(SL_RAG_SEC_BITS);
#undef AT
    x->vecs.n = h.nchunks;
    x->vecs.dims = h.dims;
    int rc = check_records(x, err, errlen);
    if (rc == 0 && (h.flags & SL_RAG_HAS_IVF))
        rc = check_ivf(x, err, errlen);
    if (rc == 0)
        rc = sl__rag_prepare(x, err, errlen);
    if (rc != 0) {
        free(x->impact);
        free(x->term_max);
        free(x);
        return rc;
    }
    *out = x;
    return 0;
}

int sl_rag_load(const char *path, sl_rag_index_t **out, char *err, size_t errlen)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail(err, errlen, -errno, "cannot open: %s", strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return fail(err, errlen, -e, "cannot stat: %s", strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return fail(err, errlen, -EINVAL, "not a regular file");
    }
    size_t n = (size_t)st.st_size;
    if ((uint64_t)st.st_size > SL_RAG_MAX_FILE) {
        close(fd);
        return fail(err, errlen, -EFBIG, "file too large (%lld bytes)", (long long)st.st_size);
    }
    if (n < SL_RAG_HDR_V1_SIZE) {
        close(fd);
        return fail(err, errlen, -EBADMSG, "truncated: %zu bytes, less than the %zu-byte header", n,
                    (size_t)SL_RAG_HDR_V1_SIZE);
    }
    /* read, not mapped: a file written in place or cut short while served would change (or unmap, SIGBUS)
     * pages after they were checked; a private copy cannot change under the search */
    uint8_t *m = malloc(n);
    if (m == NULL) {
        close(fd);
        return fail(err, errlen, -ENOMEM, "out of memory for %zu bytes", n);
    }
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, m + got, n - got, (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            int e = r < 0 ? errno : EBADMSG;
            close(fd);
            free(m);
            return r < 0 ? fail(err, errlen, -e, "read: %s", strerror(e))
                         : fail(err, errlen, -e, "truncated while read: %zu of %zu bytes", got, n);
        }
        got += (size_t)r;
    }
    close(fd);
    int rc = sl_rag_load_mem(m, n, 0, out, err, errlen);
    if (rc != 0) {
        free(m);
        return rc;
    }
    (*out)->mapped = 2;
    return 0;
}

void sl_rag_retain(sl_rag_index_t *idx)
{
    __atomic_add_fetch(&idx->refs, 1, __ATOMIC_RELAXED);
}

void sl_rag_release(sl_rag_index_t *idx)
{
    if (idx == NULL || __atomic_sub_fetch(&idx->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    if (idx->mapped == 2)
        free((void *)idx->base);
    free(idx->impact);
    free(idx->term_max);
    free(idx);
}

uint32_t sl_rag_nchunks(const sl_rag_index_t *idx)
{
    return idx->hdr->nchunks;
}

uint32_t sl_rag_nsources(const sl_rag_index_t *idx)
{
    return idx->hdr->nsources;
}

uint32_t sl_rag_nterms(const sl_rag_index_t *idx)
{
    return idx->hdr->nterms;
}

uint32_t sl_rag_dims(const sl_rag_index_t *idx)
{
    return idx->hdr->dims;
}

uint32_t sl_rag_flags(const sl_rag_index_t *idx)
{
    return idx->hdr->flags;
}

uint32_t sl_rag_ivf_lists(const sl_rag_index_t *idx)
{
    return idx->hdr->nlist;
}

uint32_t sl_rag_ivf_probes(const sl_rag_index_t *idx)
{
    return idx->hdr->nprobe;
}

uint32_t sl_rag_version(const sl_rag_index_t *idx)
{
    return idx->hdr->version;
}

const char *sl_rag_info(const sl_rag_index_t *idx, uint32_t *len)
{
    *len = idx->hdr->info.len;
    return idx->str + idx->hdr->info.off;
}

int sl_rag_chunk_get(const sl_rag_index_t *idx, uint32_t i, sl_rag_chunk_view_t *v)
{
    if (i >= idx->hdr->nchunks)
        return -ERANGE;
    const sl_rag_chunk_t *c = &idx->chunks[i];
    const sl_rag_source_t *s = &idx->sources[c->source];
    v->text = idx->str + c->text.off;
    v->text_len = c->text.len;
    v->heading = idx->str + c->heading.off;
    v->heading_len = c->heading.len;
    v->source = idx->str + s->path.off;
    v->source_len = s->path.len;
    v->meta = idx->str + s->meta.off;
    v->meta_len = s->meta.len;
    v->source_id = c->source;
    v->ordinal = c->ordinal;
    return 0;
}

int sl_rag_source_get(const sl_rag_index_t *idx, uint32_t i, sl_rag_source_view_t *v)
{
    if (i >= idx->hdr->nsources)
        return -ERANGE;
    const sl_rag_source_t *s = &idx->sources[i];
    v->path = idx->str + s->path.off;
    v->path_len = s->path.len;
    v->meta = idx->str + s->meta.off;
    v->meta_len = s->meta.len;
    v->first = s->first;
    v->count = s->count;
    v->hash = s->hash;
    v->size = s->size;
    v->mtime = s->mtime;
    return 0;
}

const float *sl_rag_chunk_vector(const sl_rag_index_t *idx, uint32_t i)
{
    if (i >= idx->hdr->nchunks)
        return NULL;
    return idx->vecs.f32 + (size_t)i * idx->hdr->dims;
}

typedef struct terms_out {
    char *out;
    size_t cap, len;
} terms_out_t;

static void on_term(const char *t, size_t n, void *arg)
{
    terms_out_t *o = arg;
    if (o->len + n + 1 > o->cap)
        return;
    if (o->len)
        o->out[o->len++] = '\n';
    memcpy(o->out + o->len, t, n);
    o->len += n;
}

size_t sl_rag_terms(const char *text, size_t len, char *out, size_t cap)
{
    terms_out_t o = {out, cap, 0};
    sl_rag_tokenize(text, len, on_term, &o);
    return o.len;
}

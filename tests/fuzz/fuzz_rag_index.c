/* Harness: the RAG index loader (core/rag/index.c: sl_rag_load_mem) and what runs on what it accepts
 * (search.c: BM25, dense, hybrid, filters; chunk and source accessors). An index file is untrusted bytes.
 *
 * Input: an options byte, then
 *   bit 0 clear (raw): the rest is an index file, loaded with the checksums off (the fuzzer cannot forge
 *     XXH64: every other check is reached) or, with bit 1, on;
 *   bit 0 set (recipe): the rest makes a valid index through the writer (sources and chunks from the bytes,
 *     vectors from them too, bit 2: int8 copy, bit 3: sign bits, bit 4: an inverted file of 1 to 4 lists),
 *     then up to 8 patches (offset, byte) damage it; with bit 1 the checksums are made right again, so the
 *     damage reaches the structural checks.
 * Invariants (besides no sanitizer report): a refused file gives a non-empty reason; on an accepted one every
 * search returns at most k hits, each an existing chunk with a non-NaN score, best first; every chunk and
 * source reads back within the file; a filter passes at most every chunk. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/hash.h"
#include "fuzz.h"
#include "rag/index.h"
#include "rag/writer.h"

#define MAXD 16

static void check_hits(const sl_rag_index_t *x, const sl_rag_hit_t *h, int n, uint32_t k)
{
    FZ_CHECK(n >= 0 && (uint32_t)n <= k);
    for (int i = 0; i < n; i++) {
        FZ_CHECK(h[i].chunk < sl_rag_nchunks(x));
        FZ_CHECK(h[i].score == h[i].score);
        FZ_CHECK(i == 0 || h[i - 1].score >= h[i].score);
        sl_rag_chunk_view_t v;
        FZ_CHECK(sl_rag_chunk_get(x, h[i].chunk, &v) == 0);
    }
}

static int within(const sl_rag_index_t *x, const char *p, uint32_t n)
{
    return (const uint8_t *)p >= x->base && (const uint8_t *)p + n <= x->base + x->size;
}

static void exercise(const sl_rag_index_t *x, fz_in_t *in)
{
    uint32_t nc = sl_rag_nchunks(x), d = sl_rag_dims(x);
    for (uint32_t i = 0; i < nc && i < 64; i++) {
        sl_rag_chunk_view_t v;
        FZ_CHECK(sl_rag_chunk_get(x, i, &v) == 0);
        FZ_CHECK(within(x, v.text, v.text_len) && within(x, v.heading, v.heading_len));
        FZ_CHECK(within(x, v.source, v.source_len) && within(x, v.meta, v.meta_len));
    }
    for (uint32_t i = 0; i < sl_rag_nsources(x) && i < 64; i++) {
        sl_rag_source_view_t v;
        FZ_CHECK(sl_rag_source_get(x, i, &v) == 0);
        FZ_CHECK((uint64_t)v.first + v.count <= nc);
    }
    float *q = calloc(d, sizeof(float));
    for (uint32_t i = 0; i < d; i++)
        q[i] = (float)((int)fz_byte(in) - 128);
    char text[64];
    size_t tl = 0;
    while (tl < sizeof(text) && in->n)
        text[tl++] = (char)fz_byte(in);
    sl_rag_hit_t hits[8];
    uint8_t *allow = malloc((nc + 7) / 8 + 1);
    const char *spec = "source:*a*\nmeta:k=v";
    int pass = sl_rag_filter(x, spec, strlen(spec), allow);
    FZ_CHECK(pass >= 0 && (uint32_t)pass <= nc);
    for (int mode = SL_RAG_BM25; mode <= SL_RAG_HYBRID; mode++)
        for (int quant = SL_VEC_AUTO; quant <= SL_VEC_BINARY; quant++) {
            sl_rag_query_t qq = {.text = text,
                                 .text_len = tl,
                                 .vec = q,
                                 .dims = d,
                                 .k = 1 + (uint32_t)(tl % 8),
                                 .mode = mode,
                                 .quant = quant,
                                 .allow = (quant & 1) ? allow : NULL,
                                 .probes = (uint32_t)(tl % 3)};
            int n = sl_rag_search(x, &qq, hits);
            if (n == -EINVAL) /* a quantised mode the file has no copy for */
                continue;
            check_hits(x, hits, n, qq.k);
        }
    free(allow);
    free(q);
}

/* Builds a valid index from the input (the recipe), into *out (malloc'd). */
static size_t recipe(fz_in_t *in, unsigned opts, uint8_t **out)
{
    uint32_t d = 1 + fz_byte(in) % MAXD, flags = 0;
    if (opts & 4)
        flags |= SL_RAG_HAS_I8;
    if (opts & 8)
        flags |= SL_RAG_HAS_BITS;
    sl_rag_writer_t *w = sl_rag_writer_new(d, flags);
    int nsrc = 1 + fz_byte(in) % 4;
    float v[MAXD];
    for (int s = 0; s < nsrc; s++) {
        char path[8] = {'a', (char)('0' + s), '.', 'm', 'd'};
        const char meta[] = "k\0v";
        sl_rag_writer_source(w, path, 5, meta, (s & 1) ? sizeof(meta) : 0, 0, 0, 0);
        int nch = 1 + fz_byte(in) % 4;
        for (int c = 0; c < nch; c++) {
            size_t tl = fz_byte(in) % 48;
            for (uint32_t i = 0; i < d; i++)
                v[i] = (float)((int)fz_byte(in) - 128);
            if (tl > in->n) /* after the vector's bytes: they may have used up the input */
                tl = in->n;
            sl_rag_writer_chunk(w, "h", 1, (const char *)in->p, tl, v);
            in->p += tl;
            in->n -= tl;
        }
    }
    if (opts & 16)
        sl_rag_writer_ivf(w, 1 + fz_byte(in) % 4, fz_byte(in) % 4);
    size_t n = 0;
    if (sl_rag_writer_bytes(w, out, &n) != 0)
        n = 0;
    sl_rag_writer_free(w);
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    fz_in_t in = {data + 1, size - 1};
    unsigned opts = data[0];
    uint8_t *buf = NULL;
    size_t n;
    if (opts & 1) {
        n = recipe(&in, opts, &buf);
        if (n == 0)
            return 0;
        int patches = fz_byte(&in) % 9;
        for (int i = 0; i < patches; i++) {
            size_t at = ((size_t)fz_byte(&in) << 8 | fz_byte(&in)) % n;
            buf[at] = fz_byte(&in);
        }
        if ((opts & 2) && n >= sizeof(sl_rag_hdr_t)) {
            sl_rag_hdr_t *h = (sl_rag_hdr_t *)buf;
            h->body_hash = sl_xxh64(buf + sizeof(*h), n - sizeof(*h), 0);
            h->hdr_hash = 0;
            h->hdr_hash = sl_xxh64(h, sizeof(*h), 0);
        }
    } else {
        n = in.n;
        buf = malloc(n ? n : 1); /* malloc'd: 8-byte aligned, and ASan sees its end */
        memcpy(buf, in.p, n);
        in.n = 0;
    }
    sl_rag_index_t *x = NULL;
    char err[256] = "";
    unsigned lf = ((opts & 1) || (opts & 2)) ? 0 : SL_RAG_NO_CHECKSUM;
    int rc = sl_rag_load_mem(buf, n, lf, &x, err, sizeof(err));
    if (rc != 0) {
        FZ_CHECK(rc < 0 && err[0] != '\0');
    } else {
        exercise(x, &in);
        sl_rag_release(x);
    }
    free(buf);
    return 0;
}

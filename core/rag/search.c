/* Searching a loaded index (index.h): BM25 over the inverted index, cosine k-NN over the vectors
 * (common/vector.c), and the two fused by a weighted sum of scores scaled by each list's best, or by weighted
 * reciprocal rank fusion. Each worker thread keeps its own scratch
 * arrays (scores per chunk), grown to the largest index it searched and cleaned after each search by walking
 * only the chunks it touched. */
#include <errno.h>
#include <float.h>
#include <fnmatch.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rag/index.h"
#include "rag/tokenize.h"

#define BM25_K1 1.2f
#define BM25_B 0.75f
#define MAX_QUERY_TERMS 256
#define DEFAULT_RRF_K 60.0f

/* Per-thread scratch: BM25 score per chunk (0: untouched), the touched chunks, the rank of a chunk in the
 * BM25 list (0: not in it), a chunk's place in the heap of the best so far (best_t; 0: not in it) and the
 * heap, the normalised query. */
static __thread float *acc;
static __thread uint32_t *touched, *rank_of, *heap_pos;
static __thread uint32_t heap[SL_VEC_MAX_K];
static __thread uint32_t scratch_n;
static __thread float *qnorm;
static __thread uint32_t qnorm_n;

static int scratch(uint32_t n, uint32_t dims)
{
    if (n > scratch_n) {
        float *a = calloc(n, sizeof(float));
        uint32_t *t = malloc((size_t)n * sizeof(uint32_t)), *r = calloc(n, sizeof(uint32_t));
        uint32_t *hp = calloc(n, sizeof(uint32_t));
        if (a == NULL || t == NULL || r == NULL || hp == NULL) {
            free(a);
            free(t);
            free(r);
            free(hp);
            return -ENOMEM;
        }
        free(acc);
        free(touched);
        free(rank_of);
        free(heap_pos);
        acc = a;
        touched = t;
        rank_of = r;
        heap_pos = hp;
        scratch_n = n;
    }
    if (dims > qnorm_n) {
        float *q = malloc((size_t)dims * sizeof(float));
        if (q == NULL)
            return -ENOMEM;
        free(qnorm);
        qnorm = q;
        qnorm_n = dims;
    }
    return 0;
}

/* The query's distinct terms (copied: the tokenizer's buffer is reused). */
typedef struct qterms {
    char buf[MAX_QUERY_TERMS][SL_RAG_TERM_MAX];
    uint8_t len[MAX_QUERY_TERMS];
    int n;
} qterms_t;

static void on_qterm(const char *t, size_t n, void *arg)
{
    qterms_t *q = arg;
    if (q->n == MAX_QUERY_TERMS)
        return;
    for (int i = 0; i < q->n; i++)
        if (q->len[i] == n && memcmp(q->buf[i], t, n) == 0)
            return;
    memcpy(q->buf[q->n], t, n);
    q->len[q->n++] = (uint8_t)n;
}

static const sl_rag_term_t *find_term(const sl_rag_index_t *x, const char *t, size_t n)
{
    uint32_t lo = 0, hi = x->hdr->nterms;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        const sl_rag_term_t *e = &x->terms[mid];
        size_t m = e->term.len < n ? e->term.len : n;
        int c = memcmp(x->str + e->term.off, t, m);
        if (c == 0)
            c = e->term.len < n ? -1 : e->term.len > n;
        if (c == 0)
            return e;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static int allowed(const uint8_t *allow, uint32_t i)
{
    return allow == NULL || (allow[i / 8] & (1u << (i % 8)));
}

static float bm25_idf(const sl_rag_index_t *x, uint32_t df)
{
    const float N = (float)x->hdr->nchunks, d = (float)df;
    return logf(1.0f + (N - d + 0.5f) / (d + 0.5f));
}

int sl__rag_prepare(sl_rag_index_t *x, char *err, size_t errlen)
{
    const uint32_t nterms = x->hdr->nterms;
    const uint64_t np = x->hdr->npostings;
    const float avgdl = x->hdr->avgdl > 0 ? x->hdr->avgdl : 1;
    x->impact = malloc((np ? np : 1) * sizeof(float));
    x->term_max = malloc((nterms ? nterms : 1) * sizeof(float));
    if (x->impact == NULL || x->term_max == NULL) {
        snprintf(err, errlen, "out of memory for the BM25 weights of %llu postings", (unsigned long long)np);
        return -ENOMEM;
    }
    for (uint32_t t = 0; t < nterms; t++) {
        const sl_rag_term_t *e = &x->terms[t];
        const sl_rag_posting_t *p = x->postings + e->post;
        float m = 0;
        for (uint32_t j = 0; j < e->df; j++) {
            /* searches look chunks up by halving a term's run: it must ascend (the builder writes it so) */
            if ((j > 0 && p[j].chunk <= p[j - 1].chunk) || p[j].tf == 0) {
                snprintf(err, errlen, "corrupt: term %u: postings out of order or of frequency 0", t);
                return -EBADMSG;
            }
            float tf = (float)p[j].tf, dl = (float)x->chunks[p[j].chunk].length;
            float w = tf * (BM25_K1 + 1) / (tf + BM25_K1 * (1 - BM25_B + BM25_B * dl / avgdl));
            if (!(w >= FLT_MIN))
                w = FLT_MIN; /* > 0: a touched chunk's score is never 0 (0 marks untouched) */
            x->impact[e->post + j] = w;
            if (w > m)
                m = w;
        }
        x->term_max[t] = m;
    }
    return 0;
}

/* A query term with its idf and the most it can add to a chunk's score. */
typedef struct qw {
    const sl_rag_term_t *e;
    float idf, ub;
} qw_t;

/* The BM25 weight term w gives chunk c (0 when c does not hold it): a halving search of the term's run. */
static float weight_in(const sl_rag_index_t *x, const qw_t *w, uint32_t c)
{
    const sl_rag_posting_t *p = x->postings + w->e->post;
    uint32_t lo = 0, hi = w->e->df;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (p[mid].chunk < c)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < w->e->df && p[lo].chunk == c ? w->idf * x->impact[w->e->post + lo] : 0;
}

/* The query's terms found in the index, best bound first; returns how many. */
static int query_terms(const sl_rag_index_t *x, const sl_rag_query_t *q, qw_t *w)
{
    static __thread qterms_t qt;
    qt.n = 0;
    sl_rag_tokenize(q->text, q->text_len, on_qterm, &qt);
    int nw = 0;
    for (int i = 0; i < qt.n; i++) {
        const sl_rag_term_t *e = find_term(x, qt.buf[i], qt.len[i]);
        if (e == NULL)
            continue;
        float idf = bm25_idf(x, e->df);
        if (!(idf > 0))
            continue;
        qw_t t = {e, idf, idf * x->term_max[e - x->terms]};
        int j = nw++;
        for (; j > 0 && w[j - 1].ub < t.ub; j--)
            w[j] = w[j - 1];
        w[j] = t;
    }
    return nw;
}

/* The most a chunk can still gain from the terms not added yet, rounded up for the float sums. */
static float still(float rem)
{
    return rem * 1.001f + 1e-6f;
}

/* The c best chunks so far, a min-heap on their running score acc[] (ties: the higher chunk id is worse),
 * with each chunk's place in it (pos, 1-based; 0: not in it), so a chunk whose score grew moves down in
 * O(log c). acc only grows while terms are added, so the root is the c-th best score so far: a lower bound of
 * the final c-th best, the threshold below which a chunk cannot rank. */
typedef struct best {
    uint32_t *h, *pos;
    uint32_t n, c;
    float theta; /* acc of the root once the heap is full, else -1: below it a chunk cannot enter */
} best_t;

static inline int hworse(uint32_t a, uint32_t b)
{
    return acc[a] < acc[b] || (acc[a] == acc[b] && a > b);
}

static void best_down(best_t *b, uint32_t i)
{
    uint32_t x = b->h[i];
    for (;;) {
        uint32_t l = 2 * i + 1, r = l + 1, m = l;
        if (l >= b->n)
            break;
        if (r < b->n && hworse(b->h[r], b->h[l]))
            m = r;
        if (!hworse(b->h[m], x))
            break;
        b->h[i] = b->h[m];
        b->pos[b->h[i]] = i + 1;
        i = m;
    }
    b->h[i] = x;
    b->pos[x] = i + 1;
}

/* Chunk ch's score grew: it enters (or moves in) the heap when it is among the c best. */
static void best_update(best_t *b, uint32_t ch)
{
    if (b->pos[ch]) {
        best_down(b, b->pos[ch] - 1);
    } else if (b->n < b->c) {
        uint32_t i = b->n++;
        while (i > 0 && hworse(ch, b->h[(i - 1) / 2])) {
            b->h[i] = b->h[(i - 1) / 2];
            b->pos[b->h[i]] = i + 1;
            i = (i - 1) / 2;
        }
        b->h[i] = ch;
        b->pos[ch] = i + 1;
    } else if (hworse(b->h[0], ch)) {
        b->pos[b->h[0]] = 0;
        b->h[0] = ch;
        best_down(b, 0);
    }
    if (b->n == b->c)
        b->theta = acc[b->h[0]];
}

/* best_update for the few postings that change the heap: most chunks stay under its root, a test inline. */
static inline void best_offer(best_t *b, uint32_t ch)
{
    if (acc[ch] >= b->theta || b->pos[ch])
        best_update(b, ch);
}

/* The c-th best score so far, or -1 while fewer than c chunks scored. */
static inline float best_theta(const best_t *b)
{
    return b->theta;
}

/* A term's whole run added into acc, with the chunks touched for the first time appended to touched (nt of
 * them so far; returns the new count) and the heap kept. Inlined twice, with a filter and without (allow
 * NULL): the unfiltered loop tests nothing per posting but the score; the heap's threshold is kept in a
 * register, as a store into acc could otherwise be the threshold's own float for all the compiler knows. */
__attribute__((always_inline)) static inline uint32_t add_run(const sl_rag_posting_t *p, const float *imp,
                                                              float idf, uint32_t df, const uint8_t *allow,
                                                              best_t *b, uint32_t nt)
{
    float *const a = acc;
    uint32_t *const t = touched, *const pos = b->pos;
    float theta = b->theta;
    for (uint32_t j = 0; j < df; j++) {
        uint32_t ch = p[j].chunk;
        if (!allowed(allow, ch))
            continue;
        float s = idf * imp[j];
        if (!(s > 0))
            continue;
        float v = a[ch];
        if (v == 0)
            t[nt++] = ch;
        v += s;
        a[ch] = v;
        if (v >= theta || pos[ch]) {
            best_update(b, ch);
            theta = b->theta;
        }
    }
    return nt;
}

/* BM25 of every chunk that can rank among the c best into acc, term by term, rarest (highest bound) first,
 * keeping the c best so far in a heap (best_t) as scores grow. While an untouched chunk could still reach the
 * c-th best, each term's whole run is added (every chunk in it touched); once the max-score bound of the
 * remaining terms is under the heap's threshold, only the touched chunks that can still reach it are kept
 * (the others set back to 0; one walk of the touched chunks per remaining term, which the first walk shrinks
 * to the few contenders) and completed, each by a halving search of the remaining runs or a walk of a run
 * when that is cheaper. Returns how many chunks are in touched (their acc is their exact score when *pruned
 * is 0, else the kept ones' is). */
static uint32_t bm25_accumulate(const sl_rag_index_t *x, const sl_rag_query_t *q, uint32_t c, qw_t *w, int nw,
                                int *pruned)
{
    float rem[MAX_QUERY_TERMS + 1];
    rem[nw] = 0;
    for (int i = nw - 1; i >= 0; i--)
        rem[i] = rem[i + 1] + w[i].ub;
    best_t b = {heap, heap_pos, 0, c, -1};
    uint32_t nt = 0;
    int i = 0;
    *pruned = 0;
    for (; i < nw; i++) {
        float lim = still(rem[i]);
        if (best_theta(&b) > (lim > q->min_bm25 ? lim : q->min_bm25))
            break; /* c chunks already score over what an untouched one can still reach */
        const sl_rag_posting_t *p = x->postings + w[i].e->post;
        const float *imp = x->impact + w[i].e->post, idf = w[i].idf;
        const uint32_t df = w[i].e->df;
        nt = q->allow ? add_run(p, imp, idf, df, q->allow, &b, nt) : add_run(p, imp, idf, df, NULL, &b, nt);
    }
    if (i < nw) {
        *pruned = 1;
        for (; i <= nw; i++) {
            /* keep what can still reach the c-th best so far (the heap's own chunks always: they can) */
            float theta = best_theta(&b), r = still(rem[i]);
            uint32_t m = 0;
            for (uint32_t j = 0; j < nt; j++) {
                uint32_t ch = touched[j];
                float a = acc[ch] + r; /* under theta: not in the heap (its chunks score theta or more) */
                if (a >= theta && (a >= q->min_bm25 || heap_pos[ch]))
                    touched[m++] = ch;
                else
                    acc[ch] = 0;
            }
            nt = m;
            if (i == nw)
                break;
            const uint32_t df = w[i].e->df;
            if ((uint64_t)nt * 16 < df) {
                for (uint32_t j = 0; j < nt; j++) {
                    float s = weight_in(x, &w[i], touched[j]);
                    if (s > 0) {
                        acc[touched[j]] += s;
                        best_offer(&b, touched[j]);
                    }
                }
            } else {
                const sl_rag_posting_t *p = x->postings + w[i].e->post;
                const float *imp = x->impact + w[i].e->post, idf = w[i].idf;
                for (uint32_t j = 0; j < df; j++)
                    if (acc[p[j].chunk] != 0) {
                        acc[p[j].chunk] += idf * imp[j];
                        best_offer(&b, p[j].chunk);
                    }
            }
        }
    }
    for (uint32_t j = 0; j < b.n; j++)
        heap_pos[b.h[j]] = 0;
    return nt;
}

static int bad_query(const sl_rag_index_t *x, const sl_rag_query_t *q)
{
    int wants_text = q->mode & SL_RAG_BM25, wants_vec = q->mode & SL_RAG_DENSE;
    if (q->mode < SL_RAG_BM25 || q->mode > SL_RAG_HYBRID || q->k == 0 || q->k > SL_VEC_MAX_K)
        return 1;
    if (wants_vec && q->vec && q->dims != x->hdr->dims)
        return 1;
    return (wants_text && !q->text && !(wants_vec && q->vec)) ||
           (wants_vec && !q->vec && !(wants_text && q->text));
}

int sl_rag_search(const sl_rag_index_t *x, const sl_rag_query_t *q, sl_rag_hit_t *out)
{
    if (bad_query(x, q))
        return -EINVAL;
    const uint32_t n = x->hdr->nchunks, dims = x->hdr->dims;
    if (n == 0)
        return 0;
    if (scratch(n, dims) != 0)
        return -ENOMEM;
    uint32_t C = q->candidates ? q->candidates : (q->k * 4 > 20 ? q->k * 4 : 20);
    if (C < q->k)
        C = q->k;
    if (C > SL_VEC_MAX_K)
        C = SL_VEC_MAX_K;
    sl_vec_hit_t *bl = malloc(C * sizeof(*bl)), *dl = malloc(C * sizeof(*dl));
    sl_rag_hit_t *fused = malloc(2 * (size_t)C * sizeof(*fused));
    int rc = 0;
    uint32_t nb = 0, nd = 0, nt = 0;
    static __thread qw_t w[MAX_QUERY_TERMS];
    int nw = 0, pruned = 0;
    if (bl == NULL || dl == NULL || fused == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    if ((q->mode & SL_RAG_BM25) && q->text) {
        nw = query_terms(x, q, w);
        nt = bm25_accumulate(x, q, C, w, nw, &pruned);
        sl_topk_t t;
        sl_topk_init(&t, bl, C);
        for (uint32_t i = 0; i < nt; i++)
            if (acc[touched[i]] >= q->min_bm25)
                sl_topk_push(&t, touched[i], acc[touched[i]]);
        nb = sl_topk_sort(&t);
        for (uint32_t i = 0; i < nb; i++)
            rank_of[bl[i].id] = i + 1;
    }
    int have_vec = (q->mode & SL_RAG_DENSE) && q->vec;
    if (have_vec) {
        memcpy(qnorm, q->vec, dims * sizeof(float));
        sl_vec_normalize(qnorm, dims);
        sl_vecset_t vs = x->vecs;
        vs.allow = q->allow;
        vs.probes = q->probes;
        int r = sl_vec_search(&vs, qnorm, C, q->quant, 0, q->min_dense, dl);
        if (r < 0) {
            rc = r;
            goto out;
        }
        nd = (uint32_t)r;
    }
    /* fuse: every chunk of either list once, with both signals */
    const float K = q->rrf_k > 0 ? q->rrf_k : DEFAULT_RRF_K;
    uint32_t nf = 0;
    for (uint32_t i = 0; i < nb; i++) {
        sl_rag_hit_t *h = &fused[nf++];
        h->chunk = bl[i].id;
        h->bm25 = bl[i].score;
        h->bm25_rank = i + 1;
        h->dense = have_vec ? sl_vec_dot(x->vecs.f32 + (size_t)h->chunk * dims, qnorm, dims) : 0;
        h->dense_rank = 0;
    }
    for (uint32_t i = 0; i < nd; i++) {
        uint32_t c = dl[i].id, r = rank_of[c];
        sl_rag_hit_t *h = r ? &fused[r - 1] : &fused[nf++];
        if (!r) {
            h->chunk = c;
            h->bm25 = 0; /* its score though under the BM25 list (pruned: looked up, else in acc) */
            if (pruned && acc[c] == 0)
                for (int j = 0; j < nw; j++)
                    h->bm25 += weight_in(x, &w[j], c);
            else
                h->bm25 = acc[c];
            h->bm25_rank = 0;
        }
        h->dense = dl[i].score;
        h->dense_rank = i + 1;
    }
    sl_vec_hit_t *sel = malloc((size_t)q->k * sizeof(*sel));
    if (sel == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    /* score fusion: each signal divided by its list's best (BM25 >= 0; a cosine below 0 counts as 0; a score
     * under its list's floor as 0), so a list whose scores are flat (a weak signal) moves the sum little; RRF
     * would give its order full say */
    const float wb = q->w_bm25 > 0 ? q->w_bm25 : 1.0f, wd = q->w_dense > 0 ? q->w_dense : 1.0f;
    const float bs = nb && bl[0].score > 0 ? wb / bl[0].score : 0,
                ds = nd && dl[0].score > 0 ? wd / dl[0].score : 0;
    sl_topk_t t;
    sl_topk_init(&t, sel, q->k);
    for (uint32_t i = 0; i < nf; i++) {
        sl_rag_hit_t *h = &fused[i];
        float s;
        if (q->mode == SL_RAG_BM25)
            s = h->bm25;
        else if (q->mode == SL_RAG_DENSE)
            s = h->dense;
        else if (q->fusion == SL_RAG_FUSE_RRF)
            s = (h->bm25_rank ? wb / (K + (float)h->bm25_rank) : 0) +
                (h->dense_rank ? wd / (K + (float)h->dense_rank) : 0);
        else
            s = (h->bm25 >= q->min_bm25 ? h->bm25 : 0) * bs +
                (h->dense > 0 && h->dense >= q->min_dense ? h->dense : 0) * ds;
        if ((q->mode == SL_RAG_BM25 && !h->bm25_rank) || (q->mode == SL_RAG_DENSE && !h->dense_rank))
            continue;
        h->score = s;
        sl_topk_push(&t, i, s);
    }
    uint32_t ns = sl_topk_sort(&t);
    for (uint32_t i = 0; i < ns; i++)
        out[i] = fused[sel[i].id];
    free(sel);
    rc = (int)ns;
out:
    for (uint32_t i = 0; i < nt; i++)
        acc[touched[i]] = 0;
    for (uint32_t i = 0; i < nb; i++)
        rank_of[bl[i].id] = 0;
    free(bl);
    free(dl);
    free(fused);
    return rc;
}

/* Whether the source's "key\0value\0" metadata has key=value. */
static int meta_has(const char *m, uint32_t mlen, const char *kv, size_t kvlen)
{
    const char *eq = memchr(kv, '=', kvlen);
    if (eq == NULL)
        return 0;
    size_t klen = (size_t)(eq - kv), vlen = kvlen - klen - 1;
    const char *p = m, *end = m + mlen;
    while (p < end) {
        const char *k = p, *kz = memchr(p, '\0', (size_t)(end - p));
        if (kz == NULL)
            return 0;
        const char *v = kz + 1, *vz = v < end ? memchr(v, '\0', (size_t)(end - v)) : NULL;
        if (vz == NULL)
            return 0;
        if ((size_t)(kz - k) == klen && memcmp(k, kv, klen) == 0 && (size_t)(vz - v) == vlen &&
            memcmp(v, eq + 1, vlen) == 0)
            return 1;
        p = vz + 1;
    }
    return 0;
}

int sl_rag_filter(const sl_rag_index_t *x, const char *spec, size_t len, uint8_t *bitmap)
{
    const uint32_t n = x->hdr->nsources;
    memset(bitmap, 0, ((size_t)x->hdr->nchunks + 7) / 8);
    char pat[1024];
    int pass = 0;
    for (uint32_t s = 0; s < n; s++) {
        const sl_rag_source_t *src = &x->sources[s];
        int any_glob = 0, glob_ok = 0, meta_ok = 1;
        for (const char *p = spec, *end = spec + len; p < end;) {
            const char *nl = memchr(p, '\n', (size_t)(end - p));
            size_t l = nl ? (size_t)(nl - p) : (size_t)(end - p);
            if (l > 7 && memcmp(p, "source:", 7) == 0) {
                any_glob = 1;
                size_t pl = l - 7, sl = src->path.len;
                char path[1024];
                if (pl < sizeof(pat) && sl < sizeof(path)) {
                    memcpy(pat, p + 7, pl);
                    pat[pl] = '\0';
                    memcpy(path, x->str + src->path.off, sl);
                    path[sl] = '\0';
                    glob_ok |= fnmatch(pat, path, 0) == 0;
                }
            } else if (l > 5 && memcmp(p, "meta:", 5) == 0) {
                meta_ok &= meta_has(x->str + src->meta.off, src->meta.len, p + 5, l - 5);
            } else if (l > 0) {
                return -EINVAL;
            }
            p += l + 1;
        }
        if ((any_glob && !glob_ok) || !meta_ok)
            continue;
        for (uint32_t c = src->first; c < src->first + src->count; c++) {
            bitmap[c / 8] |= (uint8_t)(1u << (c % 8));
            pass++;
        }
    }
    return pass;
}

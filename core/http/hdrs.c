/* Header lists collected from llhttp's pieces (see hdrs.h). */
#include "http/hdrs.h"

#include <errno.h>
#include <stdlib.h>

static int grow(sl_hdrs_t *h, uint32_t max)
{
    if (h->n < h->cap)
        return 0;
    if (h->n >= max)
        return -E2BIG;
    uint32_t cap = h->cap ? h->cap * 2 : 16;
    if (cap > max)
        cap = max;
    sl_header_t *l = realloc(h->list, cap * sizeof(*l));
    if (l == NULL)
        return -ENOMEM;
    h->list = l;
    h->cap = cap;
    return 0;
}

int sl__hdrs_add(sl_hdrs_t *h, size_t noff, size_t nlen, size_t voff, size_t vlen, uint32_t max)
{
    int rc = grow(h, max);
    if (rc != 0)
        return rc;
    sl_header_t *e = &h->list[h->n++];
    e->name = (const char *)(uintptr_t)noff;
    e->name_len = (uint32_t)nlen;
    sl__hdrs_set_value(e, voff, vlen);
    h->in_value = 1;
    return 0;
}

int sl__hdrs_name(sl_hdrs_t *h, size_t off, size_t len, uint32_t max)
{
    if (h->n == 0 || h->in_value) {
        int rc = grow(h, max);
        if (rc != 0)
            return rc;
        sl_header_t *e = &h->list[h->n++];
        e->name = (const char *)(uintptr_t)off;
        e->name_len = 0;
        e->value = NULL;
        e->value_len = 0;
        h->in_value = 0;
    }
    h->list[h->n - 1].name_len += (uint32_t)len;
    return 0;
}

int sl__hdrs_value(sl_hdrs_t *h, size_t off, size_t len)
{
    if (h->n == 0)
        return -EINVAL;
    sl_header_t *e = &h->list[h->n - 1];
    if (!h->in_value) {
        h->in_value = 1;
        e->value = (const char *)(uintptr_t)(off + 1); /* + 1: a value at offset 0 is not "no value" */
    }
    e->value_len += (uint32_t)len;
    return 0;
}

void sl__hdrs_finish(sl_hdrs_t *h, const char *base)
{
    for (uint32_t i = 0; i < h->n; i++) {
        sl_header_t *e = &h->list[i];
        e->name = e->name_len ? base + sl__hdrs_name_off(e) : "";
        e->value = e->value ? base + sl__hdrs_value_off(e) : "";
        if (e->value_len == 0)
            e->value = ""; /* no pointer arithmetic on a base that may be NULL (an empty head) */
    }
}

void sl__hdrs_reset(sl_hdrs_t *h)
{
    h->n = 0;
    h->in_value = 0;
}

void sl__hdrs_free(sl_hdrs_t *h)
{
    free(h->list);
    h->list = NULL;
    h->n = h->cap = 0;
    h->in_value = 0;
}

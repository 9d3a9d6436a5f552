/* Window counters of the limit plugins in a shared dict: the reservation rule of sluice.limits (add first,
 * admit only when every count stays within its limit, else take everything back) for all the limits of a
 * request in one FFI call. The Lua side (sluice.limits.reserve_all) keeps the general path: memcached,
 * fallbacks. */
#include "shared/counters.h"

#include <math.h>
#include <string.h>

#define KEY_MAX SL_CTR_KEY_MAX

/* key = prefix .. idx (idx a whole number, as Lua's tostring writes it); its length, or 0 when it does not
 * fit. */
size_t sl__ctr_key(char *key, const sl_ctr_item_t *it, double idx)
{
    char digits[24];
    int nd = 0, neg = idx < 0;
    uint64_t v = (uint64_t)(neg ? -idx : idx);
    do {
        digits[nd++] = (char)('0' + v % 10);
        v /= 10;
    } while (v && nd < (int)sizeof(digits));
    size_t len = (size_t)it->plen + (size_t)neg + (size_t)nd;
    if (len > KEY_MAX || it->window <= 0 || fabs(idx) >= 9e15)
        return 0;
    memcpy(key, it->prefix, it->plen);
    char *p = key + it->plen;
    if (neg)
        *p++ = '-';
    while (nd > 0)
        *p++ = digits[--nd];
    return len;
}

/* Seconds until a sliding window takes `need` more (count cur in this window, prev before it, e s into it).
 */
static double sliding_wait(double limit, double need, double cur, double prev, double e, double w)
{
    if (cur + need <= limit) {
        if (prev <= 0)
            return 1;
        return fmax(1, w * (1 - (limit - cur - need) / prev) - e);
    }
    if (cur <= 0)
        return w - e;
    return (w - e) + fmax(0, w * (1 - (limit - need) / cur));
}

void sl__ctr_settle(sl_ctr_item_t *it, double count, double prev, double now)
{
    double w = it->window, e = now - it->idx * w, limit = it->limit, amount = it->amount;
    double used = prev + count;
    it->count = count;
    it->reset = ceil(w - e);
    it->retry_after = 0;
    if (used <= limit && used - amount < limit) {
        it->ok = 1;
        it->remaining = fmax(0, floor(limit - used));
        return;
    }
    it->ok = amount > limit ? 2 : 0;
    it->remaining = fmax(0, floor(limit - (used - amount)));
    if (it->ok == 2)
        return;
    if (it->sliding) {
        double unweighted = prev / fmax(1e-9, 1 - e / w);
        it->retry_after = fmax(1, ceil(sliding_wait(limit, amount, count - amount, unweighted, e, w) - 1e-6));
    } else {
        it->retry_after = fmax(1, ceil(w - e));
    }
}

/* The verdict on item `it` whose window in d now holds `count` (its amount included). */
static void settle(sl_shdict_t *d, sl_ctr_item_t *it, double count, double now, char *key)
{
    double prev = 0;
    if (it->sliding) {
        double e = now - it->idx * it->window;
        size_t klen = sl__ctr_key(key, it, it->idx - 1);
        int type = 0;
        double num = 0;
        size_t vlen = 0;
        uint32_t flags = 0;
        if (klen && sl_shdict_get(d, key, klen, &type, &num, NULL, 0, &vlen, &flags) == 0 &&
            type == SL_SHDICT_NUMBER)
            prev = num * (1 - e / it->window);
    }
    sl__ctr_settle(it, count, prev, now);
}

/* Takes delta (> 0) back from a counter, never below 0. */
static void take_back(sl_shdict_t *d, const char *key, size_t klen, double delta)
{
    double v = 0;
    if (sl_shdict_incr(d, key, klen, -delta, 0, 0, 0, &v, NULL) == 0 && v < 0)
        sl_shdict_incr(d, key, klen, -v, 0, 0, 0, &v, NULL);
}

int sl_ctr_reserve(sl_shdict_t *d, sl_ctr_item_t *items, int n, double now)
{
    char key[KEY_MAX];
    int counted = 0, refused = 0, rc = 0;
    for (; counted < n; counted++) {
        sl_ctr_item_t *it = &items[counted];
        it->idx = floor(now / it->window);
        size_t klen = sl__ctr_key(key, it, it->idx);
        if (klen == 0) {
            rc = SL_SHDICT_INVALID;
            break;
        }
        double count = 0, ttl = (it->sliding ? 2 * it->window : it->window) + 1;
        rc = sl_shdict_incr(d, key, klen, it->amount, 1, 0, ttl, &count, NULL);
        if (rc != 0)
            break;
        settle(d, it, count, now, key);
        if (it->ok != 1 && refused == 0)
            refused = counted + 1;
    }
    if (rc == 0 && refused == 0)
        return 0;
    /* all or nothing: every amount counted by this call goes back */
    for (int i = 0; i < counted; i++) {
        sl_ctr_item_t *it = &items[i];
        size_t klen = sl__ctr_key(key, it, it->idx);
        if (klen && it->amount > 0)
            take_back(d, key, klen, it->amount);
        if (it->ok == 1)
            it->remaining += it->amount; /* what it would have left had the request gone */
    }
    return rc != 0 ? rc : refused;
}

void sl_ctr_adjust(sl_shdict_t *d, const sl_ctr_item_t *items, const double *deltas, int n)
{
    char key[KEY_MAX];
    for (int i = 0; i < n; i++) {
        const sl_ctr_item_t *it = &items[i];
        double delta = deltas[i], v = 0;
        size_t klen = delta != 0 ? sl__ctr_key(key, it, it->idx) : 0;
        if (klen == 0)
            continue;
        if (delta > 0)
            sl_shdict_incr(d, key, klen, delta, 1, 0, (it->sliding ? 2 * it->window : it->window) + 1, &v,
                           NULL);
        else
            take_back(d, key, klen, -delta);
    }
}

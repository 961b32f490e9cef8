/* secagg_graph.c: the round context both sides derive from the public parameters: defaults
 * and validation of (n, t, k, t_nb, bits), the sorted ids, and the SecAgg+ neighbour graph (a
 * Harary ring whose positions are a ChaCha20-drawn permutation of the public graph_seed).
 * Everything here is public and deterministic: every client and the server compute the same
 * graph without talking. */
#include "crypto/secagg_internal.h"

#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

uint32_t secagg_default_t(uint32_t n)
{
    uint32_t a = n / 2 + 1, b = (uint32_t)(((uint64_t)2 * n + 2) / 3), t = a > b ? a : b;
    if (t < 2)
        t = 2;
    return t > n ? n : t;
}

uint32_t secagg_default_k(uint32_t n)
{
    uint32_t l = 0;
    while (l < 32 && ((uint64_t)1 << l) < n)
        l++;
    return 2 * l;
}

uint32_t secagg_default_t_nb(uint32_t k)
{
    k += k & 1;
    return secagg_default_t(k + 1);
}

/* ChaCha20 as a public, portable stream of uniform integers (the graph permutation). */
typedef struct pubrng {
    uint8_t key[32];
    uint8_t buf[64];
    uint32_t block, used;
} pubrng_t;

static uint64_t pubrng_u64(pubrng_t *r)
{
    static const uint8_t zero[64];
    static const uint8_t nonce[crypto_stream_chacha20_ietf_NONCEBYTES] = {'g', 'r', 'a', 'p', 'h'};
    if (r->used + 8 > 64) {
        crypto_stream_chacha20_ietf_xor_ic(r->buf, zero, 64, nonce, r->block++, r->key);
        r->used = 0;
    }
    uint64_t v = secagg_get64(r->buf + r->used);
    r->used += 8;
    return v;
}

static uint64_t pubrng_below(pubrng_t *r, uint64_t range)
{
    uint64_t floor_ = (0 - range) % range, v;
    do
        v = pubrng_u64(r);
    while (v < floor_);
    return v % range;
}

/* Resolves defaults and validates; fills ctx when given. */
int secagg_ctx_resolve(const secagg_params_t *p, secagg_ctx_t *c, err_t *err)
{
    if (!p)
        return err_set(err, FN_EINVAL, "secagg: no parameters");
    if (p->n < 2 || p->n > SECAGG_MAX_N)
        return err_set(err, FN_EINVAL, "secagg: n = %u selected clients; need 2 to %u", p->n, SECAGG_MAX_N);
    if (!p->ids)
        return err_set(err, FN_EINVAL, "secagg: no client ids");
    uint32_t n = p->n, t = p->t ? p->t : secagg_default_t(n);
    if (t < 2 || t > n || 2 * (uint64_t)t <= n)
        return err_set(err, FN_EINVAL,
                       "secagg: threshold t = %u must be more than n/2 = %u/2, at least 2 and at most n", t, n);
    if (p->m < 1)
        return err_set(err, FN_EINVAL, "secagg: vector length m must be >= 1");
    uint32_t bits = p->bits ? p->bits : 32;
    if (bits < 8 || bits > 32)
        return err_set(err, FN_EINVAL, "secagg: ring bits = %u; need 8 to 32", bits);
    uint32_t half = 0, thr = t;
    if (p->k > 0) {
        uint32_t k = p->k + (p->k & 1);
        if (k < n - 1) {
            half = k / 2;
            thr = p->t_nb ? p->t_nb : secagg_default_t_nb(k);
            if (thr < 2 || thr > k + 1 || 2 * thr <= k + 1)
                return err_set(err, FN_EINVAL,
                               "secagg: neighbourhood threshold t_nb = %u must be more than (k+1)/2 = %u/2, at least 2 "
                               "and at most k+1",
                               thr, k + 1);
        }
    }
    uint32_t *ids = FN_MALLOC((size_t)n * sizeof *ids);
    memcpy(ids, p->ids, (size_t)n * sizeof *ids);
    qsort(ids, n, sizeof *ids, fn_cmp_u32);
    for (uint32_t i = 0; i < n; i++)
        if (ids[i] == 0 || (i && ids[i] == ids[i - 1])) {
            uint32_t bad = ids[i];
            free(ids);
            return err_set(err, FN_EINVAL, "secagg: client id %u is %s", bad, bad ? "repeated" : "0 (ids start at 1)");
        }
    if (!c) {
        free(ids);
        return 0;
    }
    memset(c, 0, sizeof *c);
    c->round = p->round_id;
    c->n = n;
    c->t = t;
    c->thr = thr;
    c->m = p->m;
    c->bits = bits;
    c->mask = bits == 32 ? 0xFFFFFFFFu : (1u << bits) - 1;
    c->half = half;
    c->ids = ids;
    if (half) {
        c->pos = FN_MALLOC((size_t)n * sizeof *c->pos);
        c->at = FN_MALLOC((size_t)n * sizeof *c->at);
        pubrng_t r = {.used = 64};
        memcpy(r.key, p->graph_seed, 32);
        for (uint32_t i = 0; i < n; i++)
            c->at[i] = i;
        for (uint32_t i = n - 1; i > 0; i--) { /* Fisher-Yates */
            uint32_t j = (uint32_t)pubrng_below(&r, (uint64_t)i + 1), tmp = c->at[i];
            c->at[i] = c->at[j];
            c->at[j] = tmp;
        }
        for (uint32_t i = 0; i < n; i++)
            c->pos[c->at[i]] = i;
    }
    return 0;
}

int secagg_params_check(const secagg_params_t *p, err_t *err) { return secagg_ctx_resolve(p, NULL, err); }

void secagg_ctx_free(secagg_ctx_t *c)
{
    free(c->ids);
    free(c->pos);
    free(c->at);
}

/* Index of id in the sorted ids, or -1. */
int64_t secagg_ctx_index(const secagg_ctx_t *c, uint32_t id)
{
    uint32_t lo = 0, hi = c->n;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (c->ids[mid] < id)
            lo = mid + 1;
        else if (c->ids[mid] > id)
            hi = mid;
        else
            return mid;
    }
    return -1;
}

int secagg_ctx_is_nbr(const secagg_ctx_t *c, uint32_t i, uint32_t j)
{
    if (i == j)
        return 0;
    if (!c->half)
        return 1;
    uint32_t d = c->pos[i] > c->pos[j] ? c->pos[i] - c->pos[j] : c->pos[j] - c->pos[i];
    if (d > c->n - d)
        d = c->n - d;
    return d <= c->half;
}

int secagg_neighbours(const secagg_params_t *p, uint32_t id, uint32_t *out, uint32_t *count, err_t *err)
{
    secagg_ctx_t x;
    int rc = secagg_ctx_resolve(p, &x, err);
    if (rc)
        return rc;
    int64_t i = secagg_ctx_index(&x, id);
    if (i < 0) {
        secagg_ctx_free(&x);
        return err_set(err, FN_EINVAL, "secagg: client %u is not among the selected ids", id);
    }
    uint32_t k = 0;
    for (uint32_t j = 0; j < x.n; j++)
        if (secagg_ctx_is_nbr(&x, (uint32_t)i, j))
            out[k++] = x.ids[j];
    *count = k;
    secagg_ctx_free(&x);
    return 0;
}

/* secagg_params.c: SecAgg+ neighbourhood size k and threshold t_nb chosen from n, the expected
 * dropout rate and the corruption rate (Bell et al., CCS 2020, section 3: pick the graph so that
 * an abort and a privacy failure both have negligible probability), the failure bounds behind
 * that choice, and whether a given set of survivors lets a round finish. The defaults of
 * secagg_default_k / _t_nb (k = 2 ceil(log2 n)) ignore the dropout rate: at n = 1000 and 10%
 * dropouts their abort bound is above 1, and the secagg benchmark aborted one round in two. */
#include "crypto/secagg_internal.h"

#include <math.h>
#include <stdlib.h>

#include "common/util.h"

/* log of the Binomial(k, p) probability of exactly i. */
static double log_pmf(uint32_t k, uint32_t i, double p)
{
    if (p <= 0)
        return i == 0 ? 0 : -INFINITY;
    if (p >= 1)
        return i == k ? 0 : -INFINITY;
    return lgamma(k + 1.0) - lgamma(i + 1.0) - lgamma((double)(k - i) + 1.0) + i * log(p) + (k - i) * log1p(-p);
}

/* log2 of the sum of exp(log_pmf) over i in [lo, hi], computed stably (log-sum-exp): the tails
 * of interest are far below the smallest double. */
static double log2_range(uint32_t k, uint32_t lo, uint32_t hi, double p)
{
    if (lo > hi)
        return -INFINITY;
    double m = -INFINITY;
    for (uint32_t i = lo; i <= hi; i++) {
        double v = log_pmf(k, i, p);
        if (v > m)
            m = v;
    }
    if (m == -INFINITY)
        return -INFINITY;
    double s = 0;
    for (uint32_t i = lo; i <= hi; i++)
        s += exp(log_pmf(k, i, p) - m);
    return (m + log(s)) / log(2.0);
}

double secagg_log2_binom_below(uint32_t k, uint32_t t, double p)
{
    return t == 0 ? -INFINITY : log2_range(k, 0, t - 1 < k ? t - 1 : k, p);
}

double secagg_log2_binom_at_least(uint32_t k, uint32_t t, double p)
{
    return t > k ? -INFINITY : log2_range(k, t, k, p);
}

/* The two bounds of a neighbourhood of k (k + 1 holders with the client itself) and threshold thr,
 * union-bounded over the n clients. A client that dropped needs thr surviving neighbours for its
 * mask key to be rebuilt (a survivor counts itself too, so this is the stricter case); a client's
 * secrets are exposed to the server when thr of its neighbours are corrupted and pool their shares. */
static void bounds(uint32_t n, uint32_t k, uint32_t thr, double dropout, double corruption, double *ab, double *priv)
{
    double l2n = log2((double)n);
    *ab = l2n + secagg_log2_binom_below(k, thr, 1 - dropout);
    *priv = l2n + secagg_log2_binom_at_least(k, thr, corruption);
}

/* The honest survivors' graph (Bell et al.'s other condition): on the ring two honest survivors
 * within k/2 positions are neighbours, so it can fall apart (and the server learn the sum of a
 * part) only where k/2 consecutive positions hold no honest survivor; union over the n starts. */
static double split_bound(uint32_t n, uint32_t k, double dropout, double corruption)
{
    double bad = dropout + corruption;
    return bad > 0 ? log2((double)n) + (k / 2) * log2(bad < 1 ? bad : 1) : -INFINITY;
}

int secagg_plan_plus(uint32_t n, uint32_t k_fixed, double dropout, double corruption, secagg_plus_plan_t *out,
                     err_t *err)
{
    *out = (secagg_plus_plan_t){0};
    if (n < 2 || n > SECAGG_MAX_N)
        return err_set(err, FN_EINVAL, "secagg: n = %u selected clients; need 2 to %u", n, SECAGG_MAX_N);
    if (!(dropout >= 0 && dropout < 0.5) || !(corruption >= 0 && corruption < 0.5))
        return err_set(err, FN_EINVAL, "secagg: dropout %g and corruption %g must each lie in [0, 0.5)", dropout,
                       corruption);
    uint32_t k = 0, thr = 0;
    if (k_fixed) { /* the experiment's own k: its default threshold, and the bounds it gives */
        k = k_fixed + (k_fixed & 1);
        thr = k < n - 1 ? secagg_default_t_nb(k) : 0;
    } else {
        /* The smallest even k (cost grows with k) whose smallest legal threshold keeping the
         * privacy bound below target also keeps the abort bound below target. The abort bound
         * grows with thr and the privacy bound falls, so for each k: the lowest thr meeting the
         * privacy target is the best chance for the abort target. */
        for (uint32_t kk = 2; kk < n - 1; kk += 2) {
            if (kk > SECAGG_PLAN_MAX_K)
                return err_set(err, FN_EINVAL,
                               "secagg: no SecAgg+ neighbourhood up to k = %u keeps the abort bound below 2^%g and "
                               "the privacy bound below 2^%g at dropout %g and corruption %g (n = %u)",
                               SECAGG_PLAN_MAX_K, SECAGG_LOG2_ABORT_TARGET, SECAGG_LOG2_PRIVACY_TARGET, dropout,
                               corruption, n);
            if (split_bound(n, kk, dropout, corruption) > SECAGG_LOG2_PRIVACY_TARGET)
                continue; /* no threshold helps: the graph itself is too sparse */
            for (uint32_t t = (kk + 1) / 2 + 1; t <= kk + 1; t++) {
                double ab, priv;
                bounds(n, kk, t, dropout, corruption, &ab, &priv);
                if (ab > SECAGG_LOG2_ABORT_TARGET)
                    break; /* and larger thresholds only abort more often */
                if (priv <= SECAGG_LOG2_PRIVACY_TARGET) {
                    k = kk;
                    thr = t;
                    break;
                }
            }
            if (thr)
                break;
        } /* none below n - 1: the complete graph */
    }
    if (thr) {
        out->k = k;
        out->t_nb = thr;
        bounds(n, k, thr, dropout, corruption, &out->log2_abort, &out->log2_privacy);
        out->log2_split = split_bound(n, k, dropout, corruption);
    } else { /* the complete graph: full SecAgg with its threshold t over all n */
        uint32_t t = secagg_default_t(n);
        out->log2_abort = secagg_log2_binom_below(n, t, 1 - dropout);
        out->log2_privacy = secagg_log2_binom_at_least(n, t, corruption);
        out->log2_split = -INFINITY; /* the complete graph stays connected */
    }
    return 0;
}

int secagg_can_finish(const secagg_params_t *p, const uint8_t *survived, err_t *err)
{
    secagg_ctx_t x;
    int rc = secagg_ctx_resolve(p, &x, err);
    if (rc)
        return rc;
    uint32_t n = x.n, alive = 0;
    for (uint32_t i = 0; i < n; i++)
        alive += survived[i] != 0;
    int ok = alive >= x.t;
    /* survived[] is in the order of p->ids; the context sorts them */
    uint8_t *s = FN_CALLOC(n, 1);
    for (uint32_t i = 0; i < n; i++) {
        int64_t j = secagg_ctx_index(&x, p->ids[i]);
        s[j] = survived[i] != 0;
    }
    for (uint32_t i = 0; i < n && ok; i++) {
        uint32_t holders = s[i]; /* a survivor holds a share of its own secrets */
        if (x.half) /* the k/2 ring positions either side (k < n - 1: all distinct) */
            for (uint32_t d = 1; d <= x.half; d++)
                holders += s[x.at[(x.pos[i] + d) % n]] + s[x.at[(x.pos[i] + n - d) % n]];
        else
            holders = alive;
        /* a dropped client's mask key is needed only when some neighbour survived */
        if (holders < x.thr && (s[i] || holders > 0))
            ok = 0;
    }
    free(s);
    secagg_ctx_free(&x);
    return ok;
}

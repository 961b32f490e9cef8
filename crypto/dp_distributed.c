/* Distributed discrete Gaussian noise (DDGauss, Kairouz, Liu, Steinke 2021) for secure
 * aggregation: the plan (scale, rounded sensitivity, each client's noise variance, the ring's
 * headroom) and a client's encoding (clip, scale, conditional stochastic rounding, noise). The
 * guarantees and the approximations are listed in crypto/dp.h. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "crypto/dp.h"

typedef unsigned __int128 u128;

/* KLS 2021 (Theorem 1 and their accounting code): the L2 norm after stochastic rounding of a
 * vector of norm cf in d dimensions is at most cf + sqrt(d) always, and at most the second bound
 * with probability >= 1 - beta; conditional rounding makes the smaller one hold always. */
static double rounded_sens(double cf, double d)
{
    double b1 = cf + sqrt(d);
    double b2 = sqrt(cf * cf + d / 4 + sqrt(2 * log(1 / DP_DDP_BETA)) * (cf + sqrt(d) / 2));
    return b1 < b2 ? b1 : b2;
}

/* num/den >= v, den a power of two as large as keeps num <= 2^32 (the samplers' limit); v = 0 is
 * 0/1. -1 when v does not fit. Scaling by a power of two and ceil are exact in double, so the
 * rational never falls below v. */
static int variance_up(double v, uint64_t *num, uint64_t *den)
{
    if (v == 0) {
        *num = 0;
        *den = 1;
        return 0;
    }
    if (!(v > 0) || v > (double)DP_RATIONAL_MAX)
        return -1;
    uint64_t d = 1;
    while (d < DP_RATIONAL_MAX && v * (double)(d * 2) <= (double)DP_RATIONAL_MAX)
        d *= 2;
    double n = ceil(v * (double)d);
    if (n > (double)DP_RATIONAL_MAX)
        return -1;
    *num = (uint64_t)n;
    *den = d;
    return 0;
}

enum { FITS = 0, RING_FULL = 1, SAMPLER_LIMIT = 2 };

/* Fills the plan's scale-dependent fields for scale f and says whether they fit. */
static int try_scale(dp_ddp_plan_t *p, double f)
{
    double cf = p->clip * f;
    p->scale = f;
    p->sens = rounded_sens(cf, (double)p->dim);
    /* a few ulps of margin: the product and quotient must not round below the exact value */
    double v = p->sigma * p->sigma * p->sens * p->sens / p->assumed * (1 + 8 * DBL_EPSILON);
    if (variance_up(v, &p->var_num, &p->var_den) < 0)
        return SAMPLER_LIMIT;
    double s2 = (double)p->var_num / (double)p->var_den;
    double need = (double)p->clients * (cf + 1) + DP_DDP_TAIL_SIGMAS * sqrt((double)p->clients * s2);
    return need <= ldexp(1.0, (int)p->bits - 1) - 1 ? FITS : RING_FULL;
}

static int plan_bits(double sigma, double clip, uint32_t clients, uint32_t assumed, uint64_t dim, uint32_t bits,
                     int suggest, dp_ddp_plan_t *plan, err_t *err);

/* The fewest bits (above the plan's) with which the whole plan succeeds; 0 if none up to 32. */
static uint32_t bits_needed(const dp_ddp_plan_t *p)
{
    for (uint32_t b = p->bits + 1; b <= 32; b++) {
        dp_ddp_plan_t q;
        if (plan_bits(p->sigma, p->clip, p->clients, p->assumed, p->dim, b, 0, &q, NULL) == FN_OK)
            return b;
    }
    return 0;
}

int dp_ddp_plan(double sigma, double clip, uint32_t clients, uint32_t assumed, uint64_t dim, uint32_t bits,
                dp_ddp_plan_t *plan, err_t *err)
{
    return plan_bits(sigma, clip, clients, assumed, dim, bits, 1, plan, err);
}

/* suggest: name the bits that would do in a refusal (0 inside bits_needed's own search). */
static int plan_bits(double sigma, double clip, uint32_t clients, uint32_t assumed, uint64_t dim, uint32_t bits,
                     int suggest, dp_ddp_plan_t *plan, err_t *err)
{
    memset(plan, 0, sizeof *plan);
    if (!(sigma >= 0) || isinf(sigma) || !(clip > 0) || isinf(clip))
        return err_set(err, FN_EINVAL, "distributed DP needs a finite noise multiplier >= 0 and clip > 0 (got %g, %g)",
                       sigma, clip);
    if (clients < 1 || assumed < 1 || assumed > clients)
        return err_set(err, FN_EINVAL,
                       "distributed DP: the noise must assume between 1 and the %u clients selected (got %u)", clients,
                       assumed);
    if (dim < 1 || bits < 2 || bits > 32)
        return err_set(err, FN_EINVAL, "distributed DP needs at least one value and 2 <= bits <= 32 (got %llu, %u)",
                       (unsigned long long)dim, bits);
    *plan = (dp_ddp_plan_t){.sigma = sigma, .clip = clip, .clients = clients, .assumed = assumed, .bits = bits,
                            .dim = dim};
    /* Both constraints grow with f: bisect between one integer unit per C (the coarsest encoding
     * worth having) and the noise-free ring bound. */
    double lo = 1.0 / clip, hi = (ldexp(1.0, (int)bits - 1) - 1 - clients) / ((double)clients * clip);
    int why = hi >= lo ? try_scale(plan, lo) : RING_FULL;
    if (why == RING_FULL) {
        uint32_t b = suggest ? bits_needed(plan) : 0;
        char fix[96];
        if (b)
            snprintf(fix, sizeof fix, "use at least %u bits", b);
        else
            snprintf(fix, sizeof fix, "even 32 bits are too few: select fewer clients a round");
        return err_set(err, FN_EINVAL,
                       "distributed DP: a ring of %u bits cannot hold the sum of %u updates clipped to %g plus %g "
                       "standard deviations of their noise (noise multiplier %g over %u assumed clients) at even one "
                       "integer unit per clip; %s",
                       bits, clients, clip, DP_DDP_TAIL_SIGMAS, sigma, assumed, fix);
    }
    if (why == SAMPLER_LIMIT)
        return err_set(err, FN_EINVAL,
                       "distributed DP: noise multiplier %g is too large for the discrete Gaussian sampler (each of "
                       "the %u assumed clients would need a variance above 2^32 integer units even at one unit per "
                       "clip); lower the noise multiplier",
                       sigma, assumed);
    if (try_scale(plan, hi) != FITS) {
        for (int i = 0; i < 200 && hi - lo > lo * 1e-15; i++) {
            double mid = lo + (hi - lo) / 2;
            if (try_scale(plan, mid) == FITS)
                lo = mid;
            else
                hi = mid;
        }
        try_scale(plan, lo); /* fits: lo only ever moves to fitting scales */
    }
    double s2 = (double)plan->var_num / (double)plan->var_den, tau = 0;
    for (uint32_t k = 1; k < clients && s2 > 0; k++) {
        double term = exp(-2 * M_PI * M_PI * s2 * k / (k + 1.0));
        if (term == 0) /* the terms shrink with k */
            break;
        tau += term;
    }
    plan->tau = 10 * tau;
    if (plan->tau * (double)dim > DP_DDP_MAX_TAU_D) {
        uint32_t b = suggest ? bits_needed(plan) : 0;
        char fix[64];
        if (b)
            snprintf(fix, sizeof fix, "use at least %u bits", b);
        else
            snprintf(fix, sizeof fix, "use more bits or select fewer clients a round");
        return err_set(err, FN_EINVAL,
                       "distributed DP: each client's noise variance %.3g (integer units) is too small for the sum of "
                       "%u shares to be accounted as one discrete Gaussian (tau * d = %.3g > %g); %s",
                       s2, clients, plan->tau * (double)dim, DP_DDP_MAX_TAU_D, fix);
    }
    return FN_OK;
}

double dp_ddp_noise_multiplier(const dp_ddp_plan_t *plan, uint32_t summed)
{
    if (plan->var_den == 0 || !(plan->sens > 0))
        return 0;
    return sqrt((double)summed * (double)plan->var_num / (double)plan->var_den) / plan->sens;
}

static int check_use(const dp_ddp_plan_t *plan, size_t m, err_t *err)
{
    if (!(plan->scale > 0) || plan->var_den == 0)
        return err_set(err, FN_EINVAL, "distributed DP: the plan was not made by dp_ddp_plan");
    if ((uint64_t)m != plan->dim)
        return err_set(err, FN_EINVAL, "distributed DP: an update of %zu values, the plan is for %llu", m,
                       (unsigned long long)plan->dim);
    return FN_OK;
}

int dp_ddp_quantize(const dp_ddp_plan_t *plan, const float *x, size_t m, uint32_t *out, int *draws, err_t *err)
{
    int rc = check_use(plan, m, err);
    if (rc < 0)
        return rc;
    double ss = 0;
    for (size_t i = 0; i < m; i++) {
        if (!isfinite(x[i]))
            return err_set(err, FN_EINVAL, "distributed DP: update value %zu is not finite", i);
        ss += (double)x[i] * x[i];
    }
    double norm = sqrt(ss), s = norm > plan->clip ? plan->clip / norm : 1.0, f = plan->scale;
    double lim = plan->clip * f;
    uint32_t mask = plan->bits == 32 ? 0xFFFFFFFFu : (1u << plan->bits) - 1;
    /* The norm of an integer vector is compared exactly: ||r||^2 is an integer, so ||r|| <= sens
     * exactly when ||r||^2 <= floor(sens^2). */
    u128 cap = (u128)floorl((long double)plan->sens * plan->sens);
    for (int draw = 1; draw <= DP_DDP_MAX_ROUNDINGS; draw++) {
        u128 nn = 0;
        for (size_t i = 0; i < m; i++) {
            double z = (double)x[i] * s * f;
            z = z > lim ? lim : z < -lim ? -lim : z; /* a no-op up to float error of the clipping */
            double fl = floor(z);
            int64_t r = (int64_t)fl + (int64_t)(dp_uniform53() < z - fl); /* E[r] = z */
            uint64_t a = (uint64_t)(r < 0 ? -r : r); /* <= 2^31: a * a fits */
            nn += a * a;
            out[i] = (uint32_t)((uint64_t)r & mask);
        }
        if (nn <= cap) {
            if (draws)
                *draws = draw;
            return FN_OK;
        }
    }
    /* Each draw exceeds sens with probability at most beta: this does not happen. */
    return err_set(err, FN_ESTATE, "distributed DP: %d stochastic roundings all exceeded the norm bound %.6g",
                   DP_DDP_MAX_ROUNDINGS, plan->sens);
}

int dp_ddp_add_noise(const dp_ddp_plan_t *plan, uint32_t *v, size_t m, err_t *err)
{
    int rc = check_use(plan, m, err);
    if (rc < 0 || plan->var_num == 0)
        return rc;
    if ((rc = dp_add_discrete_gaussian_u32(v, m, plan->var_num, plan->var_den, err)) < 0)
        return rc;
    if (plan->bits < 32)
        for (size_t i = 0; i < m; i++)
            v[i] &= (1u << plan->bits) - 1;
    return FN_OK;
}

int dp_ddp_encode(const dp_ddp_plan_t *plan, const float *x, size_t m, uint32_t *out, err_t *err)
{
    int rc = dp_ddp_quantize(plan, x, m, out, NULL, err);
    return rc < 0 ? rc : dp_ddp_add_noise(plan, out, m, err);
}

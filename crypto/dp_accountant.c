/* The RDP accountant of the sampled Gaussian mechanism and its calibration.
 * The numerics replicate tensorflow_privacy's rdp_accountant (which Opacus copies):
 * _compute_log_a_int / _compute_log_a_frac with _log_add, _log_sub, _log_erfc, so results agree
 * with Opacus's accountant to rounding. See /work/shared/specs/dp-accounting.md. */
#include <math.h>
#include <string.h>

#include "crypto/dp.h"

double dp_order(int i)
{
    if (i < 99)
        return 1.0 + (i + 1) / 10.0; /* 1 + x/10, x = 1..99, the same doubles as Python's 1 + x / 10.0 */
    return (double)(12 + (i - 99));  /* 12..63 */
}

/* log(exp(x) + exp(y)) */
static double log_add(double x, double y)
{
    double a = fmin(x, y), b = fmax(x, y);
    if (a == -INFINITY)
        return b;
    return log1p(exp(a - b)) + b;
}

/* log(exp(x) - exp(y)), x >= y. tensorflow_privacy raises when x < y; an alternating sum can only
 * get there through rounding, where the true value is ~0, so -inf is the faithful answer. */
static double log_sub(double x, double y)
{
    if (x < y)
        return -INFINITY;
    if (y == -INFINITY)
        return x;
    if (x == y)
        return -INFINITY;
    double d = expm1(x - y);
    if (isinf(d))
        return x; /* Python's OverflowError branch */
    return log(d) + y;
}

/* log(erfc(x)), finite for large x. glibc's erfc is accurate to a few ulp in relative terms until
 * it turns subnormal near x = 26.5; from 1e-300 down use the asymptotic (Laurent) series
 *   log erfc(x) = -x^2 - log x - log(pi)/2 - 1/(2x^2) + 5/(8x^4) - 37/(24x^6) + 353/(64x^8) + ...
 * (tensorflow_privacy's fallback), whose next term is below 1e-13 there. Opacus computes this as
 * log 2 + scipy's log_ndtr(-x sqrt 2), which is accurate everywhere; tensorflow_privacy's own
 * fallback switches only when erfc returns exactly 0 and so takes logs of subnormals, which moves
 * some epsilons by ~2e-10 relative (e.g. q 0.1, sigma 1, 100 steps). We follow the accurate one. */
static double log_erfc(double x)
{
    double r = erfc(x);
    if (r > 1e-300)
        return log(r);
    double x2 = 1.0 / (x * x);
    return -0.5 * log(M_PI) - log(x) - x * x - 0.5 * x2 + 0.625 * x2 * x2 - 37.0 / 24.0 * x2 * x2 * x2 +
           353.0 / 64.0 * x2 * x2 * x2 * x2;
}

static double log_binom_int(int n, int k)
{
    return lgamma(n + 1.0) - lgamma(k + 1.0) - lgamma(n - k + 1.0);
}

static double log_a_int(double q, double sigma, int alpha)
{
    double log_a = -INFINITY, lq = log(q), l1q = log1p(-q), s2 = 2 * sigma * sigma;
    for (int i = 0; i <= alpha; i++) {
        double s = log_binom_int(alpha, i) + i * lq + (alpha - i) * l1q + ((double)i * i - i) / s2;
        log_a = log_add(log_a, s);
    }
    return log_a;
}

static double log_a_frac(double q, double sigma, double alpha)
{
    double log_a0 = -INFINITY, log_a1 = -INFINITY;
    double lq = log(q), l1q = log1p(-q), s2 = 2 * sigma * sigma, rs = sqrt(2.0) * sigma;
    double z0 = sigma * sigma * log(1 / q - 1) + 0.5;
    double lg_a1 = lgamma(alpha + 1), ceil_a = ceil(alpha);
    for (int i = 0; i < 100000; i++) {
        /* the generalized binomial coefficient C(alpha, i): its magnitude from lgamma (log|Gamma|),
         * its sign alternating once i passes alpha */
        double log_coef = lg_a1 - lgamma(i + 1.0) - lgamma(alpha - i + 1);
        int positive = i <= ceil_a || ((long)(i - ceil_a) % 2 == 0);
        double j = alpha - i;
        double log_t0 = log_coef + i * lq + j * l1q;
        double log_t1 = log_coef + j * lq + i * l1q;
        double log_e0 = log(0.5) + log_erfc((i - z0) / rs);
        double log_e1 = log(0.5) + log_erfc((z0 - j) / rs);
        double log_s0 = log_t0 + ((double)i * i - i) / s2 + log_e0;
        double log_s1 = log_t1 + (j * j - j) / s2 + log_e1;
        if (positive) {
            log_a0 = log_add(log_a0, log_s0);
            log_a1 = log_add(log_a1, log_s1);
        } else {
            log_a0 = log_sub(log_a0, log_s0);
            log_a1 = log_sub(log_a1, log_s1);
        }
        if (fmax(log_s0, log_s1) < -30)
            break;
    }
    return log_add(log_a0, log_a1);
}

int dp_rdp_sampled_gaussian(double q, double sigma, double alpha, double *rdp, err_t *err)
{
    if (!(q >= 0 && q <= 1))
        return err_set(err, FN_EINVAL, "dp: sampling rate q = %g must be in [0, 1]", q);
    if (!(sigma >= 0) || isinf(sigma))
        return err_set(err, FN_EINVAL, "dp: noise multiplier sigma = %g must be finite and >= 0", sigma);
    if (!(alpha > 1) || isinf(alpha))
        return err_set(err, FN_EINVAL, "dp: RDP order %g must be finite and > 1", alpha);
    if (q == 0)
        *rdp = 0;
    else if (sigma == 0)
        *rdp = INFINITY;
    else if (q == 1)
        *rdp = alpha / (2 * sigma * sigma);
    else if (alpha == floor(alpha) && alpha < 2147483647.0)
        *rdp = log_a_int(q, sigma, (int)alpha) / (alpha - 1);
    else
        *rdp = log_a_frac(q, sigma, alpha) / (alpha - 1);
    return FN_OK;
}

int dp_rdp_compute(double q, double sigma, double steps, double rdp[DP_NUM_ORDERS], err_t *err)
{
    if (!(steps >= 0) || isinf(steps))
        return err_set(err, FN_EINVAL, "dp: steps = %g must be finite and >= 0", steps);
    for (int i = 0; i < DP_NUM_ORDERS; i++) {
        double r = 0;
        int rc = dp_rdp_sampled_gaussian(q, sigma, dp_order(i), &r, err);
        if (rc < 0)
            return rc;
        rdp[i] = steps == 0 ? 0 : r * steps;
    }
    return FN_OK;
}

int dp_rdp_to_epsilon(const double rdp[DP_NUM_ORDERS], double delta, dp_conversion_t conv, double *eps,
                      double *order, err_t *err)
{
    if (!(delta > 0 && delta < 1))
        return err_set(err, FN_EINVAL, "dp: delta = %g must be in (0, 1)", delta);
    int all_zero = 1;
    for (int i = 0; i < DP_NUM_ORDERS; i++) {
        if (!(rdp[i] >= 0))
            return err_set(err, FN_EINVAL, "dp: RDP at order %g is %g, expected >= 0", dp_order(i), rdp[i]);
        if (rdp[i] != 0)
            all_zero = 0;
    }
    if (all_zero) { /* nothing was released: (0, 0)-DP; the conversion would print a slack of ~0.1 */
        *eps = 0;
        if (order)
            *order = 0;
        return FN_OK;
    }
    double best = INFINITY, best_order = dp_order(0);
    for (int i = 0; i < DP_NUM_ORDERS; i++) {
        double a = dp_order(i), e;
        if (conv == DP_CONV_CLASSIC)
            e = rdp[i] - log(delta) / (a - 1);
        else
            e = rdp[i] - (log(delta) + log(a)) / (a - 1) + log((a - 1) / a);
        if (e < best) { /* strict: the first order attaining the minimum, as numpy's argmin */
            best = e;
            best_order = a;
        }
    }
    *eps = best;
    if (order)
        *order = best_order;
    return FN_OK;
}

int dp_epsilon(double q, double sigma, double steps, double delta, double *eps, double *order, err_t *err)
{
    double rdp[DP_NUM_ORDERS];
    int rc = dp_rdp_compute(q, sigma, steps, rdp, err);
    if (rc < 0)
        return rc;
    return dp_rdp_to_epsilon(rdp, delta, DP_CONV_BALLE, eps, order, err);
}

int dp_calibrate_sigma(double q, double steps, double delta, double target_eps, double *sigma, err_t *err)
{
    if (!(target_eps > 0) || isinf(target_eps))
        return err_set(err, FN_EINVAL, "dp: target epsilon = %g must be finite and > 0", target_eps);
    double e_lo = 0, e_hi = 0;
    int rc = dp_epsilon(q, DP_SIGMA_MAX, steps, delta, &e_hi, NULL, err);
    if (rc < 0)
        return rc;
    if (e_hi > target_eps)
        return err_set(err, FN_EINVAL,
                       "dp: epsilon %g cannot be reached: even sigma = %g gives epsilon %.6g (lower q or steps, "
                       "or raise the target)",
                       target_eps, DP_SIGMA_MAX, e_hi);
    double lo = DP_SIGMA_MIN, hi = DP_SIGMA_MAX;
    if ((rc = dp_epsilon(q, lo, steps, delta, &e_lo, NULL, err)) < 0)
        return rc;
    if (e_lo <= target_eps) {
        *sigma = lo;
        return FN_OK;
    }
    /* invariant: eps(lo) > target >= eps(hi) */
    while (hi - lo > 1e-6 * hi) {
        double mid = 0.5 * (lo + hi), e = 0;
        if ((rc = dp_epsilon(q, mid, steps, delta, &e, NULL, err)) < 0)
            return rc;
        if (e <= target_eps)
            hi = mid;
        else
            lo = mid;
    }
    *sigma = hi;
    return FN_OK;
}

void dp_accountant_init(dp_accountant_t *a)
{
    memset(a, 0, sizeof *a);
}

int dp_accountant_add(dp_accountant_t *a, double q, double sigma, int64_t steps, err_t *err)
{
    if (steps < 0)
        return err_set(err, FN_EINVAL, "dp: steps = %lld must be >= 0", (long long)steps);
    double r[DP_NUM_ORDERS];
    int rc = dp_rdp_compute(q, sigma, (double)steps, r, err);
    if (rc < 0)
        return rc;
    for (int i = 0; i < DP_NUM_ORDERS; i++)
        a->rdp[i] += r[i];
    a->steps += steps;
    return FN_OK;
}

int dp_accountant_epsilon(const dp_accountant_t *a, double delta, double *eps, double *order, err_t *err)
{
    return dp_rdp_to_epsilon(a->rdp, delta, DP_CONV_BALLE, eps, order, err);
}

int dp_accountant_would_exceed(const dp_accountant_t *a, double q, double sigma, double delta, double target_eps,
                               int *exceed, double *eps_after, err_t *err)
{
    if (!(target_eps >= 0) || isnan(target_eps))
        return err_set(err, FN_EINVAL, "dp: target epsilon = %g must be >= 0", target_eps);
    dp_accountant_t next = *a;
    double e = 0;
    int rc = dp_accountant_add(&next, q, sigma, 1, err);
    if (rc < 0 || (rc = dp_accountant_epsilon(&next, delta, &e, NULL, err)) < 0)
        return rc;
    *exceed = e > target_eps;
    if (eps_after)
        *eps_after = e;
    return FN_OK;
}

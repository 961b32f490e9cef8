/* Per-client L2 clipping and adaptive quantile clipping (Andrew et al. 2021).
 * Norms are accumulated in double: a float32 square is at most 1.2e77 and at least 2e-90, so the
 * sum of any realistic number of them neither overflows nor underflows; no scaling is needed. */
#include <math.h>

#include "crypto/dp.h"

int dp_l2_norm(const float *v, size_t n, double *norm, err_t *err)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(v[i]))
            return err_set(err, FN_EINVAL, "dp: update element %zu is %s; refusing to clip a non-finite update", i,
                           isnan(v[i]) ? "NaN" : "infinite");
        s += (double)v[i] * (double)v[i];
    }
    *norm = sqrt(s);
    return FN_OK;
}

int dp_clip_l2(float *v, size_t n, double clip, double *norm_before, err_t *err)
{
    if (!(clip > 0) || isinf(clip))
        return err_set(err, FN_EINVAL, "dp: clipping norm %g must be finite and > 0", clip);
    double norm = 0;
    int rc = dp_l2_norm(v, n, &norm, err);
    if (rc < 0)
        return rc;
    if (norm_before)
        *norm_before = norm;
    if (norm <= clip)
        return FN_OK;
    /* Rounding each scaled element to float can push the norm a hair above clip (and denormal
     * results can lose much more), so scale from the original values, re-measure, and shrink the
     * factor until the result is within clip. The first try almost always succeeds. */
    double factor = clip / norm, shrink = 0x1p-30;
    for (int attempt = 0; attempt < 64; attempt++) {
        double s = 0;
        for (size_t i = 0; i < n; i++) {
            double x = (double)(float)((double)v[i] * factor);
            s += x * x;
        }
        if (sqrt(s) <= clip) {
            for (size_t i = 0; i < n; i++)
                v[i] = (float)((double)v[i] * factor);
            return FN_OK;
        }
        factor *= 1 - shrink;
        shrink = fmin(2 * shrink, 0.5);
    }
    for (size_t i = 0; i < n; i++) /* unreachable in practice: zero is always within clip */
        v[i] = 0;
    return FN_OK;
}

int dp_adaptive_clip_init(dp_adaptive_clip_t *s, double clip, double target_quantile, double lr, double sigma_b,
                          double expected_clients, err_t *err)
{
    if (!(clip > 0) || isinf(clip))
        return err_set(err, FN_EINVAL, "dp: initial clipping norm %g must be finite and > 0", clip);
    if (!(target_quantile > 0 && target_quantile < 1))
        return err_set(err, FN_EINVAL, "dp: target quantile %g must be in (0, 1)", target_quantile);
    if (!(lr > 0) || isinf(lr))
        return err_set(err, FN_EINVAL, "dp: clipping learning rate %g must be finite and > 0", lr);
    if (!(sigma_b >= 0) || isinf(sigma_b))
        return err_set(err, FN_EINVAL, "dp: clipped-count noise std %g must be finite and >= 0", sigma_b);
    if (!(expected_clients >= 1) || isinf(expected_clients))
        return err_set(err, FN_EINVAL, "dp: expected clients per round %g must be >= 1", expected_clients);
    s->clip = clip;
    s->target_quantile = target_quantile;
    s->lr = lr;
    s->sigma_b = sigma_b;
    s->expected_clients = expected_clients;
    return FN_OK;
}

int dp_adaptive_noise_multiplier(double z, double sigma_b, double *z_delta, err_t *err)
{
    if (!(z > 0) || isinf(z))
        return err_set(err, FN_EINVAL, "dp: noise multiplier %g must be finite and > 0", z);
    if (!(sigma_b > z / 2) || isinf(sigma_b))
        return err_set(err, FN_EINVAL,
                       "dp: adaptive clipping needs sigma_b > z/2 (sigma_b = %g, z = %g): the clipped-count query "
                       "alone would spend the whole budget; raise sigma_b (Andrew et al. use m/20)",
                       sigma_b, z);
    double inv = 1 / (z * z) - 1 / (4 * sigma_b * sigma_b);
    *z_delta = 1 / sqrt(inv);
    return FN_OK;
}

int dp_adaptive_clip_noisy_fraction(const dp_adaptive_clip_t *s, int64_t below, int64_t participants,
                                    double *b_hat, err_t *err)
{
    if (participants < 0 || below < 0 || below > participants)
        return err_set(err, FN_EINVAL, "dp: %lld of %lld clients below the clip: counts out of range",
                       (long long)below, (long long)participants);
    double centred = (double)below - 0.5 * (double)participants + s->sigma_b * dp_gaussian();
    *b_hat = centred / s->expected_clients + 0.5;
    return FN_OK;
}

int dp_adaptive_clip_apply(dp_adaptive_clip_t *s, double b_hat, err_t *err)
{
    if (!isfinite(b_hat))
        return err_set(err, FN_EINVAL, "dp: noisy clipped fraction %g is not finite", b_hat);
    double c = s->clip * exp(-s->lr * (b_hat - s->target_quantile));
    if (!(c > 0) || isinf(c))
        return err_set(err, FN_EINVAL, "dp: adaptive clipping norm left the finite positive range (%g)", c);
    s->clip = c;
    return FN_OK;
}

int dp_adaptive_clip_update(dp_adaptive_clip_t *s, int64_t below, int64_t participants, double *b_hat, err_t *err)
{
    double b = 0;
    int rc = dp_adaptive_clip_noisy_fraction(s, below, participants, &b, err);
    if (rc < 0 || (rc = dp_adaptive_clip_apply(s, b, err)) < 0)
        return rc;
    if (b_hat)
        *b_hat = b;
    return FN_OK;
}

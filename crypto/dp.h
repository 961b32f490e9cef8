/* dp: differential privacy for federated rounds: the RDP accountant of the sampled Gaussian
 * mechanism with its (epsilon, delta) conversion and noise calibration, exact integer noise
 * samplers and CSPRNG Gaussian noise, and per-client L2 clipping (fixed and adaptive).
 * The mathematics is /work/shared/specs/dp-accounting.md; every random bit comes from libsodium.
 *
 * Conventions: functions return 0 or a negative FN_E* code and fill err (may be NULL).
 * sigma is always a noise multiplier (noise std / clipping norm) unless a name says "std". */
#ifndef FEDNAS_CRYPTO_DP_H
#define FEDNAS_CRYPTO_DP_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* ---------------------------------------------------------------------------------------------
 * Accountant: Renyi DP of the sampled Gaussian mechanism (Mironov, Talwar, Zhang 2019), the
 * numerics of tensorflow_privacy's rdp_accountant / Opacus (log-space A_alpha, integer and
 * fractional orders), over the orders 1 + x/10 (x = 1..99) and 12..63. */

#define DP_NUM_ORDERS 151
/* The order of index i (0 <= i < DP_NUM_ORDERS): 1.1, 1.2, ..., 10.9, 12, 13, ..., 63 (the
 * same doubles as Opacus's DEFAULT_ALPHAS). */
double dp_order(int i);

typedef enum {
    DP_CONV_BALLE = 0,   /* Balle et al. 2020: rdp - (ln delta + ln a)/(a-1) + ln((a-1)/a); Opacus today */
    DP_CONV_CLASSIC = 1, /* Mironov 2017: rdp + ln(1/delta)/(a-1); tensorflow_privacy before 2020 */
} dp_conversion_t;

/* RDP of ONE application at order alpha > 1: 0 when q = 0, +inf when sigma = 0, alpha/(2 sigma^2)
 * when q = 1. FN_EINVAL for q outside [0,1], sigma < 0, alpha <= 1 or NaNs. */
int dp_rdp_sampled_gaussian(double q, double sigma, double alpha, double *rdp, err_t *err);
/* rdp[i] = steps * RDP(dp_order(i)). */
int dp_rdp_compute(double q, double sigma, double steps, double rdp[DP_NUM_ORDERS], err_t *err);
/* Minimum over the orders of the conversion; *order (may be NULL) gets the order attaining it.
 * A total RDP of zero everywhere (nothing released) gives epsilon 0 and order 0. */
int dp_rdp_to_epsilon(const double rdp[DP_NUM_ORDERS], double delta, dp_conversion_t conv, double *eps,
                      double *order, err_t *err);
/* Shorthand: epsilon (Balle conversion) after `steps` rounds at (q, sigma). */
int dp_epsilon(double q, double sigma, double steps, double delta, double *eps, double *order, err_t *err);

/* Calibration: the smallest sigma in [DP_SIGMA_MIN, DP_SIGMA_MAX] whose epsilon (Balle) after
 * `steps` rounds at rate q is at most target_eps, by bisection to a relative tolerance of 1e-6
 * (the returned sigma always meets the target). When even DP_SIGMA_MIN meets it, *sigma is
 * DP_SIGMA_MIN (callers may say "any sigma >= 0.1"); when DP_SIGMA_MAX does not: FN_EINVAL. */
#define DP_SIGMA_MIN 0.1
#define DP_SIGMA_MAX 100.0
int dp_calibrate_sigma(double q, double steps, double delta, double target_eps, double *sigma, err_t *err);

/* The per-run budget. A plain struct so the server can store and restore it (or rebuild it by
 * replaying its rounds): rdp[] is the per-order total, so rounds with different (q, sigma)
 * compose by addition. Zero-initialising (or dp_accountant_init) gives an empty accountant. */
typedef struct dp_accountant {
    double rdp[DP_NUM_ORDERS];
    int64_t steps;
} dp_accountant_t;

void dp_accountant_init(dp_accountant_t *a);
/* Adds `steps` rounds at sampling rate q and noise multiplier sigma. */
int dp_accountant_add(dp_accountant_t *a, double q, double sigma, int64_t steps, err_t *err);
int dp_accountant_epsilon(const dp_accountant_t *a, double delta, double *eps, double *order, err_t *err);
/* *exceed = 1 when one more round at (q, sigma) would take epsilon above target_eps, so the server
 * can end the run before that round; *eps_after (may be NULL) gets the epsilon it would reach. */
int dp_accountant_would_exceed(const dp_accountant_t *a, double q, double sigma, double delta, double target_eps,
                               int *exceed, double *eps_after, err_t *err);

/* ---------------------------------------------------------------------------------------------
 * Noise. All randomness comes from libsodium's CSPRNG (randombytes_buf). Each thread keeps a
 * small buffer of CSPRNG output; it is wiped and discarded in a forked child, so a parent and
 * child never share noise. Call sodium_init() first (fednas does at start-up). */

/* Exact samplers of Canonne, Kamath, Steinke (2020), in integer arithmetic on rational parameters:
 * Bernoulli(exp(-num/den)), the discrete Laplace with integer scale t (P(x) ~ exp(-|x|/t)) and the
 * discrete Gaussian N_Z(0, sigma2) with sigma2 = num/den (P(x) ~ exp(-x^2 / (2 sigma2))).
 * Parameters: den >= 1, num >= 1 (num >= 0 for the Bernoulli), both <= DP_RATIONAL_MAX. */
#define DP_RATIONAL_MAX ((uint64_t)1 << 32)
int dp_bernoulli_exp(uint64_t num, uint64_t den, int *out, err_t *err);
int dp_discrete_laplace(uint64_t t, int64_t *out, err_t *err);
int dp_discrete_gaussian(uint64_t sigma2_num, uint64_t sigma2_den, int64_t *out, err_t *err);
/* A rational num/den approximating a variance v in (0, 2^32] (den a power of two <= 2^32; relative
 * error at most 2^-32 for v >= 1, absolute error at most 2^-33 below); FN_EINVAL for v below
 * about 2^-33 or above 2^32, which the samplers do not accept. */
int dp_rational_from_double(double v, uint64_t *num, uint64_t *den, err_t *err);

/* Adds independent N_Z(0, num/den) noise to every element of an integer vector in the ring Z_2^32
 * (wrap-around addition), as a client does before masking for secure aggregation. */
int dp_add_discrete_gaussian_u32(uint32_t *v, size_t n, uint64_t sigma2_num, uint64_t sigma2_den, err_t *err);

/* Distributed noise (Kairouz, Liu, Steinke 2021): each of `clients` clients adds N_Z(0, s2) with
 * s2 = (sigma * C * scale)^2 / clients in the integer domain (scale: the fixed-point factor of the
 * quantizer), so the securely aggregated sum carries variance (sigma C scale)^2 when all of the
 * assumed clients contribute. The plan records that count: with fewer survivors the noise is
 * smaller, and dp_distributed_effective_sigma gives the noise multiplier to account for. The sum of
 * discrete Gaussians is not exactly a discrete Gaussian; KLS Theorem 1 bounds the gap by tau. */
typedef struct dp_distributed_plan {
    int assumed_clients;    /* the participant count the per-client noise assumes */
    double sigma;           /* target noise multiplier of the sum */
    double clip;            /* C, in model units */
    double scale;           /* integer units per model unit */
    uint64_t var_num, var_den; /* per-client variance in integer units, as a rational */
    double tau;             /* KLS 2021 tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 s2 k/(k+1)) */
} dp_distributed_plan_t;
int dp_distributed_plan(double sigma, double clip, double scale, int clients, dp_distributed_plan_t *plan,
                        err_t *err);
/* The noise multiplier the aggregate actually carries when `survivors` clients added their share,
 * relative to the sensitivity C * scale. Caveats for the caller: stochastic rounding to integers can
 * raise an update's L2 norm above C * scale (KLS 2021 bound it with conditional randomized rounding
 * and a random rotation; account with the rounded sensitivity when that matters), and the noise
 * widens the sum's range: choose the fixed-point scale so that n C scale plus several noise
 * standard deviations still fits in the ring. */
double dp_distributed_effective_sigma(const dp_distributed_plan_t *plan, int survivors);

/* Continuous Gaussian for central noise. A standard normal is Box-Muller on two 53-bit uniforms
 * drawn from the CSPRNG (u1 in (0,1], u2 in [0,1)); as Opacus's secure_mode does, four such draws
 * are summed and halved so the output's low-order bits do not reveal one draw (the floating-point
 * attacks of Mironov 2012 and Jin et al. 2022 use exactly those bits). Caveats: this is still
 * floating point, not a proof of DP at the bit level (use the discrete Gaussian for that), and a
 * single Box-Muller draw is bounded by sqrt(2 ln 2^53) = 8.57, the sum by 17.1 standard deviations
 * (tail mass beyond that: below 1e-60). */
double dp_gaussian(void);
/* v[i] += N(0, std^2), computed in double and rounded to float. std >= 0 and finite. */
int dp_add_gaussian_noise(float *v, size_t n, double std, err_t *err);
/* A uniform double in [0, 1) with all 53 bits from the CSPRNG. */
double dp_uniform53(void);

/* ---------------------------------------------------------------------------------------------
 * Clipping. */

/* The L2 norm of a float vector, accumulated in double (no overflow or underflow for any finite
 * float32 input). FN_EINVAL if an element is NaN or infinite. */
int dp_l2_norm(const float *v, size_t n, double *norm, err_t *err);
/* Scales v so that its L2 norm (as dp_l2_norm computes it) is at most clip; vectors already
 * within clip are unchanged. *norm_before (may be NULL) gets the norm before clipping. NaN or Inf
 * elements and clip not finite and > 0 are FN_EINVAL, with v unchanged. */
int dp_clip_l2(float *v, size_t n, double clip, double *norm_before, err_t *err);

/* Adaptive quantile clipping (Andrew, Thakkar, McMahan, Ramaswamy 2021). Each client reports the
 * bit b_i = [norm_i <= C]; the server forms the noisy fraction
 *     b_hat = (sum_i (b_i - 1/2) + N(0, sigma_b^2)) / m + 1/2,   m = expected clients per round
 * (the centred bits have sensitivity 1/2, which the accounting below needs), and updates
 *     C <- C * exp(-eta_C * (b_hat - gamma)),
 * so C tracks the gamma-quantile of the update norms. The bits cost privacy: the round is a
 * Gaussian mechanism with noise multiplier z when the updates use
 *     z_delta = (z^-2 - (2 sigma_b)^-2)^(-1/2)        (paper, Theorem 1),
 * which needs sigma_b > z/2; account the run with z (the total), noise the updates with z_delta. */
typedef struct dp_adaptive_clip {
    double clip;            /* C, current */
    double target_quantile; /* gamma in (0, 1), e.g. 0.5 */
    double lr;              /* eta_C > 0, e.g. 0.2 */
    double sigma_b;         /* std of the noise on the bit sum, e.g. m / 20 */
    double expected_clients; /* m */
} dp_adaptive_clip_t;
int dp_adaptive_clip_init(dp_adaptive_clip_t *s, double clip, double target_quantile, double lr, double sigma_b,
                          double expected_clients, err_t *err);
/* The noise multiplier for the updates that keeps the round's total at z (see above). */
int dp_adaptive_noise_multiplier(double z, double sigma_b, double *z_delta, err_t *err);
/* The noisy fraction: `below` of the `participants` reported clients had norm <= C. */
int dp_adaptive_clip_noisy_fraction(const dp_adaptive_clip_t *s, int64_t below, int64_t participants,
                                    double *b_hat, err_t *err);
/* C <- C exp(-eta (b_hat - gamma)) for a given noisy fraction b_hat (already noised). */
int dp_adaptive_clip_apply(dp_adaptive_clip_t *s, double b_hat, err_t *err);
/* Both: noise the count and update C; *b_hat (may be NULL) gets the noisy fraction. */
int dp_adaptive_clip_update(dp_adaptive_clip_t *s, int64_t below, int64_t participants, double *b_hat, err_t *err);

#endif

/* dp: differential privacy for federated rounds: the RDP accountant of the sampled Gaussian
 * mechanism with its (epsilon, delta) conversion and noise calibration, exact integer noise
 * samplers, distributed discrete Gaussian noise for secure aggregation, CSPRNG Gaussian noise,
 * and per-client L2 clipping (fixed and adaptive).
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
 * Noise. All randomness comes from libsodium's CSPRNG (fresh randombytes_buf keys expanded by
 * randombytes_buf_deterministic's ChaCha20). Each thread keeps an 8 KB buffer of CSPRNG output;
 * it is wiped and discarded in a forked child, so a parent and child never share noise. Call sodium_init() first (fednas does at start-up). */

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

/* ---------------------------------------------------------------------------------------------
 * Distributed discrete Gaussian noise under secure aggregation: DDGauss of Kairouz, Liu, Steinke,
 * "The Distributed Discrete Gaussian Mechanism for Federated Learning with Secure Aggregation"
 * (ICML 2021). Each client clips its update to L2 norm C, scales it by f into integer units,
 * rounds it stochastically to integers, adds N_Z(0, s2) to every coordinate (the exact sampler
 * above, fed by libsodium) and reduces mod 2^bits before masking; the server learns only the sum,
 * which carries every survivor's noise share, and adds nothing itself. What is guaranteed and
 * what is approximated:
 *  - Sensitivity. Rounding can lengthen a vector, so the rounding is conditional (KLS Sec. 4.1):
 *    a rounding whose L2 norm exceeds
 *        sens = min(C f + sqrt(d), sqrt((C f)^2 + d/4 + sqrt(2 ln(1/beta)) (C f + sqrt(d)/2)))
 *    (d values, beta = DP_DDP_BETA bounds the chance that a draw is rejected) is drawn again, so
 *    every encoded update has norm <= sens, exactly. The noise is calibrated to sens, not to C f:
 *    the rounding's growth is paid for in noise (sens / (C f) - 1 is 1e-6 at 32 bits), not ignored.
 *  - Participants. The noise assumes `assumed` clients: the fewest whose inputs a committed sum
 *    can hold (the server uses max(t, clients.min_fit)), so dropouts never weaken the guarantee.
 *    s2 = (sigma sens)^2 / assumed, rounded UP to a rational, so every committed sum carries noise
 *    of std >= sigma sens; survivors beyond `assumed` add more (dp_ddp_noise_multiplier).
 *  - The sum of discrete Gaussians is not a discrete Gaussian. KLS Proposition 14 bounds the gap:
 *    each order's RDP grows by at most tau d, tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 s2 k / (k+1)).
 *    The plan refuses tau d > DP_DDP_MAX_TAU_D and the accountant then ignores it (at 32 bits s2
 *    is about 4e9 and tau is 0 in double precision).
 *  - Subsampling. The run is accounted with the sampled-Gaussian RDP (dp_rdp_sampled_gaussian) at
 *    the multiplier the sum is guaranteed to carry. Without sampling the discrete mechanism's RDP
 *    is the continuous Gaussian's (Prop. 14 with tau = 0; Canonne et al. 2020), but the
 *    amplification by sampling of Mironov et al. is proven for the continuous Gaussian only; KLS
 *    account with a general subsampling bound instead (Zhu and Wang 2019), slightly looser. This
 *    approximation is stated, not proven.
 *  - The ring. Each coordinate of a rounded update is at most C f + 1 in magnitude, and the noise
 *    of a sum of at most n (the clients selected) is subgaussian with std sqrt(n s2) (Canonne et
 *    al. 2020), so f is the largest scale with n (C f + 1) + K sqrt(n s2) <= 2^(bits-1) - 1,
 *    K = DP_DDP_TAIL_SIGMAS: a coordinate wraps with probability below 2 exp(-K^2/2) = 6e-43.
 *    This worst-case bound needs no random rotation (KLS rotate to choose f from a high-probability
 *    bound instead). f is also capped so that s2 <= DP_RATIONAL_MAX, the samplers' limit; at 32
 *    bits that cap binds, and the rounding error (variance <= n/4 integer units^2) is below 1e-8 of
 *    the noise variance. A configuration whose ring cannot hold the sum and its noise, or that
 *    leaves less than one integer unit per C, is refused with the reason. */
#define DP_DDP_BETA 0.60653065971263342 /* exp(-1/2), as in KLS 2021 */
#define DP_DDP_TAIL_SIGMAS 14.0
#define DP_DDP_MAX_TAU_D 1e-9
#define DP_DDP_MAX_ROUNDINGS 1000 /* conditional rounding: draws before giving up (never reached) */

typedef struct dp_ddp_plan {
    double sigma;              /* noise multiplier a committed sum carries at least */
    double clip;               /* C, model units */
    uint32_t clients;          /* n: the clients selected, the most inputs a sum can hold */
    uint32_t assumed;          /* the fewest inputs a committed sum holds: the noise assumes it */
    uint32_t bits;             /* the ring Z_2^bits */
    uint64_t dim;              /* d: values per update */
    double scale;              /* f: integer units per model unit */
    double sens;               /* L2 bound of an encoded update, integer units (>= C f) */
    uint64_t var_num, var_den; /* s2 = var_num / var_den, each client's noise variance (0: sigma 0) */
    double tau;                /* KLS tau at s2 and n; tau * dim <= DP_DDP_MAX_TAU_D */
} dp_ddp_plan_t;

/* Plans the noise and the scale (see above). sigma >= 0 (0: no noise), C > 0, 1 <= assumed <=
 * clients, dim >= 1, 2 <= bits <= 32. FN_EINVAL with the reason and a fix when the ring cannot
 * hold n updates and the noise, when the scale would leave less than one integer unit per C, or
 * when tau d is too large. */
int dp_ddp_plan(double sigma, double clip, uint32_t clients, uint32_t assumed, uint64_t dim, uint32_t bits,
                dp_ddp_plan_t *plan, err_t *err);
/* The noise multiplier a sum of `summed` encoded updates carries: sqrt(summed s2) / sens
 * (>= plan->sigma when summed >= plan->assumed). */
double dp_ddp_noise_multiplier(const dp_ddp_plan_t *plan, uint32_t summed);
/* x[0..m) (m = plan->dim) clipped to C, scaled by f and rounded stochastically, conditionally on
 * the result's L2 norm being <= sens; out gets the integers mod 2^bits. *draws (may be NULL) gets
 * the number of roundings drawn. FN_EINVAL for non-finite input or m != dim. */
int dp_ddp_quantize(const dp_ddp_plan_t *plan, const float *x, size_t m, uint32_t *out, int *draws, err_t *err);
/* v[i] += N_Z(0, s2) mod 2^bits, for m = plan->dim ring values. */
int dp_ddp_add_noise(const dp_ddp_plan_t *plan, uint32_t *v, size_t m, err_t *err);
/* A client's whole encoding: quantize, then add its noise share. */
int dp_ddp_encode(const dp_ddp_plan_t *plan, const float *x, size_t m, uint32_t *out, err_t *err);

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

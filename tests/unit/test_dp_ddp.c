/* Distributed discrete Gaussian noise (crypto/dp.h, DDGauss): the plan's per-client variance,
 * scale and refusals; the summed noise of n clients against its target variance; conditional
 * rounding; and, with worst-case inputs in a small ring, that the decoded noisy sum is exactly the
 * plain sum plus the noise sum (nothing wraps).
 * The statistical checks allow 6 standard errors (two-sided false alarm about 2e-9 per check):
 * libsodium's randomness cannot be seeded, so the tolerance is what makes them repeatable. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/dp.h"
#include "crypto/secagg.h"

#define Z 6.0 /* standard errors allowed */

static double s2_of(const dp_ddp_plan_t *p) { return (double)p->var_num / (double)p->var_den; }

/* KLS 2021's rounded norm bound, written out again as the oracle. */
static double kls_sens(double cf, double d)
{
    double a = cf + sqrt(d), b = sqrt(cf * cf + d / 4 + sqrt(2 * log(1 / exp(-0.5))) * (cf + sqrt(d) / 2));
    return a < b ? a : b;
}

/* The ring inequality the plan must satisfy: n (C f + 1) + K sqrt(n s2) <= 2^(bits-1) - 1. */
static int ring_holds(const dp_ddp_plan_t *p, double f)
{
    return p->clients * (p->clip * f + 1) + DP_DDP_TAIL_SIGMAS * sqrt(p->clients * s2_of(p)) <=
           ldexp(1.0, (int)p->bits - 1) - 1;
}

/* The signed value of ring element v mod 2^bits. */
static int64_t signed_of(uint32_t v, uint32_t bits)
{
    uint64_t mod = (uint64_t)1 << bits, x = v & (mod - 1);
    return x >= mod / 2 ? (int64_t)x - (int64_t)mod : (int64_t)x;
}

static void check_plan_core(const dp_ddp_plan_t *p)
{
    double cf = p->clip * p->scale, want = p->sigma * p->sigma * p->sens * p->sens;
    assert_true(fabs(p->sens / kls_sens(cf, (double)p->dim) - 1) < 1e-12);
    assert_true(p->sens >= cf && p->sens <= cf + sqrt((double)p->dim));
    /* sigma_i^2 = (sigma sens)^2 / assumed, rounded up: never below, at most 1e-9 above */
    assert_true(s2_of(p) * p->assumed >= want);
    assert_true(s2_of(p) * p->assumed <= want * (1 + 1e-9));
    assert_true(p->var_num <= DP_RATIONAL_MAX && p->var_den <= DP_RATIONAL_MAX);
    assert_true(dp_ddp_noise_multiplier(p, p->assumed) >= p->sigma * (1 - 1e-15));
    assert_true(fabs(dp_ddp_noise_multiplier(p, p->assumed) / p->sigma - 1) < 1e-9);
    assert_true(fabs(dp_ddp_noise_multiplier(p, p->clients) / p->sigma - sqrt((double)p->clients / p->assumed)) <
                1e-9);
    assert_true(ring_holds(p, p->scale));
    assert_true(p->tau * (double)p->dim <= DP_DDP_MAX_TAU_D);
}

static void test_plan(void **state)
{
    (void)state;
    err_t err = {0};
    dp_ddp_plan_t p;
    /* The experiment's shape: 100 selected, 90 assumed, a softmax model, 32 bits. The samplers'
     * variance cap binds: s2 is 2^32 and the ring is far from full. */
    assert_int_equal(dp_ddp_plan(1.0, 1.0, 100, 90, 7850, 32, &p, &err), 0);
    check_plan_core(&p);
    assert_int_equal(p.assumed, 90);
    assert_true(s2_of(&p) > 0.999 * (double)DP_RATIONAL_MAX);
    assert_true(p.sens / (p.clip * p.scale) - 1 < 1e-5); /* rounding costs < 1e-5 of the noise */
    print_message("  32 bits: f %.1f, sens/(C f) - 1 = %.2e, s2 %.4g, tau %g\n", p.scale,
                  p.sens / (p.clip * p.scale) - 1, s2_of(&p), p.tau);
    /* 20 bits: the ring binds, and tightly (1e-6 more scale would not fit). */
    assert_int_equal(dp_ddp_plan(1.0, 2.5, 100, 90, 7850, 20, &p, &err), 0);
    check_plan_core(&p);
    assert_true(s2_of(&p) < 0.5 * (double)DP_RATIONAL_MAX);
    dp_ddp_plan_t q;
    assert_int_equal(dp_ddp_plan(1.0, 2.5, 100, 90, 7850, 20, &q, &err), 0);
    double f2 = p.scale * (1 + 1e-6), cf2 = p.clip * f2;
    q.sens = kls_sens(cf2, 7850);
    double s2b = q.sigma * q.sigma * q.sens * q.sens / q.assumed;
    assert_false(q.clients * (cf2 + 1) + DP_DDP_TAIL_SIGMAS * sqrt(q.clients * s2b) <= ldexp(1.0, 19) - 1);
    /* sigma 0: no noise, and the scale is the noise-free one of plain secure aggregation */
    assert_int_equal(dp_ddp_plan(0, 1.0, 100, 90, 7850, 32, &p, &err), 0);
    assert_true(p.var_num == 0 && dp_ddp_noise_multiplier(&p, 100) == 0);
    assert_true(fabs(p.scale / secagg_choose_scale(100, 1.0, 32) - 1) < 1e-12);
    /* more noise for fewer assumed: the scale shrinks as sqrt(assumed) under the sampler cap */
    dp_ddp_plan_t a, b;
    assert_int_equal(dp_ddp_plan(1.0, 1.0, 100, 100, 7850, 32, &a, &err), 0);
    assert_int_equal(dp_ddp_plan(1.0, 1.0, 100, 25, 7850, 32, &b, &err), 0);
    check_plan_core(&a);
    check_plan_core(&b);
    assert_true(fabs(a.scale / b.scale - 2) < 1e-4);
}

static void test_refusals(void **state)
{
    (void)state;
    err_t err = {0};
    dp_ddp_plan_t p;
    /* 1000 updates and their noise do not fit in 12 bits: refused, with the bits that would do */
    assert_int_equal(dp_ddp_plan(1.0, 1.0, 1000, 700, 7850, 12, &p, &err), FN_EINVAL);
    print_message("  %s\n", err.msg);
    assert_non_null(strstr(err.msg, "ring of 12 bits cannot hold"));
    assert_non_null(strstr(err.msg, "use at least 16 bits"));
    assert_int_equal(dp_ddp_plan(1.0, 1.0, 1000, 700, 7850, 16, &p, &err), 0);
    assert_int_equal(dp_ddp_plan(1.0, 1.0, 1000, 700, 7850, 15, &p, &err), FN_EINVAL);
    /* beyond 32 bits: the fix is fewer clients */
    assert_int_equal(dp_ddp_plan(1.0, 1.0, 1u << 30, 1u << 30, 10, 16, &p, &err), FN_EINVAL);
    assert_non_null(strstr(err.msg, "select fewer clients"));
    /* a multiplier the sampler cannot serve even at one unit per clip */
    assert_int_equal(dp_ddp_plan(1e6, 1.0, 100, 90, 7850, 32, &p, &err), FN_EINVAL);
    assert_non_null(strstr(err.msg, "lower the noise multiplier"));
    /* per-client variance so small that the sum is not close to a discrete Gaussian (tau d) */
    assert_int_equal(dp_ddp_plan(0.1, 1.0, 4, 4, 10, 8, &p, &err), FN_EINVAL);
    print_message("  %s\n", err.msg);
    assert_non_null(strstr(err.msg, "tau * d"));
    /* arguments */
    assert_int_equal(dp_ddp_plan(1.0, 1.0, 100, 0, 10, 32, &p, &err), FN_EINVAL);
    assert_int_equal(dp_ddp_plan(1.0, 1.0, 100, 101, 10, 32, &p, &err), FN_EINVAL);
    assert_int_equal(dp_ddp_plan(1.0, 0, 100, 50, 10, 32, &p, &err), FN_EINVAL);
    assert_int_equal(dp_ddp_plan(-1.0, 1.0, 100, 50, 10, 32, &p, &err), FN_EINVAL);
    assert_int_equal(dp_ddp_plan(NAN, 1.0, 100, 50, 10, 32, &p, &err), FN_EINVAL);
    assert_int_equal(dp_ddp_plan(INFINITY, 1.0, 100, 50, 10, 32, &p, &err), FN_EINVAL);
    assert_int_equal(dp_ddp_plan(1.0, 1.0, 100, 50, 10, 33, &p, &err), FN_EINVAL);
    assert_int_equal(dp_ddp_plan(1.0, 1.0, 100, 50, 0, 32, &p, &err), FN_EINVAL);
    /* using a plan: the length must match, values must be finite, the plan must be made */
    assert_int_equal(dp_ddp_plan(1.0, 1.0, 10, 10, 4, 32, &p, &err), 0);
    float x[5] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f};
    uint32_t out[5];
    assert_int_equal(dp_ddp_encode(&p, x, 5, out, &err), FN_EINVAL);
    assert_int_equal(dp_ddp_add_noise(&p, out, 3, &err), FN_EINVAL);
    x[2] = NAN;
    assert_int_equal(dp_ddp_quantize(&p, x, 4, out, NULL, &err), FN_EINVAL);
    dp_ddp_plan_t zero = {0};
    assert_int_equal(dp_ddp_encode(&zero, x, 4, out, &err), FN_EINVAL);
}

/* Sums the noise shares of `clients` clients on zero vectors of p->dim values, reading the ring
 * signed; checks that the first `upto` shares sum to variance upto * s2 and mean 0. */
static void check_sum_variance(const dp_ddp_plan_t *p, int clients, const int *upto, int nupto)
{
    size_t n = p->dim;
    uint32_t *share = malloc(n * sizeof *share);
    int64_t *sum = calloc(n, sizeof *sum);
    err_t err;
    for (int c = 0, u = 0; c < clients; c++) {
        memset(share, 0, n * sizeof *share);
        assert_int_equal(dp_ddp_add_noise(p, share, n, &err), 0);
        for (size_t i = 0; i < n; i++) {
            assert_true(share[i] < ((uint64_t)1 << p->bits));
            sum[i] += signed_of(share[i], p->bits);
        }
        if (u < nupto && c + 1 == upto[u]) {
            double s = 0, ss = 0;
            for (size_t i = 0; i < n; i++) {
                s += (double)sum[i];
                ss += (double)sum[i] * (double)sum[i];
            }
            double mean = s / n, var = ss / n - mean * mean, target = (c + 1) * s2_of(p);
            print_message("  %d shares (noise assumes %u, %u bits): variance / target = %.5f (+-%.4f allowed), "
                          "sum std / (sigma C f) = %.6f\n",
                          c + 1, p->assumed, p->bits, var / target, Z * sqrt(2.0 / n),
                          sqrt(var) / (p->sigma * p->clip * p->scale));
            assert_true(fabs(var / target - 1) < Z * sqrt(2.0 / n));
            assert_true(fabs(mean) < Z * sqrt(target / n));
            u++;
        }
    }
    free(share);
    free(sum);
}

static void test_summed_noise(void **state)
{
    (void)state;
    err_t err = {0};
    dp_ddp_plan_t p;
    enum { N = 100000 };
    /* 8 clients, the noise assuming all 8: the sum has variance (sigma sens)^2, i.e. std sigma C f
     * up to the rounding's tiny growth of the sensitivity. */
    assert_int_equal(dp_ddp_plan(1.0, 1.0, 8, 8, N, 32, &p, &err), 0);
    const int all[] = {8};
    check_sum_variance(&p, 8, all, 1);
    /* assuming 6 of 8: 6 shares carry the target exactly, 8 carry 8/6 of it */
    assert_int_equal(dp_ddp_plan(1.5, 0.5, 8, 6, N, 32, &p, &err), 0);
    const int some[] = {6, 8};
    check_sum_variance(&p, 8, some, 2);
    /* a 16-bit ring: the ring binds, not the samplers' cap */
    assert_int_equal(dp_ddp_plan(1.0, 1.0, 4, 3, N, 16, &p, &err), 0);
    assert_true(s2_of(&p) > 100 && s2_of(&p) < 0.01 * (double)DP_RATIONAL_MAX);
    const int three[] = {3, 4};
    check_sum_variance(&p, 4, three, 2);
}

/* An input longer than C is clipped to exactly C f, where the rounded norm exceeds the
 * high-probability bound often enough (about one draw in ten): conditional rounding must redraw
 * those, and every accepted vector must be within sens. */
static void test_conditional_rounding(void **state)
{
    (void)state;
    err_t err = {0};
    dp_ddp_plan_t p;
    enum { D = 400, TRIALS = 1000 };
    assert_int_equal(dp_ddp_plan(1.0, 1.0, 10, 10, D, 32, &p, &err), 0);
    float x[D];
    double ss = 0;
    for (int i = 0; i < D; i++) {
        x[i] = (float)((i % 2 ? 1 : -1) * (1 + (i % 7) / 10.0));
        ss += (double)x[i] * x[i];
    }
    double s = p.clip / sqrt(ss) * p.scale; /* the clipping's factor, as the encoder computes it */
    uint32_t out[D];
    int redrawn = 0;
    unsigned __int128 cap = (unsigned __int128)floorl((long double)p.sens * p.sens);
    for (int t = 0; t < TRIALS; t++) {
        int draws = 0;
        assert_int_equal(dp_ddp_quantize(&p, x, D, out, &draws, &err), 0);
        redrawn += draws > 1;
        unsigned __int128 nn = 0;
        for (int i = 0; i < D; i++) {
            int64_t r = signed_of(out[i], 32);
            assert_true(fabs((double)r - (double)x[i] * s) < 1); /* a rounding of z, up or down */
            nn += (unsigned __int128)(r * r);
        }
        assert_true(nn <= cap);
    }
    print_message("  %d of %d roundings were redrawn (norm above sens = C f + %.2f)\n", redrawn, TRIALS,
                  p.sens - p.clip * p.scale);
    /* without the condition none would be: 30 is far below what a working check gives */
    assert_true(redrawn >= 30);
}

/* n clients with worst-case inputs (all mass on coordinate 0, the same sign) in a 20-bit ring: the
 * plain sum nearly fills the room the plan leaves, the noise sits on top. The ring sum read signed
 * must equal plain + noise exactly, and decode to that over f. */
static void test_decode_exact(void **state)
{
    (void)state;
    enum { N = 20, D = 64, BITS = 20, TRIALS = 40 };
    err_t err = {0};
    dp_ddp_plan_t p;
    assert_int_equal(dp_ddp_plan(1.0, 1.0, N, 14, D, BITS, &p, &err), 0);
    /* without the headroom, a sum this close to the edge would wrap on noise of 3 std */
    double f_free = secagg_choose_scale(N, 1.0, BITS);
    assert_true(N * (f_free - 1) + 3 * sqrt(N * s2_of(&p)) > ldexp(1.0, BITS - 1));
    assert_true(p.scale < f_free);
    static uint32_t plain[N][D], noisy[N][D];
    float x[D], dec[D];
    for (int trial = 0; trial < TRIALS; trial++) {
        int sign = trial % 2 ? -1 : 1;
        uint32_t ring[D] = {0};
        int64_t psum[D] = {0}, nsum[D] = {0};
        for (int u = 0; u < N; u++) {
            for (int j = 0; j < D; j++)
                x[j] = j == 0 ? (float)(sign * (u % 3 == 0 ? 3.0 : 1.0)) : 0.0f; /* some clipped from 3 */
            if (trial >= 2) /* later trials: a random direction besides */
                for (int j = 1; j < D; j++)
                    x[j] = (float)(((int)randombytes_uniform(2001) - 1000) * 1e-6);
            assert_int_equal(dp_ddp_quantize(&p, x, D, plain[u], NULL, &err), 0);
            memcpy(noisy[u], plain[u], sizeof plain[u]);
            assert_int_equal(dp_ddp_add_noise(&p, noisy[u], D, &err), 0);
            for (int j = 0; j < D; j++) {
                psum[j] += signed_of(plain[u][j], BITS);
                nsum[j] += signed_of(noisy[u][j] - plain[u][j], BITS);
                ring[j] = (ring[j] + noisy[u][j]) & ((1u << BITS) - 1);
            }
        }
        secagg_decode(ring, D, p.scale, BITS, dec);
        for (int j = 0; j < D; j++) {
            assert_true(signed_of(ring[j], BITS) == psum[j] + nsum[j]);
            assert_true(dec[j] == (float)((double)(psum[j] + nsum[j]) / p.scale));
        }
        /* coordinate 0 carries nearly n C f: the room reserved for noise is what kept it inside */
        assert_true(llabs(psum[0]) > (long long)(0.99 * N * p.clip * p.scale) - N);
    }
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plan),          cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_summed_noise),  cmocka_unit_test(test_conditional_rounding),
        cmocka_unit_test(test_decode_exact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Clipping: a property test that the clipped norm never exceeds C over random vectors with huge,
 * tiny, denormal and zero norms, the refusal of NaN/Inf, and adaptive quantile clipping (the
 * update rule, the noise-multiplier split, and convergence to the target quantile). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <float.h>
#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crypto/dp.h"

/* An independent norm in long double, to judge the library's own. */
static long double norm_ld(const float *v, size_t n)
{
    long double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (long double)v[i] * (long double)v[i];
    return sqrtl(s);
}

static double rand_exp10(double lo, double hi)
{
    return pow(10, lo + (hi - lo) * dp_uniform53());
}

static void test_clip_property(void **state)
{
    enum { MAXN = 3000 };
    float *v = malloc(MAXN * sizeof *v), *orig = malloc(MAXN * sizeof *orig);
    err_t err = {0};
    int clipped = 0, kept = 0;
    for (int trial = 0; trial < 3000; trial++) {
        size_t n = 1 + (size_t)(dp_uniform53() * MAXN);
        int kind = trial % 5;
        double scale = kind == 0 ? rand_exp10(-44, 38)       /* anything from denormal to near FLT_MAX */
                       : kind == 1 ? rand_exp10(30, 38.5)  /* huge: the float squares overflow float */
                       : kind == 2 ? rand_exp10(-45, -36)  /* tiny and denormal */
                                   : rand_exp10(-3, 3);
        for (size_t i = 0; i < n; i++) {
            double x = scale * dp_gaussian();
            if (fabs(x) > FLT_MAX)
                x = copysign(FLT_MAX, x);
            v[i] = (float)x;
        }
        if (kind == 4 && trial % 10 == 4)
            memset(v, 0, n * sizeof *v); /* the zero vector */
        if (kind == 3 && dp_uniform53() < 0.3) /* sparse: one huge element among zeros */
        {
            memset(v, 0, n * sizeof *v);
            v[n / 2] = (float)scale;
        }
        memcpy(orig, v, n * sizeof *v);
        double clip = kind == 4 ? rand_exp10(-2, 2) : rand_exp10(-40, 39);
        double before, after;
        assert_int_equal(dp_clip_l2(v, n, clip, &before, &err), 0);
        assert_int_equal(dp_l2_norm(v, n, &after, &err), 0);
        if (!(after <= clip) || !(norm_ld(v, n) <= (long double)clip * (1 + 1e-15L))) {
            print_error("trial %d: n %zu scale %g clip %g: norm %.17g before, %.17g after\n", trial, n, scale, clip,
                        before, after);
            fail();
        }
        if (before <= clip) {
            assert_memory_equal(v, orig, n * sizeof *v); /* within the clip: untouched */
            kept++;
        } else {
            clipped++;
            /* not over-shrunk and the direction kept, where float resolution allows */
            if (clip > 1e-30 && clip < 1e37) {
                assert_true(after >= clip * (1 - 1e-5));
                long double dot = 0;
                for (size_t i = 0; i < n; i++)
                    dot += (long double)v[i] * orig[i];
                assert_true(dot / (norm_ld(v, n) * norm_ld(orig, n)) > 1 - 1e-6L);
            }
        }
    }
    print_message("  %d vectors clipped, %d within the clip\n", clipped, kept);
    assert_true(clipped > 500 && kept > 500);
    free(v);
    free(orig);
}

static void test_clip_edges(void **state)
{
    err_t err = {0};
    double norm;
    /* exact cases */
    float v[4] = {3, 4, 0, 0};
    assert_int_equal(dp_clip_l2(v, 4, 10, &norm, &err), 0);
    assert_true(norm == 5 && v[0] == 3 && v[1] == 4);
    assert_int_equal(dp_clip_l2(v, 4, 1, &norm, &err), 0);
    assert_true(norm == 5);
    assert_true(fabsf(v[0] - 0.6f) < 1e-7f && fabsf(v[1] - 0.8f) < 1e-7f);
    assert_int_equal(dp_l2_norm(v, 4, &norm, &err), 0);
    assert_true(norm <= 1);
    /* all elements at FLT_MAX: the norm is finite */
    float big[16];
    for (int i = 0; i < 16; i++)
        big[i] = FLT_MAX;
    assert_int_equal(dp_l2_norm(big, 16, &norm, &err), 0);
    assert_true(fabs(norm / (4.0 * FLT_MAX) - 1) < 1e-15);
    assert_int_equal(dp_clip_l2(big, 16, 1.0, NULL, &err), 0);
    assert_int_equal(dp_l2_norm(big, 16, &norm, &err), 0);
    assert_true(norm <= 1 && norm > 0.9999);
    /* denormal elements are not lost */
    float tiny[3] = {1e-45f, 0, 0};
    assert_int_equal(dp_l2_norm(tiny, 3, &norm, &err), 0);
    assert_true(norm > 0);
    /* the empty and zero vectors */
    assert_int_equal(dp_clip_l2(v, 0, 1.0, &norm, &err), 0);
    assert_true(norm == 0);
    float z[5] = {0};
    assert_int_equal(dp_clip_l2(z, 5, 1e-30, &norm, &err), 0);
    assert_true(norm == 0 && z[0] == 0);
    /* NaN and Inf are refused and the vector is left alone */
    float bad[3] = {1, NAN, 2};
    assert_int_equal(dp_clip_l2(bad, 3, 0.5, &norm, &err), FN_EINVAL);
    assert_non_null(strstr(err.msg, "NaN"));
    assert_true(bad[0] == 1 && bad[2] == 2);
    float inf[3] = {100, 1, INFINITY};
    assert_int_equal(dp_clip_l2(inf, 3, 0.5, &norm, &err), FN_EINVAL);
    assert_non_null(strstr(err.msg, "element 2"));
    assert_true(inf[0] == 100);
    assert_int_equal(dp_l2_norm(inf, 3, &norm, &err), FN_EINVAL);
    /* the clip itself */
    float ok[2] = {1, 1};
    assert_int_equal(dp_clip_l2(ok, 2, 0, &norm, &err), FN_EINVAL);
    assert_int_equal(dp_clip_l2(ok, 2, -1, &norm, &err), FN_EINVAL);
    assert_int_equal(dp_clip_l2(ok, 2, NAN, &norm, &err), FN_EINVAL);
    assert_int_equal(dp_clip_l2(ok, 2, INFINITY, &norm, &err), FN_EINVAL);
}

static void test_adaptive_noise_multiplier(void **state)
{
    err_t err = {0};
    double zd;
    /* Andrew et al.'s setting: m = 100 clients, sigma_b = m/20 = 5, total z = 1 */
    assert_int_equal(dp_adaptive_noise_multiplier(1.0, 5.0, &zd, &err), 0);
    assert_true(fabs(zd - 1 / sqrt(1 - 0.01)) < 1e-15);
    /* the defining identity: z_delta^-2 + (2 sigma_b)^-2 = z^-2 */
    static const double k[][2] = {{0.5, 1.0}, {1.1, 3.0}, {2.0, 1.01}, {4.0, 100.0}};
    for (size_t i = 0; i < 4; i++) {
        assert_int_equal(dp_adaptive_noise_multiplier(k[i][0], k[i][1], &zd, &err), 0);
        double lhs = 1 / (zd * zd) + 1 / (4 * k[i][1] * k[i][1]);
        assert_true(fabs(lhs * k[i][0] * k[i][0] - 1) < 1e-12);
        assert_true(zd > k[i][0]); /* the updates get more noise than the total */
    }
    /* the bits alone would spend the budget */
    assert_int_equal(dp_adaptive_noise_multiplier(1.0, 0.5, &zd, &err), FN_EINVAL);
    assert_non_null(strstr(err.msg, "sigma_b > z/2"));
    assert_int_equal(dp_adaptive_noise_multiplier(1.0, 0.3, &zd, &err), FN_EINVAL);
    assert_int_equal(dp_adaptive_noise_multiplier(0, 5, &zd, &err), FN_EINVAL);
    /* accounting: the run is accounted at the total z; with z_delta alone it would look cheaper */
    double e_total, e_updates_only;
    assert_int_equal(dp_adaptive_noise_multiplier(1.0, 5.0, &zd, &err), 0);
    assert_int_equal(dp_epsilon(0.1, 1.0, 100, 1e-5, &e_total, NULL, &err), 0);
    assert_int_equal(dp_epsilon(0.1, zd, 100, 1e-5, &e_updates_only, NULL, &err), 0);
    assert_true(e_updates_only < e_total);
}

static void test_adaptive_update_rule(void **state)
{
    err_t err = {0};
    dp_adaptive_clip_t s;
    assert_int_equal(dp_adaptive_clip_init(&s, 2.0, 0.5, 0.2, 0, 100, &err), 0);
    /* b_hat = gamma: C unchanged; all below: C * exp(-eta/2); none below: C * exp(eta/2) */
    assert_int_equal(dp_adaptive_clip_apply(&s, 0.5, &err), 0);
    assert_true(s.clip == 2.0);
    assert_int_equal(dp_adaptive_clip_apply(&s, 1.0, &err), 0);
    assert_true(fabs(s.clip - 2.0 * exp(-0.1)) < 1e-15);
    s.clip = 2.0;
    double b;
    assert_int_equal(dp_adaptive_clip_update(&s, 0, 100, &b, &err), 0); /* sigma_b = 0: exact fraction */
    assert_true(b == 0);
    assert_true(fabs(s.clip - 2.0 * exp(0.1)) < 1e-15);
    assert_int_equal(dp_adaptive_clip_noisy_fraction(&s, 73, 100, &b, &err), 0);
    assert_true(fabs(b - 0.73) < 1e-15);
    /* fewer participants than expected: the centred sum is divided by the expected count */
    assert_int_equal(dp_adaptive_clip_noisy_fraction(&s, 40, 80, &b, &err), 0);
    assert_true(fabs(b - 0.5) < 1e-15);
    assert_int_equal(dp_adaptive_clip_noisy_fraction(&s, 101, 100, &b, &err), FN_EINVAL);
    assert_int_equal(dp_adaptive_clip_apply(&s, NAN, &err), FN_EINVAL);
    /* the noise on the bit sum: mean below/m, std sigma_b/m */
    assert_int_equal(dp_adaptive_clip_init(&s, 1.0, 0.5, 0.2, 5.0, 100, &err), 0);
    double sum = 0, sum2 = 0;
    enum { N = 20000 };
    for (int i = 0; i < N; i++) {
        assert_int_equal(dp_adaptive_clip_noisy_fraction(&s, 30, 100, &b, &err), 0);
        sum += b;
        sum2 += b * b;
    }
    double mean = sum / N, sd = sqrt(sum2 / N - mean * mean);
    print_message("  noisy fraction: mean %.4f (0.3), std %.4f (0.05)\n", mean, sd);
    assert_true(fabs(mean - 0.3) < 5 * 0.05 / sqrt(N));
    assert_true(fabs(sd - 0.05) < 5 * 0.05 / sqrt(2.0 * N));
    /* bad settings */
    assert_int_equal(dp_adaptive_clip_init(&s, 0, 0.5, 0.2, 5, 100, &err), FN_EINVAL);
    assert_int_equal(dp_adaptive_clip_init(&s, 1, 1.0, 0.2, 5, 100, &err), FN_EINVAL);
    assert_int_equal(dp_adaptive_clip_init(&s, 1, 0.5, 0, 5, 100, &err), FN_EINVAL);
    assert_int_equal(dp_adaptive_clip_init(&s, 1, 0.5, 0.2, -1, 100, &err), FN_EINVAL);
    assert_int_equal(dp_adaptive_clip_init(&s, 1, 0.5, 0.2, 5, 0.5, &err), FN_EINVAL);
}

/* C follows the gamma-quantile of the clients' norms: norms 10 |N(0,1)|, whose quantile gamma is
 * 10 Phi^-1((1 + gamma)/2): 6.745 for the median, 11.50 for gamma = 0.75. */
static double converge(double gamma, double sigma_b)
{
    dp_adaptive_clip_t s;
    err_t err = {0};
    assert_int_equal(dp_adaptive_clip_init(&s, 0.1, gamma, 0.2, sigma_b, 100, &err), 0);
    double avg = 0;
    for (int round = 0; round < 600; round++) {
        int below = 0;
        for (int i = 0; i < 100; i++)
            below += 10 * fabs(dp_gaussian()) <= s.clip;
        assert_int_equal(dp_adaptive_clip_update(&s, below, 100, NULL, &err), 0);
        if (round >= 400)
            avg += s.clip / 200;
    }
    return avg;
}

static void test_adaptive_convergence(void **state)
{
    double c = converge(0.5, 0);
    print_message("  median: C = %.3f (6.745)\n", c);
    assert_true(fabs(c - 6.745) < 0.5);
    c = converge(0.75, 0);
    print_message("  0.75-quantile: C = %.3f (11.503)\n", c);
    assert_true(fabs(c - 11.503) < 0.8);
    c = converge(0.5, 5.0); /* with the noise Andrew et al. use */
    print_message("  median with sigma_b = 5: C = %.3f (6.745)\n", c);
    assert_true(fabs(c - 6.745) < 0.8);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clip_property),        cmocka_unit_test(test_clip_edges),
        cmocka_unit_test(test_adaptive_noise_multiplier), cmocka_unit_test(test_adaptive_update_rule),
        cmocka_unit_test(test_adaptive_convergence),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

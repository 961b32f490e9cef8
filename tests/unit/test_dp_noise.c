/* The noise samplers against their exact distributions: mean, variance and a chi-square test for
 * each, with thresholds set for a false-alarm rate of about 1e-6 per check (5 standard errors;
 * the chi-square 1 - 1e-6 quantile), so a failure means the sampler is wrong, not unlucky.
 * Exact moments and probabilities are computed here by summing the pmf. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "crypto/dp.h"

#define Z 5.0 /* standard errors allowed */

/* The chi-square quantile at 1 - 1e-6 by Wilson-Hilferty (z = 4.753). */
static double chi2_crit(int df)
{
    double k = df, z = 4.753;
    double c = 1 - 2 / (9 * k) + z * sqrt(2 / (9 * k));
    return k * c * c * c;
}

/* Chi-square of counts over the integers [lo, hi] against probabilities p(x) (normalised over all
 * integers); values outside [lo, hi] fall in two tail bins; bins with expectation < 5 are merged
 * into their neighbours towards the centre. */
typedef double (*pmf_fn)(int64_t x, const void *ctx);

static void chi_square(const int64_t *xs, int n, pmf_fn pmf, const void *ctx, int64_t lo, int64_t hi,
                       const char *what)
{
    int nb = (int)(hi - lo + 3);
    double *obs = calloc(nb, sizeof *obs), *exp_ = calloc(nb, sizeof *exp_);
    double inside = 0;
    for (int64_t x = lo; x <= hi; x++) {
        exp_[x - lo + 1] = pmf(x, ctx) * n;
        inside += pmf(x, ctx);
    }
    double left = 0;
    for (int64_t x = lo - 1; x > lo - 100000; x--) {
        double p = pmf(x, ctx);
        left += p;
        if (p < 1e-300)
            break;
    }
    exp_[0] = left * n;
    exp_[nb - 1] = (1 - inside - left) * n;
    if (exp_[nb - 1] < 0)
        exp_[nb - 1] = 0;
    for (int i = 0; i < n; i++) {
        int b = xs[i] < lo ? 0 : xs[i] > hi ? nb - 1 : (int)(xs[i] - lo + 1);
        obs[b] += 1;
    }
    /* merge small bins: from the left edge inward and from the right edge inward */
    int l = 0, r = nb - 1;
    while (l < r && exp_[l] < 5) {
        exp_[l + 1] += exp_[l];
        obs[l + 1] += obs[l];
        l++;
    }
    while (r > l && exp_[r] < 5) {
        exp_[r - 1] += exp_[r];
        obs[r - 1] += obs[r];
        r--;
    }
    double chi = 0;
    int df = -1;
    for (int i = l; i <= r; i++) {
        if (exp_[i] <= 0) {
            assert_true(obs[i] == 0);
            continue;
        }
        chi += (obs[i] - exp_[i]) * (obs[i] - exp_[i]) / exp_[i];
        df++;
    }
    double crit = chi2_crit(df);
    print_message("  %s: chi-square %.1f on %d degrees of freedom (critical %.1f)\n", what, chi, df, crit);
    if (!(chi < crit)) {
        print_error("%s: chi-square %.1f >= %.1f on %d df\n", what, chi, crit, df);
        fail();
    }
    free(obs);
    free(exp_);
}

/* Mean and variance of the samples against the exact ones (m4: exact fourth central moment). */
static void check_moments(const int64_t *xs, int n, double mean, double var, double m4, const char *what)
{
    double s = 0, ss = 0;
    for (int i = 0; i < n; i++)
        s += (double)xs[i];
    double m = s / n;
    for (int i = 0; i < n; i++)
        ss += ((double)xs[i] - m) * ((double)xs[i] - m);
    double v = ss / (n - 1);
    double se_mean = sqrt(var / n), se_var = sqrt((m4 - var * var) / n);
    print_message("  %s: mean %.5f (exact %.5f, se %.5f), variance %.5f (exact %.5f, se %.5f)\n", what, m, mean,
                  se_mean, v, var, se_var);
    if (!(fabs(m - mean) < Z * se_mean)) {
        print_error("%s: sample mean %.6g vs exact %.6g (se %.3g)\n", what, m, mean, se_mean);
        fail();
    }
    if (!(fabs(v - var) < Z * se_var)) {
        print_error("%s: sample variance %.6g vs exact %.6g (se %.3g)\n", what, v, var, se_var);
        fail();
    }
}

/* ---- discrete Gaussian ---- */

typedef struct {
    double sigma2, norm;
} dg_t;

static double dg_weight(int64_t x, double s2)
{
    return exp(-(double)x * (double)x / (2 * s2));
}

static dg_t dg_make(double s2)
{
    dg_t d = {s2, 0};
    for (int64_t x = -100000; x <= 100000; x++)
        d.norm += dg_weight(x, s2);
    return d;
}

static double dg_pmf(int64_t x, const void *ctx)
{
    const dg_t *d = ctx;
    return dg_weight(x, d->sigma2) / d->norm;
}

/* exact variance and fourth moment of N_Z(0, s2) by summing the pmf */
static void dg_moments(const dg_t *d, double *var, double *m4)
{
    double v = 0, f = 0;
    for (int64_t x = -100000; x <= 100000; x++) {
        double p = dg_pmf(x, d), x2 = (double)x * (double)x;
        v += x2 * p;
        f += x2 * x2 * p;
    }
    *var = v;
    *m4 = f;
}

static void run_dgauss(uint64_t num, uint64_t den, int n)
{
    double s2 = (double)num / (double)den, var, m4;
    dg_t d = dg_make(s2);
    dg_moments(&d, &var, &m4);
    int64_t *xs = malloc(n * sizeof *xs);
    err_t err = {0};
    for (int i = 0; i < n; i++)
        assert_int_equal(dp_discrete_gaussian(num, den, &xs[i], &err), 0);
    char what[96];
    snprintf(what, sizeof what, "discrete Gaussian sigma^2 = %llu/%llu (exact variance %.12g)",
             (unsigned long long)num, (unsigned long long)den, var);
    check_moments(xs, n, 0, var, m4, what);
    double sd = sqrt(s2);
    int64_t lo = -(int64_t)ceil(4 * sd), hi = (int64_t)ceil(4 * sd);
    if (hi - lo > 400) { /* bins of width 1 stay at >= 5 expected counts only near the centre */
        lo = -200;
        hi = 200;
    }
    chi_square(xs, n, dg_pmf, &d, lo, hi, what);
    free(xs);
}

static void test_discrete_gaussian(void **state)
{
    run_dgauss(4, 1, 200000);
    run_dgauss(100, 1, 200000);
    run_dgauss(5, 2, 200000);      /* a non-integer variance, 2.5 */
    run_dgauss(1, 4, 200000);      /* sigma^2 = 1/4: the variance is visibly below sigma^2 */
    run_dgauss(12345, 7, 100000);  /* larger, non-integer */
    /* for small sigma the discrete Gaussian's variance is below sigma^2; at sigma^2 = 4 the gap is
     * ~1e-33 and invisible, at 1/4 it is 0.035 (variance 0.21501) */
    double var, m4;
    dg_t d = dg_make(0.25);
    dg_moments(&d, &var, &m4);
    assert_true(var > 0.2150 && var < 0.2151);
    d = dg_make(4);
    dg_moments(&d, &var, &m4);
    assert_true(fabs(var - 4) < 1e-12);
    int64_t x;
    err_t err = {0};
    assert_int_equal(dp_discrete_gaussian(0, 1, &x, &err), FN_EINVAL);
    assert_int_equal(dp_discrete_gaussian(1, 0, &x, &err), FN_EINVAL);
    assert_int_equal(dp_discrete_gaussian(DP_RATIONAL_MAX + 1, 1, &x, &err), FN_EINVAL);
    assert_int_equal(dp_discrete_gaussian(DP_RATIONAL_MAX, 1, &x, &err), 0); /* the largest accepted */
}

/* ---- Bernoulli(exp(-gamma)) ---- */

static void test_bernoulli_exp(void **state)
{
    static const uint64_t k[][2] = {{0, 1}, {1, 3}, {1, 1}, {5, 2}, {7, 1}, {1, 1000000}, {4294967295u, 4294967296u}};
    const int n = 200000;
    err_t err = {0};
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        double p = exp(-(double)k[i][0] / (double)k[i][1]);
        int hits = 0, b;
        for (int j = 0; j < n; j++) {
            assert_int_equal(dp_bernoulli_exp(k[i][0], k[i][1], &b, &err), 0);
            assert_true(b == 0 || b == 1);
            hits += b;
        }
        double ph = (double)hits / n, se = sqrt(p * (1 - p) / n) + 1.0 / n;
        print_message("  Bernoulli(exp(-%llu/%llu)): %.5f (exact %.5f, se %.5f)\n", (unsigned long long)k[i][0],
                      (unsigned long long)k[i][1], ph, p, se);
        assert_true(fabs(ph - p) < Z * se);
    }
    int b;
    assert_int_equal(dp_bernoulli_exp(1, 0, &b, &err), FN_EINVAL);
}

/* ---- discrete Laplace ---- */

static double dl_pmf(int64_t x, const void *ctx)
{
    double t = *(const double *)ctx, r = exp(-1 / t);
    return (1 - r) / (1 + r) * pow(r, fabs((double)x));
}

static void test_discrete_laplace(void **state)
{
    static const uint64_t ts[] = {1, 3, 20};
    const int n = 200000;
    err_t err = {0};
    for (size_t i = 0; i < 3; i++) {
        double t = (double)ts[i], r = exp(-1 / t);
        double var = 2 * r / ((1 - r) * (1 - r));
        double m4 = 0;
        for (int64_t x = -20000; x <= 20000; x++)
            m4 += pow((double)x, 4) * dl_pmf(x, &t);
        int64_t *xs = malloc(n * sizeof *xs);
        for (int j = 0; j < n; j++)
            assert_int_equal(dp_discrete_laplace(ts[i], &xs[j], &err), 0);
        char what[64];
        snprintf(what, sizeof what, "discrete Laplace t = %llu", (unsigned long long)ts[i]);
        check_moments(xs, n, 0, var, m4, what);
        chi_square(xs, n, dl_pmf, &t, -(int64_t)(6 * t), (int64_t)(6 * t), what);
        free(xs);
    }
    int64_t x;
    assert_int_equal(dp_discrete_laplace(0, &x, &err), FN_EINVAL);
}

/* ---- the ring vector and rationals ---- */

static void test_ring_noise(void **state)
{
    err_t err = {0};
    uint64_t num, den;
    assert_int_equal(dp_rational_from_double(2.5, &num, &den, &err), 0);
    assert_true((double)num / (double)den == 2.5);
    assert_int_equal(dp_rational_from_double(1234.5678, &num, &den, &err), 0);
    assert_true(fabs((double)num / (double)den / 1234.5678 - 1) < 1e-9);
    assert_true(num <= DP_RATIONAL_MAX && den <= DP_RATIONAL_MAX);
    assert_int_equal(dp_rational_from_double(1e-12, &num, &den, &err), FN_EINVAL);
    assert_int_equal(dp_rational_from_double(1e12, &num, &den, &err), FN_EINVAL);
    assert_int_equal(dp_rational_from_double(NAN, &num, &den, &err), FN_EINVAL);

    /* Ring noise: 10 clients each add N_Z(0, 6553.6) to a ring vector that starts at 0 and at
     * 2^32 - 1 (wrap-around); the sum carries variance 65536. (The distributed plan that picks
     * the per-client variance is tested in test_dp_ddp.c.) */
    assert_int_equal(dp_rational_from_double(6553.6, &num, &den, &err), 0);
    enum { N = 20000 };
    uint32_t *v = calloc(N, sizeof *v);
    for (int i = 0; i < N; i += 2)
        v[i] = UINT32_MAX;
    for (int c = 0; c < 10; c++)
        assert_int_equal(dp_add_discrete_gaussian_u32(v, N, num, den, &err), 0);
    double s = 0, ss = 0;
    for (int i = 0; i < N; i++) {
        double x = (double)(int32_t)v[i] + (i % 2 == 0 ? 1 : 0); /* undo the start value */
        s += x;
        ss += x * x;
    }
    double mean = s / N, var = ss / N - mean * mean;
    print_message("  10 clients' ring noise: mean %.2f, variance %.1f (target 65536)\n", mean, var);
    assert_true(fabs(mean) < Z * sqrt(65536.0 / N));
    assert_true(fabs(var - 65536) < Z * 65536 * sqrt(2.0 / N));
    free(v);
}

/* ---- the continuous Gaussian ---- */

static double phi(double x)
{
    return 0.5 * erfc(-x / sqrt(2));
}

static void test_gaussian(void **state)
{
    enum { N = 400000, BINS = 40 };
    double s = 0, s2 = 0, s4 = 0;
    double obs[BINS + 2] = {0};
    for (int i = 0; i < N; i++) {
        double x = dp_gaussian();
        s += x;
        s2 += x * x;
        s4 += x * x * x * x;
        int b = x < -4 ? 0 : x >= 4 ? BINS + 1 : 1 + (int)floor((x + 4) / 8 * BINS);
        obs[b]++;
    }
    double mean = s / N, var = s2 / N, kurt = s4 / N;
    print_message("  Gaussian: mean %.5f, variance %.5f, fourth moment %.4f (exact 0, 1, 3)\n", mean, var, kurt);
    assert_true(fabs(mean) < Z * sqrt(1.0 / N));
    assert_true(fabs(var - 1) < Z * sqrt(2.0 / N));
    assert_true(fabs(kurt - 3) < Z * sqrt(96.0 / N)); /* Var(x^4) = 105 - 9 */
    double chi = 0;
    for (int b = 0; b < BINS + 2; b++) {
        double lo = b == 0 ? -INFINITY : -4 + 8.0 * (b - 1) / BINS;
        double hi = b == BINS + 1 ? INFINITY : -4 + 8.0 * b / BINS;
        double e = (phi(hi) - phi(lo)) * N;
        chi += (obs[b] - e) * (obs[b] - e) / e;
    }
    print_message("  Gaussian: chi-square %.1f on %d df (critical %.1f)\n", chi, BINS + 1, chi2_crit(BINS + 1));
    assert_true(chi < chi2_crit(BINS + 1));

    /* 53-bit uniforms: in [0, 1), and the lowest of the 53 bits is used */
    int odd = 0;
    for (int i = 0; i < 10000; i++) {
        double u = dp_uniform53();
        assert_true(u >= 0 && u < 1);
        odd += ((uint64_t)(u * 0x1p53)) & 1;
    }
    assert_true(odd > 4000 && odd < 6000);

    /* vector noise */
    float v[4000];
    for (int i = 0; i < 4000; i++)
        v[i] = 1.0f;
    err_t err = {0};
    assert_int_equal(dp_add_gaussian_noise(v, 4000, 0, &err), 0);
    for (int i = 0; i < 4000; i++)
        assert_true(v[i] == 1.0f);
    assert_int_equal(dp_add_gaussian_noise(v, 4000, 3.0, &err), 0);
    double vs = 0, vss = 0;
    for (int i = 0; i < 4000; i++) {
        vs += v[i] - 1.0;
        vss += (v[i] - 1.0) * (v[i] - 1.0);
    }
    assert_true(fabs(vs / 4000) < Z * 3 / sqrt(4000));
    assert_true(fabs(vss / 4000 - 9) < Z * 9 * sqrt(2.0 / 4000));
    assert_int_equal(dp_add_gaussian_noise(v, 4000, -1, &err), FN_EINVAL);
    assert_int_equal(dp_add_gaussian_noise(v, 4000, INFINITY, &err), FN_EINVAL);
}

/* A forked child must not replay the parent's buffered randomness. */
static void test_fork_fresh(void **state)
{
    (void)dp_uniform53(); /* fill this thread's buffer */
    int fd[2];
    assert_int_equal(pipe(fd), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        double u[4];
        for (int i = 0; i < 4; i++)
            u[i] = dp_uniform53();
        ssize_t w = write(fd[1], u, sizeof u);
        _exit(w == (ssize_t)sizeof u ? 0 : 1);
    }
    double mine[4], theirs[4];
    for (int i = 0; i < 4; i++)
        mine[i] = dp_uniform53();
    assert_int_equal(read(fd[0], theirs, sizeof theirs), (ssize_t)sizeof theirs);
    int status;
    waitpid(pid, &status, 0);
    close(fd[0]);
    close(fd[1]);
    assert_true(memcmp(mine, theirs, sizeof mine) != 0);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bernoulli_exp), cmocka_unit_test(test_discrete_laplace),
        cmocka_unit_test(test_discrete_gaussian), cmocka_unit_test(test_ring_noise),
        cmocka_unit_test(test_gaussian), cmocka_unit_test(test_fork_fresh),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

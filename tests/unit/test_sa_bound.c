/* The bound on a secure-aggregation sum (server/server_int.h sa_sum_bound, sa_project_sum): the
 * sum of clipped inputs always fits, an unclipped input's sum is scaled onto the bound, and under
 * distributed DP the noise a sum carries stays inside it. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <cmocka.h>

#include "common/rng.h"
#include "server/server_int.h"

static double norm(const float *v, size_t m)
{
    double sq = 0;
    for (size_t i = 0; i < m; i++)
        sq += (double)v[i] * v[i];
    return sqrt(sq);
}

static void test_clipped_sum_fits(void **state)
{
    (void)state;
    enum { M = 1000, K = 5 };
    const double clip = 2.0;
    assert_true(fabs(sa_sum_bound(K, M, clip, 0, NULL) - K * clip) < 1e-12);
    assert_true(fabs(sa_sum_bound(K, 100, clip, 0.01, NULL) - (K * clip + 10 * 0.01)) < 1e-12);
    /* K inputs of norm exactly C, all pointing the same way: the longest honest sum. */
    float *sum = calloc(M, sizeof *sum);
    for (size_t i = 0; i < M; i++)
        sum[i] = (float)(K * clip / sqrt((double)M));
    double n;
    assert_int_equal(sa_project_sum(sum, M, sa_sum_bound(K, M, clip, 1e-6, NULL), &n), 0);
    assert_true(fabs(n - K * clip) < 1e-3);
    /* One input that was not clipped: scaled back onto the bound, the direction kept. */
    sum[0] += 1000;
    float first = sum[0], second = sum[1];
    double bound = sa_sum_bound(K, M, clip, 0, NULL);
    assert_int_equal(sa_project_sum(sum, M, bound, &n), 1);
    assert_true(n > 1000);
    assert_true(fabs(norm(sum, M) - bound) < 1e-3 * bound);
    assert_true(fabs(sum[0] / sum[1] - first / second) < 1e-3 * (first / second));
    free(sum);
}

static void test_dp_noise_fits(void **state)
{
    (void)state;
    enum { M = 4096, K = 8 };
    /* A plan whose inputs are bounded by sens/f = 1.5 (above C = 1) and whose noise is s2 = 400
     * integer units per input at f = 100: std sqrt(8 x 400) / 100 = 0.566 per coordinate. */
    dp_ddp_plan_t plan = {.sigma = 1, .clip = 1, .clients = K, .assumed = K, .bits = 32, .dim = M,
                          .scale = 100, .sens = 150, .var_num = 400, .var_den = 1};
    double sd = sqrt(K * 400.0) / 100;
    double bound = sa_sum_bound(K, M, 1.0, 0, &plan);
    assert_true(fabs(bound - (K * 1.5 + sd * (sqrt((double)M) + 8))) < 1e-9);
    /* The longest honest sum plus Gaussian noise of that std: inside the bound. */
    float *sum = malloc(M * sizeof *sum);
    rng_t r;
    rng_seed(&r, 42);
    for (size_t i = 0; i < M; i++) {
        double u1 = (rng_below(&r, 1u << 30) + 1.0) / (1u << 30), u2 = rng_below(&r, 1u << 30) / (double)(1u << 30);
        sum[i] = (float)(K * 1.5 / sqrt((double)M) + sd * sqrt(-2 * log(u1)) * cos(2 * M_PI * u2));
    }
    double n;
    assert_int_equal(sa_project_sum(sum, M, bound, &n), 0);
    assert_true(n > K * 1.5); /* the noise made it longer than the inputs alone */
    free(sum);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clipped_sum_fits),
        cmocka_unit_test(test_dp_noise_fits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

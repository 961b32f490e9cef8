/* FedAvg: the sample-weighted mean of updates, against a hand computation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdint.h>

#include "server/fedavg.h"

static void test_weighted_mean(void **state)
{
    fedavg_t a;
    err_t e = {0};
    float u1[3] = {1, 2, 3}, u2[3] = {-1, 0, 9}, u3[3] = {0.5f, 0.5f, 0.5f}, out[3];
    assert_int_equal(fedavg_init(&a, 3, &e), 0);
    assert_int_equal(fedavg_mean(&a, out, &e), FN_ESTATE);
    assert_int_equal(fedavg_add(&a, u1, 3, 100, &e), 0);
    assert_int_equal(fedavg_add(&a, u2, 3, 300, &e), 0);
    assert_int_equal(fedavg_add(&a, u3, 3, 600, &e), 0);
    assert_int_equal(fedavg_mean(&a, out, &e), 0);
    /* (100*u1 + 300*u2 + 600*u3) / 1000 */
    float want[3] = {(100 * 1 - 300 + 300) / 1000.0f, (200 + 0 + 300) / 1000.0f, (300 + 2700 + 300) / 1000.0f};
    for (int i = 0; i < 3; i++)
        assert_true(fabsf(out[i] - want[i]) < 1e-6f);
    assert_int_equal(a.count, 3);
    fedavg_reset(&a);
    assert_int_equal(fedavg_add(&a, u2, 3, 5, &e), 0);
    assert_int_equal(fedavg_mean(&a, out, &e), 0);
    for (int i = 0; i < 3; i++)
        assert_true(out[i] == u2[i]);
    fedavg_free(&a);
}

static void test_rejects_bad_updates(void **state)
{
    fedavg_t a;
    err_t e = {0};
    float u[4] = {0};
    assert_int_equal(fedavg_init(&a, 3, &e), 0);
    assert_int_equal(fedavg_add(&a, u, 4, 1, &e), FN_EINVAL);
    assert_int_equal(fedavg_add(&a, u, 3, 0, &e), FN_EINVAL);
    assert_int_equal(fedavg_add(&a, u, 3, NAN, &e), FN_EINVAL);
    float bad[3] = {1, NAN, 2}, huge[3] = {1, 3e38f, 2};
    assert_int_equal(fedavg_add(&a, bad, 3, 1, &e), FN_EINVAL);
    assert_int_equal(fedavg_add(&a, huge, 3, 1, &e), FN_EINVAL);
    assert_int_equal(a.count, 0);
    fedavg_free(&a);
}

/* Maximum-size terms (|weight * value| at FEDAVG_MAX_TERM) in numbers an int64 sum of
 * trunc(term * 2^20) cannot hold: nine already pass 2^63. The mean must still be the value. */
static void test_max_terms_do_not_overflow(void **state)
{
    (void)state;
    const int counts[] = {9, 10, 64, 1000};
    for (int c = 0; c < 4; c++) {
        fedavg_t a;
        err_t e = {0};
        float big[2] = {(float)FEDAVG_MAX_TERM, -(float)FEDAVG_MAX_TERM}, out[2];
        assert_true(fabs((double)big[0]) <= FEDAVG_MAX_TERM);
        assert_int_equal(fedavg_init(&a, 2, &e), 0);
        for (int i = 0; i < counts[c]; i++)
            assert_int_equal(fedavg_add(&a, big, 2, 1, &e), 0);
        assert_int_equal(fedavg_mean(&a, out, &e), 0);
        assert_true(out[0] == big[0] && out[1] == big[1]);
        assert_int_equal(fedavg_sum_over(&a, counts[c], out, &e), 0);
        assert_true(out[0] == big[0] && out[1] == big[1]);
        fedavg_free(&a);
    }
    /* Past FEDAVG_MAX_TERMS the remainders' sum could overflow: the next update is refused. */
    fedavg_t a;
    err_t e = {0};
    float x = 0.75f, out;
    assert_int_equal(fedavg_init(&a, 1, &e), 0);
    for (int i = 0; i < FEDAVG_MAX_TERMS; i++)
        assert_int_equal(fedavg_add(&a, &x, 1, 3, &e), 0);
    assert_int_equal(fedavg_add(&a, &x, 1, 3, &e), FN_ESTATE);
    assert_int_equal(fedavg_mean(&a, &out, &e), 0);
    assert_true(out == x);
    fedavg_free(&a);
}

/* The mean must not depend on the order the updates arrive in, bit for bit. */
static void test_order_independent(void **state)
{
    enum { M = 1000, N = 7 };
    static float u[N][M];
    double w[N];
    uint64_t x = 12345;
    for (int k = 0; k < N; k++) {
        w[k] = 1 + (double)(k * 37 % 11) * 613;
        for (int i = 0; i < M; i++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            /* values across many magnitudes, where float sums would round differently */
            u[k][i] = (float)((double)(int64_t)(x >> 11) / (double)(1ULL << 52) * pow(10, (int)(x % 9) - 6));
        }
    }
    int orders[3][N] = {{0, 1, 2, 3, 4, 5, 6}, {6, 5, 4, 3, 2, 1, 0}, {3, 0, 6, 1, 5, 2, 4}};
    static float out[3][M];
    err_t e = {0};
    for (int o = 0; o < 3; o++) {
        fedavg_t a;
        assert_int_equal(fedavg_init(&a, M, &e), 0);
        for (int j = 0; j < N; j++)
            assert_int_equal(fedavg_add(&a, u[orders[o][j]], M, w[orders[o][j]], &e), 0);
        assert_int_equal(fedavg_mean(&a, out[o], &e), 0);
        fedavg_free(&a);
    }
    assert_memory_equal(out[0], out[1], sizeof out[0]);
    assert_memory_equal(out[0], out[2], sizeof out[0]);
    /* and it is the weighted mean to float precision */
    double tw = 0;
    for (int k = 0; k < N; k++)
        tw += w[k];
    for (int i = 0; i < M; i++) {
        double want = 0;
        for (int k = 0; k < N; k++)
            want += w[k] * u[k][i];
        want /= tw;
        assert_true(fabs(out[0][i] - want) <= 1e-6 * fabs(want) + 1e-12);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_weighted_mean),
        cmocka_unit_test(test_rejects_bad_updates),
        cmocka_unit_test(test_max_terms_do_not_overflow),
        cmocka_unit_test(test_order_independent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* FedAvg: the sample-weighted mean of updates, against a hand computation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>

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
    assert_int_equal(a.count, 0);
    fedavg_free(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_weighted_mean),
        cmocka_unit_test(test_rejects_bad_updates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

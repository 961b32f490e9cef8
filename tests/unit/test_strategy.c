/* Server strategies against values computed by hand from the papers' update rules. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>

#include "server/strategy.h"

#define NEAR(a, b) assert_true(fabs((double)(a) - (double)(b)) < 1e-5)

static strategy_t *make(strategy_kind_t k, size_t m, void (*tweak)(strategy_config_t *))
{
    strategy_config_t c;
    strategy_defaults(k, &c);
    if (tweak)
        tweak(&c);
    strategy_t *s;
    err_t e = {0};
    assert_int_equal(strategy_create(&c, m, &s, &e), 0);
    return s;
}

static void test_fedavg_adds_mean(void **state)
{
    strategy_t *s = make(STRATEGY_FEDAVG, 2, NULL);
    float w[2] = {1, 2}, d[2] = {0.5f, -1};
    err_t e = {0};
    assert_int_equal(strategy_apply_mean(s, w, d, &e), 0);
    NEAR(w[0], 1.5);
    NEAR(w[1], 1.0);
    assert_int_equal(strategy_state_count(s), 0);
    const float *u[1] = {d};
    double wt[1] = {1};
    assert_int_equal(strategy_apply_all(s, w, u, wt, 1, &e), FN_ESTATE);
    strategy_free(s);
}

static void fedavgm_cfg(strategy_config_t *c)
{
    c->server_lr = 0.5;
    c->momentum = 0.9;
}

static void test_fedavgm_two_steps(void **state)
{
    strategy_t *s = make(STRATEGY_FEDAVGM, 1, fedavgm_cfg);
    float w[1] = {0}, d1[1] = {1}, d2[1] = {2};
    err_t e = {0};
    strategy_apply_mean(s, w, d1, &e); /* v = 1, w = 0.5 */
    NEAR(w[0], 0.5);
    strategy_apply_mean(s, w, d2, &e); /* v = 0.9 + 2 = 2.9, w = 0.5 + 1.45 */
    NEAR(w[0], 1.95);
    NEAR(strategy_state(s, 0)[0], 2.9);
    assert_string_equal(strategy_state_name(s, 0), "momentum");
    assert_int_equal(strategy_steps(s), 2);
    strategy_free(s);
}

static void adaptive_cfg(strategy_config_t *c)
{
    c->server_lr = 0.1;
    c->beta1 = 0.9;
    c->beta2 = 0.99;
    c->tau = 0.01;
}

static void test_adaptive_rules(void **state)
{
    err_t e = {0};
    /* one coordinate, delta 2 then -1; v starts at tau^2 = 1e-4 */
    float d1[1] = {2}, d2[1] = {-1};
    {
        strategy_t *s = make(STRATEGY_FEDADAM, 1, adaptive_cfg);
        float w[1] = {0};
        strategy_apply_mean(s, w, d1, &e);
        double m = 0.2, v = 0.99 * 1e-4 + 0.01 * 4, want = 0.1 * m / (sqrt(v) + 0.01);
        NEAR(w[0], want);
        strategy_apply_mean(s, w, d2, &e);
        m = 0.9 * m - 0.1;
        v = 0.99 * v + 0.01 * 1;
        want += 0.1 * m / (sqrt(v) + 0.01);
        NEAR(w[0], want);
        strategy_free(s);
    }
    {
        strategy_t *s = make(STRATEGY_FEDYOGI, 1, adaptive_cfg);
        float w[1] = {0};
        strategy_apply_mean(s, w, d1, &e);
        /* v - d^2 < 0, so v = v + (1 - b2) d^2 */
        double m = 0.2, v = 1e-4 + 0.01 * 4, want = 0.1 * m / (sqrt(v) + 0.01);
        NEAR(w[0], want);
        strategy_apply_mean(s, w, d2, &e);
        m = 0.9 * m - 0.1;
        v = v - 0.01 * 1 * (v - 1 > 0 ? 1 : -1);
        want += 0.1 * m / (sqrt(v) + 0.01);
        NEAR(w[0], want);
        strategy_free(s);
    }
    {
        strategy_t *s = make(STRATEGY_FEDADAGRAD, 1, adaptive_cfg);
        float w[1] = {0};
        strategy_apply_mean(s, w, d1, &e);
        double m = 0.2, v = 1e-4 + 4, want = 0.1 * m / (sqrt(v) + 0.01);
        NEAR(w[0], want);
        assert_int_equal(strategy_state_count(s), 2);
        assert_string_equal(strategy_state_name(s, 1), "v");
        NEAR(strategy_state(s, 1)[0], v);
        strategy_free(s);
    }
}

static void test_median_and_trimmed_mean(void **state)
{
    err_t e = {0};
    float a[2] = {1, 10}, b[2] = {3, 20}, c[2] = {100, 30}, d[2] = {2, -1000};
    const float *u4[4] = {a, b, c, d}, *u3[3] = {a, b, c};
    double wt[4] = {1, 1, 1, 1};
    strategy_t *s = make(STRATEGY_MEDIAN, 2, NULL);
    float w[2] = {0, 0};
    assert_int_equal(strategy_apply_all(s, w, u3, wt, 3, &e), 0);
    NEAR(w[0], 3);
    NEAR(w[1], 20);
    w[0] = w[1] = 0;
    assert_int_equal(strategy_apply_all(s, w, u4, wt, 4, &e), 0);
    NEAR(w[0], 2.5); /* sorted 1 2 3 100 */
    NEAR(w[1], 15);  /* sorted -1000 10 20 30 */
    float mean[2] = {0, 0};
    assert_int_equal(strategy_apply_mean(s, w, mean, &e), FN_ESTATE);
    strategy_free(s);

    strategy_config_t cfg;
    strategy_defaults(STRATEGY_TRIMMED_MEAN, &cfg);
    cfg.trim_ratio = 0.25; /* cuts one of four at each end */
    assert_int_equal(strategy_create(&cfg, 2, &s, &e), 0);
    w[0] = w[1] = 0;
    assert_int_equal(strategy_apply_all(s, w, u4, wt, 4, &e), 0);
    NEAR(w[0], 2.5);
    NEAR(w[1], 15);
    strategy_free(s);
}

static void krum_cfg(strategy_config_t *c)
{
    c->krum_f = 1;
    c->krum_m = 2;
}

static void test_krum_ignores_outlier(void **state)
{
    err_t e = {0};
    float g1[2] = {1, 1}, g2[2] = {1.1f, 0.9f}, g3[2] = {0.9f, 1.1f}, g4[2] = {1.05f, 1}, bad[2] = {50, -50};
    const float *u[5] = {g1, bad, g2, g3, g4};
    double wt[5] = {1, 1, 1, 1, 1};
    strategy_t *s = make(STRATEGY_KRUM, 2, NULL);
    float w[2] = {0, 0};
    assert_int_equal(strategy_apply_all(s, w, u, wt, 5, &e), 0);
    /* plain Krum picks one honest update, never the outlier */
    assert_true(w[0] > 0.85f && w[0] < 1.15f && w[1] > 0.85f && w[1] < 1.15f);
    strategy_free(s);
    s = make(STRATEGY_KRUM, 2, krum_cfg);
    w[0] = w[1] = 0;
    assert_int_equal(strategy_apply_all(s, w, u, wt, 5, &e), 0);
    assert_true(w[0] > 0.85f && w[0] < 1.15f);
    assert_int_equal(strategy_apply_all(s, w, u, wt, 3, &e), FN_ESTATE); /* needs f + 3 */
    strategy_free(s);
}

/* Batch-norm statistics at the end of the vector take the plain mean under every mean rule;
 * the server optimizer steps only the weights before them. */
static void test_statistics_take_the_mean(void **state)
{
    strategy_kind_t kinds[] = {STRATEGY_FEDAVGM, STRATEGY_FEDADAM, STRATEGY_FEDYOGI, STRATEGY_FEDADAGRAD};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        strategy_t *s = make(kinds[k], 3, adaptive_cfg);
        strategy_set_trained(s, 1);
        float w[3] = {0, 1.0f, 0.5f}, d[3] = {0.2f, 0.3f, -0.1f};
        err_t e = {0};
        for (int step = 0; step < 2; step++)
            assert_int_equal(strategy_apply_mean(s, w, d, &e), 0);
        NEAR(w[1], 1.6); /* 1 + 2 x 0.3 */
        NEAR(w[2], 0.3); /* 0.5 - 2 x 0.1 */
        assert_true(fabs(w[0] - 0.4f) > 1e-3); /* the weight moved by the optimizer's rule, not the mean */
        strategy_free(s);
    }
}

static void test_names(void **state)
{
    strategy_kind_t k;
    for (int i = 0; i <= STRATEGY_KRUM; i++) {
        assert_int_equal(strategy_parse_name(strategy_name((strategy_kind_t)i), &k), 0);
        assert_int_equal(k, i);
    }
    assert_int_equal(strategy_parse_name("fedsgd", &k), FN_EINVAL);
    assert_true(strategy_needs_all_updates(STRATEGY_KRUM));
    assert_false(strategy_needs_all_updates(STRATEGY_FEDYOGI));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fedavg_adds_mean),   cmocka_unit_test(test_fedavgm_two_steps),
        cmocka_unit_test(test_adaptive_rules),     cmocka_unit_test(test_median_and_trimmed_mean),
        cmocka_unit_test(test_krum_ignores_outlier), cmocka_unit_test(test_names),
        cmocka_unit_test(test_statistics_take_the_mean),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

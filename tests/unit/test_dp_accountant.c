/* The RDP accountant: reference values, the q = 1 closed form, monotonicity, composition,
 * calibration as the inverse of accounting, and the budget check.
 * Reference values come from an independent stdlib-Python implementation of tensorflow_privacy's
 * rdp_accountant formulas (what Opacus runs; scipy's accurate log_ndtr for log-erfc), which agreed
 * with this code to 1e-12 relative; fractional-order RDP was also checked by direct quadrature of
 * A_alpha = E_{z~N(0,s^2)}[((1-q) + q exp((2z-1)/(2 s^2)))^alpha] to 1e-10. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "crypto/dp.h"

static void near_rel(double got, double want, double rel, const char *what)
{
    double d = fabs(got - want);
    if (!(d <= rel * fabs(want))) {
        print_error("%s: got %.17g, want %.17g (relative difference %.3g > %.3g)\n", what, got, want,
                    d / fabs(want), rel);
        fail();
    }
}

typedef struct {
    double q, sigma, steps, delta;
    double eps_balle, order_balle, eps_classic, order_classic;
} eps_case_t;

static const eps_case_t k_cases[] = {
    /* the case, "about 5.63": the Balle et al. conversion */
    {0.01, 1.1, 10000, 1e-5, 5.6319923685484099, 4.7, 6.2787102791383944, 4.9},
    /* experiments/fmnist-dp-fedavg: 100 of 1000 clients, sigma 1, 100 rounds: "about 7.9" (Balle) */
    {0.1, 1.0, 100, 1e-5, 7.8992550024347814, 3.2, 8.7937781038143914, 3.3},
    {0.004, 1.1, 15000, 1e-5, 2.5028709266471152, 8.4, 2.9050453035117187, 9.1},
    /* tensorflow_privacy's MNIST tutorial (batch 256 of 60000, sigma 1.1, 60 epochs): 3.01 with the
     * conversion it used at the time (classic) */
    {256 / 60000.0, 1.1, 14062, 1e-5, 2.5965558689607486, 8.1, 3.0082720825246039, 8.8},
    {0.05, 0.8, 1000, 1e-6, 21.136716538623283, 2.3, 22.347960722425594, 2.3},
    {0.2, 2.0, 500, 1e-5, 13.598314408300062, 2.8, 14.611070641535585, 2.9},
    {0.001, 0.6, 1, 1e-5, 1.8895090669955441, 5.8, 2.439228738953068, 5.9},
    {0.5, 5.0, 50, 1e-6, 3.6866548217088599, 7.4, 4.1336435342786633, 7.9},
    {0.01, 4.0, 100000, 1e-5, 3.6881128013916613, 6.5, 4.1835085349158403, 7.0},
    {1.0, 1.0, 1, 1e-5, 4.728507067217623, 5.4, 5.2985261385354647, 5.8},
    {1e-4, 0.3, 1000, 1e-5, 10.507875046577709, 2.1, 11.828990706711286, 2.1},
};

static void test_orders(void **state)
{
    assert_true(dp_order(0) == 1.1);
    assert_true(dp_order(98) == 10.9);
    assert_true(dp_order(99) == 12);
    assert_true(dp_order(DP_NUM_ORDERS - 1) == 63);
    for (int i = 1; i < DP_NUM_ORDERS; i++)
        assert_true(dp_order(i) > dp_order(i - 1));
}

static void test_reference_epsilons(void **state)
{
    for (size_t k = 0; k < sizeof k_cases / sizeof k_cases[0]; k++) {
        const eps_case_t *c = &k_cases[k];
        double rdp[DP_NUM_ORDERS], e, o;
        err_t err = {0};
        char what[128];
        assert_int_equal(dp_rdp_compute(c->q, c->sigma, c->steps, rdp, &err), 0);
        assert_int_equal(dp_rdp_to_epsilon(rdp, c->delta, DP_CONV_BALLE, &e, &o, &err), 0);
        snprintf(what, sizeof what, "case %zu (q %g sigma %g T %g) Balle", k, c->q, c->sigma, c->steps);
        near_rel(e, c->eps_balle, 1e-10, what);
        assert_true(o == c->order_balle);
        assert_int_equal(dp_rdp_to_epsilon(rdp, c->delta, DP_CONV_CLASSIC, &e, &o, &err), 0);
        snprintf(what, sizeof what, "case %zu (q %g sigma %g T %g) classic", k, c->q, c->sigma, c->steps);
        near_rel(e, c->eps_classic, 1e-10, what);
        assert_true(o == c->order_classic);
        /* the shorthand uses the Balle conversion */
        assert_int_equal(dp_epsilon(c->q, c->sigma, c->steps, c->delta, &e, &o, &err), 0);
        near_rel(e, c->eps_balle, 1e-10, "dp_epsilon");
    }
    /* the rounded values the issue and the experiment quote */
    double e;
    assert_int_equal(dp_epsilon(0.01, 1.1, 10000, 1e-5, &e, NULL, NULL), 0);
    assert_true(fabs(e - 5.63) < 0.005);
    assert_int_equal(dp_epsilon(0.1, 1.0, 100, 1e-5, &e, NULL, NULL), 0);
    assert_true(fabs(e - 7.9) < 0.005);
}

static void test_reference_rdp(void **state)
{
    static const double k[][4] = {
        {0.01, 1.1, 2.5, 0.00016207740933199666}, {0.01, 1.1, 12, 0.041385519379216085},
        {0.1, 1.0, 7.5, 1.1102895091765648},      {0.1, 1.0, 3, 0.031712300303376517},
        {0.05, 0.8, 20, 12.471597606787828},      {0.2, 2.0, 1.3, 0.0071134890140946575},
        {0.01, 1.1, 63, 21.353610726767897},      {0.1, 1.0, 10.9, 2.915329556486947},
        {0.001, 0.6, 4.4, 6.2934019936820469e-05},
    };
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        double r;
        assert_int_equal(dp_rdp_sampled_gaussian(k[i][0], k[i][1], k[i][2], &r, NULL), 0);
        near_rel(r, k[i][3], 1e-10, "single-order RDP");
    }
}

static void test_special_cases(void **state)
{
    double r, rdp[DP_NUM_ORDERS], e, o;
    err_t err = {0};
    /* q = 1 is the plain Gaussian mechanism: alpha / (2 sigma^2) at every order */
    for (int i = 0; i < DP_NUM_ORDERS; i++) {
        double a = dp_order(i);
        assert_int_equal(dp_rdp_sampled_gaussian(1.0, 1.7, a, &r, &err), 0);
        near_rel(r, a / (2 * 1.7 * 1.7), 1e-15, "q = 1");
    }
    /* and q just below 1 approaches it (through the general formulas) */
    assert_int_equal(dp_rdp_sampled_gaussian(1 - 1e-9, 1.7, 5.5, &r, &err), 0);
    near_rel(r, 5.5 / (2 * 1.7 * 1.7), 1e-6, "q -> 1, fractional order");
    assert_int_equal(dp_rdp_sampled_gaussian(1 - 1e-9, 1.7, 6, &r, &err), 0);
    near_rel(r, 6 / (2 * 1.7 * 1.7), 1e-6, "q -> 1, integer order");
    /* alpha = 2 in closed form: A = 1 + q^2 (exp(1/sigma^2) - 1) */
    assert_int_equal(dp_rdp_sampled_gaussian(1e-4, 2.0, 2, &r, &err), 0);
    /* (log-space sums carry ~1e-16 absolute error in ln A, here ~1e-7 of a tiny RDP) */
    near_rel(r, log1p(1e-8 * (exp(1 / 4.0) - 1)), 1e-6, "alpha = 2 closed form");
    assert_int_equal(dp_rdp_sampled_gaussian(0, 1.0, 3.3, &r, &err), 0);
    assert_true(r == 0);
    assert_int_equal(dp_rdp_sampled_gaussian(0.1, 0, 3.3, &r, &err), 0);
    assert_true(isinf(r));
    /* nothing released: epsilon 0 */
    assert_int_equal(dp_rdp_compute(0.3, 1.0, 0, rdp, &err), 0);
    assert_int_equal(dp_rdp_to_epsilon(rdp, 1e-5, DP_CONV_BALLE, &e, &o, &err), 0);
    assert_true(e == 0);
    /* bad input */
    assert_int_equal(dp_rdp_sampled_gaussian(1.5, 1.0, 2, &r, &err), FN_EINVAL);
    assert_int_equal(dp_rdp_sampled_gaussian(-0.1, 1.0, 2, &r, &err), FN_EINVAL);
    assert_int_equal(dp_rdp_sampled_gaussian(NAN, 1.0, 2, &r, &err), FN_EINVAL);
    assert_int_equal(dp_rdp_sampled_gaussian(0.1, -1.0, 2, &r, &err), FN_EINVAL);
    assert_int_equal(dp_rdp_sampled_gaussian(0.1, 1.0, 1.0, &r, &err), FN_EINVAL);
    assert_int_equal(dp_rdp_compute(0.1, 1.0, -1, rdp, &err), FN_EINVAL);
    assert_int_equal(dp_rdp_compute(0.1, 1.0, 10, rdp, &err), 0);
    assert_int_equal(dp_rdp_to_epsilon(rdp, 0, DP_CONV_BALLE, &e, &o, &err), FN_EINVAL);
    assert_int_equal(dp_rdp_to_epsilon(rdp, 1, DP_CONV_BALLE, &e, &o, &err), FN_EINVAL);
    assert_non_null(strstr(err.msg, "delta"));
    /* the Balle conversion is never looser than the classic one */
    double ec;
    assert_int_equal(dp_rdp_to_epsilon(rdp, 1e-5, DP_CONV_BALLE, &e, &o, &err), 0);
    assert_int_equal(dp_rdp_to_epsilon(rdp, 1e-5, DP_CONV_CLASSIC, &ec, &o, &err), 0);
    assert_true(e < ec);
}

static double eps_of(double q, double sigma, double steps)
{
    double e;
    assert_int_equal(dp_epsilon(q, sigma, steps, 1e-5, &e, NULL, NULL), 0);
    return e;
}

static void test_monotonicity(void **state)
{
    static const double qs[] = {0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 0.7, 1.0};
    static const double sigmas[] = {0.5, 0.7, 0.9, 1.1, 1.5, 2.0, 4.0, 8.0};
    static const double steps[] = {1, 10, 100, 1000, 10000};
    for (size_t i = 1; i < sizeof qs / sizeof qs[0]; i++)
        assert_true(eps_of(qs[i], 1.1, 1000) > eps_of(qs[i - 1], 1.1, 1000));
    for (size_t i = 1; i < sizeof sigmas / sizeof sigmas[0]; i++)
        assert_true(eps_of(0.01, sigmas[i], 1000) < eps_of(0.01, sigmas[i - 1], 1000));
    for (size_t i = 1; i < sizeof steps / sizeof steps[0]; i++)
        assert_true(eps_of(0.05, 1.0, steps[i]) > eps_of(0.05, 1.0, steps[i - 1]));
    /* a smaller delta costs more epsilon */
    double e1, e2;
    assert_int_equal(dp_epsilon(0.05, 1.0, 100, 1e-5, &e1, NULL, NULL), 0);
    assert_int_equal(dp_epsilon(0.05, 1.0, 100, 1e-8, &e2, NULL, NULL), 0);
    assert_true(e2 > e1);
}

static void test_composition(void **state)
{
    dp_accountant_t a, b, h;
    double ea, eb, rdp[DP_NUM_ORDERS];
    err_t err = {0};
    dp_accountant_init(&a);
    dp_accountant_init(&b);
    assert_int_equal(dp_accountant_add(&a, 0.02, 1.3, 500, &err), 0);
    for (int i = 0; i < 500; i++)
        assert_int_equal(dp_accountant_add(&b, 0.02, 1.3, 1, &err), 0);
    assert_int_equal(a.steps, 500);
    assert_int_equal(b.steps, 500);
    for (int i = 0; i < DP_NUM_ORDERS; i++)
        near_rel(b.rdp[i], a.rdp[i], 1e-12, "T single steps vs T at once");
    assert_int_equal(dp_accountant_epsilon(&a, 1e-5, &ea, NULL, &err), 0);
    assert_int_equal(dp_accountant_epsilon(&b, 1e-5, &eb, NULL, &err), 0);
    near_rel(eb, ea, 1e-12, "epsilon of T single steps");
    near_rel(ea, eps_of(0.02, 1.3, 500), 1e-14, "accountant vs dp_epsilon");

    /* heterogeneous rounds: the per-order RDP adds, and epsilon is that of the summed RDP (not a
     * sum of epsilons, and not the epsilon of either phase) */
    dp_accountant_init(&h);
    assert_int_equal(dp_accountant_add(&h, 0.01, 1.1, 3000, &err), 0);
    assert_int_equal(dp_accountant_add(&h, 0.05, 2.0, 200, &err), 0);
    assert_int_equal(dp_accountant_add(&h, 0.01, 1.1, 2000, &err), 0);
    double r1[DP_NUM_ORDERS], r2[DP_NUM_ORDERS], eh, e_sum;
    assert_int_equal(dp_rdp_compute(0.01, 1.1, 5000, r1, &err), 0);
    assert_int_equal(dp_rdp_compute(0.05, 2.0, 200, r2, &err), 0);
    for (int i = 0; i < DP_NUM_ORDERS; i++)
        rdp[i] = r1[i] + r2[i];
    assert_int_equal(dp_rdp_to_epsilon(rdp, 1e-5, DP_CONV_BALLE, &e_sum, NULL, &err), 0);
    assert_int_equal(dp_accountant_epsilon(&h, 1e-5, &eh, NULL, &err), 0);
    near_rel(eh, e_sum, 1e-12, "heterogeneous composition");
    assert_true(eh > eps_of(0.01, 1.1, 5000));
    assert_true(eh > eps_of(0.05, 2.0, 200));
    assert_true(eh < eps_of(0.01, 1.1, 5000) + eps_of(0.05, 2.0, 200));
    assert_int_equal(h.steps, 5200);
    /* an empty accountant has spent nothing */
    dp_accountant_init(&a);
    assert_int_equal(dp_accountant_epsilon(&a, 1e-5, &ea, NULL, &err), 0);
    assert_true(ea == 0);
    assert_int_equal(dp_accountant_add(&a, 0.1, 1.0, -1, &err), FN_EINVAL);
}

static void test_budget(void **state)
{
    /* The server's loop: stop before the round that would exceed the budget. With q = 0.1,
     * sigma = 1 and a budget of 7.9 (experiments/fmnist-dp-fedavg: epsilon 7.8993 after 100),
     * exactly 100 rounds run. */
    dp_accountant_t a;
    dp_accountant_init(&a);
    err_t err = {0};
    int rounds = 0, exceed;
    double after, now;
    for (;;) {
        assert_int_equal(dp_accountant_would_exceed(&a, 0.1, 1.0, 1e-5, 7.9, &exceed, &after, &err), 0);
        if (exceed)
            break;
        assert_int_equal(dp_accountant_add(&a, 0.1, 1.0, 1, &err), 0);
        assert_int_equal(dp_accountant_epsilon(&a, 1e-5, &now, NULL, &err), 0);
        near_rel(now, after, 1e-15, "would_exceed's prediction");
        assert_true(now <= 7.9);
        rounds++;
        assert_true(rounds <= 1000);
    }
    assert_int_equal(rounds, 100);
    assert_true(after > 7.9);
    /* the boundary: reaching the target exactly is allowed, passing it by a hair is not */
    assert_int_equal(dp_accountant_would_exceed(&a, 0.1, 1.0, 1e-5, after, &exceed, NULL, &err), 0);
    assert_false(exceed);
    assert_int_equal(dp_accountant_would_exceed(&a, 0.1, 1.0, 1e-5, after * (1 - 1e-12), &exceed, NULL, &err), 0);
    assert_true(exceed);
    /* a different mechanism for the next round is accounted as such */
    assert_int_equal(dp_accountant_would_exceed(&a, 0.1, 50.0, 1e-5, 7.9, &exceed, &after, &err), 0);
    assert_false(exceed);
    assert_int_equal(dp_accountant_would_exceed(&a, 0.1, 1.0, 1e-5, NAN, &exceed, &after, &err), FN_EINVAL);
}

static void test_calibration(void **state)
{
    static const double k[][5] = {
        /* q, steps, delta, target, sigma from the independent implementation */
        {0.01, 10000, 1e-5, 5.6319923685484099, 1.100000148266554},
        {0.1, 100, 1e-5, 8.0, 0.99342792406678204},
        {0.02, 2000, 1e-6, 1.0, 4.1618202537298208},
    };
    err_t err = {0};
    for (size_t i = 0; i < sizeof k / sizeof k[0]; i++) {
        double s, e_at, e_below;
        assert_int_equal(dp_calibrate_sigma(k[i][0], k[i][1], k[i][2], k[i][3], &s, &err), 0);
        near_rel(s, k[i][4], 1e-9, "calibrated sigma");
        /* the inverse of accounting: sigma meets the target, and a sigma smaller by the tolerance does not */
        assert_int_equal(dp_epsilon(k[i][0], s, k[i][1], k[i][2], &e_at, NULL, &err), 0);
        assert_int_equal(dp_epsilon(k[i][0], s * (1 - 2e-6), k[i][1], k[i][2], &e_below, NULL, &err), 0);
        assert_true(e_at <= k[i][3]);
        assert_true(e_below > k[i][3]);
    }
    /* accounting then calibrating returns the sigma we started from */
    for (double sigma = 0.6; sigma < 6; sigma *= 1.7) {
        double e, s;
        assert_int_equal(dp_epsilon(0.03, sigma, 700, 1e-5, &e, NULL, &err), 0);
        assert_int_equal(dp_calibrate_sigma(0.03, 700, 1e-5, e, &s, &err), 0);
        near_rel(s, sigma, 2e-6, "calibrate(account(sigma))");
    }
    double s;
    /* unreachable: every round is the full data set and the target is tiny */
    assert_int_equal(dp_calibrate_sigma(1.0, 1e6, 1e-5, 0.01, &s, &err), FN_EINVAL);
    assert_non_null(strstr(err.msg, "cannot be reached"));
    /* met even at the lower end of the search */
    assert_int_equal(dp_calibrate_sigma(1e-6, 1, 1e-5, 50, &s, &err), 0);
    assert_true(s == DP_SIGMA_MIN);
    assert_int_equal(dp_calibrate_sigma(0.01, 100, 1e-5, -1, &s, &err), FN_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_orders),        cmocka_unit_test(test_reference_epsilons),
        cmocka_unit_test(test_reference_rdp), cmocka_unit_test(test_special_cases),
        cmocka_unit_test(test_monotonicity),  cmocka_unit_test(test_composition),
        cmocka_unit_test(test_budget),        cmocka_unit_test(test_calibration),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

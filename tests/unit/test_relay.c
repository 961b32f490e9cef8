/* The relay's arithmetic (server/relay.h): FedAvg of relays' example-weighted means, each
 * weighted by its total example count, equals FedAvg of all their clients' updates; the
 * evaluation sums combine the same way; and the modes a relay must refuse are refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "common/rng.h"
#include "server/fedavg.h"
#include "server/relay.h"

enum { M = 1000, CLIENTS = 7 };

/* Seven clients with random updates and very different sample counts, split 3 + 4 over two
 * relays, as in a hospital consortium where one region has one big site. */
static void make_clients(float u[CLIENTS][M], long long n[CLIENTS])
{
    rng_t r;
    rng_seed(&r, 42);
    static const long long counts[CLIENTS] = {12, 600, 5000, 1, 77, 3000, 250};
    for (int c = 0; c < CLIENTS; c++) {
        n[c] = counts[c];
        for (int i = 0; i < M; i++)
            u[c][i] = (float)((rng_below(&r, 2000001) / 1000000.0 - 1.0) * (c + 1));
    }
}

static void test_hierarchical_equals_flat(void **state)
{
    (void)state;
    static float u[CLIENTS][M], flat[M], hier[M], relay_mean[2][M];
    long long n[CLIENTS];
    make_clients(u, n);
    err_t e = {0};

    /* Flat FedAvg over all seven, as the server computes it. */
    fedavg_t f;
    assert_int_equal(fedavg_init(&f, M, &e), 0);
    for (int c = 0; c < CLIENTS; c++)
        assert_int_equal(fedavg_add(&f, u[c], M, (double)n[c], &e), 0);
    assert_int_equal(fedavg_mean(&f, flat, &e), 0);

    /* Two relays (clients 0..2 and 3..6), then the server's FedAvg over their two updates. */
    long long relay_samples[2];
    static const int first[2] = {0, 3}, last[2] = {3, CLIENTS};
    for (int r = 0; r < 2; r++) {
        relay_accum_t a;
        assert_int_equal(relay_accum_init(&a, M, &e), 0);
        for (int c = first[r]; c < last[r]; c++)
            assert_int_equal(relay_accum_add(&a, u[c], M, n[c], 0.5 + c, 0.1 * c, &e), 0);
        assert_int_equal(relay_accum_count(&a), last[r] - first[r]);
        double loss, acc;
        assert_int_equal(relay_accum_result(&a, relay_mean[r], &relay_samples[r], &loss, &acc, &e), 0);
        long long want = 0;
        double wl = 0, wa = 0;
        for (int c = first[r]; c < last[r]; c++) {
            want += n[c];
            wl += n[c] * (0.5 + c);
            wa += n[c] * 0.1 * c;
        }
        assert_true(relay_samples[r] == want);
        assert_true(fabs(loss - wl / want) < 1e-12);
        assert_true(fabs(acc - wa / want) < 1e-12);
        relay_accum_free(&a);
    }
    fedavg_t s;
    assert_int_equal(fedavg_init(&s, M, &e), 0);
    for (int r = 0; r < 2; r++)
        assert_int_equal(fedavg_add(&s, relay_mean[r], M, (double)relay_samples[r], &e), 0);
    assert_int_equal(fedavg_mean(&s, hier, &e), 0);

    /* Equal up to the float32 rounding of each relay's mean (relative 2^-24 of the largest
     * term, a few ulps of the result). */
    for (int i = 0; i < M; i++)
        assert_true(fabs((double)hier[i] - flat[i]) <= 4e-7 * (fabs(flat[i]) + 7.0));
    /* Not trivially equal because everything was zero: the means differ from each relay's. */
    assert_true(fabs(hier[0] - relay_mean[0][0]) > 1e-3 || fabs(hier[1] - relay_mean[0][1]) > 1e-3);
    fedavg_free(&f);
    fedavg_free(&s);
}

static void test_accum_rejects_and_resets(void **state)
{
    (void)state;
    relay_accum_t a;
    err_t e = {0};
    float u[4] = {1, 2, 3, 4}, bad[4] = {1, NAN, 3, 4}, out[4];
    long long samples;
    double loss, acc;
    assert_int_equal(relay_accum_init(&a, 4, &e), 0);
    assert_int_equal(relay_accum_result(&a, out, &samples, &loss, &acc, &e), FN_ESTATE);
    assert_int_equal(relay_accum_add(&a, u, 4, 0, 1, 1, &e), FN_EINVAL);
    assert_int_equal(relay_accum_add(&a, u, 3, 10, 1, 1, &e), FN_EINVAL);
    assert_int_equal(relay_accum_add(&a, bad, 4, 10, 1, 1, &e), FN_EINVAL);
    assert_int_equal(relay_accum_count(&a), 0);
    /* A client that reports no loss still counts in the mean, not in the loss. */
    assert_int_equal(relay_accum_add(&a, u, 4, 10, NAN, NAN, &e), 0);
    assert_int_equal(relay_accum_result(&a, out, &samples, &loss, &acc, &e), 0);
    assert_true(samples == 10);
    assert_true(isnan(loss) && isnan(acc));
    for (int i = 0; i < 4; i++)
        assert_true(out[i] == u[i]);
    relay_accum_reset(&a);
    assert_int_equal(relay_accum_count(&a), 0);
    assert_int_equal(relay_accum_result(&a, out, &samples, &loss, &acc, &e), FN_ESTATE);
    relay_accum_free(&a);
}

static void test_eval_sums(void **state)
{
    (void)state;
    relay_eval_t ev;
    memset(&ev, 0, sizeof ev);
    err_t e = {0};
    long long samples;
    double loss, acc;
    relay_eval_result(&ev, &samples, &loss, &acc);
    assert_true(samples == 0 && loss == 0 && acc == 0);
    assert_int_equal(relay_eval_add(&ev, 30, 0.5, 0.9, &e), 0);
    assert_int_equal(relay_eval_add(&ev, 10, 1.5, 0.5, &e), 0);
    assert_int_equal(relay_eval_add(&ev, 0, 0, 0, &e), 0); /* a client holding nothing out */
    assert_int_equal(relay_eval_add(&ev, 5, NAN, 0.5, &e), FN_EINVAL);
    assert_int_equal(relay_eval_add(&ev, 5, 1, 1.5, &e), FN_EINVAL);
    assert_int_equal(relay_eval_add(&ev, -1, 1, 0.5, &e), FN_EINVAL);
    relay_eval_result(&ev, &samples, &loss, &acc);
    assert_true(samples == 40);
    assert_int_equal(ev.answers, 3);
    /* The server weighs the relay's answer by its 40 samples: the same as the two clients'. */
    assert_true(fabs(loss - (30 * 0.5 + 10 * 1.5) / 40) < 1e-12);
    assert_true(fabs(acc - (30 * 0.9 + 10 * 0.5) / 40) < 1e-12);
}

static void test_refusals(void **state)
{
    (void)state;
    char why[512];
    json_t *h = json_pack("{s:s, s:i, s:s}", "type", "train", "round", 1, "strategy", "fedavg");
    assert_int_equal(relay_can_relay(h, why, sizeof why), 1);
    json_object_set_new(h, "strategy", json_string("fedadam"));
    assert_int_equal(relay_can_relay(h, why, sizeof why), 1);
    json_object_set_new(h, "prox_mu", json_real(0.01));
    assert_int_equal(relay_can_relay(h, why, sizeof why), 1);

    static const char *const robust[] = {"median", "trimmed_mean", "krum"};
    for (int i = 0; i < 3; i++) {
        json_object_set_new(h, "strategy", json_string(robust[i]));
        assert_int_equal(relay_can_relay(h, why, sizeof why), 0);
        assert_non_null(strstr(why, robust[i]));
        assert_non_null(strstr(why, "needs every client's own update"));
    }
    json_object_set_new(h, "strategy", json_string("fedavg"));
    json_object_set_new(h, "clip", json_real(1.0));
    assert_int_equal(relay_can_relay(h, why, sizeof why), 0);
    assert_non_null(strstr(why, "differential privacy"));
    json_object_del(h, "clip");
    json_object_set_new(h, "secagg", json_object());
    assert_int_equal(relay_can_relay(h, why, sizeof why), 0);
    assert_non_null(strstr(why, "secure aggregation"));
    json_decref(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hierarchical_equals_flat),
        cmocka_unit_test(test_accum_rejects_and_resets),
        cmocka_unit_test(test_eval_sums),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* server/site_msg.h, the checks the server and the relay share: an update's frame and sample
 * count (the FN_MAX_SAMPLES bound on both sides of it), a frame at an odd offset read through an
 * aligned copy, and an evaluation answer's numbers. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/limits.h"
#include "server/site_msg.h"

/* A received message as wire_recv leaves it: the header, and float32 frames over buf. */
static void make_msg(wire_msg_t *m, json_t *hdr, const float *data, const size_t *counts, int nframes)
{
    memset(m, 0, sizeof *m);
    m->header = hdr;
    m->type = json_string_value(json_object_get(hdr, "type"));
    m->nframes = nframes;
    size_t off = 0;
    for (int i = 0; i < nframes; i++) {
        zmq_msg_init_data(&m->frames[i], (void *)(data + off), counts[i] * sizeof(float), NULL, NULL);
        m->dtypes[i] = WIRE_F32;
        m->counts[i] = counts[i];
        off += counts[i];
    }
}

static void free_msg(wire_msg_t *m)
{
    for (int i = 0; i < m->nframes; i++)
        zmq_msg_close(&m->frames[i]);
    json_decref(m->header);
}

static void test_aligned4(void **state)
{
    (void)state;
    unsigned char *raw = malloc(4 * 5 + 1);
    float want[4] = {1.5f, -2, 3.25f, 4};
    memcpy(raw + 1, want, sizeof want);
    void *owned = NULL;
    const float *p = site_msg_aligned4(raw + 1, 4, &owned);
    assert_non_null(owned);
    assert_ptr_equal(p, owned);
    assert_int_equal((uintptr_t)p & 3, 0);
    assert_memory_equal(p, want, sizeof want);
    free(owned);
    owned = NULL;
    assert_ptr_equal(site_msg_aligned4(want, 4, &owned), want);
    assert_null(owned);
    free(raw);
}

static void test_update(void **state)
{
    (void)state;
    /* The frame at an odd offset, as ZeroMQ may hand a small message. */
    unsigned char *raw = malloc(4 * 4 + 1);
    float v[4] = {0.5f, 1, -1, 2};
    memcpy(raw + 1, v, sizeof v);
    size_t n = 4;
    wire_msg_t m;
    site_update_t u;
    err_t e;
    make_msg(&m, json_pack("{s:s, s:i, s:f, s:f}", "type", "update", "samples", 10, "loss", 0.25, "accuracy", 0.5),
             (const float *)(raw + 1), &n, 1);
    assert_int_equal(site_msg_update(&m, 4, NULL, NULL, NULL, &u, &e), 0);
    assert_int_equal((uintptr_t)u.values & 3, 0);
    assert_memory_equal(u.values, v, sizeof v);
    assert_int_equal(u.samples, 10);
    assert_true(u.loss == 0.25 && u.accuracy == 0.5);
    site_update_release(&u);
    /* The wrong size, no frame. */
    assert_int_equal(site_msg_update(&m, 5, NULL, NULL, NULL, &u, &e), FN_EPROTO);
    assert_non_null(strstr(e.msg, "expected 5 float32 values"));
    free_msg(&m);
    make_msg(&m, json_pack("{s:s, s:i}", "type", "update", "samples", 10), v, &n, 0);
    assert_int_equal(site_msg_update(&m, 4, NULL, NULL, NULL, &u, &e), FN_EPROTO);
    free_msg(&m);
    /* The sample count: 1 and FN_MAX_SAMPLES pass, 0 and one more do not. */
    const long long counts[] = {0, 1, FN_MAX_SAMPLES, FN_MAX_SAMPLES + 1, -3};
    const int ok[] = {0, 1, 1, 0, 0};
    for (int i = 0; i < 5; i++) {
        make_msg(&m, json_pack("{s:s, s:I, s:s}", "type", "update", "samples", (json_int_t)counts[i], "loss", "x"), v,
                 &n, 1);
        assert_int_equal(site_msg_update(&m, 4, NULL, NULL, NULL, &u, &e), ok[i] ? 0 : FN_EPROTO);
        if (ok[i])
            assert_true(isnan(u.loss) && isnan(u.accuracy)); /* none given that is a number */
        site_update_release(&u);
        free_msg(&m);
    }
    /* Training statistics out of range are dropped, the update is kept: an accuracy outside
     * [0, 1], a negative or huge loss would otherwise reach the round's metrics. */
    const double stats[][2] = {{0.5, 5}, {0.5, -0.1}, {-1, 0.5}, {1e300, 0.5}, {2e6, 1.5}, {0, 1}, {1e6, 0}};
    for (int i = 0; i < 7; i++) {
        make_msg(&m, json_pack("{s:s, s:i, s:f, s:f}", "type", "update", "samples", 10, "loss", stats[i][0],
                               "accuracy", stats[i][1]), v, &n, 1);
        assert_int_equal(site_msg_update(&m, 4, NULL, NULL, NULL, &u, &e), 0);
        int loss_ok = stats[i][0] >= 0 && stats[i][0] <= 1e6, acc_ok = stats[i][1] >= 0 && stats[i][1] <= 1;
        assert_true(loss_ok ? u.loss == stats[i][0] : isnan(u.loss));
        assert_true(acc_ok ? u.accuracy == stats[i][1] : isnan(u.accuracy));
        assert_int_equal(site_train_stats_ok(stats[i][0], stats[i][1]), loss_ok && acc_ok);
        site_update_release(&u);
        free_msg(&m);
    }
    assert_false(site_train_stats_ok(NAN, 0.5));
    assert_false(site_train_stats_ok(INFINITY, 0.5));
    assert_false(site_train_stats_ok(0.5, NAN));
    free(raw);
}

static void test_eval(void **state)
{
    (void)state;
    err_t e;
    assert_int_equal(site_eval_check(0, 1.0, 0.5, &e), 0);
    assert_int_equal(site_eval_check(FN_MAX_SAMPLES, 1.0, 1.0, &e), 0);
    assert_int_equal(site_eval_check(FN_MAX_SAMPLES + 1, 1.0, 0.5, &e), FN_EINVAL);
    assert_int_equal(site_eval_check(-1, 1.0, 0.5, &e), FN_EINVAL);
    assert_int_equal(site_eval_check(10, INFINITY, 0.5, &e), FN_EINVAL);
    assert_int_equal(site_eval_check(10, 1.0, 1.5, &e), FN_EINVAL);
    assert_int_equal(site_eval_check(10, 1.0, NAN, &e), FN_EINVAL);
    wire_msg_t m;
    site_eval_t ev;
    make_msg(&m, json_pack("{s:s, s:i, s:f, s:f}", "type", "eval_result", "samples", 7, "loss", 0.5, "accuracy", 0.75),
             NULL, NULL, 0);
    assert_int_equal(site_msg_eval(&m, &ev, &e), 0);
    assert_int_equal(ev.samples, 7);
    assert_true(ev.loss == 0.5 && ev.accuracy == 0.75);
    free_msg(&m);
    make_msg(&m, json_pack("{s:s, s:i, s:s}", "type", "eval_result", "samples", 7, "loss", "low"), NULL, NULL, 0);
    assert_int_equal(site_msg_eval(&m, &ev, &e), FN_EINVAL);
    free_msg(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_aligned4),
        cmocka_unit_test(test_update),
        cmocka_unit_test(test_eval),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

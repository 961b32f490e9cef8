/* Quantization-aware training (engine/qat.h) and its export to the int8 runtime: the fake
 * quantization op's values and straight-through gradient; weights on their per-channel grid after
 * every step; tracked ranges; and the int8 runtime, given the tracked ranges, computing what the
 * QAT model's fake-quantized forward computes (the point of QAT). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/rng.h"
#include "engine/graph.h"
#include "engine/infer.h"
#include "engine/model.h"
#include "engine/nn.h"
#include "engine/ops.h"
#include "engine/qat.h"

static void test_fake_quant_op(void **state)
{
    (void)state;
    float x[8] = {-3.0f, -0.26f, 0.0f, 0.24f, 0.26f, 1.0f, 12.0f, 12.8f}, dx[8] = {0}, dy[8];
    for (int i = 0; i < 8; i++)
        dy[i] = (float)(i + 1);
    engine_graph_t *g = engine_graph_create(0, 1);
    int64_t sh[1] = {8};
    engine_tensor_t *xt = engine_graph_view(g, x, dx, ENGINE_F32, 1, sh);
    xt->requires_grad = 1;
    /* scale 0.1, zero point 128: the grid is -12.8 .. 12.7 in steps of 0.1 */
    engine_tensor_t *y = engine_fake_quant(g, xt, 0.1f, 128);
    assert_non_null(y);
    const float want[8] = {-3.0f, -0.3f, 0.0f, 0.2f, 0.3f, 1.0f, 12.0f, 12.7f};
    for (int i = 0; i < 8; i++)
        assert_float_equal(((float *)y->data)[i], want[i], 1e-5);
    err_t e = {0};
    assert_int_equal(engine_graph_backward(g, y, dy, &e), 0);
    for (int i = 0; i < 8; i++) /* straight through inside the grid, nothing where clamped (12.8 -> 12.7) */
        assert_float_equal(dx[i], i == 7 ? 0.0f : dy[i], 0);
    engine_graph_free(g);

    g = engine_graph_create(0, 1);
    assert_null(engine_fake_quant(g, engine_graph_view(g, x, NULL, ENGINE_F32, 1, sh), 0.0f, 0));
    assert_int_equal(engine_graph_error(g, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "finite scale > 0"));
    engine_graph_free(g);
}

static void test_grid(void **state)
{
    (void)state;
    float s;
    int zp;
    engine_qat_grid(0.0f, 2.55f, &s, &zp);
    assert_int_equal(zp, 0);
    assert_float_equal(s, 0.01f, 1e-7);
    engine_qat_grid(-1.0f, 2.54f, &s, &zp);
    assert_int_equal(zp, 128);
    assert_float_equal(s, 0.02f, 1e-7);
}

enum { N = 512, D = 6, K = 3 };

/* Three overlapping Gaussian blobs in 6 dimensions. */
static void make_table(engine_table_t *t, uint64_t seed)
{
    rng_t r;
    rng_seed(&r, seed);
    t->x = malloc(sizeof(float) * N * D);
    t->labels = malloc(N);
    t->count = N, t->dim = D, t->num_classes = K;
    for (int i = 0; i < N; i++) {
        int y = (int)rng_below(&r, K);
        t->labels[i] = (uint8_t)y;
        for (int d = 0; d < D; d++)
            t->x[i * D + d] = (float)(rng_normal(&r) + (d % K == y ? 1.5 : -0.3));
    }
}

static void check_on_grid(engine_model_t *m)
{
    const float *p = engine_model_params(m);
    for (int l = 0; l < engine_model_num_layers(m); l++) {
        int in, out;
        size_t wo, bo;
        engine_model_layer(m, l, &in, &out, &wo, &bo);
        for (int r = 0; r < out; r++) {
            const float *w = p + wo + (size_t)r * in;
            float mx = 0;
            for (int k = 0; k < in; k++)
                mx = fmaxf(mx, fabsf(w[k]));
            for (int k = 0; k < in; k++) {
                float c = w[k] / (mx / 127.0f);
                assert_true(fabsf(c - rintf(c)) < 1e-3f);
            }
        }
    }
}

static void test_train_and_export(void **state)
{
    (void)state;
    engine_table_t tab = {0};
    make_table(&tab, 3);
    engine_source_t src = engine_source_from_table(&tab);
    json_t *arch = json_pack("{s:s,s:[i]}", "type", "mlp", "hidden", 16);
    engine_model_t *m = NULL;
    err_t e = {0};
    assert_int_equal(engine_model_create_shape(arch, D, 1, 1, K, &m, &e), 0);
    engine_model_init(m, 7);
    engine_train_config_t tc;
    engine_train_config_default(&tc);
    tc.epochs = 2, tc.batch_size = 32, tc.optim.lr = 0.05f, tc.optim.momentum = 0.9f, tc.prefetch = 0;
    engine_train_stats_t st;
    assert_int_equal(engine_model_train_source(m, &src, NULL, 0, &tc, &st, &e), 0); /* float pre-training */
    double acc_float = 0;
    assert_int_equal(engine_model_evaluate_source(m, &src, NULL, 0, NULL, &acc_float, &e), 0);

    engine_qat_t *q = NULL;
    assert_int_equal(engine_qat_attach(m, 0.1f, &q, &e), 0);
    check_on_grid(m);
    tc.epochs = 1, tc.optim.lr = 0.01f;
    assert_int_equal(engine_qat_train(q, &src, NULL, 0, &tc, &st, &e), 0);
    check_on_grid(m);
    int na = 0;
    const float *lo, *hi;
    engine_qat_ranges(q, &na, &lo, &hi);
    assert_int_equal(na, 2);                /* the two linear layers' inputs */
    assert_true(lo[0] < 0 && hi[0] > 0);    /* raw features */
    assert_true(lo[1] >= 0 && hi[1] > 0);   /* after ReLU */
    double acc_qat = 0;
    assert_int_equal(engine_model_evaluate_source(m, &src, NULL, 0, NULL, &acc_qat, &e), 0);
    print_message("float %.4f, QAT fake-quantized %.4f\n", acc_float, acc_qat);
    assert_true(acc_qat > acc_float - 0.05);

    /* the int8 runtime with the tracked ranges against the fake-quantized engine forward */
    float lo2[2] = {lo[0], lo[1]}, hi2[2] = {hi[0], hi[1]};
    engine_infer_t *p = NULL;
    assert_int_equal(engine_infer_create(arch, engine_model_params(m), engine_model_num_federated(m), D, 1, 1, K, &p, &e), 0);
    assert_int_equal(engine_infer_quantize_ranges(p, lo2, hi2, 1, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "1 input ranges for 2 conv/linear layers"));
    assert_int_equal(engine_infer_quantize_ranges(p, lo2, hi2, 2, &e), 0);
    engine_graph_t *g = engine_graph_create(0, 1);
    engine_graph_set_grad(g, 0);
    int64_t xs[4] = {N, D, 1, 1};
    engine_tensor_t *y = engine_net_forward(engine_model_net(m), g, engine_graph_view(g, tab.x, NULL, ENGINE_F32, 4, xs), 0);
    assert_non_null(y);
    float *lq = malloc(sizeof(float) * N * K);
    assert_int_equal(engine_infer_forward(p, tab.x, N, lq, 1, &e), 0);
    double maxdiff = 0, maxabs = 0;
    int agree = 0;
    for (int i = 0; i < N; i++) {
        const float *a = (const float *)y->data + i * K, *b = lq + i * K;
        int ia = 0, ib = 0;
        for (int c = 0; c < K; c++) {
            maxdiff = fmax(maxdiff, fabs((double)a[c] - b[c]));
            maxabs = fmax(maxabs, fabs((double)a[c]));
            ia = a[c] > a[ia] ? c : ia;
            ib = b[c] > b[ib] ? c : ib;
        }
        agree += ia == ib;
    }
    print_message("int8 runtime vs QAT forward: max |diff| %.2e of max |logit| %.2f, agreement %d/%d\n", maxdiff,
                  maxabs, agree, N);
    /* the same integer grid on both sides; what differs is float rounding of the requantization */
    assert_true(maxdiff < 0.02 * maxabs);
    assert_true(agree >= N - 3);
    free(lq);
    engine_graph_free(g);
    engine_infer_free(p);
    engine_qat_free(q);
    engine_model_free(m);
    json_decref(arch);
    engine_table_free(&tab);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fake_quant_op),
        cmocka_unit_test(test_grid),
        cmocka_unit_test(test_train_and_export),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

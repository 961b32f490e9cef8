/* engine/nn_cell: the "cell" layer (a DAG of layer lists): its sum semantics against a plain
 * network, parameter counts, gradients against central finite differences, and refused
 * cells (no path to the output, a node that feeds without input, shapes that disagree). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "engine/graph.h"
#include "engine/nn.h"
#include "engine/ops.h"

static engine_net_t *make_net(const char *arch_json, int c, int h, int w, int classes, err_t *e)
{
    json_error_t je;
    json_t *arch = json_loads(arch_json, 0, &je);
    assert_non_null(arch);
    engine_net_t *n = NULL;
    int rc = engine_net_create(arch, c, h, w, classes, &n, e);
    json_decref(arch);
    return rc ? NULL : n;
}

/* Mean cross-entropy of the net on (x, y), B samples; grads filled when backward is set. */
static double loss_of(engine_net_t *n, const float *x, const uint8_t *y, int B, int c, int h, int w, int backward)
{
    engine_graph_t *g = engine_graph_create(0, 1);
    int64_t xs[4] = {B, c, h, w}, ys[1] = {B};
    engine_tensor_t *xt = engine_graph_view(g, (void *)x, NULL, ENGINE_F32, 4, xs);
    engine_tensor_t *logits = engine_net_forward(n, g, xt, 1);
    assert_non_null(logits);
    engine_tensor_t *loss = engine_softmax_xent(g, logits, engine_graph_view(g, (void *)y, NULL, ENGINE_U8, 1, ys), 0.0f);
    assert_non_null(loss);
    double l = ((float *)loss->data)[0];
    if (backward) {
        err_t e = {0};
        memset(engine_net_grads(n), 0, engine_net_num_params(n) * sizeof(float));
        assert_int_equal(engine_graph_backward(g, loss, NULL, &e), 0);
    }
    engine_graph_free(g);
    return l;
}

/* Edges 0->1, 0->3, 1->3 all skips: the cell's output is x + x = 2x, so a linear layer after it
 * gives what the same weights give on 2x without the cell. */
static void test_sum_semantics(void **state)
{
    (void)state;
    err_t e = {0};
    engine_net_t *a = make_net("{\"type\":\"layers\",\"layers\":[{\"type\":\"cell\",\"nodes\":4,\"edges\":["
                               "{\"from\":0,\"to\":1,\"layers\":[]},{\"from\":0,\"to\":3,\"layers\":[]},"
                               "{\"from\":1,\"to\":3,\"layers\":[]}]},{\"type\":\"linear\"}]}",
                               1, 2, 3, 4, &e);
    assert_non_null(a);
    engine_net_t *b = make_net("{\"type\":\"layers\",\"layers\":[{\"type\":\"linear\"}]}", 1, 2, 3, 4, &e);
    assert_non_null(b);
    assert_int_equal(engine_net_num_params(a), engine_net_num_params(b));
    engine_net_init(a, 5);
    memcpy(engine_net_params(b), engine_net_params(a), engine_net_num_params(a) * sizeof(float));
    float x[2 * 6], x2[2 * 6];
    for (int i = 0; i < 12; i++) {
        x[i] = (float)(i % 5) - 2.0f;
        x2[i] = 2 * x[i];
    }
    engine_graph_t *g = engine_graph_create(0, 1);
    int64_t xs[4] = {2, 1, 2, 3};
    engine_tensor_t *ya = engine_net_forward(a, g, engine_graph_view(g, x, NULL, ENGINE_F32, 4, xs), 0);
    engine_tensor_t *yb = engine_net_forward(b, g, engine_graph_view(g, x2, NULL, ENGINE_F32, 4, xs), 0);
    assert_non_null(ya);
    assert_non_null(yb);
    for (int i = 0; i < 8; i++)
        assert_float_equal(((float *)ya->data)[i], ((float *)yb->data)[i], 1e-5);
    engine_graph_free(g);
    engine_net_free(a);
    engine_net_free(b);
}

static const char *grad_arch =
    "{\"type\":\"layers\",\"layers\":["
    "{\"type\":\"conv2d\",\"out\":3,\"kernel\":3,\"padding\":\"same\"},{\"type\":\"tanh\"},"
    "{\"type\":\"cell\",\"nodes\":4,\"edges\":["
    " {\"from\":0,\"to\":1,\"layers\":[{\"type\":\"conv2d\",\"out\":3,\"kernel\":3,\"padding\":\"same\"},{\"type\":\"tanh\"}]},"
    " {\"from\":0,\"to\":2,\"layers\":[]},"
    " {\"from\":1,\"to\":2,\"layers\":[{\"type\":\"conv2d\",\"out\":3,\"kernel\":1,\"bias\":false}]},"
    " {\"from\":1,\"to\":3,\"layers\":[{\"type\":\"avgpool\",\"kernel\":3,\"stride\":1,\"padding\":1}]},"
    " {\"from\":2,\"to\":3,\"layers\":[{\"type\":\"tanh\"},{\"type\":\"conv2d\",\"out\":3,\"kernel\":3,\"padding\":\"same\"}]},"
    " {\"from\":0,\"to\":3,\"layers\":[]}]},"
    "{\"type\":\"global_avgpool\"},{\"type\":\"linear\"}]}";

static void test_params_and_flops(void **state)
{
    (void)state;
    err_t e = {0};
    engine_net_t *n = make_net(grad_arch, 2, 5, 5, 3, &e);
    assert_non_null(n);
    /* stem 3*2*9+3, edge 0-1 3*3*9+3, edge 1-2 3*3 (no bias), edge 2-3 3*3*9+3, linear 3*3+3 */
    size_t want = (54 + 3) + (81 + 3) + 9 + (81 + 3) + (9 + 3);
    assert_int_equal(engine_net_num_params(n), want);
    double flops = 2.0 * (54 + 81 + 9 + 81) * 25 + 2.0 * 9;
    assert_float_equal(engine_net_flops_per_sample(n), flops, 1e-6);
    engine_net_free(n);
}

static void test_gradients(void **state)
{
    (void)state;
    const int B = 3, C = 2, H = 5, W = 5;
    err_t e = {0};
    engine_net_t *n = make_net(grad_arch, C, H, W, 3, &e);
    assert_non_null(n);
    engine_net_init(n, 11);
    float *p = engine_net_params(n);
    size_t np = engine_net_num_params(n);
    for (size_t i = 0; i < np; i++)
        p[i] += 0.05f * (float)((int)(i % 7) - 3); /* non-zero biases */
    float x[3 * 2 * 5 * 5];
    rng_t r;
    rng_seed(&r, 3);
    for (int i = 0; i < B * C * H * W; i++)
        x[i] = (float)rng_normal(&r);
    uint8_t y[3] = {0, 2, 1};
    loss_of(n, x, y, B, C, H, W, 1);
    float *g = malloc(np * sizeof *g);
    memcpy(g, engine_net_grads(n), np * sizeof *g);
    const float eps = 1e-2f;
    double worst = 0;
    for (size_t i = 0; i < np; i++) {
        float keep = p[i];
        p[i] = keep + eps;
        double lp = loss_of(n, x, y, B, C, H, W, 0);
        p[i] = keep - eps;
        double lm = loss_of(n, x, y, B, C, H, W, 0);
        p[i] = keep;
        double fd = (lp - lm) / (2.0 * eps);
        double rel = fabs(fd - g[i]) / fmax(fmax(fabs(fd), fabs(g[i])), 1e-2);
        worst = fmax(worst, rel);
    }
    print_message("cell: worst relative gradient error over %zu parameters %.2e\n", np, worst);
    assert_true(worst < 2e-2);
    free(g);
    engine_net_free(n);
}

static void expect_refused(const char *edges, const char *needle)
{
    char arch[1024];
    snprintf(arch, sizeof arch,
             "{\"type\":\"layers\",\"layers\":[{\"type\":\"cell\",\"nodes\":4,\"edges\":[%s]},{\"type\":\"linear\"}]}",
             edges);
    err_t e = {0};
    engine_net_t *n = make_net(arch, 1, 4, 4, 2, &e);
    assert_null(n);
    if (!strstr(e.msg, needle))
        print_error("message \"%s\" lacks \"%s\"\n", e.msg, needle);
    assert_non_null(strstr(e.msg, needle));
}

static void test_refused(void **state)
{
    (void)state;
    expect_refused("{\"from\":0,\"to\":1,\"layers\":[]}", "output node 3 has no incoming edge");
    expect_refused("{\"from\":1,\"to\":3,\"layers\":[]}", "node 1 has no incoming edge");
    expect_refused("{\"from\":2,\"to\":1,\"layers\":[]}", "0 <= from < to < nodes");
    expect_refused("{\"from\":0,\"to\":3,\"layers\":[]},{\"from\":0,\"to\":3,\"layers\":[]}", "a second edge 0 -> 3");
    expect_refused("{\"from\":0,\"to\":3,\"layers\":[]},{\"from\":0,\"to\":3,\"layers\":[{\"type\":\"maxpool\"}]}",
                   "a second edge");
    expect_refused("{\"from\":0,\"to\":3,\"layers\":[]},{\"from\":0,\"to\":2,\"layers\":[]},"
                   "{\"from\":2,\"to\":3,\"layers\":[{\"type\":\"maxpool\",\"kernel\":2}]}",
                   "inputs of a node are added");
    expect_refused("{\"from\":0,\"to\":3,\"layer\":[]}", "unknown key \"layer\"");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sum_semantics),
        cmocka_unit_test(test_params_and_flops),
        cmocka_unit_test(test_gradients),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Every op's gradient against central finite differences, and the forward passes of linear and
 * conv2d against direct double-precision references. The objective is L = sum(out * R) with a
 * fixed random R (so every output element matters), accumulated in double; each check also
 * proves it can fail by corrupting one analytic gradient element and expecting a rejection. */
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
#include "engine/model.h"
#include "engine/ops.h"
#include "engine/ops_cpu.h"
#include "tests/unit/engine_poison.h"

#define MAXIN 4
#define TOL 1e-2

typedef struct {
    int n;             /* inputs */
    int ndim[MAXIN];
    int64_t shape[MAXIN][5];
    int grad[MAXIN];   /* 1: check its gradient */
    int u8[MAXIN];     /* 1: labels (uint8 < u8 value) */
    double lo[MAXIN];  /* |x| >= lo for inputs near kinks (relu) */
    double scale[MAXIN];
    double eps;
} spec_t;

typedef engine_tensor_t *(*build_fn)(engine_graph_t *g, engine_tensor_t **in, const void *ctx);

static int64_t numel(const spec_t *s, int i)
{
    int64_t n = 1;
    for (int d = 0; d < s->ndim[i]; d++)
        n *= s->shape[i][d];
    return n;
}

static double objective(engine_graph_t *g, build_fn f, const void *ctx, const spec_t *s, void **data, float **grads,
                        const float *R, int with_grad, engine_tensor_t **out_t)
{
    engine_graph_reset(g);
    rng_seed(engine_graph_rng(g), 99); /* dropout draws the same mask every time */
    engine_graph_set_grad(g, with_grad);
    engine_tensor_t *in[MAXIN];
    for (int i = 0; i < s->n; i++)
        in[i] = engine_graph_view(g, data[i], with_grad && s->grad[i] ? grads[i] : NULL, s->u8[i] ? ENGINE_U8 : ENGINE_F32,
                                  s->ndim[i], s->shape[i]);
    engine_tensor_t *out = f(g, in, ctx);
    err_t e = {0};
    if (engine_graph_error(g, &e))
        fail_msg("op failed: %s", e.msg);
    assert_non_null(out);
    const float *y = out->data;
    double L = 0.0;
    for (int64_t k = 0; k < engine_tensor_numel(out); k++)
        L += (double)y[k] * R[k];
    if (out_t)
        *out_t = out;
    return L;
}

/* Returns the worst relative error over the checked inputs. */
static double gradcheck(const char *name, build_fn f, const void *ctx, const spec_t *s, uint64_t seed)
{
    rng_t r;
    rng_seed(&r, seed);
    void *data[MAXIN];
    float *grads[MAXIN];
    for (int i = 0; i < s->n; i++) {
        int64_t n = numel(s, i);
        grads[i] = calloc((size_t)n, sizeof(float));
        if (s->u8[i]) {
            uint8_t *d = malloc((size_t)n);
            for (int64_t k = 0; k < n; k++)
                d[k] = (uint8_t)rng_below(&r, (uint64_t)s->u8[i]);
            data[i] = d;
        } else {
            float *d = malloc((size_t)n * sizeof(float));
            double sc = s->scale[i] > 0 ? s->scale[i] : 1.0;
            for (int64_t k = 0; k < n; k++) {
                double v = rng_normal(&r) * sc;
                if (s->lo[i] > 0 && fabs(v) < s->lo[i])
                    v = v < 0 ? v - s->lo[i] : v + s->lo[i];
                d[k] = (float)v;
            }
            data[i] = d;
        }
    }
    engine_graph_t *g = poisoned_graph();
    engine_tensor_t *out;
    float R[65536];
    for (int k = 0; k < 65536; k++)
        R[k] = (float)rng_normal(&r);
    (void)objective(g, f, ctx, s, data, grads, R, 1, &out);
    int64_t no = engine_tensor_numel(out);
    assert_true(no <= 65536);
    if (no == 1)
        R[0] = 1.0f;
    float seedv[65536];
    memcpy(seedv, R, (size_t)no * sizeof(float));
    err_t e = {0};
    int rc = engine_graph_backward(g, out, seedv, &e);
    if (rc)
        fail_msg("%s: backward failed: %s", name, e.msg);
    const double eps = s->eps > 0 ? s->eps : 1e-2;
    double worst = 0.0;
    for (int i = 0; i < s->n; i++) {
        if (!s->grad[i])
            continue;
        float *x = data[i];
        int64_t n = numel(s, i);
        double *num = malloc((size_t)n * sizeof(double));
        double maxnum = 0.0, maxdiff = 0.0;
        for (int64_t k = 0; k < n; k++) {
            float keep = x[k];
            x[k] = keep + (float)eps;
            double lp = objective(g, f, ctx, s, data, grads, R, 0, NULL);
            x[k] = keep - (float)eps;
            double lm = objective(g, f, ctx, s, data, grads, R, 0, NULL);
            x[k] = keep;
            /* The step actually taken, in float. */
            double h = (double)(keep + (float)eps) - (double)(keep - (float)eps);
            num[k] = (lp - lm) / h;
            if (fabs(num[k]) > maxnum)
                maxnum = fabs(num[k]);
            double dk = fabs(num[k] - grads[i][k]);
            if (!(dk <= maxdiff)) /* a NaN gradient (e.g. from uninitialised memory) fails */
                maxdiff = isnan(dk) ? INFINITY : dk;
        }
        double rel = maxdiff / (maxnum + 1e-6);
        if (rel > worst)
            worst = rel;
        assert_true(maxnum > 1e-4); /* a vanishing gradient would check nothing */
        /* The check can fail: corrupt one element by 5% of the largest and expect a rejection. */
        double corrupt = 0.0;
        for (int64_t k = 0; k < n; k++) {
            double gk = grads[i][k] + (k == n / 2 ? 0.05 * maxnum : 0.0);
            if (fabs(num[k] - gk) > corrupt)
                corrupt = fabs(num[k] - gk);
        }
        assert_true(corrupt / (maxnum + 1e-6) > TOL);
        free(num);
    }
    print_message("%-28s worst relative gradient error %.2e\n", name, worst);
    if (worst > TOL)
        fail_msg("%s: gradient error %.3e exceeds %.0e", name, worst, TOL);
    for (int i = 0; i < s->n; i++) {
        free(data[i]);
        free(grads[i]);
    }
    engine_graph_free(g);
    return worst;
}

#define SPEC1(nd, ...) {.n = 1, .ndim = {nd}, .shape = {{__VA_ARGS__}}, .grad = {1}}

/* ---- builders ---- */

static engine_tensor_t *b_linear(engine_graph_t *g, engine_tensor_t **in, const void *c)
{
    return engine_linear(g, in[0], in[1], *(const int *)c ? in[2] : NULL);
}
static engine_tensor_t *b_conv(engine_graph_t *g, engine_tensor_t **in, const void *c)
{
    const engine_conv2d_params_t *p = c;
    return engine_conv2d(g, in[0], in[1], in[2], p);
}
static engine_tensor_t *b_conv_nob(engine_graph_t *g, engine_tensor_t **in, const void *c)
{
    return engine_conv2d(g, in[0], in[1], NULL, c);
}
static engine_tensor_t *b_separable(engine_graph_t *g, engine_tensor_t **in, const void *c)
{
    (void)c;
    engine_conv2d_params_t dw = {.pad_h = 1, .pad_w = 1, .groups = 3};
    return engine_conv2d(g, engine_conv2d(g, in[0], in[1], NULL, &dw), in[2], in[3], NULL);
}
static engine_tensor_t *b_maxpool(engine_graph_t *g, engine_tensor_t **in, const void *c)
{
    const int *k = c;
    return engine_maxpool2d(g, in[0], k[0], k[1], k[2]);
}
static engine_tensor_t *b_avgpool(engine_graph_t *g, engine_tensor_t **in, const void *c)
{
    const int *k = c;
    return engine_avgpool2d(g, in[0], k[0], k[1], k[2]);
}
static engine_tensor_t *b_gap(engine_graph_t *g, engine_tensor_t **in, const void *c) { (void)c; return engine_global_avgpool(g, in[0]); }
static engine_tensor_t *b_bn(engine_graph_t *g, engine_tensor_t **in, const void *c)
{
    static float rm[16], rv[16];
    int training = *(const int *)c;
    for (int i = 0; i < 16; i++) {
        rm[i] = 0.1f * (float)i;
        rv[i] = 1.0f + 0.2f * (float)i;
    }
    return engine_batchnorm(g, in[0], in[1], in[2], rm, rv, 0.1f, 1e-5f, training);
}
static engine_tensor_t *b_ln(engine_graph_t *g, engine_tensor_t **in, const void *c) { (void)c; return engine_layernorm(g, in[0], in[1], in[2], 1e-5f); }
static engine_tensor_t *b_relu(engine_graph_t *g, engine_tensor_t **in, const void *c) { (void)c; return engine_relu(g, in[0]); }
static engine_tensor_t *b_gelu(engine_graph_t *g, engine_tensor_t **in, const void *c) { (void)c; return engine_gelu(g, in[0]); }
static engine_tensor_t *b_sigmoid(engine_graph_t *g, engine_tensor_t **in, const void *c) { (void)c; return engine_sigmoid(g, in[0]); }
static engine_tensor_t *b_tanh(engine_graph_t *g, engine_tensor_t **in, const void *c) { (void)c; return engine_tanh(g, in[0]); }
static engine_tensor_t *b_dropout(engine_graph_t *g, engine_tensor_t **in, const void *c) { (void)c; return engine_dropout(g, in[0], 0.3f, 1); }
static engine_tensor_t *b_reshape(engine_graph_t *g, engine_tensor_t **in, const void *c)
{
    (void)c;
    int64_t s[2] = {6, 4};
    /* A view is shared: multiply so the gradient must pass through the view to reach in[0]. */
    return engine_mul(g, engine_reshape(g, in[0], 2, s), in[1]);
}
static engine_tensor_t *b_flatten(engine_graph_t *g, engine_tensor_t **in, const void *c) { (void)c; return engine_tanh(g, engine_flatten(g, in[0])); }
static engine_tensor_t *b_add(engine_graph_t *g, engine_tensor_t **in, const void *c) { (void)c; return engine_add(g, in[0], engine_tanh(g, in[1])); }
static engine_tensor_t *b_mul(engine_graph_t *g, engine_tensor_t **in, const void *c) { (void)c; return engine_mul(g, in[0], in[1]); }
static engine_tensor_t *b_concat(engine_graph_t *g, engine_tensor_t **in, const void *c)
{
    return engine_concat(g, 3, in, *(const int *)c);
}
static engine_tensor_t *b_slice(engine_graph_t *g, engine_tensor_t **in, const void *c)
{
    (void)c;
    return engine_slice(g, in[0], 1, 1, 2);
}
static engine_tensor_t *b_lstm(engine_graph_t *g, engine_tensor_t **in, const void *c)
{
    (void)c;
    return engine_lstm(g, in[0], in[1], in[2], in[3], NULL, NULL);
}
static engine_tensor_t *b_xent(engine_graph_t *g, engine_tensor_t **in, const void *c)
{
    return engine_softmax_xent(g, in[0], in[1], *(const float *)c);
}
static engine_tensor_t *b_xent_soft(engine_graph_t *g, engine_tensor_t **in, const void *c)
{
    (void)c;
    /* targets: a softmax of random numbers, so each row is a distribution */
    int64_t sh[2] = {in[1]->ne[0], in[1]->ne[1]};
    engine_tensor_t *q = engine_graph_tensor(g, ENGINE_F32, 2, sh);
    const float *r = in[1]->data;
    float *qd = q->data;
    for (int64_t i = 0; i < sh[0]; i++) {
        double z = 0;
        for (int64_t k = 0; k < sh[1]; k++)
            z += exp(r[i * sh[1] + k]);
        for (int64_t k = 0; k < sh[1]; k++)
            qd[i * sh[1] + k] = (float)(exp(r[i * sh[1] + k]) / z);
    }
    return engine_softmax_xent_soft(g, in[0], q);
}
static engine_tensor_t *b_xent_onehot(engine_graph_t *g, engine_tensor_t **in, const void *c)
{
    (void)c;
    return engine_softmax_xent_soft(g, in[0], in[1]);
}
static engine_tensor_t *b_bce(engine_graph_t *g, engine_tensor_t **in, const void *c)
{
    (void)c;
    return engine_sigmoid_bce(g, in[0], engine_sigmoid(g, in[1]));
}
static engine_tensor_t *b_mse(engine_graph_t *g, engine_tensor_t **in, const void *c) { (void)c; return engine_mse(g, in[0], in[1]); }
static engine_tensor_t *b_kl(engine_graph_t *g, engine_tensor_t **in, const void *c) { return engine_kl_div(g, in[0], in[1], *(const float *)c); }

/* Gradients that reach an intermediate tensor: the first op to write it stores (its buffer is
 * uninitialised), a second consumer then adds. Each builder feeds tanh(x) (an intermediate) to
 * the op, and the "shared" ones to two consumers, in both tape orders. */
static engine_tensor_t *b_fresh(engine_graph_t *g, engine_tensor_t **in, const void *c)
{
    const int kind = *(const int *)c;
    engine_tensor_t *t = engine_tanh(g, in[0]);
    engine_conv2d_params_t p1 = {.pad_h = 1, .pad_w = 1};
    switch (kind) {
    case 0:
        return engine_relu(g, t);
    case 1:
        return engine_maxpool2d(g, t, 2, 2, 0);
    case 2:
        return engine_conv2d(g, t, in[1], NULL, &p1);
    case 3:
        return engine_linear(g, engine_flatten(g, t), in[1], NULL);
    case 4: /* relu stores (it runs first), sigmoid adds */
        return engine_add(g, engine_sigmoid(g, t), engine_relu(g, t));
    case 5: /* sigmoid stores, relu adds */
        return engine_add(g, engine_relu(g, t), engine_sigmoid(g, t));
    case 6: /* avgpool (accumulating) first, maxpool stores */
        return engine_add(g, engine_avgpool2d(g, t, 2, 2, 0), engine_maxpool2d(g, t, 2, 2, 0));
    case 7: /* maxpool stores, avgpool adds */
        return engine_add(g, engine_maxpool2d(g, t, 2, 2, 0), engine_avgpool2d(g, t, 2, 2, 0));
    case 8: /* two convolutions of one input: the later stores, the earlier adds */
        return engine_add(g, engine_conv2d(g, t, in[1], NULL, &p1), engine_conv2d(g, t, in[2], NULL, &p1));
    default: { /* two linear layers of one input: the later stores, the earlier adds */
        engine_tensor_t *f = engine_flatten(g, t);
        return engine_add(g, engine_linear(g, f, in[1], NULL), engine_linear(g, f, in[2], NULL));
    }
    }
}

/* ---- tests ---- */

static void test_table_complete(void **state)
{
    (void)state;
    const engine_backend_t *be = engine_backend_cpu();
    for (int op = 0; op < ENGINE_OP_COUNT; op++) {
        assert_non_null(be->forward[op]);
        assert_non_null(be->backward[op]);
        assert_string_not_equal(engine_op_name((engine_op_t)op), "?");
    }
}

static void test_grad_linear(void **state)
{
    (void)state;
    int bias = 1, nob = 0;
    spec_t s = {.n = 3, .ndim = {2, 2, 1}, .shape = {{3, 5}, {4, 5}, {4}}, .grad = {1, 1, 1}};
    gradcheck("linear", b_linear, &bias, &s, 1);
    spec_t s3 = {.n = 3, .ndim = {3, 2, 1}, .shape = {{2, 3, 5}, {4, 5}, {4}}, .grad = {1, 1, 1}};
    gradcheck("linear 3-D input", b_linear, &bias, &s3, 2);
    spec_t s2 = {.n = 2, .ndim = {2, 2}, .shape = {{3, 5}, {4, 5}}, .grad = {1, 1}};
    gradcheck("linear no bias", b_linear, &nob, &s2, 3);
}

static void test_grad_conv(void **state)
{
    (void)state;
    engine_conv2d_params_t p1 = {.pad_h = 1, .pad_w = 1};
    spec_t s = {.n = 3, .ndim = {4, 4, 1}, .shape = {{2, 3, 7, 6}, {4, 3, 3, 3}, {4}}, .grad = {1, 1, 1}};
    gradcheck("conv2d 3x3 pad 1 bias", b_conv, &p1, &s, 4);
    engine_conv2d_params_t p2 = {.stride_h = 2, .stride_w = 2, .pad_h = 2, .pad_w = 1, .dil_h = 2, .dil_w = 2};
    spec_t s2 = {.n = 2, .ndim = {4, 4}, .shape = {{2, 2, 9, 8}, {3, 2, 3, 3}}, .grad = {1, 1}};
    gradcheck("conv2d stride 2 dil 2 no bias", b_conv_nob, &p2, &s2, 5);
    engine_conv2d_params_t p3 = {.stride_h = 1, .stride_w = 2, .pad_h = 1, .pad_w = 0, .groups = 2};
    spec_t s3 = {.n = 3, .ndim = {4, 4, 1}, .shape = {{2, 4, 5, 6}, {6, 2, 3, 2}, {6}}, .grad = {1, 1, 1}};
    gradcheck("conv2d groups 2, 3x2 kernel", b_conv, &p3, &s3, 6);
    engine_conv2d_params_t p4 = {.pad_h = 1, .pad_w = 1, .groups = 3};
    spec_t s4 = {.n = 3, .ndim = {4, 4, 1}, .shape = {{2, 3, 5, 5}, {3, 1, 3, 3}, {3}}, .grad = {1, 1, 1}};
    gradcheck("conv2d depthwise", b_conv, &p4, &s4, 7);
    spec_t s5 = {.n = 4, .ndim = {4, 4, 4, 1}, .shape = {{2, 3, 5, 5}, {3, 1, 3, 3}, {5, 3, 1, 1}, {5}},
                 .grad = {1, 1, 1, 1}};
    gradcheck("conv2d separable (dw + 1x1)", b_separable, NULL, &s5, 8);
    /* OH*OW >= 128: one sample per sgemm, writing the output in place (the other code path) */
    spec_t s6 = {.n = 3, .ndim = {4, 4, 1}, .shape = {{2, 2, 12, 12}, {4, 2, 3, 3}, {4}}, .grad = {1, 1, 1}};
    gradcheck("conv2d per-sample path", b_conv, &p1, &s6, 37);
    engine_conv2d_params_t p7 = {.pad_h = 1, .pad_w = 1, .groups = 2};
    spec_t s7 = {.n = 2, .ndim = {4, 4}, .shape = {{2, 4, 12, 11}, {4, 2, 3, 3}}, .grad = {1, 1}};
    gradcheck("conv2d per-sample groups", b_conv_nob, &p7, &s7, 38);
}

static void test_grad_pool(void **state)
{
    (void)state;
    int k1[3] = {2, 2, 0}, k2[3] = {3, 2, 1};
    spec_t s = {.n = 1, .ndim = {4}, .shape = {{2, 2, 6, 5}}, .grad = {1}, .eps = 1e-3};
    gradcheck("maxpool 2x2", b_maxpool, k1, &s, 9);
    gradcheck("maxpool 3x3 s2 p1", b_maxpool, k2, &s, 10);
    s.eps = 1e-2;
    gradcheck("avgpool 2x2", b_avgpool, k1, &s, 11);
    gradcheck("avgpool 3x3 s2 p1", b_avgpool, k2, &s, 12);
    gradcheck("global avgpool", b_gap, NULL, &s, 13);
}

static void test_grad_norm(void **state)
{
    (void)state;
    int train = 1, eval = 0;
    spec_t s = {.n = 3, .ndim = {4, 1, 1}, .shape = {{3, 4, 3, 2}, {4}, {4}}, .grad = {1, 1, 1}};
    gradcheck("batchnorm 4-D train", b_bn, &train, &s, 14);
    gradcheck("batchnorm 4-D eval", b_bn, &eval, &s, 15);
    spec_t s2 = {.n = 3, .ndim = {2, 1, 1}, .shape = {{6, 5}, {5}, {5}}, .grad = {1, 1, 1}};
    gradcheck("batchnorm 2-D train", b_bn, &train, &s2, 16);
    gradcheck("layernorm", b_ln, NULL, &s2, 17);
}

static void test_grad_act(void **state)
{
    (void)state;
    spec_t s = {.n = 1, .ndim = {2}, .shape = {{4, 6}}, .grad = {1}, .lo = {0.05}, .eps = 1e-3};
    gradcheck("relu", b_relu, NULL, &s, 18);
    s.eps = 1e-2;
    gradcheck("gelu", b_gelu, NULL, &s, 19);
    gradcheck("sigmoid", b_sigmoid, NULL, &s, 20);
    gradcheck("tanh", b_tanh, NULL, &s, 21);
    gradcheck("dropout p=0.3", b_dropout, NULL, &s, 22);
}

static void test_grad_structure(void **state)
{
    (void)state;
    spec_t sr = {.n = 2, .ndim = {3, 2}, .shape = {{2, 3, 4}, {6, 4}}, .grad = {1, 1}};
    gradcheck("reshape", b_reshape, NULL, &sr, 23);
    spec_t sf = SPEC1(4, 2, 2, 2, 3);
    gradcheck("flatten", b_flatten, NULL, &sf, 24);
    spec_t sa = {.n = 2, .ndim = {2, 2}, .shape = {{3, 4}, {3, 4}}, .grad = {1, 1}};
    gradcheck("add", b_add, NULL, &sa, 25);
    gradcheck("mul", b_mul, NULL, &sa, 26);
    int ax1 = 1, ax0 = 0;
    spec_t sc = {.n = 3, .ndim = {4, 4, 4}, .shape = {{2, 1, 3, 2}, {2, 3, 3, 2}, {2, 2, 3, 2}}, .grad = {1, 1, 1}};
    gradcheck("concat channels", b_concat, &ax1, &sc, 27);
    spec_t sc0 = {.n = 3, .ndim = {2, 2, 2}, .shape = {{1, 3}, {2, 3}, {3, 3}}, .grad = {1, 1, 1}};
    gradcheck("concat axis 0", b_concat, &ax0, &sc0, 28);
    spec_t ss = SPEC1(3, 2, 4, 3);
    gradcheck("slice", b_slice, NULL, &ss, 29);
}

static void test_grad_lstm(void **state)
{
    (void)state;
    spec_t s = {.n = 4, .ndim = {3, 2, 2, 1}, .shape = {{2, 3, 4}, {12, 4}, {12, 3}, {12}}, .grad = {1, 1, 1, 1},
                .scale = {1, 0.5, 0.5, 0.5}};
    gradcheck("lstm (T=3, H=3)", b_lstm, NULL, &s, 30);
}

static void test_grad_losses(void **state)
{
    (void)state;
    float ls0 = 0.0f, ls1 = 0.1f, T1 = 1.0f, T4 = 4.0f;
    spec_t sx = {.n = 2, .ndim = {2, 1}, .shape = {{5, 4}, {5}}, .grad = {1, 0}, .u8 = {0, 4}};
    gradcheck("softmax xent", b_xent, &ls0, &sx, 31);
    gradcheck("softmax xent smoothing 0.1", b_xent, &ls1, &sx, 32);
    spec_t sb = {.n = 2, .ndim = {2, 2}, .shape = {{4, 3}, {4, 3}}, .grad = {1, 0}};
    gradcheck("sigmoid bce", b_bce, NULL, &sb, 33);
    spec_t sq = {.n = 2, .ndim = {2, 2}, .shape = {{5, 4}, {5, 4}}, .grad = {1, 0}};
    gradcheck("softmax xent soft targets", b_xent_soft, NULL, &sq, 39);
    /* one-hot soft targets give exactly the hard-label loss */
    {
        float z[8] = {1, 2, 0.5f, -1, 0.3f, 0.1f, 2, 1}, oh[8] = {0, 1, 0, 0, 0, 0, 0, 1};
        uint8_t y[2] = {1, 3};
        engine_graph_t *g = engine_graph_create(0, 1);
        int64_t s2[2] = {2, 4}, s1[1] = {2};
        engine_tensor_t *zt = engine_graph_view(g, z, NULL, ENGINE_F32, 2, s2);
        engine_tensor_t *in[2] = {zt, engine_graph_view(g, oh, NULL, ENGINE_F32, 2, s2)};
        float a = ((float *)b_xent_onehot(g, in, NULL)->data)[0];
        float b = ((float *)engine_softmax_xent(g, zt, engine_graph_view(g, y, NULL, ENGINE_U8, 1, s1), 0)->data)[0];
        assert_float_equal(a, b, 1e-6);
        engine_graph_free(g);
    }
    spec_t sm = {.n = 2, .ndim = {2, 2}, .shape = {{4, 3}, {4, 3}}, .grad = {1, 1}};
    gradcheck("mse", b_mse, NULL, &sm, 34);
    spec_t sk = {.n = 2, .ndim = {2, 2}, .shape = {{4, 5}, {4, 5}}, .grad = {1, 0}};
    gradcheck("kl div T=1", b_kl, &T1, &sk, 35);
    gradcheck("kl div T=4", b_kl, &T4, &sk, 36);
}

/* Direct convolution in double: the forward reference. */
static void conv_ref(const float *x, const float *W, const float *b, double *y, int B, int C, int H, int Wd, int OC,
                     int KH, int KW, const engine_conv2d_params_t *p, int OH, int OW)
{
    int G = p->groups, Cg = C / G, OCg = OC / G;
    for (int n = 0; n < B; n++)
        for (int oc = 0; oc < OC; oc++)
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OW; ow++) {
                    double acc = b ? b[oc] : 0.0;
                    int gi = oc / OCg;
                    for (int c = 0; c < Cg; c++)
                        for (int i = 0; i < KH; i++)
                            for (int j = 0; j < KW; j++) {
                                int ih = oh * p->stride_h - p->pad_h + i * p->dil_h;
                                int iw = ow * p->stride_w - p->pad_w + j * p->dil_w;
                                if (ih < 0 || ih >= H || iw < 0 || iw >= Wd)
                                    continue;
                                acc += (double)x[((n * C + gi * Cg + c) * H + ih) * Wd + iw] *
                                       W[((oc * Cg + c) * KH + i) * KW + j];
                            }
                    y[((n * OC + oc) * OH + oh) * OW + ow] = acc;
                }
}

static void test_forward_reference(void **state)
{
    (void)state;
    const engine_conv2d_params_t cases[] = {
        {1, 1, 2, 2, 1, 1, 1, 0}, {2, 2, 1, 1, 1, 1, 1, 0}, {1, 2, 0, 1, 2, 1, 2, 0}, {1, 1, 1, 1, 1, 1, 4, 0}};
    rng_t r;
    rng_seed(&r, 77);
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const engine_conv2d_params_t *p = &cases[ci];
        /* odd cases have OH*OW >= 128 (one sample per sgemm), even ones batch samples */
        int B = 3, C = 4, H = ci % 2 ? 30 : 11, Wd = ci % 2 ? 25 : 9, OC = 8, K = 5 - (int)ci % 2 * 2;
        int Cg = C / p->groups;
        int OH = (H + 2 * p->pad_h - p->dil_h * (K - 1) - 1) / p->stride_h + 1;
        int OW = (Wd + 2 * p->pad_w - p->dil_w * (K - 1) - 1) / p->stride_w + 1;
        size_t nx = (size_t)B * C * H * Wd, nw = (size_t)OC * Cg * K * K, ny = (size_t)B * OC * OH * OW;
        float *x = malloc(nx * sizeof(float)), *W = malloc(nw * sizeof(float)), b[8];
        double *y = malloc(ny * sizeof(double));
        for (size_t i = 0; i < nx; i++)
            x[i] = (float)rng_normal(&r);
        for (size_t i = 0; i < nw; i++)
            W[i] = (float)rng_normal(&r);
        for (int i = 0; i < 8; i++)
            b[i] = (float)rng_normal(&r);
        conv_ref(x, W, b, y, B, C, H, Wd, OC, K, K, p, OH, OW);
        engine_graph_t *g = engine_graph_create(0, 1);
        int64_t xs[4] = {B, C, H, Wd}, ws[4] = {OC, Cg, K, K}, bs[1] = {OC};
        engine_tensor_t *out = engine_conv2d(g, engine_graph_view(g, x, NULL, ENGINE_F32, 4, xs),
                                             engine_graph_view(g, W, NULL, ENGINE_F32, 4, ws),
                                             engine_graph_view(g, b, NULL, ENGINE_F32, 1, bs), p);
        assert_non_null(out);
        assert_int_equal(out->ne[2], OH);
        assert_int_equal(out->ne[3], OW);
        double worst = 0.0;
        for (size_t i = 0; i < ny; i++) {
            double d = fabs(((float *)out->data)[i] - y[i]) / (1.0 + fabs(y[i]));
            if (d > worst)
                worst = d;
        }
        assert_true(worst < 1e-5);
        engine_graph_free(g);
        free(x);
        free(W);
        free(y);
    }
    /* linear against a double product */
    float x[6] = {1, 2, 3, -1, 0.5f, 2}, W[6] = {0.5f, -1, 2, 1, 1, 1}, b[2] = {0.25f, -0.5f};
    engine_graph_t *g = engine_graph_create(0, 1);
    int64_t xs[2] = {2, 3}, ws[2] = {2, 3}, bs[1] = {2};
    engine_tensor_t *y = engine_linear(g, engine_graph_view(g, x, NULL, ENGINE_F32, 2, xs),
                                       engine_graph_view(g, W, NULL, ENGINE_F32, 2, ws),
                                       engine_graph_view(g, b, NULL, ENGINE_F32, 1, bs));
    const float want[4] = {0.5f - 2 + 6 + 0.25f, 1 + 2 + 3 - 0.5f, -0.5f - 0.5f + 4 + 0.25f, -1 + 0.5f + 2 - 0.5f};
    for (int i = 0; i < 4; i++)
        assert_float_equal(((float *)y->data)[i], want[i], 1e-6);
    engine_graph_free(g);
}

static void test_grad_fresh(void **state)
{
    (void)state;
    static const char *const names[] = {"relu of intermediate",      "maxpool of intermediate",
                                        "conv of intermediate",      "flatten+linear of intermediate",
                                        "relu stores, sigmoid adds", "sigmoid stores, relu adds",
                                        "maxpool stores after avg",  "avgpool adds after maxpool",
                                        "two convs share an input",  "two linears share an input"};
    for (int k = 0; k < 10; k++) {
        spec_t s = {.n = 3, .ndim = {4, 4, 4}, .shape = {{2, 2, 4, 4}, {3, 2, 3, 3}, {3, 2, 3, 3}}, .grad = {1, 1, 1},
                    .lo = {0.05}, .eps = 1e-3};
        if (k == 3 || k == 9) {
            s.ndim[1] = s.ndim[2] = 2;
            s.shape[1][0] = s.shape[2][0] = 3;
            s.shape[1][1] = s.shape[2][1] = 32;
        }
        if (k != 8 && k != 9)
            s.n = k == 2 || k == 3 ? 2 : 1;
        gradcheck(names[k], b_fresh, &k, &s, 100 + (uint64_t)k);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_complete),  cmocka_unit_test(test_grad_linear),
        cmocka_unit_test(test_grad_conv),       cmocka_unit_test(test_grad_pool),
        cmocka_unit_test(test_grad_norm),       cmocka_unit_test(test_grad_act),
        cmocka_unit_test(test_grad_structure),  cmocka_unit_test(test_grad_lstm),
        cmocka_unit_test(test_grad_losses),     cmocka_unit_test(test_forward_reference),
        cmocka_unit_test(test_grad_fresh),
    };
    /* More workers than this machine likely has cores (unless the caller chose): the kernels'
     * parallel paths run, and workers get descheduled mid-loop. */
    setenv("FEDNAS_THREADS", "3", 0);
    return cmocka_run_group_tests(tests, NULL, NULL);
}

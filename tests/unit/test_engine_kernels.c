/* The engine's CPU kernels against direct double-precision references: conv2d's three
 * gradients on the kernel's internal paths, the pooled sgemm blocks, conv2d with the ReLU fused,
 * and bit-identical training of the FedAvg CNN from one seed. (Gradients by finite differences
 * are in test_engine_ops.c.) */
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

/* conv2d's three gradients against direct double sums, for the kernel's internal paths (several
 * column blocks of input channels, several samples per sgemm, uneven parts, groups, stride,
 * dilation), both when the input's gradient is stored (an intermediate) and when it is added to
 * an existing one (a leaf holding values); and bitwise reproducibility from run to run. */
static void conv_bwd_ref(const float *x, const float *W, const double *dy, double *dx, double *dW, double *db, int B,
                         int C, int H, int Wd, int OC, int KH, int KW, const engine_conv2d_params_t *p, int OH, int OW)
{
    int G = p->groups, Cg = C / G, OCg = OC / G;
    for (int n = 0; n < B; n++)
        for (int oc = 0; oc < OC; oc++)
            for (int oh = 0; oh < OH; oh++)
                for (int ow = 0; ow < OW; ow++) {
                    double gy = dy[((n * OC + oc) * OH + oh) * OW + ow];
                    db[oc] += gy;
                    int gi = oc / OCg;
                    for (int c = 0; c < Cg; c++)
                        for (int i = 0; i < KH; i++)
                            for (int j = 0; j < KW; j++) {
                                int ih = oh * p->stride_h - p->pad_h + i * p->dil_h;
                                int iw = ow * p->stride_w - p->pad_w + j * p->dil_w;
                                if (ih < 0 || ih >= H || iw < 0 || iw >= Wd)
                                    continue;
                                size_t xi = ((size_t)(n * C + gi * Cg + c) * H + ih) * Wd + iw;
                                size_t wi = ((size_t)(oc * Cg + c) * KH + i) * KW + j;
                                dW[wi] += gy * x[xi];
                                dx[xi] += gy * W[wi];
                            }
                }
}

static double worst_rel(const float *got, const double *want, const float *base, size_t n)
{
    double maxw = 1e-6, maxd = 0.0;
    for (size_t i = 0; i < n; i++) {
        double w = want[i] + (base ? base[i] : 0.0);
        if (fabs(w) > maxw)
            maxw = fabs(w);
        if (fabs(got[i] - w) > maxd)
            maxd = fabs(got[i] - w);
    }
    return maxd / maxw;
}

static void test_conv_backward_reference(void **state)
{
    (void)state;
    typedef struct {
        int B, C, H, W, OC, K;
        engine_conv2d_params_t p;
    } conv_case_t;
    const conv_case_t cases[] = {
        {5, 16, 32, 32, 4, 3, {.pad_h = 1, .pad_w = 1}},                    /* 3 column blocks, 4 uneven parts */
        {7, 3, 5, 5, 4, 3, {.pad_h = 1, .pad_w = 1}},                       /* 25 pixels: samples share an sgemm */
        {3, 4, 9, 8, 6, 3, {2, 1, 2, 0, 2, 1, 2, 0}},                        /* stride, dilation, groups, no pad */
        {4, 1, 28, 28, 8, 5, {.pad_h = 2, .pad_w = 2}},                     /* the FedAvg CNN's first layer */
        {2, 2, 6, 3, 3, 3, {.pad_h = 1, .pad_w = 1}},                       /* rows narrower than a vector */
        {7, 1, 160, 160, 4, 5, {.pad_h = 2, .pad_w = 2}},                   /* big planes: one part per thread */
    };
    rng_t r;
    rng_seed(&r, 2024);
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const conv_case_t *k = &cases[ci];
        engine_conv2d_params_t p = k->p;
        if (!p.stride_h) p.stride_h = 1;
        if (!p.stride_w) p.stride_w = 1;
        if (!p.dil_h) p.dil_h = 1;
        if (!p.dil_w) p.dil_w = 1;
        if (!p.groups) p.groups = 1;
        const int Cg = k->C / p.groups;
        const int OH = (k->H + 2 * p.pad_h - p.dil_h * (k->K - 1) - 1) / p.stride_h + 1;
        const int OW = (k->W + 2 * p.pad_w - p.dil_w * (k->K - 1) - 1) / p.stride_w + 1;
        const size_t nx = (size_t)k->B * k->C * k->H * k->W, nw = (size_t)k->OC * Cg * k->K * k->K;
        const size_t ny = (size_t)k->B * k->OC * OH * OW;
        float *x = malloc(nx * sizeof(float)), *W = malloc(nw * sizeof(float)), *b = malloc(k->OC * sizeof(float));
        float *seed = malloc(ny * sizeof(float)), *gx = malloc(nx * sizeof(float)), *gw = malloc(nw * sizeof(float));
        float *gb = malloc(k->OC * sizeof(float)), *gx0 = malloc(nx * sizeof(float)), *gw0 = malloc(nw * sizeof(float));
        double *dy = malloc(ny * sizeof(double)), *rx = calloc(nx, sizeof(double)), *rw = calloc(nw, sizeof(double));
        double *rb = calloc(k->OC, sizeof(double));
        for (size_t i = 0; i < nx; i++)
            x[i] = (float)rng_normal(&r), gx0[i] = (float)rng_normal(&r);
        for (size_t i = 0; i < nw; i++)
            W[i] = (float)rng_normal(&r), gw0[i] = (float)rng_normal(&r);
        for (int i = 0; i < k->OC; i++)
            b[i] = (float)rng_normal(&r);
        for (size_t i = 0; i < ny; i++)
            seed[i] = (float)rng_normal(&r), dy[i] = seed[i];
        conv_bwd_ref(x, W, dy, rx, rw, rb, k->B, k->C, k->H, k->W, k->OC, k->K, k->K, &p, OH, OW);
        int64_t xs[4] = {k->B, k->C, k->H, k->W}, ws[4] = {k->OC, Cg, k->K, k->K}, bs[1] = {k->OC};
        float *first_gx = malloc(nx * sizeof(float));
        for (int mode = 0; mode < 3; mode++) {
            /* 0: the input is a leaf holding a gradient (added to); 1: an intermediate (stored); 2: 1 again */
            engine_graph_t *g = poisoned_graph();
            memcpy(gw, gw0, nw * sizeof(float));
            memset(gb, 0, k->OC * sizeof(float));
            engine_tensor_t *xt;
            float *ones = NULL; /* mul's backward reads it: lives until the graph is done */
            if (mode == 0) {
                memcpy(gx, gx0, nx * sizeof(float));
                xt = engine_graph_view(g, x, gx, ENGINE_F32, 4, xs);
            } else {
                /* x * 1 through mul keeps the values exactly and makes x an intermediate */
                ones = malloc(nx * sizeof(float));
                for (size_t i = 0; i < nx; i++)
                    ones[i] = 1.0f;
                memset(gx, 0, nx * sizeof(float));
                xt = engine_mul(g, engine_graph_view(g, x, gx, ENGINE_F32, 4, xs),
                                engine_graph_view(g, ones, NULL, ENGINE_F32, 4, xs));
            }
            engine_tensor_t *y = engine_conv2d(g, xt, engine_graph_view(g, W, gw, ENGINE_F32, 4, ws),
                                               engine_graph_view(g, b, gb, ENGINE_F32, 1, bs), &p);
            assert_non_null(y);
            err_t e = {0};
            assert_int_equal(engine_graph_backward(g, y, seed, &e), 0);
            const float *dxv = mode == 0 ? gx : xt->grad;
            double ex = worst_rel(dxv, rx, mode == 0 ? gx0 : NULL, nx), ew = worst_rel(gw, rw, gw0, nw),
                   eb = worst_rel(gb, rb, NULL, (size_t)k->OC);
            if (ex > 1e-5 || ew > 1e-5 || eb > 1e-5)
                fail_msg("conv case %zu mode %d: relative errors dx %.2e dW %.2e db %.2e", ci, mode, ex, ew, eb);
            if (mode == 1)
                memcpy(first_gx, dxv, nx * sizeof(float));
            if (mode == 2) /* the same computation twice gives the same bits */
                assert_memory_equal(first_gx, dxv, nx * sizeof(float));
            engine_graph_free(g);
            free(ones);
        }
        free(first_gx);
        free(x), free(W), free(b), free(seed), free(gx), free(gw), free(gb), free(gx0), free(gw0);
        free(dy), free(rx), free(rw), free(rb);
    }
}

/* cpu_sgemm (blocks of rows or columns over the pool) against a double product, every
 * transpose combination, shapes that split both ways and one too small to split; beta 0 must
 * ignore C entirely (NaN there), beta 1 must add. */
static void test_sgemm_blocks(void **state)
{
    (void)state;
    const int shapes[][3] = {{70, 50, 300}, {20, 300, 200}, {5, 7, 3}, {33, 161, 250}};
    engine_graph_t *g = engine_graph_create(0, 1);
    rng_t r;
    rng_seed(&r, 11);
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int beta = 0; beta < 2; beta++) {
                    const int M = shapes[si][0], N = shapes[si][1], K = shapes[si][2];
                    float *A = malloc((size_t)M * K * sizeof(float)), *B = malloc((size_t)K * N * sizeof(float));
                    float *C = malloc((size_t)M * N * sizeof(float)), *C0 = malloc((size_t)M * N * sizeof(float));
                    for (int i = 0; i < M * K; i++)
                        A[i] = (float)rng_normal(&r);
                    for (int i = 0; i < K * N; i++)
                        B[i] = (float)rng_normal(&r);
                    for (int i = 0; i < M * N; i++)
                        C0[i] = beta ? (float)rng_normal(&r) : NAN;
                    memcpy(C, C0, (size_t)M * N * sizeof(float));
                    const int lda = ta ? M : K, ldb = tb ? K : N;
                    cpu_sgemm(g, ta, tb, M, N, K, 0.5f, A, lda, B, ldb, beta ? 1.0f : 0.0f, C, N);
                    double worst = 0.0;
                    for (int i = 0; i < M; i++)
                        for (int j = 0; j < N; j++) {
                            double acc = 0.0;
                            for (int q = 0; q < K; q++)
                                acc += (double)(ta ? A[q * lda + i] : A[i * lda + q]) *
                                       (tb ? B[j * ldb + q] : B[q * ldb + j]);
                            double want = 0.5 * acc + (beta ? C0[i * N + j] : 0.0);
                            double d = fabs(C[i * N + j] - want) / (1.0 + fabs(want));
                            if (!(d <= worst)) /* NaN lands here too */
                                worst = d;
                        }
                    if (!(worst < 1e-4))
                        fail_msg("sgemm %dx%dx%d ta %d tb %d beta %d: error %.2e", M, N, K, ta, tb, beta, worst);
                    free(A), free(B), free(C), free(C0);
                }
    engine_graph_free(g);
}

/* conv2d with the ReLU fused (params.relu) against engine_relu of the plain conv2d: the same
 * output and the same three gradients, bit for bit (the same arithmetic in another order of
 * passes), with and without bias, one sample per sgemm and several, groups and stride. */
static void test_conv_fused_relu(void **state)
{
    (void)state;
    typedef struct {
        int B, C, H, W, OC, K, bias;
        engine_conv2d_params_t p;
    } fcase_t;
    const fcase_t cases[] = {
        {5, 3, 14, 14, 8, 5, 1, {.pad_h = 2, .pad_w = 2}},   /* 196 pixels: one sample per sgemm */
        {6, 4, 5, 6, 6, 3, 0, {.pad_h = 1, .pad_w = 1, .groups = 2}}, /* small maps share an sgemm */
        {3, 2, 9, 9, 4, 3, 1, {.stride_h = 2, .stride_w = 2}},
        {4, 2, 3, 2, 5, 3, 1, {.pad_h = 1, .pad_w = 1}},      /* 6 pixels: less than a mask byte */
    };
    rng_t r;
    rng_seed(&r, 31);
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const fcase_t *k = &cases[ci];
        const int G = k->p.groups ? k->p.groups : 1;
        int64_t xs[4] = {k->B, k->C, k->H, k->W}, ws[4] = {k->OC, k->C / G, k->K, k->K}, bs[1] = {k->OC};
        const size_t nx = (size_t)k->B * k->C * k->H * k->W, nw = (size_t)k->OC * (k->C / G) * k->K * k->K;
        float *x = malloc(nx * sizeof(float)), *W = malloc(nw * sizeof(float)), b[8];
        for (size_t i = 0; i < nx; i++)
            x[i] = (float)rng_normal(&r);
        for (size_t i = 0; i < nw; i++)
            W[i] = (float)rng_normal(&r);
        for (int i = 0; i < 8; i++)
            b[i] = (float)rng_normal(&r);
        float *gx[2], *gw[2], *gb[2], *yv[2];
        size_t ny = 0;
        for (int fused = 0; fused < 2; fused++) {
            gx[fused] = calloc(nx, sizeof(float));
            gw[fused] = calloc(nw, sizeof(float));
            gb[fused] = calloc(8, sizeof(float));
            engine_graph_t *g = poisoned_graph();
            engine_conv2d_params_t p = k->p;
            p.relu = fused;
            engine_tensor_t *y = engine_conv2d(g, engine_graph_view(g, x, gx[fused], ENGINE_F32, 4, xs),
                                               engine_graph_view(g, W, gw[fused], ENGINE_F32, 4, ws),
                                               k->bias ? engine_graph_view(g, b, gb[fused], ENGINE_F32, 1, bs) : NULL, &p);
            if (!fused)
                y = engine_relu(g, y);
            assert_non_null(y);
            ny = (size_t)engine_tensor_numel(y);
            yv[fused] = malloc(ny * sizeof(float));
            memcpy(yv[fused], y->data, ny * sizeof(float));
            float *seed = malloc(ny * sizeof(float));
            rng_t rs;
            rng_seed(&rs, 5);
            size_t positive = 0;
            for (size_t i = 0; i < ny; i++) {
                seed[i] = (float)rng_normal(&rs);
                positive += yv[fused][i] > 0.0f;
            }
            assert_true(positive > ny / 4 && positive < ny); /* the mask matters both ways */
            err_t e = {0};
            assert_int_equal(engine_graph_backward(g, y, seed, &e), 0);
            free(seed);
            engine_graph_free(g);
        }
        assert_memory_equal(yv[0], yv[1], ny * sizeof(float));
        assert_memory_equal(gx[0], gx[1], nx * sizeof(float));
        assert_memory_equal(gw[0], gw[1], nw * sizeof(float));
        assert_memory_equal(gb[0], gb[1], 8 * sizeof(float));
        for (int f = 0; f < 2; f++)
            free(gx[f]), free(gw[f]), free(gb[f]), free(yv[f]);
        free(x), free(W);
    }
}

/* The FedAvg CNN trained twice from the same seed ends with the same bits: the pool hands out
 * chunks dynamically (main() runs this file with more threads than most machines have cores,
 * so workers are descheduled mid-loop), but what each chunk computes and the order in which
 * partial sums are added do not depend on which thread ran it. */
static void test_cnn_reproducible(void **state)
{
    (void)state;
    json_t *arch = json_pack("{s:s}", "type", "cnn");
    engine_dataset_t d = {0};
    d.count = 48;
    d.rows = d.cols = 28;
    d.num_classes = 10;
    d.images = malloc((size_t)d.count * 784);
    d.labels = malloc((size_t)d.count);
    rng_t r;
    rng_seed(&r, 3);
    for (int i = 0; i < d.count * 784; i++)
        d.images[i] = (uint8_t)rng_below(&r, 256);
    for (int i = 0; i < d.count; i++)
        d.labels[i] = (uint8_t)rng_below(&r, 10);
    float *first = NULL;
    size_t n = 0;
    for (int run = 0; run < 2; run++) {
        engine_model_t *m = NULL;
        err_t e = {0};
        assert_int_equal(engine_model_create_shape(arch, 1, 28, 28, 10, &m, &e), 0);
        engine_model_init(m, 7);
        engine_train_config_t c;
        engine_train_config_default(&c);
        c.batch_size = 16;
        c.optim.momentum = 0.9f;
        engine_train_stats_t st;
        if (engine_model_train(m, &d, NULL, 0, &c, &st, &e))
            fail_msg("train: %s", e.msg);
        n = engine_model_num_params(m);
        if (run == 0) {
            first = malloc(n * sizeof(float));
            memcpy(first, engine_model_params(m), n * sizeof(float));
            assert_true(st.loss > 0.0 && st.loss < 10.0);
        } else {
            assert_memory_equal(first, engine_model_params(m), n * sizeof(float));
        }
        engine_model_free(m);
    }
    free(first);
    engine_dataset_free(&d);
    json_decref(arch);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_backward_reference), cmocka_unit_test(test_sgemm_blocks),
        cmocka_unit_test(test_conv_fused_relu),         cmocka_unit_test(test_cnn_reproducible),
    };
    /* More workers than this machine likely has cores (unless the caller chose): the kernels'
     * parallel paths run, and workers get descheduled mid-loop. */
    setenv("FEDNAS_THREADS", "3", 0);
    return cmocka_run_group_tests(tests, NULL, NULL);
}

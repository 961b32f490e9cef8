/* conv2d's specialised CPU paths (the direct depthwise and stride-1 kernels, and whatever else cpu_conv2d
 * picks by shape), with and without their AVX-512 code, against two oracles on random shapes: a direct double-precision convolution,
 * and the im2col + sgemm reference path (FEDNAS_CONV_IM2COL=1). Shapes are drawn with odd
 * sizes, batch 1, strides, dilation, padding, channel multipliers, with and without bias and
 * fused ReLU; the input gradient is checked both stored (an intermediate input) and added (a
 * leaf already holding a gradient). */
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
#include "engine/ops.h"
#include "engine/ops_conv.h"
#include "tests/unit/cpu_kernels.h"

typedef struct {
    int B, C, H, W, OC, KH, KW;
    engine_conv2d_params_t p;
    int bias;
    int OH, OW;
} shape_t;

static int draw(rng_t *r, int lo, int hi) { return lo + (int)rng_below(r, (uint64_t)(hi - lo + 1)); }

/* The kernel side of kind 5's shapes (Winograd's: 5 or 3). */
static int wino_r = 5;

/* A random shape of the given kind: 0 depthwise (groups = C, multiplier 1 or 2), 1 grouped,
 * 2 plain, 3 pointwise (1x1), 4 the direct kernel's (stride 1, no dilation, one group, a kernel
 * above 1x1; wider rows and more channels, so that its tiles of 7 rows x 4 channels x 16
 * columns come both full and cut short; padding past kernel - 1 sometimes, where the input
 * gradient goes back to col2im; and 1x1 convs, whose weight gradient it takes). */
static shape_t random_shape(rng_t *r, int kind)
{
    shape_t s = {0};
    for (;;) {
        s.B = rng_below(r, 3) == 0 ? 1 : draw(r, 1, 9);
        const int G = kind == 0 ? draw(r, 1, 13) : kind == 1 ? draw(r, 2, 4) : 1;
        s.C = G * (kind == 0 ? 1 : draw(r, 1, 4));
        s.OC = G * draw(r, 1, kind == 0 ? 2 : 5);
        s.H = draw(r, 1, 17);
        s.W = draw(r, 1, 17);
        s.KH = kind == 3 ? 1 : draw(r, 1, 5);
        s.KW = kind == 3 ? 1 : (rng_below(r, 2) ? s.KH : draw(r, 1, 5));
        s.p = (engine_conv2d_params_t){.stride_h = draw(r, 1, 2), .stride_w = draw(r, 1, 2),
                                       .pad_h = draw(r, 0, 2), .pad_w = draw(r, 0, 2),
                                       .dil_h = draw(r, 1, 2), .dil_w = draw(r, 1, 2), .groups = G,
                                       .relu = (int)rng_below(r, 2)};
        if (kind == 3 && rng_below(r, 2))
            s.p.stride_h = s.p.stride_w = 1, s.p.pad_h = s.p.pad_w = 0;
        if (kind == 4) {
            /* output rows of 12-16, 24-32 or 36-40 (the widths the kernel takes: at least 3/4
             * of their 16-lane vectors), or 3-11 (short rows: flat on the padded width), input channels past 8 half the time (the input
             * gradient's tiles take 8 channels); the weight gradient's kernel takes output
             * channels that fill 3/4 of their vectors */
            static const int ow_lo[4] = {12, 24, 36, 3}, ow_hi[4] = {16, 32, 40, 11};
            const int band = (int)rng_below(r, 4);
            /* input channels past 16 a third of the time: the input gradient of the kernel
             * vectorized along channels (ops_conv_oc.c) takes C that fill 3/4 of their vectors */
            const int cb = (int)rng_below(r, 6);
            s.C = cb < 2 ? draw(r, 16, 40) : cb < 4 ? draw(r, 8, 13) : draw(r, 1, 7);
            /* output channels: under 12 (im2col's weight gradient), else 1 to 4 vectors of 16 */
            static const int oc_lo[4] = {1, 12, 24, 48}, oc_hi[4] = {11, 16, 40, 64};
            const int ocb = (int)rng_below(r, 4);
            s.OC = draw(r, oc_lo[ocb], oc_hi[ocb]);
            s.KH = draw(r, 1, 5);
            s.KW = draw(r, s.KH == 1 ? 2 : 1, 5);
            s.p.stride_h = s.p.stride_w = s.p.dil_h = s.p.dil_w = 1;
            s.p.pad_h = draw(r, 0, s.KH - 1 + (rng_below(r, 8) == 0));
            s.p.pad_w = draw(r, 0, s.KW - 1 + (rng_below(r, 8) == 0));
            s.H = draw(r, 1, 12) + s.KH - 1 - 2 * s.p.pad_h;
            s.W = draw(r, ow_lo[band], ow_hi[band]) + s.KW - 1 - 2 * s.p.pad_w;
            if (rng_below(r, 4) == 0) { /* 1x1: past 128 input channels the weight gradient is
                                          * the direct kernel's (forward and dx stay sgemm) */
                s.KH = s.KW = 1;
                s.p.pad_h = s.p.pad_w = 0;
                s.C = rng_below(r, 2) ? draw(r, 128, 136) : draw(r, 1, 13);
                s.H = draw(r, 1, 20);
                s.W = draw(r, 1, 20);
            }
            if (s.H < 1 || s.W < 1)
                continue;
        }
        if (kind == 5) {
            /* Winograd's tiles: 16-40 input and 16-70 output channels (vectors full and cut
             * short), maps cut into tiles with some left over, padding up to kernel - 1 (up to
             * kernel + 1 sometimes: the forward's tiles take it, the input gradient then goes
             * back to the other kernels) */
            s.C = draw(r, 16, 40);
            s.OC = draw(r, 16, 70);
            s.KH = s.KW = wino_r;
            s.p = (engine_conv2d_params_t){.stride_h = 1, .stride_w = 1, .dil_h = 1, .dil_w = 1, .groups = 1,
                                           .relu = (int)rng_below(r, 2)};
            s.p.pad_h = draw(r, 0, s.KH - 1 + (rng_below(r, 8) == 0 ? 2 : 0));
            s.p.pad_w = draw(r, 0, s.KW - 1 + (rng_below(r, 8) == 0 ? 2 : 0));
            s.H = draw(r, 1, 15) + s.KH - 1 - 2 * s.p.pad_h;
            s.W = draw(r, 1, 15) + s.KW - 1 - 2 * s.p.pad_w;
            if (s.H < 1 || s.W < 1)
                continue;
        }
        s.bias = (int)rng_below(r, 2);
        s.OH = (s.H + 2 * s.p.pad_h - s.p.dil_h * (s.KH - 1) - 1) / s.p.stride_h + 1;
        s.OW = (s.W + 2 * s.p.pad_w - s.p.dil_w * (s.KW - 1) - 1) / s.p.stride_w + 1;
        if (s.OH >= 1 && s.OW >= 1 && s.H + 2 * s.p.pad_h > s.p.dil_h * (s.KH - 1) &&
            s.W + 2 * s.p.pad_w > s.p.dil_w * (s.KW - 1))
            return s;
    }
}

/* Forward and all three gradients in double for L = sum(y * seed) (y after the ReLU when fused). */
static void reference(const shape_t *s, const float *x, const float *W, const float *b, const float *seed, double *y,
                      double *dx, double *dW, double *db)
{
    const int G = s->p.groups, Cg = s->C / G, OCg = s->OC / G, OHW = s->OH * s->OW;
    for (int n = 0; n < s->B; n++)
        for (int oc = 0; oc < s->OC; oc++) {
            const int gi = oc / OCg;
            for (int o = 0; o < OHW; o++) {
                const int oh = o / s->OW, ow = o % s->OW;
                double acc = s->bias ? b[oc] : 0.0;
                for (int c = 0; c < Cg; c++)
                    for (int ki = 0; ki < s->KH; ki++)
                        for (int kj = 0; kj < s->KW; kj++) {
                            const int ih = oh * s->p.stride_h - s->p.pad_h + ki * s->p.dil_h;
                            const int iw = ow * s->p.stride_w - s->p.pad_w + kj * s->p.dil_w;
                            if (ih < 0 || ih >= s->H || iw < 0 || iw >= s->W)
                                continue;
                            acc += (double)W[((size_t)oc * Cg + c) * s->KH * s->KW + ki * s->KW + kj] *
                                   x[(((size_t)n * s->C + gi * Cg + c) * s->H + ih) * s->W + iw];
                        }
                const size_t at = ((size_t)n * s->OC + oc) * OHW + o;
                y[at] = s->p.relu && acc <= 0.0 ? 0.0 : acc;
                const double g = s->p.relu && acc <= 0.0 ? 0.0 : seed[at];
                db[oc] += g;
                for (int c = 0; c < Cg; c++)
                    for (int ki = 0; ki < s->KH; ki++)
                        for (int kj = 0; kj < s->KW; kj++) {
                            const int ih = oh * s->p.stride_h - s->p.pad_h + ki * s->p.dil_h;
                            const int iw = ow * s->p.stride_w - s->p.pad_w + kj * s->p.dil_w;
                            if (ih < 0 || ih >= s->H || iw < 0 || iw >= s->W)
                                continue;
                            const size_t xi = (((size_t)n * s->C + gi * Cg + c) * s->H + ih) * s->W + iw;
                            const size_t wi = ((size_t)oc * Cg + c) * s->KH * s->KW + ki * s->KW + kj;
                            dW[wi] += g * x[xi];
                            dx[xi] += g * W[wi];
                        }
            }
        }
}

typedef struct {
    float *y, *dx, *dW, *db;
} result_t;

/* y and the gradients from the engine; the input is a leaf holding dx0 (added to) when `leaf`,
 * else an intermediate (x * 1), whose gradient the conv stores. */
static void run_engine(const shape_t *s, const float *x, const float *W, const float *b, const float *seed,
                       const float *dx0, int leaf, result_t *out)
{
    const size_t nx = (size_t)s->B * s->C * s->H * s->W, nw = (size_t)s->OC * (s->C / s->p.groups) * s->KH * s->KW;
    const size_t ny = (size_t)s->B * s->OC * s->OH * s->OW;
    engine_graph_t *g = engine_graph_create(0, 1);
    int64_t xs[4] = {s->B, s->C, s->H, s->W}, ws[4] = {s->OC, s->C / s->p.groups, s->KH, s->KW}, bs[1] = {s->OC};
    float *ones = malloc(nx * sizeof(float)), *gx = malloc(nx * sizeof(float));
    for (size_t i = 0; i < nx; i++)
        ones[i] = 1.0f;
    memcpy(gx, dx0, nx * sizeof(float));
    out->dW = calloc(nw, sizeof(float));
    out->db = calloc((size_t)s->OC, sizeof(float));
    engine_tensor_t *xt = engine_graph_view(g, (void *)x, gx, ENGINE_F32, 4, xs);
    if (!leaf)
        xt = engine_mul(g, xt, engine_graph_view(g, ones, NULL, ENGINE_F32, 4, xs));
    engine_tensor_t *yt = engine_conv2d(g, xt, engine_graph_view(g, (void *)W, out->dW, ENGINE_F32, 4, ws),
                                        s->bias ? engine_graph_view(g, (void *)b, out->db, ENGINE_F32, 1, bs) : NULL,
                                        &s->p);
    assert_non_null(yt);
    out->y = malloc(ny * sizeof(float));
    memcpy(out->y, yt->data, ny * sizeof(float));
    err_t e = {0};
    assert_int_equal(engine_graph_backward(g, yt, seed, &e), 0);
    out->dx = malloc(nx * sizeof(float));
    memcpy(out->dx, leaf ? gx : xt->grad, nx * sizeof(float));
    engine_graph_free(g);
    free(ones);
    free(gx);
}

static void result_free(result_t *r) { free(r->y), free(r->dx), free(r->dW), free(r->db); }

/* Worst |got - want| over the largest |want| (plus base, when given). */
static double rel_d(const float *got, const double *want, const float *base, size_t n)
{
    double maxw = 1e-6, maxd = 0.0;
    for (size_t i = 0; i < n; i++) {
        const double w = want[i] + (base ? base[i] : 0.0);
        maxw = fmax(maxw, fabs(w));
        maxd = fmax(maxd, fabs(got[i] - w));
    }
    return maxd / maxw;
}

static double rel_f(const float *got, const float *want, size_t n)
{
    double maxw = 1e-6, maxd = 0.0;
    for (size_t i = 0; i < n; i++) {
        maxw = fmax(maxw, fabs(want[i]));
        maxd = fmax(maxd, fabs((double)got[i] - want[i]));
    }
    return maxd / maxw;
}

static void check_kind(int kind, int count, uint64_t seed_v)
{
    rng_t r;
    rng_seed(&r, seed_v);
    for (int ci = 0; ci < count; ci++) {
        const shape_t s = random_shape(&r, kind);
        const size_t nx = (size_t)s.B * s.C * s.H * s.W, nw = (size_t)s.OC * (s.C / s.p.groups) * s.KH * s.KW;
        const size_t ny = (size_t)s.B * s.OC * s.OH * s.OW;
        float *x = malloc(nx * sizeof(float)), *W = malloc(nw * sizeof(float)), *b = malloc((size_t)s.OC * 4);
        float *seed = malloc(ny * sizeof(float)), *dx0 = malloc(nx * sizeof(float));
        for (size_t i = 0; i < nx; i++)
            x[i] = (float)rng_normal(&r), dx0[i] = (float)rng_normal(&r);
        for (size_t i = 0; i < nw; i++)
            W[i] = (float)rng_normal(&r);
        for (int i = 0; i < s.OC; i++)
            b[i] = (float)rng_normal(&r);
        for (size_t i = 0; i < ny; i++)
            seed[i] = (float)rng_normal(&r);
        double *y = calloc(ny, sizeof(double)), *dx = calloc(nx, sizeof(double)), *dW = calloc(nw, sizeof(double));
        double *db = calloc((size_t)s.OC, sizeof(double));
        reference(&s, x, W, b, seed, y, dx, dW, db);
        const int leaf = ci % 2;
        result_t fast, slow;
        unsetenv("FEDNAS_CONV_IM2COL");
        run_engine(&s, x, W, b, seed, dx0, leaf, &fast);
        setenv("FEDNAS_CONV_IM2COL", "1", 1);
        run_engine(&s, x, W, b, seed, dx0, leaf, &slow);
        unsetenv("FEDNAS_CONV_IM2COL");
        const double e[7] = {rel_d(fast.y, y, NULL, ny),         rel_d(fast.dx, dx, leaf ? dx0 : NULL, nx),
                             rel_d(fast.dW, dW, NULL, nw),       s.bias ? rel_d(fast.db, db, NULL, (size_t)s.OC) : 0,
                             rel_f(fast.y, slow.y, ny),          rel_f(fast.dx, slow.dx, nx),
                             rel_f(fast.dW, slow.dW, nw)};
        /* Winograd's transforms round more than a direct sum: on these shapes its worst relative
         * error was 6.7e-6 (output), 6.3e-6 (input gradient) and 1.0e-5 (weight gradient,
         * summed over tiles in the transform domain); the other kernels stay under 1e-5 */
        const double tol = kind == 5 ? 5e-5 : 1e-5;
        for (int k = 0; k < 7; k++)
            if (!(e[k] < tol))
                fail_msg("kind %d case %d (B%d C%d %dx%d OC%d k%dx%d s%d,%d p%d,%d d%d,%d g%d relu%d bias%d leaf%d): "
                         "check %d relative error %.2e",
                         kind, ci, s.B, s.C, s.H, s.W, s.OC, s.KH, s.KW, s.p.stride_h, s.p.stride_w, s.p.pad_h,
                         s.p.pad_w, s.p.dil_h, s.p.dil_w, s.p.groups, s.p.relu, s.bias, leaf, k, e[k]);
        result_free(&fast);
        result_free(&slow);
        free(x), free(W), free(b), free(seed), free(dx0), free(y), free(dx), free(dW), free(db);
    }
}

static void test_depthwise(void **state)
{
    (void)state;
    check_kind(0, 60, 11);
}

static void test_grouped(void **state)
{
    (void)state;
    check_kind(1, 30, 12);
}

static void test_plain(void **state)
{
    (void)state;
    check_kind(2, 30, 13);
}

static void test_pointwise(void **state)
{
    (void)state;
    check_kind(3, 30, 14);
}

/* With Winograd's tiles off, so that the direct kernels get every shape they take (with the
 * tiles on, those of 16+ channels and a square 3x3 or 5x5 kernel go to them: test_winograd). */
static void test_direct(void **state)
{
    (void)state;
    setenv("FEDNAS_CONV_WINO", "0", 1);
    check_kind(4, 60, 15);
    unsetenv("FEDNAS_CONV_WINO");
    check_kind(4, 30, 19); /* and with the tiles on, what each op then takes */
}

/* Winograd's tiles (ops_conv_wino.c), 5x5 and 3x3; on an AVX-512 CPU the FedAvg CNN's second
 * layer, its input and weight gradients must reach them, and FEDNAS_CONV_WINO=0 turn them off. */
static void test_winograd(void **state)
{
    (void)state;
    const conv_dims_t cnn2 = {.C = 32, .H = 14, .W = 14, .OC = 64, .OH = 14, .OW = 14, .KH = 5, .KW = 5, .sh = 1,
                              .sw = 1, .ph = 2, .pw = 2, .dh = 1, .dw = 1, .G = 1};
    assert_int_equal(conv_wino_usable(&cnn2), have_avx512());
    assert_int_equal(conv_wino_dx_usable(&cnn2), have_avx512());
    assert_int_equal(conv_wino_dw_usable(&cnn2), have_avx512());
    setenv("FEDNAS_CONV_WINO", "0", 1);
    assert_false(conv_wino_usable(&cnn2) || conv_wino_dx_usable(&cnn2) || conv_wino_dw_usable(&cnn2));
    unsetenv("FEDNAS_CONV_WINO");
    const conv_dims_t first = {.C = 1, .H = 28, .W = 28, .OC = 32, .OH = 28, .OW = 28, .KH = 5, .KW = 5, .sh = 1,
                               .sw = 1, .ph = 2, .pw = 2, .dh = 1, .dw = 1, .G = 1};
    assert_false(conv_wino_usable(&first)); /* one input channel: the transforms would cost more */
    check_kind(5, 50, 17);
    wino_r = 3;
    check_kind(5, 30, 18);
    wino_r = 5;
}

/* The direct kind again with the output-channel kernel off (FEDNAS_CONV_OC=0): the runs above
 * send every op whose channels fill their vectors to it, these to the row kernel. */
static void test_direct_rows(void **state)
{
    (void)state;
    setenv("FEDNAS_CONV_OC", "0", 1);
    setenv("FEDNAS_CONV_WINO", "0", 1);
    check_kind(4, 40, 16);
    unsetenv("FEDNAS_CONV_WINO");
    unsetenv("FEDNAS_CONV_OC");
}

/* Every kind again through the portable code (FEDNAS_CONV_PORTABLE=1): on a CPU with AVX-512
 * the tests above check the AVX-512 rows of im2col and col2im and the direct kernels, these
 * the plain loops any x86-64 takes. */
static void test_portable(void **state)
{
    (void)state;
    setenv("FEDNAS_CONV_PORTABLE", "1", 1);
    for (int kind = 0; kind < 5; kind++)
        check_kind(kind, 20, 21 + (uint64_t)kind);
    unsetenv("FEDNAS_CONV_PORTABLE");
}

/* The kinds that fuse a ReLU or take the direct weight gradient again with the backward's glue
 * in its portable loops (FEDNAS_CONV_GLUE_PORTABLE=1): the runs above take its AVX-512 code. */
static void test_glue_portable(void **state)
{
    (void)state;
    setenv("FEDNAS_CONV_GLUE_PORTABLE", "1", 1);
    for (int kind = 0; kind < 5; kind++)
        check_kind(kind, 12, 41 + (uint64_t)kind);
    unsetenv("FEDNAS_CONV_GLUE_PORTABLE");
}

/* The oracle can fail: a shape whose reference is perturbed must be rejected by rel_d. */
static void test_oracle_rejects(void **state)
{
    (void)state;
    const float got[3] = {1.0f, 2.0f, 3.0f};
    const double want[3] = {1.0, 2.0, 3.001};
    assert_true(rel_d(got, want, NULL, 3) > 1e-5);
    assert_true(rel_d(got, (const double[]){1.0, 2.0, 3.0}, NULL, 3) < 1e-7);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_depthwise), cmocka_unit_test(test_grouped),      cmocka_unit_test(test_plain),
        cmocka_unit_test(test_pointwise), cmocka_unit_test(test_direct),       cmocka_unit_test(test_winograd),
        cmocka_unit_test(test_direct_rows),
        cmocka_unit_test(test_portable),     cmocka_unit_test(test_glue_portable),
        cmocka_unit_test(test_oracle_rejects),
    };
    setenv("FEDNAS_THREADS", "3", 0); /* more parts than a 2-core machine has cores */
    return cmocka_run_group_tests(tests, NULL, NULL);
}

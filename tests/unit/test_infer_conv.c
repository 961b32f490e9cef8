/* The inference runtime's fp32 kernels (engine/infer_conv.c: the direct convolution;
 * engine/infer_fp32.c: the small-batch linear kernel) against the engine's forward on random
 * shapes: odd channel counts (1, 5, 17: a partial 16-channel block), more than 64 outputs (two
 * channel groups), kernels 1..5 with and without padding, maps whose rows split into unequal
 * tiles, with and without the fused ReLU and 2x2 max pool (odd maps: the pool's floor), batch 1
 * and larger batches, with a hidden linear layer wide enough for the linear kernel's four-panel
 * blocks; and the four conv paths (direct with Winograd's tiles where a layer takes them, direct
 * without them, im2col + sgemm, portable) agree. Layers of 16+ channels each side with 3x3 and
 * 5x5 kernels must reach the tiles on an AVX-512 build. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "cpu_kernels.h"
#include "engine/graph.h"
#include "engine/infer.h"
#include "engine/infer_impl.h"
#include "engine/nn.h"
#include "engine/ops_conv.h"

enum { CLS = 3, MAXB = 13 };

static void engine_logits(engine_net_t *n, const float *x, int B, int C, int H, int W, float *out)
{
    engine_graph_t *g = engine_graph_create(1 << 20, 1);
    engine_graph_set_grad(g, 0);
    int64_t shape[4] = {B, C, H, W};
    engine_tensor_t *y = engine_net_forward(n, g, engine_graph_view(g, (void *)x, NULL, ENGINE_F32, 4, shape), 0);
    assert_non_null(y);
    memcpy(out, engine_tensor_f32(y), (size_t)B * CLS * sizeof *out);
    engine_graph_free(g);
}

static void assert_close(const float *ref, const float *a, size_t n, const char *what)
{
    float scale = 0;
    for (size_t i = 0; i < n; i++)
        scale = fmaxf(scale, fabsf(ref[i]));
    for (size_t i = 0; i < n; i++)
        if (!isfinite(a[i]) || fabsf(a[i] - ref[i]) > 1e-4f * (1 + scale))
            fail_msg("%s: logit %zu: %g, the engine gives %g", what, i, (double)a[i], (double)ref[i]);
}

/* One random case: conv2d (C -> cout, k x k, pad) [batchnorm] [relu] [maxpool 2] [conv2d 3x3]
 * flatten [linear (hidden outputs) relu] linear. */
static void run_case(rng_t *r, int C, int H, int W, int k, int pad, int cout, int bn, int relu, int pool, int conv2,
                     int hidden)
{
    char arch_text[1024];
    int n = snprintf(arch_text, sizeof arch_text,
                     "{\"type\":\"layers\",\"layers\":[{\"type\":\"conv2d\",\"out\":%d,\"kernel\":%d,\"padding\":%d}",
                     cout, k, pad);
    if (bn)
        n += snprintf(arch_text + n, sizeof arch_text - (size_t)n, ",{\"type\":\"batchnorm\"}");
    if (relu)
        n += snprintf(arch_text + n, sizeof arch_text - (size_t)n, ",{\"type\":\"relu\"}");
    if (pool)
        n += snprintf(arch_text + n, sizeof arch_text - (size_t)n, ",{\"type\":\"maxpool\",\"kernel\":2}");
    if (conv2)
        n += snprintf(arch_text + n, sizeof arch_text - (size_t)n,
                      ",{\"type\":\"conv2d\",\"out\":7,\"kernel\":3,\"padding\":1},{\"type\":\"relu\"}");
    n += snprintf(arch_text + n, sizeof arch_text - (size_t)n, ",{\"type\":\"flatten\"}");
    if (hidden)
        n += snprintf(arch_text + n, sizeof arch_text - (size_t)n,
                      ",{\"type\":\"linear\",\"out\":%d},{\"type\":\"relu\"}", hidden);
    snprintf(arch_text + n, sizeof arch_text - (size_t)n, ",{\"type\":\"linear\"}]}");
    char what[1200];
    snprintf(what, sizeof what, "input %dx%dx%d, %s", C, H, W, arch_text);
    json_error_t je;
    json_t *arch = json_loads(arch_text, 0, &je);
    assert_non_null(arch);
    engine_net_t *net = NULL;
    err_t err = {0};
    if (engine_net_create(arch, C, H, W, CLS, &net, &err) != 0)
        fail_msg("%s: %s", what, err.msg);
    engine_net_init(net, rng_next(r));
    size_t np = engine_net_num_params(net), nb = engine_net_num_buffers(net);
    float *p = engine_net_params(net);
    for (size_t i = 0; i < np; i++) /* biases and BN affine away from 0 and 1 too */
        p[i] += (float)(0.1 * rng_normal(r));
    float *buf = engine_net_buffers(net);
    for (size_t i = 0; i < nb; i += 1) /* running means, then variances (> 0) per batchnorm */
        buf[i] = (float)(0.5 + rng_uniform(r));
    size_t in = (size_t)C * H * W;
    float *x = malloc(MAXB * in * sizeof *x), *ref = malloc(MAXB * CLS * sizeof *ref),
          *out = malloc(MAXB * CLS * sizeof *out);
    assert_non_null(x), assert_non_null(ref), assert_non_null(out);
    for (size_t i = 0; i < MAXB * in; i++)
        x[i] = (float)rng_normal(r);
    engine_logits(net, x, MAXB, C, H, W, ref);
    engine_infer_t *plan = NULL;
    if (engine_infer_create(arch, p, np + nb, C, H, W, CLS, &plan, &err) != 0 || engine_infer_fold(plan, &err) != 0)
        fail_msg("%s: %s", what, err.msg);
    static const int sizes[] = {1, 2, 7, MAXB};
    /* the tiles are expected where the engine's own convolution takes them (its switches included) */
    conv_dims_t d = {.C = C, .H = H, .W = W, .OC = cout, .KH = k, .KW = k, .sh = 1, .sw = 1, .ph = pad, .pw = pad,
                     .dh = 1, .dw = 1, .G = 1, .Cg = C, .OCg = cout, .K = C * k * k};
    d.OH = H + 2 * pad - k + 1, d.OW = W + 2 * pad - k + 1, d.OHW = d.OH * d.OW;
    const int tiles = conv_wino_usable(&d);
    char *wino_env = getenv("FEDNAS_CONV_WINO") ? strdup(getenv("FEDNAS_CONV_WINO")) : NULL;
    static const char *const paths[] = {"direct", "direct without Winograd", "gemm", "portable"};
    for (int path = 0; path < 4; path++) {
        if (path == 1) { /* the plan packs its weights anew: drop the Winograd ones */
            setenv("FEDNAS_CONV_WINO", "0", 1);
            free(plan->L[0].wc);
            plan->L[0].wc = NULL;
        }
        if (path == 2)
            setenv("FEDNAS_INFER_CONV", "gemm", 1);
        if (path == 3)
            setenv("FEDNAS_INFER_PORTABLE", "1", 1);
        for (int s = 0; s < 4; s++) {
            memset(out, 0xff, MAXB * CLS * sizeof *out); /* NaN: anything not written fails */
            if (engine_infer_forward(plan, x, sizes[s], out, 0, &err) != 0)
                fail_msg("%s: %s", what, err.msg);
            char w2[1300];
            snprintf(w2, sizeof w2, "%s (%s path, batch %d)", what, paths[path], sizes[s]);
            assert_close(ref, out, (size_t)sizes[s] * CLS, w2);
        }
        if (path == 0) {
            if (plan->L[0].wino != tiles)
                fail_msg("%s: Winograd's tiles %s", what, tiles ? "not used" : "used");
        } else if (path == 1 && plan->L[0].wino) {
            fail_msg("%s: Winograd's tiles used with FEDNAS_CONV_WINO=0", what);
        }
    }
    if (wino_env) /* the caller's setting back */
        setenv("FEDNAS_CONV_WINO", wino_env, 1);
    else
        unsetenv("FEDNAS_CONV_WINO");
    free(wino_env);
    unsetenv("FEDNAS_INFER_CONV");
    unsetenv("FEDNAS_INFER_PORTABLE");
    engine_infer_free(plan);
    engine_net_free(net);
    json_decref(arch);
    free(x), free(ref), free(out);
}

static void test_conv_fixed_shapes(void **state)
{
    (void)state;
    /* on an AVX-512 build the CNN's second layer must reach Winograd's tiles (unless switched off) */
    conv_dims_t cnn2 = {.C = 32, .H = 14, .W = 14, .OC = 64, .OH = 14, .OW = 14, .KH = 5, .KW = 5, .sh = 1, .sw = 1,
                        .ph = 2, .pw = 2, .dh = 1, .dw = 1, .G = 1, .Cg = 32, .OCg = 64, .K = 800, .OHW = 196};
    if (have_avx512() && !getenv("FEDNAS_CONV_WINO") && !getenv("FEDNAS_CONV_PORTABLE") && !getenv("FEDNAS_CONV_IM2COL"))
        assert_true(conv_wino_usable(&cnn2));
    rng_t r;
    rng_seed(&r, 16);
    /* the FedAvg CNN's two convs (28x28x1 -> 32, then 14x14x32 -> 64, 5x5 same, ReLU, pool) */
    run_case(&r, 1, 28, 28, 5, 2, 32, 0, 1, 1, 0, 0);
    run_case(&r, 32, 14, 14, 5, 2, 64, 1, 1, 1, 0, 0);
    /* one output channel; 70 (a group of 64 and a partial block); 17; no ReLU, no pool */
    run_case(&r, 3, 9, 10, 3, 1, 1, 0, 0, 0, 0, 0);
    run_case(&r, 2, 7, 19, 3, 0, 70, 0, 1, 0, 1, 0);
    run_case(&r, 5, 11, 13, 5, 2, 17, 1, 0, 1, 1, 0);
    /* 1x1 and a kernel as wide as the map; 2x2 kernel (even) with padding 1 */
    run_case(&r, 4, 6, 6, 1, 0, 16, 0, 1, 0, 0, 0);
    run_case(&r, 2, 5, 7, 5, 0, 33, 0, 1, 0, 0, 0);
    run_case(&r, 3, 8, 9, 2, 1, 20, 1, 1, 1, 0, 0);
    /* a hidden linear layer of 64, 70 and 100 outputs: the small-batch kernel's four-panel blocks
     * (from 6 samples on) with a partial panel and a panel left over, and its groups' tails */
    run_case(&r, 1, 12, 12, 5, 2, 8, 0, 1, 1, 0, 64);
    run_case(&r, 2, 9, 7, 3, 1, 5, 0, 1, 0, 0, 70);
    run_case(&r, 1, 10, 10, 3, 1, 16, 1, 1, 1, 0, 100);
    /* Winograd's tiles: 3x3 (4x4 blocks) and 5x5 (2x2 blocks), maps that are not whole blocks,
     * padding 0 and 1, a partial 16-channel block on each side, with and without pool */
    run_case(&r, 16, 9, 11, 3, 1, 16, 0, 1, 1, 0, 0);
    run_case(&r, 17, 10, 7, 3, 0, 33, 1, 0, 0, 0, 0);
    run_case(&r, 24, 8, 13, 5, 1, 20, 0, 1, 0, 1, 0);
    run_case(&r, 16, 6, 6, 5, 2, 80, 1, 1, 1, 0, 40);
}

static void test_conv_random_shapes(void **state)
{
    (void)state;
    rng_t r;
    rng_seed(&r, 1616);
    for (int t = 0; t < 24; t++) {
        int k = 1 + (int)(rng_next(&r) % 5), pad = (int)(rng_next(&r) % (unsigned)k);
        int H = k + (int)(rng_next(&r) % 17), W = k + (int)(rng_next(&r) % 23);
        int C = 1 + (int)(rng_next(&r) % 9), cout = 1 + (int)(rng_next(&r) % 80);
        int pool = H + 2 * pad - k + 1 >= 2 && W + 2 * pad - k + 1 >= 2 && rng_next(&r) % 2;
        run_case(&r, C, H, W, k, pad, cout, (int)(rng_next(&r) % 2), (int)(rng_next(&r) % 2), pool, 0,
                 rng_next(&r) % 2 ? 1 + (int)(rng_next(&r) % 120) : 0);
    }
}

/* A head of global average pooling (NAS candidates end that way): the runtime takes it (it once
 * gave the pool a [C*H*W] output and refused the linear after it), fp32 against the engine. */
static void test_global_avgpool_head(void **state)
{
    (void)state;
    const char *text = "{\"type\":\"layers\",\"layers\":[{\"type\":\"conv2d\",\"out\":16,\"kernel\":3,\"padding\":1},"
                       "{\"type\":\"batchnorm\"},{\"type\":\"relu\"},{\"type\":\"conv2d\",\"out\":24,\"kernel\":3,"
                       "\"padding\":1},{\"type\":\"relu\"},{\"type\":\"global_avgpool\"},{\"type\":\"linear\"}]}";
    enum { C = 1, H = 12, W = 12, N = 5 };
    json_error_t je;
    json_t *arch = json_loads(text, 0, &je);
    assert_non_null(arch);
    engine_net_t *net = NULL;
    err_t err = {0};
    assert_int_equal(engine_net_create(arch, C, H, W, CLS, &net, &err), 0);
    engine_net_init(net, 3);
    rng_t r;
    rng_seed(&r, 77);
    size_t np = engine_net_num_params(net), nb = engine_net_num_buffers(net);
    float *buf = engine_net_buffers(net);
    for (size_t i = 0; i < nb; i++)
        buf[i] = (float)(0.5 + rng_uniform(&r));
    float x[N * C * H * W], ref[N * CLS], out[N * CLS];
    for (size_t i = 0; i < sizeof x / sizeof *x; i++)
        x[i] = (float)rng_normal(&r);
    engine_logits(net, x, N, C, H, W, ref);
    engine_infer_t *plan = NULL;
    if (engine_infer_create(arch, engine_net_params(net), np + nb, C, H, W, CLS, &plan, &err) != 0)
        fail_msg("the runtime refused a global-average-pool head: %s", err.msg);
    assert_int_equal(engine_infer_fold(plan, &err), 0);
    assert_int_equal(engine_infer_forward(plan, x, N, out, 0, &err), 0);
    assert_close(ref, out, N * CLS, "global average pool head");
    engine_infer_free(plan);
    engine_net_free(net);
    json_decref(arch);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_global_avgpool_head),
        cmocka_unit_test(test_conv_fixed_shapes),
        cmocka_unit_test(test_conv_random_shapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

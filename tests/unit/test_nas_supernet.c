/* nas/supernet and nas/rank: Kendall's tau-b against hand-counted pairs (ties included); weights
 * really shared (one op at one depth is one tensor, a narrower width reads its leading slice,
 * isomorphic cells read the same tensors); a step changes only its path's slices; batch-norm
 * recalibration changes running statistics and not weights, and averages batch statistics;
 * scores are deterministic for a seed and leave the supernet unchanged; a trained supernet
 * beats chance. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/nn.h"
#include "nas/eval.h"
#include "nas/genome.h"
#include "nas/rank.h"
#include "nas/supernet.h"
#include "tests/unit/nas_test.h"

static nas_data_t g_data;

static int group_setup(void **state)
{
    (void)state;
    setenv("FEDNAS_THREADS", "1", 1);
    nas_data_opts_t o = {.split_seed = 42, .val_size = 10000, .train_subset = 1280, .val_subset = 500,
                         .test_subset = 10};
    err_t e = {0};
    if (nas_data_load(&o, &g_data, &e) < 0) {
        fprintf(stderr, "%s\n", e.msg);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    nas_data_free(&g_data);
    return 0;
}

static nas_space_t macro_space(void)
{
    return space_from("{\"space\":{\"type\":\"macro\",\"layers\":3,\"widths\":[4,8],\"ops\":[\"conv3x3\",\"sepconv3x3\","
                      "\"maxpool3x3\",\"identity\"],\"batchnorm\":\"search\",\"reductions\":1}" STRATEGY);
}
static nas_space_t cell_space(void)
{
    return space_from("{\"space\":{\"type\":\"cell\",\"widths\":[4,8],\"cells_per_stage\":[1,2],\"stages\":2}" STRATEGY);
}

static nas_genome_t macro(int op0, int w0, int bn0, int op1, int w1, int bn1, int op2, int w2, int bn2)
{
    nas_genome_t g;
    memset(&g, 0, sizeof g);
    g.kind = NAS_SPACE_MACRO;
    g.nlayers = 3;
    int op[3] = {op0, op1, op2}, w[3] = {w0, w1, w2}, bn[3] = {bn0, bn1, bn2};
    for (int i = 0; i < 3; i++)
        g.layer[i] = (nas_macro_layer_t){.op = op[i], .width = w[i], .bn = bn[i], .reduce = i == 1};
    return g;
}

static nas_genome_t cell(int e01, int e02, int e12, int e03, int e13, int e23, int n, int w)
{
    nas_genome_t g;
    memset(&g, 0, sizeof g);
    g.kind = NAS_SPACE_CELL;
    int e[6] = {e01, e02, e12, e03, e13, e23};
    memcpy(g.edge, e, sizeof e);
    g.cells = n;
    g.width = w;
    return g;
}

static nas_supernet_t *make(const nas_space_t *sp, uint64_t seed)
{
    nas_supernet_opts_t o;
    nas_supernet_opts_default(&o);
    o.seed = seed;
    o.batch_size = 32;
    nas_supernet_t *s;
    err_t e = {0};
    int rc = nas_supernet_create(sp, &o, &s, &e);
    if (rc)
        print_error("%s\n", e.msg);
    assert_int_equal(rc, 0);
    return s;
}

/* Trains `steps` batches of 32 from the training split on uniformly drawn paths. */
static void train_steps(nas_supernet_t *s, int steps)
{
    err_t e = {0};
    nas_supernet_stats_t st;
    int rc = nas_supernet_train(s, &g_data.train_src, g_data.train_idx, 32 * steps, 1.0, &st, &e);
    if (rc)
        print_error("%s\n", e.msg);
    assert_int_equal(rc, 0);
    assert_true(isfinite(st.loss));
}

/* ---- Kendall's tau-b ---- */

static void test_kendall_tau_b(void **state)
{
    (void)state;
    double tau;
    err_t e = {0};
    const double a[5] = {1, 2, 3, 4, 5}, rev[5] = {5, 4, 3, 2, 1};
    assert_int_equal(nas_kendall_tau_b(a, a, 5, &tau, &e), 0);
    assert_float_equal(tau, 1.0, 1e-12);
    assert_int_equal(nas_kendall_tau_b(a, rev, 5, &tau, &e), 0);
    assert_float_equal(tau, -1.0, 1e-12);
    /* one swapped neighbour pair: 5 concordant, 1 discordant of 6 pairs: 4/6 */
    const double x1[4] = {1, 2, 3, 4}, y1[4] = {1, 3, 2, 4};
    assert_int_equal(nas_kendall_tau_b(x1, y1, 4, &tau, &e), 0);
    assert_float_equal(tau, 4.0 / 6.0, 1e-12);
    /* ties: pairs (1,2) tied in x, (2,3) tied in y; C = 4, D = 0: 4 / sqrt(5 * 5) = 0.8 (tau-a
     * would be 4/6) */
    const double x2[4] = {1, 2, 2, 3}, y2[4] = {1, 2, 3, 3};
    assert_int_equal(nas_kendall_tau_b(x2, y2, 4, &tau, &e), 0);
    assert_float_equal(tau, 0.8, 1e-12);
    /* a pair tied in both counts in both: x ties (0,1) (2,3), y ties (0,1) (0,2) (1,2);
     * C = 2 ((0,3) and (1,3)), D = 0: 2 / sqrt((6-2) * (6-3)) */
    const double x3[4] = {1, 1, 2, 2}, y3[4] = {1, 1, 1, 2};
    assert_int_equal(nas_kendall_tau_b(x3, y3, 4, &tau, &e), 0);
    assert_float_equal(tau, 2.0 / sqrt(12.0), 1e-12);
    /* discordance with ties: x = 1 2 3 3, y = 3 1 2 2: pairs (0,1) D, (0,2) D, (0,3) D,
     * (1,2) C, (1,3) C, (2,3) tied in both: (2 - 3) / sqrt(5 * 5) */
    const double x4[4] = {1, 2, 3, 3}, y4[4] = {3, 1, 2, 2};
    assert_int_equal(nas_kendall_tau_b(x4, y4, 4, &tau, &e), 0);
    assert_float_equal(tau, -0.2, 1e-12);
    /* undefined: constant input, one pair only, NaN */
    const double c[4] = {2, 2, 2, 2}, nanv[4] = {1, NAN, 3, 4};
    assert_int_equal(nas_kendall_tau_b(c, x1, 4, &tau, &e), FN_EINVAL);
    assert_int_equal(nas_kendall_tau_b(x1, c, 4, &tau, &e), FN_EINVAL);
    assert_int_equal(nas_kendall_tau_b(x1, y1, 1, &tau, &e), FN_EINVAL);
    assert_int_equal(nas_kendall_tau_b(nanv, y1, 4, &tau, &e), FN_EINVAL);
}

/* ---- sharing ---- */

static int key_index(char (*keys)[NAS_SUPERNET_KEY_LEN], int n, const char *key)
{
    for (int i = 0; i < n; i++)
        if (strcmp(keys[i], key) == 0)
            return i;
    return -1;
}

/* The leading slice of stored tensor id that a net tensor of shape sh reads, compared with v. */
static int slice_equals(const nas_supernet_t *s, int id, const engine_param_info_t *in, const float *v)
{
    int nd;
    int64_t S[4];
    const float *w = nas_supernet_tensor(s, id, &nd, S);
    assert_non_null(w);
    assert_int_equal(nd, in->ndim);
    int64_t sh[4] = {1, 1, 1, 1}, q[4] = {1, 1, 1, 1};
    for (int d = 0; d < nd; d++) {
        sh[4 - nd + d] = in->shape[d];
        q[4 - nd + d] = S[d];
    }
    size_t k = 0;
    for (int64_t a = 0; a < sh[0]; a++)
        for (int64_t b = 0; b < sh[1]; b++)
            for (int64_t c = 0; c < sh[2]; c++)
                for (int64_t d = 0; d < sh[3]; d++, k++)
                    if (w[((a * q[1] + b) * q[2] + c) * q[3] + d] != v[k])
                        return 0;
    return 1;
}

static void test_macro_weights_shared(void **state)
{
    (void)state;
    nas_space_t sp = macro_space();
    nas_supernet_t *s = make(&sp, 5);
    err_t e = {0};
    /* A and B share the convolution at conv index 0 (B narrower); C is A with batch norm after
     * every convolution: its keys add the norms and drop the biases, and the local supernet
     * trains and scores A as C; D has an identity in front, so its first conv3x3 is at index 0
     * too. Pools are not counted: B's sepconv3x3 after a maxpool is convolution 1, like A's. */
    nas_genome_t A = macro(NAS_OP_CONV3, 8, 0, NAS_OP_SEP3, 8, 1, NAS_OP_CONV3, 4, 1);
    nas_genome_t B = macro(NAS_OP_CONV3, 4, 0, NAS_OP_MAXPOOL3, 4, 0, NAS_OP_SEP3, 8, 0);
    nas_genome_t C = macro(NAS_OP_CONV3, 8, 1, NAS_OP_SEP3, 8, 1, NAS_OP_CONV3, 4, 1);
    nas_genome_t D = macro(NAS_OP_IDENTITY, 4, 0, NAS_OP_CONV3, 8, 0, NAS_OP_CONV3, 4, 1);
    char ka[32][NAS_SUPERNET_KEY_LEN], kb[32][NAS_SUPERNET_KEY_LEN], kc[32][NAS_SUPERNET_KEY_LEN],
        kd[32][NAS_SUPERNET_KEY_LEN];
    int na, nb, nc, nd;
    assert_int_equal(nas_supernet_keys(s, &A, ka, NULL, 32, &na, &e), 0);
    assert_int_equal(nas_supernet_keys(s, &B, kb, NULL, 32, &nb, &e), 0);
    assert_int_equal(nas_supernet_keys(s, &C, kc, NULL, 32, &nc, &e), 0);
    assert_int_equal(nas_supernet_keys(s, &D, kd, NULL, 32, &nd, &e), 0);
    assert_string_equal(ka[0], "m0.conv.conv.weight");
    assert_string_equal(kb[0], ka[0]);
    assert_string_equal(kd[0], ka[0]);
    assert_string_equal(kc[0], ka[0]);
    assert_string_equal(ka[1], "m0.conv.conv.bias");
    assert_int_equal(key_index(ka, na, "m0.conv.bn.weight"), -1);
    assert_int_equal(key_index(kc, nc, "m0.conv.bn.weight"), 1);
    assert_true(key_index(ka, na, "m1.sep.dw.weight") >= 0);
    assert_true(key_index(kb, nb, "m1.sep.dw.weight") >= 0);
    /* one classifier per number of convolutions (the features it reads come from the last) */
    assert_string_equal(ka[na - 1], "tail.c3.1.bias");
    assert_string_equal(kb[nb - 1], "tail.c2.1.bias");
    assert_string_equal(kd[nd - 1], "tail.c2.1.bias");
    /* the same op at another conv index is another tensor */
    assert_true(key_index(kd, nd, "m1.conv.conv.weight") >= 0);
    assert_int_equal(key_index(ka, na, "m1.conv.conv.weight"), -1);

    /* train A's path, then B's model reads A's trained conv: B's 4 filters are A's first 4 */
    err_t e2 = {0};
    float x[32 * 784];
    uint8_t y[32];
    engine_source_gather(&g_data.train_src, g_data.train_idx, 32, x, y);
    double loss;
    assert_int_equal(nas_supernet_step(s, &A, x, y, 32, 0.05, &loss, &e2), 0);
    assert_true(isfinite(loss));
    int id = nas_supernet_find(s, "m0.conv.conv.weight");
    assert_true(id >= 0);
    int ndim;
    int64_t S[4];
    nas_supernet_tensor(s, id, &ndim, S);
    assert_int_equal(ndim, 4);
    assert_int_equal(S[0], 8);
    assert_int_equal(S[1], 1);
    engine_model_t *ma, *mb;
    assert_int_equal(nas_supernet_model(s, &A, &ma, &e), 0);
    assert_int_equal(nas_supernet_model(s, &B, &mb, &e), 0);
    engine_net_t *na_ = engine_model_net(ma), *nb_ = engine_model_net(mb);
    const engine_param_info_t *ia = engine_net_tensor(na_, 0), *ib = engine_net_tensor(nb_, 0);
    assert_int_equal(ia->shape[0], 8);
    assert_int_equal(ib->shape[0], 4);
    assert_true(slice_equals(s, id, ia, engine_net_params(na_) + ia->offset));
    assert_true(slice_equals(s, id, ib, engine_net_params(nb_) + ib->offset));
    /* [4,1,3,3] is the first half of [8,1,3,3] row-major */
    assert_memory_equal(engine_net_params(nb_) + ib->offset, engine_net_params(na_) + ia->offset, 36 * sizeof(float));
    /* and the classifier's first 8 columns (A ends with width 4: the first 4) are shared too */
    /* A is scored as its batch-norm twin C: the same model, the same weights */
    engine_model_t *mc;
    assert_int_equal(nas_supernet_model(s, &C, &mc, &e), 0);
    assert_int_equal(engine_model_num_params(mc), engine_model_num_params(ma));
    assert_memory_equal(engine_model_params(mc), engine_model_params(ma), engine_model_num_params(ma) * sizeof(float));
    engine_model_free(mc);
    engine_model_free(ma);
    engine_model_free(mb);
    nas_supernet_free(s);
}

static void test_cell_weights_shared(void **state)
{
    (void)state;
    nas_space_t sp = cell_space();
    nas_supernet_t *s = make(&sp, 6);
    err_t e = {0};
    enum { N = NAS_EDGE_NONE, K = NAS_EDGE_SKIP, C1 = NAS_EDGE_CONV1, C3 = NAS_EDGE_CONV3, P = NAS_EDGE_AVGPOOL3 };
    /* nodes 1 and 2 swapped: isomorphic, so the same path */
    nas_genome_t a = cell(C3, C1, N, K, P, C3, 1, 8), b = cell(C1, C3, N, K, C3, P, 1, 8);
    nas_genome_t c = cell(C3, C1, N, K, P, C3, 2, 4); /* two cells per stage, narrower */
    char ka[64][NAS_SUPERNET_KEY_LEN], kb[64][NAS_SUPERNET_KEY_LEN], kc[64][NAS_SUPERNET_KEY_LEN];
    int na, nb, nc;
    assert_int_equal(nas_supernet_keys(s, &a, ka, NULL, 64, &na, &e), 0);
    assert_int_equal(nas_supernet_keys(s, &b, kb, NULL, 64, &nb, &e), 0);
    assert_int_equal(nas_supernet_keys(s, &c, kc, NULL, 64, &nc, &e), 0);
    assert_int_equal(na, nb);
    for (int i = 0; i < na; i++)
        assert_string_equal(ka[i], kb[i]);
    assert_true(nc > na);
    /* every key of a is one of c's (c has the same edges in its first cells, at a narrower width) */
    for (int i = 0; i < na; i++)
        assert_true(key_index(kc, nc, ka[i]) >= 0);
    /* canonical form: nodes 1 and 2 swapped (edge 0-1 conv1x1 < conv3x3), so the conv3x3 into
     * the output is edge 4 (1-3) */
    assert_true(key_index(kc, nc, "s0.c1.e4.conv3x3.layers[1].weight") >= 0);
    assert_int_equal(key_index(ka, na, "s0.c1.e4.conv3x3.layers[1].weight"), -1);
    assert_true(key_index(ka, na, "s0.c0.e4.conv3x3.layers[1].weight") >= 0);
    assert_true(key_index(ka, na, "s1.res.body[1].weight") >= 0);
    /* training steps on the cell space run and keep the loss finite */
    train_steps(s, 3);
    assert_true(nas_supernet_num_tensors(s) > 0);
    nas_supernet_free(s);
}

/* A step on path A changes A's slices and nothing else: not other tensors, not the elements
 * of A's tensors outside the slice A reads. */
static void test_step_changes_only_its_path(void **state)
{
    (void)state;
    nas_space_t sp = macro_space();
    nas_supernet_t *s = make(&sp, 7);
    err_t e = {0};
    train_steps(s, 12); /* many paths: tensors at their full widths */
    int nt = nas_supernet_num_tensors(s);
    assert_true(nt > 8);
    float **snap = calloc((size_t)nt, sizeof *snap);
    size_t *len = calloc((size_t)nt, sizeof *len);
    for (int i = 0; i < nt; i++) {
        int nd;
        int64_t S[4];
        const float *w = nas_supernet_tensor(s, i, &nd, S);
        len[i] = (size_t)(S[0] * S[1] * S[2] * S[3]);
        snap[i] = malloc(len[i] * sizeof(float));
        memcpy(snap[i], w, len[i] * sizeof(float));
    }
    /* a narrow path: width 4 everywhere, so its slices are strictly inside width-8 tensors */
    nas_genome_t A = macro(NAS_OP_CONV3, 4, 1, NAS_OP_SEP3, 4, 1, NAS_OP_CONV3, 4, 1);
    char keys[32][NAS_SUPERNET_KEY_LEN];
    int nk;
    assert_int_equal(nas_supernet_keys(s, &A, keys, NULL, 32, &nk, &e), 0);
    float x[32 * 784];
    uint8_t y[32];
    engine_source_gather(&g_data.train_src, g_data.train_idx + 64, 32, x, y);
    assert_int_equal(nas_supernet_step(s, &A, x, y, 32, 0.1, NULL, &e), 0);
    engine_model_t *m;
    assert_int_equal(nas_supernet_model(s, &A, &m, &e), 0);
    engine_net_t *net = engine_model_net(m);
    assert_int_equal(engine_net_num_tensors(net), nk);
    int changed_inside = 0, checked_outside = 0;
    for (int i = 0; i < nt; i++) {
        int nd;
        int64_t S[4];
        const float *w = nas_supernet_tensor(s, i, &nd, S);
        int t = key_index(keys, nk, nas_supernet_tensor_key(s, i));
        if (t < 0) {
            assert_memory_equal(w, snap[i], len[i] * sizeof(float));
            continue;
        }
        const engine_param_info_t *in = engine_net_tensor(net, t);
        int64_t sh[4] = {1, 1, 1, 1}, q[4] = {1, 1, 1, 1};
        for (int d = 0; d < nd; d++) {
            sh[4 - nd + d] = in->shape[d];
            q[4 - nd + d] = S[d];
        }
        size_t k = 0;
        for (int64_t a = 0; a < q[0]; a++)
            for (int64_t b = 0; b < q[1]; b++)
                for (int64_t c = 0; c < q[2]; c++)
                    for (int64_t d = 0; d < q[3]; d++, k++) {
                        int inside = a < sh[0] && b < sh[1] && c < sh[2] && d < sh[3];
                        if (inside)
                            changed_inside += w[k] != snap[i][k];
                        else {
                            checked_outside++;
                            assert_true(w[k] == snap[i][k]);
                        }
                    }
    }
    assert_true(changed_inside > 100);
    assert_true(checked_outside > 100);
    engine_model_free(m);
    for (int i = 0; i < nt; i++)
        free(snap[i]);
    free(snap);
    free(len);
    nas_supernet_free(s);
}

/* With clip_norm c and no momentum, one step moves the path's weights by at most lr * c. */
static void test_gradient_clipped(void **state)
{
    (void)state;
    nas_space_t sp = macro_space();
    nas_supernet_opts_t o;
    nas_supernet_opts_default(&o);
    o.momentum = 0;
    o.clip_norm = 1e-3;
    nas_supernet_t *s;
    err_t e = {0};
    assert_int_equal(nas_supernet_create(&sp, &o, &s, &e), 0);
    nas_genome_t A = macro(NAS_OP_CONV3, 8, 0, NAS_OP_SEP3, 8, 1, NAS_OP_CONV3, 8, 0);
    float x[32 * 784];
    uint8_t y[32];
    engine_source_gather(&g_data.train_src, g_data.train_idx, 32, x, y);
    assert_int_equal(nas_supernet_step(s, &A, x, y, 32, 0.5, NULL, &e), 0); /* creates the tensors */
    int nt = nas_supernet_num_tensors(s);
    size_t total = 0;
    for (int i = 0; i < nt; i++) {
        int nd;
        int64_t S[4];
        nas_supernet_tensor(s, i, &nd, S);
        total += (size_t)(S[0] * S[1] * S[2] * S[3]);
    }
    float *before = malloc(total * sizeof(float));
    for (int i = 0, off = 0; i < nt; i++) {
        int nd;
        int64_t S[4];
        const float *w = nas_supernet_tensor(s, i, &nd, S);
        memcpy(before + off, w, (size_t)(S[0] * S[1] * S[2] * S[3]) * sizeof(float));
        off += (int)(S[0] * S[1] * S[2] * S[3]);
    }
    assert_int_equal(nas_supernet_step(s, &A, x, y, 32, 0.5, NULL, &e), 0);
    double sq = 0;
    for (int i = 0, off = 0; i < nt; i++) {
        int nd;
        int64_t S[4];
        const float *w = nas_supernet_tensor(s, i, &nd, S);
        for (int64_t k = 0; k < S[0] * S[1] * S[2] * S[3]; k++, off++)
            sq += (double)(w[k] - before[off]) * (w[k] - before[off]);
    }
    assert_true(sqrt(sq) > 0.4 * 0.5e-3);    /* it moved (the raw gradient is far above 1e-3) */
    assert_true(sqrt(sq) <= 0.5e-3 * 1.001); /* but no further than lr * clip */
    free(before);
    nas_supernet_free(s);
}

/* ---- batch-norm recalibration ---- */

static void test_recalibration(void **state)
{
    (void)state;
    nas_space_t sp = macro_space();
    nas_supernet_t *s = make(&sp, 8);
    err_t e = {0};
    train_steps(s, 4);
    /* conv3x3 + BN first: the first 4 buffers are that BN's running means */
    nas_genome_t A = macro(NAS_OP_CONV3, 4, 1, NAS_OP_CONV3, 8, 1, NAS_OP_MAXPOOL3, 4, 1);
    engine_model_t *m;
    assert_int_equal(nas_supernet_model(s, &A, &m, &e), 0);
    engine_net_t *net = engine_model_net(m);
    size_t np = engine_net_num_params(net), nb = engine_net_num_buffers(net);
    assert_int_equal(nb, 2 * (4 + 8 + 8));
    float *p0 = malloc(np * sizeof(float)), *b0 = malloc(nb * sizeof(float));
    memcpy(p0, engine_net_params(net), np * sizeof(float));
    memcpy(b0, engine_net_buffers(net), nb * sizeof(float));
    for (size_t i = 0; i < nb; i++) /* fresh statistics: mean 0 then variance 1, per layer */
        assert_true(b0[i] == 0.0f || b0[i] == 1.0f);

    /* 20 batches of 16 over exactly 320 images: the first BN's running mean is the mean of
     * the batch means, which for equal batches is the mean over the 320 images whatever the
     * partition; here measured batch by batch on fixed 16-image chunks */
    const int *idx = g_data.train_idx;
    double want[4] = {0};
    for (int b = 0; b < 20; b++) {
        assert_int_equal(nas_bn_recalibrate(m, &g_data.train_src, idx + 16 * b, 16, 1, 16, 99, &e), 0);
        for (int c = 0; c < 4; c++)
            want[c] += engine_net_buffers(net)[c] / 20.0;
    }
    assert_int_equal(nas_bn_recalibrate(m, &g_data.train_src, idx, 320, 20, 16, 1234, &e), 0);
    assert_memory_equal(engine_net_params(net), p0, np * sizeof(float)); /* weights untouched */
    int changed = 0;
    for (size_t i = 0; i < nb; i++)
        changed += engine_net_buffers(net)[i] != b0[i];
    assert_true(changed > (int)nb / 2);
    for (int c = 0; c < 4; c++)
        assert_float_equal(engine_net_buffers(net)[c], want[c], 1e-4 * (1 + fabs(want[c])));
    /* the same seed gives the same statistics; variances stay positive */
    float *b1 = malloc(nb * sizeof(float));
    memcpy(b1, engine_net_buffers(net), nb * sizeof(float));
    assert_int_equal(nas_bn_recalibrate(m, &g_data.train_src, idx, 320, 20, 16, 1234, &e), 0);
    assert_memory_equal(engine_net_buffers(net), b1, nb * sizeof(float));
    for (size_t i = 4; i < 8; i++)
        assert_true(engine_net_buffers(net)[i] > 0);
    engine_model_free(m);

    /* a model whose batch norms keep the default momentum would mix in the old statistics */
    json_t *arch;
    assert_int_equal(nas_genome_decode(&sp, &A, &arch, &e), 0);
    engine_model_t *plain;
    assert_int_equal(engine_model_create_shape(arch, 1, 28, 28, 10, &plain, &e), 0);
    assert_int_equal(nas_bn_recalibrate(plain, &g_data.train_src, idx, 320, 20, 16, 1, &e), FN_EINVAL);
    engine_model_free(plain);
    json_decref(arch);
    free(p0);
    free(b0);
    free(b1);
    nas_supernet_free(s);
}

/* ---- scoring ---- */

static void test_score_deterministic(void **state)
{
    (void)state;
    nas_space_t sp = macro_space();
    err_t e = {0};
    nas_genome_t A = macro(NAS_OP_CONV3, 8, 1, NAS_OP_SEP3, 8, 1, NAS_OP_CONV3, 8, 1);
    nas_supernet_score_t r[4];
    double sum_before = 0, sum_after = 0;
    for (int run = 0; run < 3; run++) {
        nas_supernet_t *s = make(&sp, run < 2 ? 11 : 12);
        train_steps(s, 10);
        if (run == 0)
            for (int i = 0; i < nas_supernet_num_tensors(s); i++) {
                int nd;
                int64_t S[4];
                const float *w = nas_supernet_tensor(s, i, &nd, S);
                for (int64_t k = 0; k < S[0] * S[1] * S[2] * S[3]; k++)
                    sum_before += w[k];
            }
        assert_int_equal(nas_supernet_score(s, &A, &g_data, &r[run], &e), 0);
        if (run == 0) {
            assert_int_equal(nas_supernet_score(s, &A, &g_data, &r[3], &e), 0); /* again, same supernet */
            for (int i = 0; i < nas_supernet_num_tensors(s); i++) {
                int nd;
                int64_t S[4];
                const float *w = nas_supernet_tensor(s, i, &nd, S);
                for (int64_t k = 0; k < S[0] * S[1] * S[2] * S[3]; k++)
                    sum_after += w[k];
            }
        }
        nas_supernet_free(s);
    }
    assert_true(sum_before == sum_after); /* scoring leaves the store alone */
    assert_true(r[0].accuracy >= 0 && r[0].accuracy <= 1 && isfinite(r[0].loss));
    assert_true(r[0].params > 0 && r[0].flops > 0);
    assert_true(r[0].loss == r[3].loss && r[0].accuracy == r[3].accuracy);
    assert_true(r[0].loss == r[1].loss && r[0].accuracy == r[1].accuracy); /* same seed, same training */
    assert_true(r[0].loss != r[2].loss);                                   /* another seed */
}

/* After a few epochs of path training the shared weights classify far above chance (10%),
 * and an untrained supernet does not. (Convolutions with batch norm only: the tiny budget a
 * unit test affords is enough for them; pools, identities and plain convolutions learn too,
 * only more slowly.) */
static void test_training_learns(void **state)
{
    (void)state;
    nas_space_t sp = space_from("{\"space\":{\"type\":\"macro\",\"layers\":3,\"widths\":[4,8],\"ops\":[\"conv3x3\","
                                "\"sepconv3x3\"],\"batchnorm\":true,\"reductions\":1}" STRATEGY);
    nas_supernet_opts_t o;
    nas_supernet_opts_default(&o);
    o.seed = 21;
    o.batch_size = 32;
    o.lr = 0.2;
    nas_supernet_t *s;
    err_t e = {0};
    assert_int_equal(nas_supernet_create(&sp, &o, &s, &e), 0);
    nas_genome_t A = macro(NAS_OP_CONV3, 8, 1, NAS_OP_CONV3, 8, 1, NAS_OP_CONV3, 8, 1);
    nas_supernet_score_t before, after;
    assert_int_equal(nas_supernet_score(s, &A, &g_data, &before, &e), 0);
    nas_supernet_stats_t st;
    int rc = nas_supernet_train(s, &g_data.train_src, g_data.train_idx, g_data.n_train, 5.0, &st, &e);
    if (rc)
        print_error("%s\n", e.msg);
    assert_int_equal(rc, 0);
    assert_int_equal(st.steps, 5 * (1280 / 32));
    assert_true(st.paths > 20);
    assert_int_equal(nas_supernet_score(s, &A, &g_data, &after, &e), 0);
    print_message("untrained %.3f, after %ld steps (%d paths) %.3f\n", before.accuracy, st.steps, st.paths,
                  after.accuracy);
    assert_true(before.accuracy < 0.2);
    assert_true(after.accuracy > 0.3);
    nas_supernet_free(s);
}

/* Several paths per update: {A, A} steps exactly like A alone (the average of equal gradients);
 * {A, B} steps both paths' weights once (one update, one step counted); training with k paths per
 * step takes one step per batch and draws k paths for each. */
static void test_paths_per_step(void **state)
{
    (void)state;
    nas_space_t sp = macro_space();
    nas_supernet_t *s1 = make(&sp, 9), *s2 = make(&sp, 9);
    err_t e = {0};
    float x[32 * 784];
    uint8_t y[32];
    engine_source_gather(&g_data.train_src, g_data.train_idx, 32, x, y);
    nas_genome_t A = macro(NAS_OP_CONV3, 8, 1, NAS_OP_SEP3, 8, 1, NAS_OP_CONV3, 4, 0);
    nas_genome_t B = macro(NAS_OP_SEP3, 4, 0, NAS_OP_MAXPOOL3, 4, 0, NAS_OP_CONV3, 8, 1);
    nas_genome_t AA[2] = {A, A}, AB[2] = {A, B};
    double l1, l2;
    for (int r = 0; r < 3; r++) { /* repeated: the velocity takes part from the second step on */
        assert_int_equal(nas_supernet_step(s1, &A, x, y, 32, 0.05, &l1, &e), 0);
        assert_int_equal(nas_supernet_step_paths(s2, AA, 2, x, y, 32, 0.05, &l2, &e), 0);
        assert_true(l1 == l2);
    }
    assert_int_equal(nas_supernet_num_tensors(s1), nas_supernet_num_tensors(s2));
    for (int i = 0; i < nas_supernet_num_tensors(s1); i++) {
        int n1, n2;
        int64_t S1[4], S2[4];
        const float *w1 = nas_supernet_tensor(s1, i, &n1, S1), *w2 = nas_supernet_tensor(s2, i, &n2, S2);
        assert_string_equal(nas_supernet_tensor_key(s1, i), nas_supernet_tensor_key(s2, i));
        assert_memory_equal(S1, S2, sizeof S1);
        assert_memory_equal(w1, w2, (size_t)(S1[0] * S1[1] * S1[2] * S1[3]) * sizeof(float));
    }
    /* {A, B}: B's own tensors (sepconv3x3 at depth 0) appear and change in the same update */
    assert_int_equal(nas_supernet_find(s2, "m0.sep.dw.weight"), -1);
    assert_int_equal(nas_supernet_step_paths(s2, AB, 2, x, y, 32, 0.05, &l2, &e), 0);
    assert_true(isfinite(l2));
    assert_true(nas_supernet_find(s2, "m0.sep.dw.weight") >= 0);
    assert_int_equal(nas_supernet_step_paths(s2, AB, 0, x, y, 32, 0.05, &l2, &e), FN_EINVAL);
    nas_supernet_free(s1);
    nas_supernet_free(s2);

    nas_supernet_opts_t o;
    nas_supernet_opts_default(&o);
    o.batch_size = 32;
    o.paths_per_step = 3;
    nas_supernet_t *s;
    assert_int_equal(nas_supernet_create(&sp, &o, &s, &e), 0);
    nas_supernet_stats_t st;
    assert_int_equal(nas_supernet_train(s, &g_data.train_src, g_data.train_idx, 32 * 4, 1.0, &st, &e), 0);
    assert_int_equal(st.steps, 4);
    assert_true(st.paths > 4 && st.paths <= 12);
    nas_supernet_free(s);
    o.paths_per_step = 0;
    assert_int_equal(nas_supernet_create(&sp, &o, &s, &e), FN_EINVAL);
}

static void test_bad_options(void **state)
{
    (void)state;
    nas_space_t sp = macro_space();
    nas_supernet_opts_t o;
    nas_supernet_opts_default(&o);
    o.recal_batches = 19; /* the spec's minimum is 20 */
    nas_supernet_t *s = NULL;
    err_t e = {0};
    assert_int_equal(nas_supernet_create(&sp, &o, &s, &e), FN_EINVAL);
    assert_null(s);
    nas_supernet_opts_default(&o);
    o.lr = 0;
    assert_int_equal(nas_supernet_create(&sp, &o, &s, &e), FN_EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kendall_tau_b),
        cmocka_unit_test(test_macro_weights_shared),
        cmocka_unit_test(test_cell_weights_shared),
        cmocka_unit_test(test_step_changes_only_its_path),
        cmocka_unit_test(test_gradient_clipped),
        cmocka_unit_test(test_recalibration),
        cmocka_unit_test(test_score_deterministic),
        cmocka_unit_test(test_training_learns),
        cmocka_unit_test(test_paths_per_step),
        cmocka_unit_test(test_bad_options),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

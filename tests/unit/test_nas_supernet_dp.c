/* nas/supernet_dp without MPI: the flat buffer a data-parallel step all-reduces (which tensors, at
 * which offsets, and where each float lands in the store when it is unpacked), one shard training
 * exactly like nas_supernet_train, and the shard split's checks. The MPI half (K ranks against
 * one process running the K shards) is tests/integration/nas_mpi_ws.sh. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/model.h"
#include "engine/nn.h"
#include "nas/eval.h"
#include "nas/genome.h"
#include "nas/slice.h"
#include "nas/supernet.h"
#include "nas/supernet_dp.h"
#include "tests/unit/nas_test.h"

static nas_data_t g_data;

static int group_setup(void **state)
{
    (void)state;
    setenv("FEDNAS_THREADS", "1", 1);
    nas_data_opts_t o = {.split_seed = 42, .val_size = 10000, .train_subset = 256, .val_subset = 64,
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

/* conv3x3 and conv5x5 share one 5x5 kernel per depth: a 3x3 path reads its centre. */
static nas_space_t space(void)
{
    return space_from("{\"space\":{\"type\":\"macro\",\"layers\":3,\"ops\":[\"conv3x3\",\"conv5x5\",\"sepconv3x3\","
                      "\"maxpool3x3\",\"identity\"],\"widths\":[4,8],\"reductions\":1}" STRATEGY);
}

static nas_genome_t genome(int op0, int w0, int op1, int w1)
{
    nas_genome_t g;
    memset(&g, 0, sizeof g);
    g.kind = NAS_SPACE_MACRO;
    g.nlayers = 3;
    g.layer[0] = (nas_macro_layer_t){.op = op0, .width = w0, .bn = 1, .reduce = 1};
    g.layer[1] = (nas_macro_layer_t){.op = op1, .width = w1, .bn = 1};
    g.layer[2] = (nas_macro_layer_t){.op = NAS_OP_IDENTITY, .width = 4, .bn = 1};
    return g;
}

static nas_supernet_t *make(const nas_space_t *sp, double momentum, double clip, int batch)
{
    nas_supernet_opts_t o;
    nas_supernet_opts_default(&o);
    o.seed = 9;
    o.batch_size = batch;
    o.momentum = momentum;
    o.clip_norm = clip;
    nas_supernet_t *s;
    err_t e = {0};
    assert_int_equal(nas_supernet_create(sp, &o, &s, &e), 0);
    return s;
}

/* A copy of every stored tensor's weights, concatenated in store order. */
static float *snapshot(const nas_supernet_t *s, size_t *n)
{
    size_t tot = 0;
    for (int i = 0; i < nas_supernet_num_tensors(s); i++) {
        int nd;
        int64_t sh[4];
        nas_supernet_tensor(s, i, &nd, sh);
        tot += (size_t)(sh[0] * sh[1] * sh[2] * sh[3]);
    }
    float *w = malloc(tot * sizeof *w);
    size_t at = 0;
    for (int i = 0; i < nas_supernet_num_tensors(s); i++) {
        int nd;
        int64_t sh[4];
        const float *t = nas_supernet_tensor(s, i, &nd, sh);
        size_t c = (size_t)(sh[0] * sh[1] * sh[2] * sh[3]);
        memcpy(w + at, t, c * sizeof *w);
        at += c;
    }
    *n = tot;
    return w;
}

/* The layout of a two-path step: per path, one segment per tensor of its model in the model's
 * order, back to back from the previous path's end, each naming the stored tensor of its key and
 * holding the path's slice (a 3x3 kernel: 9 taps per channel pair, not the stored 25); the buffer
 * ends with the k losses, the correct count and the failure count. */
static void test_layout(void **state)
{
    (void)state;
    nas_space_t sp = space();
    nas_supernet_t *s = make(&sp, 0.9, 5, 32);
    nas_genome_t g[2] = {genome(NAS_OP_CONV3, 4, NAS_OP_SEP3, 8), genome(NAS_OP_CONV5, 8, NAS_OP_MAXPOOL3, 8)};
    nas_supernet_dp_seg_t seg[64];
    int nseg = 0;
    size_t total = 0;
    err_t e = {0};
    int rc = nas_supernet_dp_layout(s, g, 2, seg, 64, &nseg, &total, &e);
    if (rc)
        print_error("%s\n", e.msg);
    assert_int_equal(rc, 0);
    char keys[2][32][NAS_SUPERNET_KEY_LEN];
    int cnt[2];
    for (int p = 0; p < 2; p++)
        assert_int_equal(nas_supernet_keys(s, &g[p], keys[p], NULL, 32, &cnt[p], &e), 0);
    assert_int_equal(nseg, cnt[0] + cnt[1]);
    size_t off = 0;
    int at[2] = {0, 0};
    for (int i = 0; i < nseg; i++) {
        int p = seg[i].path;
        assert_true(p == (i < cnt[0] ? 0 : 1));
        assert_int_equal(seg[i].offset, off);
        assert_int_equal(seg[i].store_id, nas_supernet_find(s, keys[p][at[p]]));
        at[p]++;
        off += seg[i].count;
    }
    assert_int_equal(total, off + 2 + 2);
    /* path 0's first tensor: conv3x3 with 4 outputs on the 1-channel image, read from the 5x5 frame */
    assert_string_equal(nas_supernet_tensor_key(s, seg[0].store_id), "m0.conv.conv.weight");
    assert_int_equal(seg[0].count, 4 * 1 * 3 * 3);
    int nd;
    int64_t sh[4];
    nas_supernet_tensor(s, seg[0].store_id, &nd, sh);
    assert_int_equal(sh[0] * sh[1] * sh[2] * sh[3], 8 * 1 * 5 * 5); /* widened by path 1's 8 outputs */
    /* path 1's conv5x5 reads the same stored kernel */
    assert_int_equal(seg[cnt[0]].store_id, seg[0].store_id);
    assert_int_equal(seg[cnt[0]].count, 8 * 1 * 5 * 5);
    nas_supernet_free(s);
}

/* Unpacking: with momentum 0, no clipping and lr 1, a step moves each stored element its path
 * reaches by exactly minus its float in the buffer (the slice view's element, the centre of a 5x5
 * kernel for a 3x3 path) and leaves every other element alone. */
static void test_unpack(void **state)
{
    (void)state;
    nas_space_t sp = space();
    nas_supernet_t *s = make(&sp, 0, 0, 32);
    nas_genome_t wide = genome(NAS_OP_CONV5, 8, NAS_OP_SEP3, 8), g = genome(NAS_OP_CONV3, 4, NAS_OP_SEP3, 4);
    nas_supernet_dp_seg_t seg[64];
    int nseg = 0;
    size_t total = 0;
    err_t e = {0};
    /* the wide path first, so that the stored tensors are larger than g's slices */
    assert_int_equal(nas_supernet_dp_layout(s, &wide, 1, seg, 64, &nseg, &total, &e), 0);
    assert_int_equal(nas_supernet_dp_layout(s, &g, 1, seg, 64, &nseg, &total, &e), 0);
    float *buf = calloc(total, sizeof *buf);
    for (size_t i = 0; i < total - 3; i++)
        buf[i] = 0.001f * (float)(1 + i % 97);
    size_t n0, n1;
    float *before = snapshot(s, &n0);
    assert_int_equal(nas_supernet_dp_apply(s, &g, 1, buf, total, 1.0, &e), 0);
    float *after = snapshot(s, &n1);
    assert_int_equal(n0, n1);
    /* where each stored tensor starts in the snapshots */
    int nt = nas_supernet_num_tensors(s);
    size_t *start = calloc((size_t)nt + 1, sizeof *start);
    for (int i = 0; i < nt; i++) {
        int nd;
        int64_t sh[4];
        nas_supernet_tensor(s, i, &nd, sh);
        start[i + 1] = start[i] + (size_t)(sh[0] * sh[1] * sh[2] * sh[3]);
    }
    char keys[32][NAS_SUPERNET_KEY_LEN];
    nas_slice_view_t views[32];
    int cnt = 0;
    assert_int_equal(nas_supernet_keys(s, &g, keys, views, 32, &cnt, &e), 0);
    assert_int_equal(cnt, nseg);
    engine_model_t *m;
    assert_int_equal(nas_supernet_model(s, &g, &m, &e), 0);
    assert_int_equal(engine_net_num_tensors(engine_model_net(m)), nseg);
    unsigned char *reached = calloc(n0, 1);
    size_t moved = 0;
    for (int i = 0; i < nseg; i++) {
        struct {
            int64_t shape[4];
        } t;
        int nd;
        nas_supernet_tensor(s, seg[i].store_id, &nd, t.shape);
        /* the path's own tensor (g has batch norm after each conv: its scoring model is its
         * training model) */
        const engine_param_info_t *in = engine_net_tensor(engine_model_net(m), i);
        assert_int_equal(in->ndim, nd);
        const int64_t *own = in->shape;
        size_t c = seg[i].count;
        NAS_SLICE_FOR(&t, nd, own, &views[i], {
            size_t q = start[seg[i].store_id] + o;
            assert_true(k < c);
            assert_true(after[q] == before[q] - buf[seg[i].offset + k]);
            reached[q] = 1;
            moved++;
        });
    }
    for (size_t q = 0; q < n0; q++)
        if (!reached[q])
            assert_true(after[q] == before[q]);
    assert_int_equal(moved, total - 3);
    /* the 3x3 kernel sat inside the stored 5x5 one */
    assert_string_equal(nas_supernet_tensor_key(s, seg[0].store_id), "m0.conv.conv.weight");
    assert_int_equal(seg[0].count, 4 * 9);
    engine_model_free(m);
    free(reached);
    free(start);
    free(before);
    free(after);
    free(buf);
    nas_supernet_free(s);
}

/* One process holding the only shard is nas_supernet_train, bit for bit (weights, velocities,
 * initialisation, over several epochs with two paths per step). */
static void test_one_shard_is_train(void **state)
{
    (void)state;
    nas_space_t sp = space();
    for (int kp = 1; kp <= 2; kp++) {
        nas_supernet_opts_t o;
        nas_supernet_opts_default(&o);
        o.seed = 4;
        o.batch_size = 32;
        o.paths_per_step = kp;
        nas_supernet_t *a, *b;
        err_t e = {0};
        assert_int_equal(nas_supernet_create(&sp, &o, &a, &e), 0);
        assert_int_equal(nas_supernet_create(&sp, &o, &b, &e), 0);
        nas_supernet_stats_t sa, sb;
        assert_int_equal(nas_supernet_train(a, &g_data.train_src, g_data.train_idx, 128, 2, &sa, &e), 0);
        nas_supernet_dp_t dp = {.shards = 1, .first = 0, .count = 1};
        int agreed = -1;
        assert_int_equal(nas_supernet_dp_train(b, &g_data.train_src, g_data.train_idx, 128, 2, &dp, &sb, &agreed, &e),
                         0);
        assert_int_equal(sa.steps, 8);
        assert_int_equal(sb.steps, sa.steps);
        assert_int_equal(sb.paths, sa.paths);
        assert_true(fabs(sb.loss - sa.loss) < 1e-6 && fabs(sb.accuracy - sa.accuracy) < 1e-12);
        assert_int_equal(nas_supernet_num_tensors(a), nas_supernet_num_tensors(b));
        assert_true(nas_supernet_checksum(a) == nas_supernet_checksum(b));
        nas_supernet_free(a);
        nas_supernet_free(b);
    }
}

/* Two shards in one process (the oracle of two ranks) train, differ from one shard only through
 * batch norm's per-shard statistics, and are reproducible; the checksum sees one changed bit. */
static void test_two_shards(void **state)
{
    (void)state;
    nas_space_t sp = space();
    uint64_t h[2];
    for (int r = 0; r < 2; r++) {
        nas_supernet_t *s = make(&sp, 0.9, 5, 32);
        nas_supernet_dp_t dp = {.shards = 2, .first = 0, .count = 2};
        nas_supernet_stats_t st;
        err_t e = {0};
        assert_int_equal(nas_supernet_dp_train(s, &g_data.train_src, g_data.train_idx, 128, 1, &dp, &st, NULL, &e),
                         0);
        assert_int_equal(st.steps, 4);
        assert_true(isfinite(st.loss) && st.loss > 0);
        h[r] = nas_supernet_checksum(s);
        if (r == 1) {
            int nd;
            int64_t sh[4];
            float *w = (float *)nas_supernet_tensor(s, 0, &nd, sh);
            uint32_t bits;
            memcpy(&bits, w, 4);
            bits ^= 1;
            memcpy(w, &bits, 4);
            assert_true(nas_supernet_checksum(s) != h[1]);
        }
        nas_supernet_free(s);
    }
    assert_true(h[0] == h[1]);
}

static int fake_sum(void *ctx, float *buf, size_t n, err_t *err)
{
    (void)ctx;
    (void)buf;
    (void)n;
    (void)err;
    return 0;
}

/* Bad splits are refused with the fix in the message. */
static void test_refusals(void **state)
{
    (void)state;
    nas_space_t sp = space();
    nas_supernet_t *s = make(&sp, 0.9, 5, 6);
    err_t e = {0};
    nas_supernet_dp_t part = {.shards = 2, .first = 0, .count = 1};
    assert_int_equal(nas_supernet_dp_train(s, &g_data.train_src, g_data.train_idx, 64, 1, &part, NULL, NULL, &e),
                     FN_EINVAL);
    assert_non_null(strstr(e.msg, "one process must compute them all"));
    nas_supernet_dp_t four = {.shards = 4, .first = 1, .count = 1, .allreduce = fake_sum};
    assert_int_equal(nas_supernet_dp_train(s, &g_data.train_src, g_data.train_idx, 64, 1, &four, NULL, NULL, &e),
                     FN_EINVAL);
    assert_non_null(strstr(e.msg, "raise nas.batch_size to >= 8"));
    nas_supernet_dp_t off = {.shards = 2, .first = 2, .count = 1, .allreduce = fake_sum};
    assert_int_equal(nas_supernet_dp_train(s, &g_data.train_src, g_data.train_idx, 64, 1, &off, NULL, NULL, &e),
                     FN_EINVAL);
    assert_int_equal(nas_supernet_num_tensors(s), 0);
    nas_supernet_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layout),
        cmocka_unit_test(test_unpack),
        cmocka_unit_test(test_one_shard_is_train),
        cmocka_unit_test(test_two_shards),
        cmocka_unit_test(test_refusals),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}

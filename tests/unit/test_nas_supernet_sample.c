/* nas/supernet_sample.c: the supernet's path draws. Uniform draws are nas_genome_random's
 * sequence on the supernet's draw stream (what training did before fair draws existed); fair
 * draws give every gene each of its choices exactly once per cycle (so over whole cycles the
 * counts are equal), stay valid genomes, differ between genes, and train deterministically. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/rng.h"
#include "nas/eval.h"
#include "nas/genome.h"
#include "nas/supernet.h"
#include "tests/unit/nas_test.h"

static nas_space_t macro_space(void)
{
    /* the shipped macro space (experiments/nas-re-macro.json) */
    return space_from("{\"space\":{\"type\":\"macro\",\"layers\":6,\"ops\":[\"conv3x3\",\"conv5x5\",\"sepconv3x3\","
                      "\"sepconv5x5\",\"dilconv3x3\",\"maxpool3x3\",\"avgpool3x3\",\"identity\"],\"widths\":[8,16,24],"
                      "\"batchnorm\":\"search\",\"reductions\":2}" STRATEGY);
}

static nas_supernet_t *make(const nas_space_t *sp, uint64_t seed, int sampling)
{
    nas_supernet_opts_t o;
    nas_supernet_opts_default(&o);
    o.seed = seed;
    o.batch_size = 32;
    o.sampling = sampling;
    nas_supernet_t *s;
    err_t e = {0};
    int rc = nas_supernet_create(sp, &o, &s, &e);
    if (rc)
        print_error("%s\n", e.msg);
    assert_int_equal(rc, 0);
    return s;
}

static int op_index(const nas_space_t *sp, int op)
{
    for (int i = 0; i < sp->nops; i++)
        if ((int)sp->ops[i] == op)
            return i;
    fail_msg("op %d is not in the space", op);
    return -1;
}

static int width_index(const nas_space_t *sp, int w)
{
    for (int i = 0; i < sp->nwidths; i++)
        if (sp->widths[i] == w)
            return i;
    fail_msg("width %d is not in the space", w);
    return -1;
}

/* Uniform: exactly nas_genome_random on the stream the supernet seeds from its seed ("path"). */
static void test_uniform_is_genome_random(void **state)
{
    (void)state;
    nas_space_t sp = macro_space();
    nas_supernet_t *s = make(&sp, 7, NAS_SUPERNET_SAMPLE_UNIFORM);
    rng_t r;
    rng_seed(&r, rng_derive(7, 0x70617468));
    err_t e = {0};
    for (int i = 0; i < 50; i++) {
        nas_genome_t a, b;
        assert_int_equal(nas_supernet_draw(s, &a, &e), 0);
        assert_int_equal(nas_genome_random(&sp, &r, &b, &e), 0);
        assert_memory_equal(&a, &b, sizeof a);
    }
    nas_supernet_free(s);
}

/* Fair, macro: in every block of nops draws each layer takes each op once; widths per block of
 * nwidths, batch norm per block of 2; every draw is valid; layers do not move in lockstep. */
static void test_fair_macro_cycles(void **state)
{
    (void)state;
    nas_space_t sp = macro_space();
    nas_supernet_t *s = make(&sp, 3, NAS_SUPERNET_SAMPLE_FAIR);
    enum { N = 240 }; /* a multiple of 8, 3 and 2 */
    static nas_genome_t g[N];
    err_t e = {0};
    for (int i = 0; i < N; i++) {
        assert_int_equal(nas_supernet_draw(s, &g[i], &e), 0);
        assert_int_equal(nas_genome_validate(&sp, &g[i], &e), 0);
    }
    int same_as_layer0 = 0;
    for (int l = 0; l < sp.layers; l++) {
        for (int b = 0; b < N; b += sp.nops) {
            int seen[8] = {0};
            for (int i = b; i < b + sp.nops; i++)
                seen[op_index(&sp, g[i].layer[l].op)]++;
            for (int k = 0; k < sp.nops; k++)
                assert_int_equal(seen[k], 1);
        }
        for (int b = 0; b < N; b += sp.nwidths) {
            int seen[3] = {0};
            for (int i = b; i < b + sp.nwidths; i++)
                seen[width_index(&sp, g[i].layer[l].width)]++;
            for (int k = 0; k < sp.nwidths; k++)
                assert_int_equal(seen[k], 1);
        }
        for (int b = 0; b < N; b += 2)
            assert_int_equal(g[b].layer[l].bn + g[b + 1].layer[l].bn, 1);
        int same = 1;
        for (int i = 0; i < N && same; i++)
            same = g[i].layer[l].op == g[i].layer[0].op;
        same_as_layer0 += l > 0 && same;
    }
    assert_int_equal(same_as_layer0, 0);
    /* the reductions are still placed: exactly sp.reductions per draw */
    for (int i = 0; i < N; i++) {
        int red = 0;
        for (int l = 0; l < sp.layers; l++)
            red += g[i].layer[l].reduce;
        assert_int_equal(red, sp.reductions);
    }
    nas_supernet_free(s);
}

/* Fair, cell: valid genomes, each edge's ops balanced (exactly, unless a draw was invalid and
 * replaced by a uniform one; the cycles keep the counts close either way). */
static void test_fair_cell_valid_and_balanced(void **state)
{
    (void)state;
    nas_space_t sp = space_from("{\"space\":{\"type\":\"cell\",\"widths\":[4,8],\"cells_per_stage\":[1,2],"
                                "\"stages\":2}" STRATEGY);
    nas_supernet_t *s = make(&sp, 5, NAS_SUPERNET_SAMPLE_FAIR);
    enum { N = 1000 };
    int cnt[NAS_CELL_EDGES][NAS_EDGE_OP_COUNT] = {{0}};
    err_t e = {0};
    for (int i = 0; i < N; i++) {
        nas_genome_t g;
        assert_int_equal(nas_supernet_draw(s, &g, &e), 0);
        assert_int_equal(nas_genome_validate(&sp, &g, &e), 0);
        for (int k = 0; k < NAS_CELL_EDGES; k++)
            cnt[k][g.edge[k]]++;
    }
    for (int k = 0; k < NAS_CELL_EDGES; k++)
        for (int o = 0; o < sp.nedge_ops; o++) {
            int c = cnt[k][sp.edge_ops[o]];
            assert_true(c > 0.8 * N / sp.nedge_ops && c < 1.2 * N / sp.nedge_ops);
        }
    nas_supernet_free(s);
}

/* Training with fair draws: reproducible for a seed, many distinct paths, a finite loss; an
 * unknown sampling mode is refused. */
static void test_fair_training(void **state)
{
    (void)state;
    setenv("FEDNAS_THREADS", "1", 1);
    nas_data_opts_t o = {.split_seed = 42, .val_size = 10000, .train_subset = 320, .val_subset = 10,
                         .test_subset = 10};
    nas_data_t d;
    err_t e = {0};
    if (nas_data_load(&o, &d, &e) < 0)
        fail_msg("%s", e.msg);
    nas_space_t sp = macro_space();
    nas_supernet_stats_t st[2];
    for (int r = 0; r < 2; r++) {
        nas_supernet_t *s = make(&sp, 11, NAS_SUPERNET_SAMPLE_FAIR);
        assert_int_equal(nas_supernet_train(s, &d.train_src, d.train_idx, d.n_train, 1.0, &st[r], &e), 0);
        nas_supernet_free(s);
    }
    assert_int_equal(st[0].steps, 10);
    assert_true(st[0].paths > 5);
    assert_true(isfinite(st[0].loss));
    assert_true(st[0].loss == st[1].loss);
    nas_data_free(&d);

    nas_supernet_opts_t bad;
    nas_supernet_opts_default(&bad);
    bad.sampling = 2;
    nas_supernet_t *s = NULL;
    assert_int_equal(nas_supernet_create(&sp, &bad, &s, &e), FN_EINVAL);
    assert_null(s);
    assert_non_null(strstr(e.msg, "sampling"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_uniform_is_genome_random),
        cmocka_unit_test(test_fair_macro_cycles),
        cmocka_unit_test(test_fair_cell_valid_and_balanced),
        cmocka_unit_test(test_fair_training),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

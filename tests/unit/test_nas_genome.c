/* nas/genome: JSON round trips, canonical hashes (isomorphic cells and macro genomes hash
 * equal, different ones do not), 10,000 chained mutations that all decode and build on the
 * engine, hand-counted parameters and FLOPs, and impossible candidates refused. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/nn.h"
#include "nas/genome.h"
#include "tests/unit/nas_test.h"

static nas_space_t macro_space(void)
{
    return space_from("{\"space\":{\"type\":\"macro\",\"layers\":8,\"widths\":[4,8,16],\"batchnorm\":\"search\","
                      "\"reductions\":2}" STRATEGY);
}
static nas_space_t cell_space(void)
{
    return space_from("{\"space\":{\"type\":\"cell\",\"widths\":[4,8],\"cells_per_stage\":[1,2],\"stages\":3}" STRATEGY);
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

static void hash_of(const nas_space_t *sp, const nas_genome_t *g, char *h) { nas_genome_hash(sp, g, h); }

static void roundtrip(const nas_space_t *sp, uint64_t seed)
{
    rng_t r;
    rng_seed(&r, seed);
    for (int i = 0; i < 300; i++) {
        nas_genome_t g, back;
        err_t e = {0};
        assert_int_equal(nas_genome_random(sp, &r, &g, &e), 0);
        json_t *j;
        assert_int_equal(nas_genome_to_json(sp, &g, &j, &e), 0);
        char *text = json_dumps(j, JSON_COMPACT);
        json_decref(j);
        json_error_t je;
        json_t *j2 = json_loads(text, 0, &je);
        assert_non_null(j2);
        int rc = nas_genome_from_json(sp, j2, &back, &e);
        if (rc)
            print_error("%s: %s\n", text, e.msg);
        assert_int_equal(rc, 0);
        assert_memory_equal(&g, &back, sizeof g);
        char h1[NAS_HASH_LEN], h2[NAS_HASH_LEN];
        hash_of(sp, &g, h1);
        hash_of(sp, &back, h2);
        assert_string_equal(h1, h2);
        assert_int_equal(strlen(h1), 64);
        json_decref(j2);
        free(text);
    }
}

static void test_roundtrip(void **state)
{
    (void)state;
    nas_space_t m = macro_space(), c = cell_space();
    roundtrip(&m, 1);
    roundtrip(&c, 2);
    /* a genome from another space, an unknown op, a width not offered: refused */
    err_t e = {0};
    nas_genome_t g;
    const char *bad[] = {
        "{\"space\":\"cell\",\"edges\":[\"skip\",\"skip\",\"skip\",\"skip\",\"skip\",\"skip\"],\"cells_per_stage\":1,"
        "\"width\":4}",
        "{\"space\":\"macro\",\"layers\":[{\"op\":\"conv7x7\",\"width\":4,\"bn\":true,\"reduce\":0}]}",
        "{\"space\":\"cell\",\"edges\":[\"skip\",\"skip\",\"skip\",\"skip\",\"skip\",\"skip\"],\"cells_per_stage\":1,"
        "\"width\":5}",
        "{\"space\":\"cell\",\"edges\":[\"none\",\"none\",\"none\",\"none\",\"none\",\"none\"],\"cells_per_stage\":1,"
        "\"width\":4}",
    };
    const nas_space_t *sps[] = {&m, &m, &c, &c};
    const char *why[] = {"cell genome for a macro space", "unknown", "width 5", "no path"};
    for (int i = 0; i < 4; i++) {
        json_error_t je;
        json_t *j = json_loads(bad[i], 0, &je);
        assert_non_null(j);
        assert_int_equal(nas_genome_from_json(sps[i], j, &g, &e), FN_EINVAL);
        if (!strstr(e.msg, why[i]))
            print_error("\"%s\" lacks \"%s\"\n", e.msg, why[i]);
        assert_non_null(strstr(e.msg, why[i]));
        json_decref(j);
    }
}

enum { N = NAS_EDGE_NONE, S = NAS_EDGE_SKIP, C1 = NAS_EDGE_CONV1, C3 = NAS_EDGE_CONV3, P = NAS_EDGE_AVGPOOL3 };

static int same_hash(const nas_space_t *sp, nas_genome_t a, nas_genome_t b)
{
    char ha[NAS_HASH_LEN], hb[NAS_HASH_LEN];
    hash_of(sp, &a, ha);
    hash_of(sp, &b, hb);
    return strcmp(ha, hb) == 0;
}

static void test_isomorphic_cells(void **state)
{
    (void)state;
    nas_space_t sp = cell_space();
    /* nodes 1 and 2 relabelled */
    assert_true(same_hash(&sp, cell(C3, N, N, S, C1, N, 1, 4), cell(N, C3, N, S, N, C1, 1, 4)));
    assert_true(same_hash(&sp, cell(C3, P, N, S, C1, C3, 2, 8), cell(P, C3, N, S, C3, C1, 2, 8)));
    /* a dead branch: node 2 reaches nothing */
    assert_true(same_hash(&sp, cell(C3, C3, N, N, C1, N, 1, 4), cell(C3, N, N, N, C1, N, 1, 4)));
    /* an edge out of an unreachable node */
    assert_true(same_hash(&sp, cell(N, S, C3, N, N, C1, 1, 4), cell(N, S, N, N, N, C1, 1, 4)));
    /* an edge into a node that never reaches the output */
    assert_true(same_hash(&sp, cell(C1, S, P, C3, N, N, 1, 4), cell(N, N, N, C3, N, N, 1, 4)));

    /* different networks */
    assert_false(same_hash(&sp, cell(C3, N, N, S, C1, N, 1, 4), cell(C1, N, N, S, C3, N, 1, 4)));
    assert_false(same_hash(&sp, cell(C3, N, N, S, C1, N, 1, 4), cell(C3, N, N, S, C1, N, 2, 4)));
    assert_false(same_hash(&sp, cell(C3, N, N, S, C1, N, 1, 4), cell(C3, N, N, S, C1, N, 1, 8)));
    assert_false(same_hash(&sp, cell(C3, N, N, S, C1, N, 1, 4), cell(C3, N, N, N, C1, N, 1, 4)));
    /* with an edge 1-2 the nodes are ordered: no relabelling */
    assert_false(same_hash(&sp, cell(C3, S, C1, N, N, P, 1, 4), cell(S, C3, C1, N, N, P, 1, 4)));

    /* all 5^6 cells: every relabelling hashes like its original, and the canonical forms are
     * fixed points (canonical(canonical(g)) = canonical(g)). */
    int valid = 0, unique = 0;
    char(*seen)[NAS_HASH_LEN] = malloc(15625 * sizeof *seen);
    for (int code = 0; code < 15625; code++) {
        int e[6], c = code;
        for (int k = 0; k < 6; k++, c /= 5)
            e[k] = c % 5;
        nas_genome_t g = cell(e[0], e[1], e[2], e[3], e[4], e[5], 1, 4), cg, ccg;
        if (nas_genome_validate(&sp, &g, NULL) != 0)
            continue;
        valid++;
        nas_genome_canonical(&sp, &g, &cg);
        nas_genome_canonical(&sp, &cg, &ccg);
        assert_memory_equal(&cg, &ccg, sizeof cg);
        if (e[2] == N)
            assert_true(same_hash(&sp, g, cell(e[1], e[0], N, e[3], e[5], e[4], 1, 4)));
        char h[NAS_HASH_LEN];
        hash_of(&sp, &g, h);
        int dup = 0;
        for (int u = 0; u < unique && !dup; u++)
            dup = strcmp(seen[u], h) == 0;
        if (!dup)
            memcpy(seen[unique++], h, NAS_HASH_LEN);
    }
    free(seen);
    print_message("cells: %d of 15625 have a path; %d distinct canonical hashes\n", valid, unique);
    /* counted independently (a Python enumeration over node permutations of the pruned edge
     * sets, run when this test was written): 15284 cells with a path, 8764 isomorphism classes */
    assert_int_equal(valid, 15284);
    assert_int_equal(unique, 8764);
}

static nas_macro_layer_t ml(int op, int w, int bn, int red) { return (nas_macro_layer_t){op, w, bn, red}; }

static void test_isomorphic_macro(void **state)
{
    (void)state;
    nas_space_t sp = space_from("{\"space\":{\"type\":\"macro\",\"layers\":3,\"widths\":[4,8],"
                                "\"batchnorm\":\"search\",\"reductions\":1}" STRATEGY);
    nas_genome_t a = {.kind = NAS_SPACE_MACRO, .nlayers = 3}, b;
    a.layer[0] = ml(NAS_OP_CONV3, 4, 1, 1);
    a.layer[1] = ml(NAS_OP_IDENTITY, 8, 1, 0);
    a.layer[2] = ml(NAS_OP_MAXPOOL3, 8, 0, 0);
    b = a; /* the reduction after the identity acts where it did after the conv */
    b.layer[0].reduce = 0;
    b.layer[1].reduce = 1;
    assert_true(same_hash(&sp, a, b));
    b = a; /* identity's width and bn, a pool's width: unused */
    b.layer[1] = ml(NAS_OP_IDENTITY, 4, 0, 0);
    b.layer[2].width = 4;
    assert_true(same_hash(&sp, a, b));
    b = a; /* identity moved */
    b.layer[0] = ml(NAS_OP_IDENTITY, 4, 0, 0);
    b.layer[1] = ml(NAS_OP_CONV3, 4, 1, 1);
    assert_true(same_hash(&sp, a, b));
    /* different: the reduction after the pool, a width, a bn flag */
    b = a;
    b.layer[0].reduce = 0;
    b.layer[2].reduce = 1;
    assert_false(same_hash(&sp, a, b));
    b = a;
    b.layer[0].width = 8;
    assert_false(same_hash(&sp, a, b));
    b = a;
    b.layer[2].bn = 1;
    assert_false(same_hash(&sp, a, b));
}

static void mutate_chain(const nas_space_t *sp, int steps, uint64_t seed)
{
    rng_t r;
    rng_seed(&r, seed);
    nas_genome_t g;
    err_t e = {0};
    assert_int_equal(nas_genome_random(sp, &r, &g, &e), 0);
    double pmin = 1e30, pmax = 0;
    for (int i = 0; i < steps; i++) {
        nas_genome_t child;
        char desc[128];
        int rc = nas_genome_mutate(sp, &r, &g, &child, desc, sizeof desc, &e);
        if (rc)
            print_error("step %d: %s\n", i, e.msg);
        assert_int_equal(rc, 0);
        assert_int_equal(nas_genome_validate(sp, &child, &e), 0);
        assert_false(same_hash(sp, g, child));
        json_t *m;
        assert_int_equal(nas_genome_decode(sp, &child, &m, &e), 0);
        engine_net_t *net;
        rc = engine_net_create(m, sp->in_c, sp->in_h, sp->in_w, sp->classes, &net, &e);
        if (rc)
            print_error("step %d (%s): %s\n", i, desc, e.msg);
        assert_int_equal(rc, 0);
        double np = (double)engine_net_num_params(net);
        pmin = np < pmin ? np : pmin;
        pmax = np > pmax ? np : pmax;
        assert_true(np > 0 && engine_net_flops_per_sample(net) > 0);
        engine_net_free(net);
        json_decref(m);
        /* every tenth step a crossover with a fresh draw, to leave the mutation chain */
        if (i % 10 == 9) {
            nas_genome_t other, x;
            assert_int_equal(nas_genome_random(sp, &r, &other, &e), 0);
            nas_genome_crossover(sp, &r, &child, &other, &x);
            assert_int_equal(nas_genome_validate(sp, &x, &e), 0);
            child = x;
        }
        g = child;
    }
    print_message("%s: %d mutations built; parameters %.0f .. %.0f\n", sp->kind == NAS_SPACE_CELL ? "cell" : "macro",
                  steps, pmin, pmax);
}

static void test_mutations_build(void **state)
{
    (void)state;
    nas_space_t m = macro_space(), c = cell_space();
    mutate_chain(&m, 10000, 7);
    mutate_chain(&c, 10000, 8);
}

static void test_cost_by_hand(void **state)
{
    (void)state;
    nas_space_t sp = space_from("{\"space\":{\"type\":\"macro\",\"layers\":3,\"widths\":[4,8],"
                                "\"batchnorm\":\"search\",\"reductions\":1}" STRATEGY);
    nas_genome_t g = {.kind = NAS_SPACE_MACRO, .nlayers = 3};
    g.layer[0] = ml(NAS_OP_CONV3, 4, 1, 1);
    g.layer[1] = ml(NAS_OP_SEP3, 8, 0, 0);
    g.layer[2] = ml(NAS_OP_IDENTITY, 4, 0, 0);
    double params, flops;
    err_t e = {0};
    assert_int_equal(nas_genome_cost(&sp, &g, &params, &flops, &e), 0);
    /* conv 4x1x3x3 (no bias: BN follows) + BN 2x4; depthwise 4x1x3x3 + pointwise 8x4 + bias 8;
     * linear 10x8 + 10 */
    assert_float_equal(params, 36 + 8 + 36 + 32 + 8 + 90, 0);
    /* at 28x28: 2*9*4*784; after the reduction, at 14x14: 2*9*4*196 + 2*4*8*196; linear 2*8*10 */
    assert_float_equal(flops, 2.0 * 9 * 4 * 784 + 2.0 * 9 * 4 * 196 + 2.0 * 4 * 8 * 196 + 2.0 * 80, 0);

    nas_space_t cs = cell_space();
    nas_genome_t c = cell(N, N, N, C3, N, N, 1, 4); /* one edge: conv3x3 from input to output */
    assert_int_equal(nas_genome_cost(&cs, &c, &params, &flops, &e), 0);
    /* stem 4x1x9 + BN 8; per stage s (C = 4 << s) a cell conv3x3 C*C*9 + BN 2C; reductions
     * into stages 1, 2: 3x3 s2 (C/2 -> C) + BN + 3x3 + BN + 1x1 s2 shortcut + BN; final BN 2*16;
     * linear 16*10+10 */
    double want = 36 + 8;
    for (int s = 0; s < 3; s++) {
        int C = 4 << s;
        want += C * C * 9 + 2 * C;
        if (s > 0)
            want += C * (C / 2) * 9 + 2 * C + C * C * 9 + 2 * C + C * (C / 2) + 2 * C;
    }
    want += 32 + 170;
    assert_float_equal(params, want, 0);
}

static void test_impossible(void **state)
{
    (void)state;
    nas_space_t sp = macro_space();
    nas_genome_t g;
    rng_t r;
    rng_seed(&r, 1);
    err_t e = {0};
    assert_int_equal(nas_genome_random(&sp, &r, &g, &e), 0);
    for (int i = 0; i < g.nlayers; i++)
        g.layer[i].reduce = 1; /* 8 halvings of 28x28 */
    sp.reductions = 8;
    assert_int_equal(nas_genome_validate(&sp, &g, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "below 1x1"));
    nas_space_t cs = cell_space();
    nas_genome_t c = cell(C3, N, S, N, N, N, 1, 4); /* 0->1->2, nothing into 3 */
    assert_int_equal(nas_genome_validate(&cs, &c, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "no path"));
    json_t *m = NULL;
    assert_int_equal(nas_genome_decode(&cs, &c, &m, &e), FN_EINVAL);
    assert_null(m);
    /* a space of only "none" and one op: random draws are still all valid */
    nas_space_t few = space_from("{\"space\":{\"type\":\"cell\",\"ops\":[\"none\",\"conv3x3\"],"
                                 "\"cells_per_stage\":[1]}" STRATEGY);
    for (int i = 0; i < 500; i++) {
        assert_int_equal(nas_genome_random(&few, &r, &c, &e), 0);
        assert_int_equal(nas_genome_validate(&few, &c, &e), 0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),         cmocka_unit_test(test_isomorphic_cells),
        cmocka_unit_test(test_isomorphic_macro),  cmocka_unit_test(test_mutations_build),
        cmocka_unit_test(test_cost_by_hand),      cmocka_unit_test(test_impossible),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

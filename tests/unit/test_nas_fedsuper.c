/* nas/fedsuper: the federated search's supernet: paths cut as leading slices of shared tensors,
 * each element averaged over the sites that trained a path reading it (and only those), per-genome
 * batch-norm statistics, and the checkpoint block's round trip and refusals. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "nas/fedsuper.h"
#include "nas_test.h"

#define SPACE(BN)                                                                                                     \
    "{\"space\":{\"type\":\"macro\",\"layers\":2,\"ops\":[\"conv3x3\",\"identity\"],\"widths\":[4,8],"             \
    "\"batchnorm\":" BN ",\"reductions\":1}" STRATEGY

static nas_genome_t macro(int op0, int w0, int op1, int w1, int bn)
{
    nas_genome_t g;
    memset(&g, 0, sizeof g);
    g.kind = NAS_SPACE_MACRO;
    g.nlayers = 2;
    g.layer[0] = (nas_macro_layer_t){.op = op0, .width = w0, .bn = bn, .reduce = 1};
    g.layer[1] = (nas_macro_layer_t){.op = op1, .width = w1, .bn = bn, .reduce = 0};
    return g;
}

static float *slice(nas_fedsuper_t *fs, const nas_fedsuper_path_t *p)
{
    float *v = malloc(p->m * sizeof *v);
    assert_non_null(v);
    nas_fedsuper_slice(fs, p, v);
    return v;
}

static float *filled(size_t m, float x)
{
    float *v = malloc(m * sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < m; i++)
        v[i] = x;
    return v;
}

static void close_to(float got, float want)
{
    if (fabsf(got - want) > 1e-4f * (1 + fabsf(want)))
        fail_msg("got %.7g, want %.7g", got, want);
}

/* A narrow and a wide path share the narrow one's leading slices: a shared element moves by the
 * weighted mean of both sites' changes, an element only the wide path reads by its site's alone,
 * and a tensor no site trained keeps its values. */
static void test_per_parameter_mean(void **state)
{
    (void)state;
    nas_space_t sp = space_from(SPACE("false"));
    nas_fedsuper_t *fs;
    err_t e = {0};
    assert_int_equal(nas_fedsuper_create(&sp, 7, &fs, &e), 0);
    nas_genome_t ga = macro(NAS_OP_CONV3, 4, NAS_OP_IDENTITY, 4, 0), gb = macro(NAS_OP_CONV3, 8, NAS_OP_IDENTITY, 4, 0),
                 gc = macro(NAS_OP_CONV3, 4, NAS_OP_CONV3, 4, 0);
    nas_fedsuper_path_t *pa, *pb, *pc;
    assert_int_equal(nas_fedsuper_path(fs, &ga, &pa, &e), 0);
    assert_int_equal(nas_fedsuper_path(fs, &gb, &pb, &e), 0);
    assert_int_equal(nas_fedsuper_path(fs, &gc, &pc, &e), 0);
    assert_true(pb->np > pa->np);
    assert_int_equal(pa->m, pa->np); /* no batch norm: no statistics */
    float *a0 = slice(fs, pa), *b0 = slice(fs, pb), *c0 = slice(fs, pc);
    /* the first layer's weights: b's first 4 filters are a's */
    for (size_t k = 0; k < 4 * 9; k++)
        assert_true(a0[k] == b0[k]);
    float *da = filled(pa->m, 1.0f), *db = filled(pb->m, 3.0f);
    assert_int_equal(nas_fedsuper_add(fs, pa, da, 1.0, &e), 0);
    assert_int_equal(nas_fedsuper_add(fs, pb, db, 3.0, &e), 0);
    assert_true(nas_fedsuper_apply(fs) > 0);
    float *a1 = slice(fs, pa), *b1 = slice(fs, pb), *c1 = slice(fs, pc);
    for (size_t k = 0; k < pa->m; k++)
        close_to(a1[k] - a0[k], 2.5f); /* (1 * 1 + 3 * 3) / (1 + 3) */
    size_t only_b = 0;
    for (size_t k = 0; k < pb->m; k++) {
        float d = b1[k] - b0[k];
        if (fabsf(d - 3.0f) < 1e-4f)
            only_b++;
        else
            close_to(d, 2.5f);
    }
    assert_int_equal(only_b, pb->np - pa->np);
    /* c reads a's first layer (trained) and a second conv no site trained */
    size_t same = 0;
    for (size_t k = 0; k < pc->m; k++)
        same += c1[k] == c0[k];
    assert_true(same > 0 && same < pc->m);
    for (size_t k = 0; k < 4 * 9; k++)
        close_to(c1[k] - c0[k], 2.5f);
    /* a second apply without updates changes nothing */
    assert_int_equal(nas_fedsuper_apply(fs), 0);
    free(a0), free(b0), free(c0), free(a1), free(b1), free(c1), free(da), free(db);
    nas_fedsuper_path_free(pa);
    nas_fedsuper_path_free(pb);
    nas_fedsuper_path_free(pc);
    nas_fedsuper_free(fs);
}

/* The store depends on the seed and the paths, not on when a slice is cut; a change that is not
 * finite is refused whole. */
static void test_init_and_refusals(void **state)
{
    (void)state;
    nas_space_t sp = space_from(SPACE("false"));
    nas_fedsuper_t *f1, *f2;
    err_t e = {0};
    assert_int_equal(nas_fedsuper_create(&sp, 3, &f1, &e), 0);
    assert_int_equal(nas_fedsuper_create(&sp, 3, &f2, &e), 0);
    nas_genome_t g = macro(NAS_OP_CONV3, 8, NAS_OP_CONV3, 4, 0);
    nas_fedsuper_path_t *p1, *p2;
    assert_int_equal(nas_fedsuper_path(f1, &g, &p1, &e), 0);
    assert_int_equal(nas_fedsuper_path(f2, &g, &p2, &e), 0);
    float *v1 = slice(f1, p1), *v2 = slice(f2, p2);
    assert_memory_equal(v1, v2, p1->m * sizeof *v1);
    float *bad = filled(p1->m, 0.5f);
    bad[p1->m / 2] = NAN;
    assert_int_equal(nas_fedsuper_add(f1, p1, bad, 1.0, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "not finite"));
    assert_int_equal(nas_fedsuper_add(f1, p1, v1, 0.0, &e), FN_EINVAL);
    assert_int_equal(nas_fedsuper_apply(f1), 0);
    free(v1), free(v2), free(bad);
    nas_fedsuper_path_free(p1);
    nas_fedsuper_path_free(p2);
    nas_fedsuper_free(f1);
    nas_fedsuper_free(f2);
}

/* Batch-norm statistics belong to one genome: a site's change of them moves that genome's only. */
static void test_statistics_per_genome(void **state)
{
    (void)state;
    nas_space_t sp = space_from(SPACE("true"));
    nas_fedsuper_t *fs;
    err_t e = {0};
    assert_int_equal(nas_fedsuper_create(&sp, 5, &fs, &e), 0);
    nas_genome_t ga = macro(NAS_OP_CONV3, 4, NAS_OP_IDENTITY, 4, 1), gb = macro(NAS_OP_CONV3, 4, NAS_OP_CONV3, 4, 1);
    nas_fedsuper_path_t *pa, *pb;
    assert_int_equal(nas_fedsuper_path(fs, &ga, &pa, &e), 0);
    assert_int_equal(nas_fedsuper_path(fs, &gb, &pb, &e), 0);
    assert_true(pa->m > pa->np && pb->m > pb->np);
    float *b0 = slice(fs, pb), *da = filled(pa->m, 0.25f);
    assert_int_equal(nas_fedsuper_add(fs, pa, da, 2.0, &e), 0);
    nas_fedsuper_apply(fs);
    float *a1 = slice(fs, pa), *b1 = slice(fs, pb);
    close_to(a1[pa->m - 1], 1.0f + 0.25f); /* a running variance, initialised to 1 */
    for (size_t k = pb->np; k < pb->m; k++)
        assert_true(b1[k] == b0[k]);
    free(b0), free(da), free(a1), free(b1);
    nas_fedsuper_path_free(pa);
    nas_fedsuper_path_free(pb);
    nas_fedsuper_free(fs);
}

/* The checkpoint block restores the same slices; a cut or altered block is refused. */
static void test_save_load(void **state)
{
    (void)state;
    nas_space_t sp = space_from(SPACE("\"search\""));
    nas_fedsuper_t *fs, *back;
    err_t e = {0};
    assert_int_equal(nas_fedsuper_create(&sp, 9, &fs, &e), 0);
    assert_int_equal(nas_fedsuper_create(&sp, 1, &back, &e), 0);
    nas_genome_t ga = macro(NAS_OP_CONV3, 4, NAS_OP_CONV3, 8, 1), gb = macro(NAS_OP_CONV3, 8, NAS_OP_IDENTITY, 4, 0);
    nas_fedsuper_path_t *pa, *pb;
    assert_int_equal(nas_fedsuper_path(fs, &ga, &pa, &e), 0);
    assert_int_equal(nas_fedsuper_path(fs, &gb, &pb, &e), 0);
    float *d = filled(pa->m, -0.125f);
    assert_int_equal(nas_fedsuper_add(fs, pa, d, 1.0, &e), 0);
    nas_fedsuper_apply(fs);
    void *blob;
    size_t len;
    assert_int_equal(nas_fedsuper_save(fs, &blob, &len, &e), 0);
    assert_int_equal(nas_fedsuper_load(back, blob, len - 1, &e), FN_EINVAL);
    assert_int_equal(nas_fedsuper_load(back, blob, len, &e), 0);
    assert_int_equal(nas_fedsuper_size(back), nas_fedsuper_size(fs));
    nas_fedsuper_path_t *qa, *qb;
    assert_int_equal(nas_fedsuper_path(back, &ga, &qa, &e), 0);
    assert_int_equal(nas_fedsuper_path(back, &gb, &qb, &e), 0);
    float *x = slice(fs, pa), *y = slice(back, qa);
    assert_memory_equal(x, y, pa->m * sizeof *x);
    free(x), free(y);
    x = slice(fs, pb), y = slice(back, qb);
    assert_memory_equal(x, y, pb->m * sizeof *x);
    ((char *)blob)[0] ^= 1;
    assert_int_equal(nas_fedsuper_load(back, blob, len, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "not a supernet block"));
    free(blob), free(x), free(y), free(d);
    nas_fedsuper_path_free(pa), nas_fedsuper_path_free(pb), nas_fedsuper_path_free(qa), nas_fedsuper_path_free(qb);
    nas_fedsuper_free(fs);
    nas_fedsuper_free(back);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_per_parameter_mean),
        cmocka_unit_test(test_init_and_refusals),
        cmocka_unit_test(test_statistics_per_genome),
        cmocka_unit_test(test_save_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

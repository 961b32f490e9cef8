/* Secure aggregation in a federated search: a site's scatter of its path's change into the common
 * layout (client/scatter.c, from the train message's "scatter" block) matches the server's own
 * (nas/fedsuper.c); the server's per-parameter division of the survivors' sum equals the plain
 * per-parameter mean; a block that does not fit the model is refused. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "client/scatter.h"
#include "nas/fedsuper.h"
#include "nas_test.h"

#define SPACE                                                                                                         \
    "{\"space\":{\"type\":\"macro\",\"layers\":2,\"ops\":[\"conv3x3\",\"sepconv3x3\",\"identity\"],"              \
    "\"widths\":[4,8],\"batchnorm\":true,\"reductions\":1}" STRATEGY

static nas_genome_t macro(int op0, int w0, int op1, int w1)
{
    nas_genome_t g;
    memset(&g, 0, sizeof g);
    g.kind = NAS_SPACE_MACRO;
    g.nlayers = 2;
    g.layer[0] = (nas_macro_layer_t){.op = op0, .width = w0, .bn = 1, .reduce = 1};
    g.layer[1] = (nas_macro_layer_t){.op = op1, .width = w1, .bn = 1, .reduce = 0};
    return g;
}

/* The block the server sends (server_nas.c builds the same from nas_fedsuper_layout_of). */
static json_t *block(nas_fedsuper_t *fs, const nas_fedsuper_path_t *p, size_t len, int64_t stats)
{
    int64_t *off = calloc((size_t)p->nt, sizeof *off);
    int64_t(*shape)[4] = calloc((size_t)p->nt, sizeof *shape);
    nas_fedsuper_layout_of(fs, p, off, shape);
    json_t *t = json_array();
    for (int i = 0; i < p->nt; i++)
        json_array_append_new(t, json_pack("[I,I,I,I,I]", (json_int_t)off[i], (json_int_t)shape[i][0],
                                           (json_int_t)shape[i][1], (json_int_t)shape[i][2], (json_int_t)shape[i][3]));
    free(off);
    free(shape);
    return json_pack("{s:I, s:o, s:I}", "length", (json_int_t)len, "tensors", t, "stats", (json_int_t)stats);
}

static void test_scatter_and_sum(void **state)
{
    (void)state;
    nas_space_t sp = space_from(SPACE);
    nas_fedsuper_t *fs, *plain;
    err_t e = {0};
    assert_int_equal(nas_fedsuper_create(&sp, 2, &fs, &e), 0);
    assert_int_equal(nas_fedsuper_create(&sp, 2, &plain, &e), 0);
    nas_genome_t g[2] = {macro(NAS_OP_SEP3, 4, NAS_OP_CONV3, 8), macro(NAS_OP_SEP3, 8, NAS_OP_IDENTITY, 4)};
    nas_fedsuper_path_t *p[2], *q[2];
    for (int i = 0; i < 2; i++) {
        assert_int_equal(nas_fedsuper_path(fs, &g[i], &p[i], &e), 0);
        assert_int_equal(nas_fedsuper_path(plain, &g[i], &q[i], &e), 0);
    }
    size_t np = nas_fedsuper_num_params(fs), slot = p[0]->m - p[0]->np > p[1]->m - p[1]->np ? p[0]->m - p[0]->np
                                                                                             : p[1]->m - p[1]->np;
    size_t len = np + 2 * slot;
    float *sum = calloc(len, sizeof *sum);
    /* three sites: two train path 0, one path 1; changes are distinct per site and element */
    const int trained[3] = {0, 0, 1};
    for (int s = 0; s < 3; s++) {
        const nas_fedsuper_path_t *path = p[trained[s]];
        float *u = malloc(path->m * sizeof *u);
        for (size_t k = 0; k < path->m; k++)
            u[k] = (float)((s + 1) * 0.001 * (double)(k % 97) - 0.03);
        json_t *b = block(fs, path, len, (int64_t)(np + (size_t)trained[s] * slot));
        float *full, *mine = malloc(np * sizeof *mine);
        size_t flen;
        assert_int_equal(client_scatter_expand(b, path->model, u, path->m, &full, &flen, &e), 0);
        assert_int_equal(flen, len);
        nas_fedsuper_scatter(fs, path, u, mine);
        assert_memory_equal(full, mine, np * sizeof *mine); /* the site's layout is the server's */
        for (size_t k = 0; k < len; k++)
            sum[k] += full[k];
        assert_int_equal(nas_fedsuper_add(plain, q[trained[s]], u, 1.0, &e), 0);
        /* a block for another model, or one past the length, is refused */
        json_object_set_new(b, "length", json_integer(10));
        float *bad;
        assert_int_equal(client_scatter_expand(b, path->model, u, path->m, &bad, &flen, &e), FN_EPROTO);
        json_decref(b);
        b = block(fs, p[1 - trained[s]], len, (int64_t)np);
        if (p[0]->nt != p[1]->nt)
            assert_int_equal(client_scatter_expand(b, path->model, u, path->m, &bad, &flen, &e), FN_EPROTO);
        json_decref(b);
        free(full), free(mine), free(u);
    }
    const nas_fedsuper_path_t *surv[3] = {p[0], p[0], p[1]};
    assert_int_equal(nas_fedsuper_add_sum(fs, surv, 3, sum, &e), 0);
    assert_int_equal(nas_fedsuper_add_stats_sum(fs, p[0], sum + np, 2, &e), 0);
    assert_int_equal(nas_fedsuper_add_stats_sum(fs, p[1], sum + np + slot, 1, &e), 0);
    nas_fedsuper_apply(fs);
    nas_fedsuper_apply(plain);
    for (int i = 0; i < 2; i++) {
        float *a = malloc(p[i]->m * sizeof *a), *b = malloc(q[i]->m * sizeof *b);
        nas_fedsuper_slice(fs, p[i], a);
        nas_fedsuper_slice(plain, q[i], b);
        for (size_t k = 0; k < p[i]->m; k++)
            if (fabsf(a[k] - b[k]) > 1e-6f)
                fail_msg("path %d value %zu: %g from the sum, %g from the plain mean", i, k, a[k], b[k]);
        free(a), free(b);
    }
    free(sum);
    for (int i = 0; i < 2; i++) {
        nas_fedsuper_path_free(p[i]);
        nas_fedsuper_path_free(q[i]);
    }
    nas_fedsuper_free(fs);
    nas_fedsuper_free(plain);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_scatter_and_sum)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}

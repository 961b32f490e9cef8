/* The data-parallel supernet under mpirun (nas/supernet_dp.h, nas/mpi.h), for
 * tests/integration/nas_mpi_ws.sh: `mpirun -n K mpi_supernet_dp [PATHS_PER_STEP]`.
 *
 * Every rank trains its replica on its shard of each global batch (48 images: shards of 24 or 16),
 * with one MPI_Allreduce per step; then (1) the replicas' checksums must agree on every rank;
 * (2) rank 0 trains the oracle, one process running the K shards of each batch in turn with the
 * same global batch, and every stored float must match: K ranks only sum the shard gradients in
 * another order (MPI's reduction tree) than the oracle's left-to-right loop, so they agree to
 * float rounding (exactly for K = 2, where a + b is the only order: measured 0). Each step's
 * gradient then differs by an ulp or so, and 40 momentum steps through batch norm amplify that:
 * for K = 3 the largest difference measured was 1.1e-6 (one path per step) and 3.6e-7 (two), for
 * weights up to 2.4. The tolerance, 1e-5 of the largest weight, is 20x that; and so that the
 * comparison can fail, it must be under 1/10 of the distance to one process training the whole
 * batch as one shard (batch norm then sees other statistics; measured 1.1e-2 to 2.3e-2: what a
 * wrong split costs, 50x the bar);
 * (3) the training loss must go down (a first epoch against the last of three more).
 * Prints what it measured; exits 0 when all hold. Needs the Fashion-MNIST files (nas_data_load). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "nas/config.h"
#include "nas/eval.h"
#include "nas/mpi.h"
#include "nas/supernet.h"
#include "nas/supernet_dp.h"

#include <jansson.h>

static int fail(int rank, const char *what, const char *detail)
{
    fprintf(stderr, "FAIL (rank %d): %s%s%s\n", rank, what, detail ? ": " : "", detail ? detail : "");
    return 1;
}

/* Largest |a - b| over every stored float, and the largest |a|; -1 when the stores differ in shape. */
static double store_diff(const nas_supernet_t *a, const nas_supernet_t *b, double *scale)
{
    if (nas_supernet_num_tensors(a) != nas_supernet_num_tensors(b))
        return -1;
    double d = 0;
    *scale = 0;
    for (int i = 0; i < nas_supernet_num_tensors(a); i++) {
        int na, nb;
        int64_t sa[4], sb[4];
        const float *x = nas_supernet_tensor(a, i, &na, sa), *y = nas_supernet_tensor(b, i, &nb, sb);
        if (strcmp(nas_supernet_tensor_key(a, i), nas_supernet_tensor_key(b, i)) != 0 || na != nb ||
            memcmp(sa, sb, sizeof sa) != 0)
            return -1;
        size_t n = (size_t)(sa[0] * sa[1] * sa[2] * sa[3]);
        for (size_t k = 0; k < n; k++) {
            d = fmax(d, fabs((double)x[k] - y[k]));
            *scale = fmax(*scale, fabs((double)x[k]));
        }
    }
    return d;
}

int main(int argc, char **argv)
{
    setenv("FEDNAS_THREADS", "1", 1);
    int kp = argc > 1 ? atoi(argv[1]) : 1, rank = 0, size = 1;
    err_t e = {0};
    if (nas_mpi_init(&rank, &size, &e) < 0 || size < 2) {
        fprintf(stderr, "mpi_supernet_dp: run under mpirun -n K (K >= 2): %s\n", e.msg);
        return 2;
    }
    const char *js = "{\"space\":{\"type\":\"macro\",\"layers\":3,\"ops\":[\"conv3x3\",\"conv5x5\",\"sepconv3x3\","
                     "\"maxpool3x3\",\"identity\"],\"widths\":[8,16],\"reductions\":1},"
                     "\"strategy\":{\"name\":\"random\"}}";
    json_error_t je;
    json_t *j = json_loads(js, 0, &je);
    nas_config_t cfg;
    nas_data_t data;
    memset(&data, 0, sizeof data);
    nas_data_opts_t dopt = {.split_seed = 42, .val_size = 10000, .train_subset = 480, .val_subset = 16,
                            .test_subset = 16};
    int bad = !j || nas_config_parse(j, "mpi_supernet_dp", js, "nas", 1, &cfg, &e) < 0 ||
              nas_data_load(&dopt, &data, &e) < 0;
    json_decref(j);
    if (bad) {
        fail(rank, "setup", e.msg);
        nas_mpi_end(1);
        return 1;
    }
    nas_supernet_opts_t o;
    nas_supernet_opts_default(&o);
    o.batch_size = 48;
    o.seed = 17;
    o.lr = 0.1;
    o.paths_per_step = kp;
    nas_supernet_dp_t dp;
    nas_supernet_t *s = NULL;
    nas_supernet_stats_t s1, s2;
    int agreed = 0, failed = 0;
    if (nas_mpi_dp(&dp, &e) < 0 || nas_supernet_create(&cfg.space, &o, &s, &e) < 0 ||
        nas_supernet_dp_train(s, &data.train_src, data.train_idx, data.n_train, 1, &dp, &s1, &agreed, &e) < 0 ||
        nas_supernet_dp_train(s, &data.train_src, data.train_idx, data.n_train, 3, &dp, &s2, &agreed, &e) < 0) {
        nas_supernet_free(s);
        nas_data_free(&data);
        fail(rank, "data-parallel training", e.msg);
        nas_mpi_end(!agreed);
        return 1;
    }
    uint64_t lo = 0, hi = 0;
    int same = nas_mpi_same(nas_supernet_checksum(s), &lo, &hi, &e);
    if (rank == 0) {
        printf("mpi_supernet_dp: %d ranks, %d path(s) per step, global batch 48: %ld steps, loss %.4f (first epoch) "
               "-> %.4f (last of 3 more)\n", size, kp, s2.steps, s1.loss, s2.loss);
        printf("replicas: checksums %016llx .. %016llx over %d ranks: %s\n", (unsigned long long)lo,
               (unsigned long long)hi, size, same == 1 ? "identical" : "DIFFERENT");
    }
    if (same != 1)
        failed |= fail(rank, "replicas differ after training", same < 0 ? e.msg : NULL);
    if (rank == 0 && !failed) {
        /* the oracle: one process, the same K shards of each batch one after the other */
        nas_supernet_dp_t all = {.shards = size, .first = 0, .count = size};
        nas_supernet_t *ref = NULL, *whole = NULL;
        if (nas_supernet_create(&cfg.space, &o, &ref, &e) < 0 || nas_supernet_create(&cfg.space, &o, &whole, &e) < 0 ||
            nas_supernet_dp_train(ref, &data.train_src, data.train_idx, data.n_train, 1, &all, NULL, NULL, &e) < 0 ||
            nas_supernet_dp_train(ref, &data.train_src, data.train_idx, data.n_train, 3, &all, NULL, NULL, &e) < 0 ||
            nas_supernet_train(whole, &data.train_src, data.train_idx, data.n_train, 1, NULL, &e) < 0 ||
            nas_supernet_train(whole, &data.train_src, data.train_idx, data.n_train, 3, NULL, &e) < 0) {
            failed |= fail(rank, "reference training", e.msg);
        } else {
            double scale = 0, sw = 0, d = store_diff(s, ref, &scale), dw = store_diff(s, whole, &sw);
            double tol = 1e-5 * fmax(scale, 1.0);
            printf("against one process running the %d shards in turn: max |diff| %.3g (tolerance %.3g, weights up "
                   "to %.3g); against one process with the whole batch as one shard: %.3g\n", size, d, tol, scale,
                   dw);
            if (d < 0 || dw < 0)
                failed |= fail(rank, "the stores hold other tensors than the reference's", NULL);
            else if (d > tol)
                failed |= fail(rank, "the ranks' supernet differs from the one-process oracle beyond rounding", NULL);
            else if (!(dw > 10 * tol))
                failed |= fail(rank, "the whole-batch supernet is as close as the oracle: the comparison cannot "
                                     "tell a wrong split", NULL);
        }
        nas_supernet_free(ref);
        nas_supernet_free(whole);
        if (!(s2.loss < s1.loss))
            failed |= fail(rank, "the training loss did not go down", NULL);
        if (!failed)
            printf("ok\n");
    }
    fflush(stdout);
    nas_supernet_free(s);
    nas_data_free(&data);
    if (rank == 0)
        nas_mpi_release(); /* the other ranks wait for no job: nothing to stop */
    nas_mpi_end(0);
    return failed;
}

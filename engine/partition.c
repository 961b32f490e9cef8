#include "engine/partition.h"

#include <math.h>
#include <string.h>

#include "common/rng.h"

static int check_common(const char *fn, int n, int parts, const int *assign, err_t *err)
{
    if (!assign)
        return err_set(err, FN_EINVAL, "%s: assign is NULL", fn);
    if (n <= 0)
        return err_set(err, FN_EINVAL, "%s: n is %d; need at least one sample", fn, n);
    if (parts <= 0)
        return err_set(err, FN_EINVAL, "%s: parts is %d; need at least one part (client)", fn, parts);
    if (parts > n)
        return err_set(err, FN_EINVAL, "%s: %d parts for %d samples would leave parts empty; use at most %d parts",
                       fn, parts, n, n);
    return 0;
}

int engine_partition_iid(int n, int parts, uint64_t seed, int *assign, err_t *err)
{
    int rc = check_common("engine_partition_iid", n, parts, assign, err);
    if (rc)
        return rc;
    int *perm = FN_MALLOC((size_t)n * sizeof *perm);
    for (int i = 0; i < n; i++)
        perm[i] = i;
    rng_t r;
    rng_seed(&r, seed);
    rng_shuffle_int(&r, perm, n);
    for (int k = 0; k < n; k++)
        assign[perm[k]] = k % parts;
    free(perm);
    return 0;
}

int engine_partition_dirichlet(const uint8_t *labels, int n, int num_classes, int parts, double alpha,
                               int min_size, uint64_t seed, int *assign, err_t *err)
{
    static const char *fn = "engine_partition_dirichlet";
    int rc = check_common(fn, n, parts, assign, err);
    if (rc)
        return rc;
    if (!labels)
        return err_set(err, FN_EINVAL, "%s: labels is NULL", fn);
    if (num_classes <= 0 || num_classes > 256)
        return err_set(err, FN_EINVAL, "%s: num_classes is %d; expected 1..256", fn, num_classes);
    if (!(alpha > 0.0) || !isfinite(alpha))
        return err_set(err, FN_EINVAL, "%s: alpha is %g; expected a finite value > 0 (e.g. 0.5; smaller is more skewed)",
                       fn, alpha);
    if (min_size < 0)
        return err_set(err, FN_EINVAL, "%s: min_size is %d; expected >= 0", fn, min_size);
    if ((long long)min_size * parts > n)
        return err_set(err, FN_EINVAL, "%s: %d parts of at least %d samples need %lld samples but there are %d; "
                       "lower min_size or use fewer parts", fn, parts, min_size, (long long)min_size * parts, n);
    for (int i = 0; i < n; i++)
        if (labels[i] >= num_classes)
            return err_set(err, FN_EINVAL, "%s: label %d of sample %d is not below num_classes %d", fn, labels[i], i,
                           num_classes);

    /* Samples grouped by class (counting sort); each try reshuffles within the groups. */
    int *start = FN_CALLOC((size_t)num_classes + 1, sizeof *start);
    int *byclass = FN_MALLOC((size_t)n * sizeof *byclass);
    int *size = FN_MALLOC((size_t)parts * sizeof *size);
    double *p = FN_MALLOC((size_t)parts * sizeof *p);
    for (int i = 0; i < n; i++)
        start[labels[i] + 1]++;
    for (int c = 0; c < num_classes; c++)
        start[c + 1] += start[c];
    {
        int *fill = FN_MALLOC((size_t)num_classes * sizeof *fill);
        memcpy(fill, start, (size_t)num_classes * sizeof *fill);
        for (int i = 0; i < n; i++)
            byclass[fill[labels[i]]++] = i;
        free(fill);
    }

    rng_t r;
    rng_seed(&r, seed);
    double fair = (double)n / parts;
    int tries, smallest = 0;
    for (tries = 1; tries <= ENGINE_PARTITION_MAX_TRIES; tries++) {
        memset(size, 0, (size_t)parts * sizeof *size);
        for (int c = 0; c < num_classes; c++) {
            int *members = byclass + start[c], cn = start[c + 1] - start[c];
            rng_shuffle_int(&r, members, cn);
            double sum = 0.0;
            for (int j = 0; j < parts; j++) {
                double g = rng_gamma(&r, alpha);
                p[j] = size[j] < fair ? g : 0.0;
                sum += p[j];
            }
            if (!(sum > 0.0)) {
                /* Tiny alpha can underflow every eligible gamma draw to 0: the limit of
                 * Dir(alpha -> 0) is one part taking everything, so give the class to one
                 * eligible part. One always exists: the sizes so far sum to less than n. */
                int eligible = 0;
                for (int j = 0; j < parts; j++)
                    eligible += size[j] < fair;
                FN_CHECK(eligible > 0);
                int pick = (int)rng_below(&r, (uint64_t)eligible);
                for (int j = 0; j < parts; j++) {
                    p[j] = 0.0;
                    if (size[j] < fair && pick-- == 0)
                        p[j] = 1.0;
                }
                sum = 1.0;
            }
            /* Cut points floor(cumsum(p) * cn), the last part takes the rest, as np.split does. */
            double cum = 0.0;
            int from = 0;
            for (int j = 0; j < parts; j++) {
                int to = cn;
                if (j < parts - 1) {
                    cum += p[j] / sum;
                    to = (int)(cum * cn);
                    if (to > cn)
                        to = cn;
                    if (to < from)
                        to = from;
                }
                for (int k = from; k < to; k++)
                    assign[members[k]] = j;
                size[j] += to - from;
                from = to;
            }
        }
        smallest = size[0];
        for (int j = 1; j < parts; j++)
            if (size[j] < smallest)
                smallest = size[j];
        if (smallest >= min_size)
            break;
    }
    free(start);
    free(byclass);
    free(size);
    free(p);
    if (tries > ENGINE_PARTITION_MAX_TRIES)
        return err_set(err, FN_EINVAL,
                       "%s: after %d draws some part still had fewer than %d samples (last draw: %d); "
                       "raise alpha (now %g), lower min_size or use fewer parts (now %d)",
                       fn, ENGINE_PARTITION_MAX_TRIES, min_size, smallest, alpha, parts);
    return 0;
}

int engine_partition_indices(const int *assign, int n, int part, int **idx, int *count, err_t *err)
{
    static const char *fn = "engine_partition_indices";
    if (!assign || !idx || !count)
        return err_set(err, FN_EINVAL, "%s: assign, idx and count must not be NULL", fn);
    if (n < 0)
        return err_set(err, FN_EINVAL, "%s: n is %d; expected >= 0", fn, n);
    if (part < 0)
        return err_set(err, FN_EINVAL, "%s: part is %d; expected >= 0", fn, part);
    int c = 0;
    for (int i = 0; i < n; i++)
        c += assign[i] == part;
    int *out = FN_MALLOC((size_t)(c ? c : 1) * sizeof *out);
    for (int i = 0, k = 0; i < n; i++)
        if (assign[i] == part)
            out[k++] = i;
    *idx = out;
    *count = c;
    return 0;
}

#include "engine/sampler.h"

#include <string.h>

#include "common/rng.h"

int engine_sampler_balanced(const uint8_t *labels, const int *idx, int n, int num_classes, int epoch_len,
                            uint64_t seed, int *out, err_t *err)
{
    if (!labels || !out || n < 1)
        return err_set(err, FN_EINVAL, "balanced sampler: need labels, an output array and n >= 1 (n=%d)", n);
    if (num_classes < 1 || num_classes > 256)
        return err_set(err, FN_EINVAL, "balanced sampler: num_classes %d not in [1, 256]", num_classes);
    if (epoch_len < 0)
        return err_set(err, FN_EINVAL, "balanced sampler: epoch length %d < 0", epoch_len);
    if (epoch_len == 0)
        epoch_len = n;
    for (int i = 0; i < n; i++) {
        if (idx && idx[i] < 0)
            return err_set(err, FN_EINVAL, "balanced sampler: index %d at position %d is negative", idx[i], i);
        int s = idx ? idx[i] : i;
        if (labels[s] >= num_classes)
            return err_set(err, FN_EINVAL, "balanced sampler: sample %d has label %d, not below %d classes", s,
                           labels[s], num_classes);
    }
    /* Bucket the subset by class (counting sort): start[c]..start[c+1] in `by_class`. */
    int *start = FN_CALLOC((size_t)num_classes + 1, sizeof *start);
    int *by_class = FN_MALLOC((size_t)n * sizeof *by_class);
    int *present = FN_MALLOC((size_t)num_classes * sizeof *present);
    for (int i = 0; i < n; i++)
        start[labels[idx ? idx[i] : i] + 1]++;
    int num_present = 0;
    for (int c = 0; c < num_classes; c++) {
        if (start[c + 1] > 0)
            present[num_present++] = c;
        start[c + 1] += start[c];
    }
    int *fill = FN_MALLOC((size_t)num_classes * sizeof *fill);
    memcpy(fill, start, (size_t)num_classes * sizeof *fill);
    for (int i = 0; i < n; i++) {
        int s = idx ? idx[i] : i;
        by_class[fill[labels[s]]++] = s;
    }
    rng_t r;
    rng_seed(&r, seed);
    for (int k = 0; k < epoch_len; k++) {
        int c = present[rng_below(&r, (uint64_t)num_present)];
        int size = start[c + 1] - start[c];
        out[k] = by_class[start[c] + (int)rng_below(&r, (uint64_t)size)];
    }
    free(start), free(by_class), free(present), free(fill);
    return FN_OK;
}

int engine_sampler_shuffled(const int *idx, int n, uint64_t seed, int *out, err_t *err)
{
    if (!out || n < 1)
        return err_set(err, FN_EINVAL, "shuffled sampler: need an output array and n >= 1 (n=%d)", n);
    for (int i = 0; i < n; i++)
        out[i] = idx ? idx[i] : i;
    rng_t r;
    rng_seed(&r, seed);
    rng_shuffle_int(&r, out, n);
    return FN_OK;
}

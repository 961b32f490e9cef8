#include "server/fedavg.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int fedavg_init(fedavg_t *a, size_t m, err_t *err)
{
    memset(a, 0, sizeof *a);
    a->hi = calloc(m ? m : 1, sizeof *a->hi);
    a->lo = calloc(m ? m : 1, sizeof *a->lo);
    if (!a->hi || !a->lo) {
        fedavg_free(a);
        return err_set(err, FN_ENOMEM, "out of memory for a %zu-parameter aggregate", m);
    }
    a->m = m;
    return 0;
}

void fedavg_reset(fedavg_t *a)
{
    memset(a->hi, 0, a->m * sizeof *a->hi);
    memset(a->lo, 0, a->m * sizeof *a->lo);
    a->total_weight = 0;
    a->count = 0;
}

int fedavg_add(fedavg_t *a, const float *update, size_t m, double weight, err_t *err)
{
    if (m != a->m)
        return err_set(err, FN_EINVAL, "update has %zu parameters, the model has %zu", m, a->m);
    if (!(weight > 0) || !isfinite(weight))
        return err_set(err, FN_EINVAL, "update weight must be a positive number (got %g)", weight);
    if (a->count >= FEDAVG_MAX_TERMS)
        return err_set(err, FN_ESTATE, "the aggregate already holds %d updates, the most it can sum exactly",
                       a->count);
    /* Check everything before touching the sums, so a bad update adds nothing. */
    double limit = FEDAVG_MAX_TERM / weight;
    for (size_t i = 0; i < m; i++)
        if (!(fabs((double)update[i]) <= limit))
            return err_set(err, FN_EINVAL, "update value %zu is %s", i,
                           isfinite(update[i]) ? "too large" : "not finite");
    fedavg_wide_t *hi = a->hi;
    int64_t *lo = a->lo;
    for (size_t i = 0; i < m; i++) {
        /* t * 2^20 and its fractional part are exact in double; truncation is a fixed
         * function of the term, so the integer sums do not depend on the order of terms. */
        double t = weight * (double)update[i] * 0x1p20;
        int64_t whole = (int64_t)t; /* truncation toward zero, without a libm call */
        hi[i] += whole; /* 128 bits: see fedavg.h for the bound */
        lo[i] += (int64_t)((t - (double)whole) * 0x1p44);
    }
    a->total_weight += weight;
    a->count++;
    return 0;
}

int fedavg_mean(const fedavg_t *a, float *out, err_t *err)
{
    if (a->count == 0)
        return err_set(err, FN_ESTATE, "no updates to average");
    return fedavg_sum_over(a, a->total_weight, out, err);
}

int fedavg_sum_over(const fedavg_t *a, double denominator, float *out, err_t *err)
{
    if (!(denominator > 0))
        return err_set(err, FN_EINVAL, "the denominator must be positive (got %g)", denominator);
    double inv = 1.0 / denominator;
    for (size_t i = 0; i < a->m; i++) {
        double sum = ((double)a->hi[i] + (double)a->lo[i] * 0x1p-44) * 0x1p-20;
        out[i] = (float)(sum * inv);
    }
    return 0;
}

void fedavg_free(fedavg_t *a)
{
    free(a->hi);
    free(a->lo);
    memset(a, 0, sizeof *a);
}

#include "server/fedavg.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int fedavg_init(fedavg_t *a, size_t m, err_t *err)
{
    memset(a, 0, sizeof *a);
    a->sum = calloc(m ? m : 1, sizeof *a->sum);
    if (!a->sum)
        return err_set(err, FN_ENOMEM, "out of memory for a %zu-parameter aggregate", m);
    a->m = m;
    return 0;
}

void fedavg_reset(fedavg_t *a)
{
    memset(a->sum, 0, a->m * sizeof *a->sum);
    a->total_weight = 0;
    a->count = 0;
}

int fedavg_add(fedavg_t *a, const float *update, size_t m, double weight, err_t *err)
{
    if (m != a->m)
        return err_set(err, FN_EINVAL, "update has %zu parameters, the model has %zu", m, a->m);
    if (!(weight > 0) || !isfinite(weight))
        return err_set(err, FN_EINVAL, "update weight must be a positive number (got %g)", weight);
    double *s = a->sum;
    for (size_t i = 0; i < m; i++)
        s[i] += weight * (double)update[i];
    a->total_weight += weight;
    a->count++;
    return 0;
}

int fedavg_mean(const fedavg_t *a, float *out, err_t *err)
{
    if (a->count == 0)
        return err_set(err, FN_ESTATE, "no updates to average");
    double inv = 1.0 / a->total_weight;
    for (size_t i = 0; i < a->m; i++)
        out[i] = (float)(a->sum[i] * inv);
    return 0;
}

void fedavg_free(fedavg_t *a)
{
    free(a->sum);
    memset(a, 0, sizeof *a);
}

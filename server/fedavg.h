/* fedavg: the weighted mean of client updates (McMahan et al. 2017), accumulated as updates
 * arrive so a round needs one model-sized buffer whatever the number of clients. Sums run in
 * double so that the mean does not depend on arrival order beyond rounding of the final cast. */
#ifndef FEDNAS_SERVER_FEDAVG_H
#define FEDNAS_SERVER_FEDAVG_H

#include <stddef.h>

#include "common/err.h"

typedef struct fedavg {
    double *sum;
    size_t m;
    double total_weight;
    int count;
} fedavg_t;

int fedavg_init(fedavg_t *a, size_t m, err_t *err);
void fedavg_reset(fedavg_t *a);
/* Adds weight * update (weight > 0, e.g. the client's sample count). */
int fedavg_add(fedavg_t *a, const float *update, size_t m, double weight, err_t *err);
/* out = sum / total_weight; FN_ESTATE when nothing was added. */
int fedavg_mean(const fedavg_t *a, float *out, err_t *err);
void fedavg_free(fedavg_t *a);

#endif

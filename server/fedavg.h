/* fedavg: the weighted mean of client updates (McMahan et al. 2017), accumulated as updates
 * arrive so a round needs one accumulator whatever the number of clients. Each weighted term
 * is cut to a fixed-point pair of integers and the integers are summed exactly, so the mean is
 * bit-for-bit the same whatever order the updates arrive in (runs are reproducible).
 *
 * Why the sums cannot overflow: a term's whole part is at most FEDAVG_MAX_TERM * 2^20 < 2^60
 * and is summed in 128 bits, so 2^67 terms fit; a remainder is below 2^44 and is summed in 64
 * bits, so FEDAVG_MAX_TERMS (2^19) of them fit, and fedavg_add refuses the one after. (An
 * int64 whole part overflowed with nine maximum-size terms.) */
#ifndef FEDNAS_SERVER_FEDAVG_H
#define FEDNAS_SERVER_FEDAVG_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

__extension__ typedef __int128 fedavg_wide_t; /* GCC and Clang on 64-bit targets */

typedef struct fedavg {
    fedavg_wide_t *hi; /* sum of trunc(w * x * 2^20) */
    int64_t *lo; /* sum of the remainders, in units of 2^-64 */
    size_t m;
    double total_weight;
    int count;
} fedavg_t;

/* Largest |weight * value| an update may carry, and most updates one accumulator takes: together
 * they keep both integer sums from overflow (see above). */
#define FEDAVG_MAX_TERM 1e12
#define FEDAVG_MAX_TERMS (1 << 19)

int fedavg_init(fedavg_t *a, size_t m, err_t *err);
void fedavg_reset(fedavg_t *a);
/* Adds weight * update (weight > 0, e.g. the client's sample count). FN_EINVAL, adding nothing,
 * when a value is not finite or a term exceeds FEDAVG_MAX_TERM; FN_ESTATE when FEDAVG_MAX_TERMS
 * updates were added already. */
int fedavg_add(fedavg_t *a, const float *update, size_t m, double weight, err_t *err);
/* out = sum / total_weight; FN_ESTATE when nothing was added. */
int fedavg_mean(const fedavg_t *a, float *out, err_t *err);
/* out = sum / denominator: DP-FedAvg divides by the expected cohort size, a constant, so that
 * one client's contribution to the result is bounded whoever else shows up. */
int fedavg_sum_over(const fedavg_t *a, double denominator, float *out, err_t *err);
void fedavg_free(fedavg_t *a);

#endif

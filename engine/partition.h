/* partition: splits a data set's samples among federated clients, IID or label-skewed.
 * The Dirichlet scheme follows NIID-Bench (Li et al. 2022, "Federated Learning on Non-IID
 * Data Silos"), so results are comparable with the papers that use it. Same seed, same split. */
#ifndef FEDNAS_ENGINE_PARTITION_H
#define FEDNAS_ENGINE_PARTITION_H

#include <stdint.h>

#include "common/err.h"

/* Fills assign[i] in [0, parts) for each of n samples: a seeded shuffle dealt round-robin,
 * so part sizes differ by at most 1. Needs 1 <= parts <= n. */
int engine_partition_iid(int n, int parts, uint64_t seed, int *assign, err_t *err);

/* Dirichlet(alpha) label skew as in NIID-Bench: for each class, shuffle its samples, draw
 * p ~ Dir(alpha) over the parts, zero p for parts that already hold >= n/parts samples
 * (NIID-Bench's balancing step), renormalise, and cut the class at the cumulative proportions.
 * If any part ends with fewer than min_size samples (NIID-Bench uses 10), redraw everything,
 * continuing the same RNG stream, up to ENGINE_PARTITION_MAX_TRIES times, then FN_EINVAL.
 * Smaller alpha means more skew; labels must be < num_classes. */
#define ENGINE_PARTITION_MAX_TRIES 1000
int engine_partition_dirichlet(const uint8_t *labels, int n, int num_classes, int parts, double alpha,
                               int min_size, uint64_t seed, int *assign, err_t *err);

/* Indices (ascending) of the samples assigned to `part`; *idx is malloc'ed (never NULL on
 * success, even when *count is 0), the caller frees it. */
int engine_partition_indices(const int *assign, int n, int part, int **idx, int *count, err_t *err);

#endif

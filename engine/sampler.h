/* sampler: the order in which an epoch visits a data set's samples. The class-balanced sampler
 * draws every class equally often (with replacement inside each class), for label-skewed
 * federated clients; the shuffled sampler is the plain epoch. Same seed, same order. */
#ifndef FEDNAS_ENGINE_SAMPLER_H
#define FEDNAS_ENGINE_SAMPLER_H

#include <stdint.h>

#include "common/err.h"

/* Class-balanced sampling over the samples idx[0..n) of a data set whose labels are `labels`
 * (idx NULL: samples 0..n-1). Each of the epoch_len draws picks a class uniformly among the
 * classes present in that subset, then a sample of that class uniformly, with replacement; so
 * rare classes repeat and common ones are subsampled. epoch_len 0 means n. out receives
 * epoch_len data set indices (taken from idx). idx entries must index `labels`; labels must be
 * < num_classes (<= 256).
 * Classes absent from the subset are never drawn: their probability is shared by the others. */
int engine_sampler_balanced(const uint8_t *labels, const int *idx, int n, int num_classes, int epoch_len,
                            uint64_t seed, int *out, err_t *err);

/* A seeded permutation of idx[0..n) (idx NULL: of 0..n-1), each sample exactly once. */
int engine_sampler_shuffled(const int *idx, int n, uint64_t seed, int *out, err_t *err);

#endif

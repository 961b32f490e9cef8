/* rank: agreement between two rankings of the same items, for judging how well a cheap
 * evaluation (the supernet's scores) orders architectures like the expensive one (standalone
 * validation accuracies); specs/nas.md asks for Kendall's tau-b over >= 20 architectures. */
#ifndef FEDNAS_NAS_RANK_H
#define FEDNAS_NAS_RANK_H

#include "common/err.h"

/* Kendall's tau-b of x[0..n) and y[0..n): (C - D) / sqrt((P - Tx) (P - Ty)) over the
 * P = n(n-1)/2 pairs, C concordant, D discordant, Tx pairs tied in x, Ty pairs tied in y (a
 * pair tied in both counts in both), as scipy.stats.kendalltau's default. FN_EINVAL when n < 2,
 * a value is not finite, or x or y is constant (tau-b is undefined there). O(n^2). */
int nas_kendall_tau_b(const double *x, const double *y, int n, double *tau, err_t *err);

#endif

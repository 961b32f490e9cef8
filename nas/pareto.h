/* pareto: the multi-objective pieces of NSGA-II (Deb et al. 2002) and the 2-objective
 * hypervolume (specs/nas.md), on plain arrays. Every objective is minimised; points are
 * rows of n x m doubles. */
#ifndef FEDNAS_NAS_PARETO_H
#define FEDNAS_NAS_PARETO_H

/* a dominates b: no worse in every objective and better in at least one. */
int nas_pareto_dominates(const double *a, const double *b, int m);

/* Fast non-dominated sort: rank[i] = 0 for the first front F1, 1 for F2, ... Returns the
 * number of fronts, or FN_EINVAL for n < 0 or m < 1. */
int nas_pareto_sort(const double *pts, int n, int m, int *rank);

/* Crowding distance of the cnt points idx[0..cnt) (one front): per objective, sort, give the
 * two boundary points INFINITY and each other the gap between its neighbours divided by the
 * objective's range (max - min over the front; a zero range adds nothing); sum. */
void nas_pareto_crowding(const double *pts, int m, const int *idx, int cnt, double *dist);

/* Area dominated by the non-dominated points of (x, y) pairs pts[2i], pts[2i+1] and bounded by
 * the reference point (rx, ry); points outside the reference box contribute nothing. */
double nas_hypervolume2(const double *pts, int n, double rx, double ry);

#endif

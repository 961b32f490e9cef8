#include "nas/pareto.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"

int nas_pareto_dominates(const double *a, const double *b, int m)
{
    int better = 0;
    for (int k = 0; k < m; k++) {
        if (a[k] > b[k])
            return 0;
        better |= a[k] < b[k];
    }
    return better;
}

int nas_pareto_sort(const double *pts, int n, int m, int *rank)
{
    if (n < 0 || m < 1)
        return FN_EINVAL;
    if (n == 0)
        return 0;
    /* Deb et al. 2002: count who dominates each point, list whom each dominates, then peel
     * fronts off by decrementing the counts: O(m n^2). */
    int *cnt = calloc((size_t)n, sizeof *cnt), *dom = malloc((size_t)n * (size_t)n * sizeof *dom),
        *ndom = calloc((size_t)n, sizeof *ndom), *cur = malloc((size_t)n * sizeof *cur),
        *next = malloc((size_t)n * sizeof *next);
    FN_CHECK(cnt && dom && ndom && cur && next);
    int ncur = 0;
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < n; j++) {
            if (i == j)
                continue;
            if (nas_pareto_dominates(pts + (size_t)i * m, pts + (size_t)j * m, m))
                dom[(size_t)i * n + (size_t)ndom[i]++] = j;
            else if (nas_pareto_dominates(pts + (size_t)j * m, pts + (size_t)i * m, m))
                cnt[i]++;
        }
        if (cnt[i] == 0) {
            rank[i] = 0;
            cur[ncur++] = i;
        }
    }
    int fronts = 0;
    while (ncur > 0) {
        int nnext = 0;
        for (int a = 0; a < ncur; a++) {
            int i = cur[a];
            for (int b = 0; b < ndom[i]; b++) {
                int j = dom[(size_t)i * n + (size_t)b];
                if (--cnt[j] == 0) {
                    rank[j] = fronts + 1;
                    next[nnext++] = j;
                }
            }
        }
        fronts++;
        memcpy(cur, next, (size_t)nnext * sizeof *cur);
        ncur = nnext;
    }
    free(cnt);
    free(dom);
    free(ndom);
    free(cur);
    free(next);
    return fronts;
}

/* qsort has no context argument: sort (value, index) pairs instead. */
typedef struct {
    double v;
    int i;
} vi_t;

static int cmp_vi(const void *a, const void *b)
{
    const vi_t *x = a, *y = b;
    if (x->v != y->v)
        return x->v < y->v ? -1 : 1;
    return x->i - y->i; /* ties by position: the same input gives the same distances */
}

void nas_pareto_crowding(const double *pts, int m, const int *idx, int cnt, double *dist)
{
    for (int a = 0; a < cnt; a++)
        dist[a] = 0;
    if (cnt <= 2) {
        for (int a = 0; a < cnt; a++)
            dist[a] = INFINITY;
        return;
    }
    vi_t *s = malloc((size_t)cnt * sizeof *s);
    FN_CHECK(s);
    for (int k = 0; k < m; k++) {
        for (int a = 0; a < cnt; a++) {
            s[a].v = pts[(size_t)idx[a] * m + k];
            s[a].i = a;
        }
        qsort(s, (size_t)cnt, sizeof *s, cmp_vi);
        double range = s[cnt - 1].v - s[0].v;
        dist[s[0].i] = INFINITY;
        dist[s[cnt - 1].i] = INFINITY;
        if (!(range > 0))
            continue;
        for (int a = 1; a < cnt - 1; a++)
            dist[s[a].i] += (s[a + 1].v - s[a - 1].v) / range;
    }
    free(s);
}

static int cmp_xy(const void *a, const void *b)
{
    const double *p = a, *q = b;
    if (p[0] != q[0])
        return p[0] < q[0] ? -1 : 1;
    return p[1] < q[1] ? -1 : p[1] > q[1];
}

double nas_hypervolume2(const double *pts, int n, double rx, double ry)
{
    if (n <= 0)
        return 0;
    /* Keep the points strictly inside the reference box, sort by x, then sweep: each point
     * that improves on the best y so far adds the rectangle up to the next such point. */
    double *p = malloc((size_t)n * 2 * sizeof *p);
    FN_CHECK(p);
    int k = 0;
    for (int i = 0; i < n; i++)
        if (pts[2 * i] < rx && pts[2 * i + 1] < ry && isfinite(pts[2 * i]) && isfinite(pts[2 * i + 1])) {
            p[2 * k] = pts[2 * i];
            p[2 * k + 1] = pts[2 * i + 1];
            k++;
        }
    qsort(p, (size_t)k, 2 * sizeof *p, cmp_xy);
    double hv = 0, besty = ry;
    int last = -1; /* the current staircase point */
    for (int i = 0; i < k; i++) {
        if (p[2 * i + 1] >= besty)
            continue; /* dominated (or equal) */
        if (last >= 0)
            hv += (p[2 * i] - p[2 * last]) * (ry - besty);
        besty = p[2 * i + 1];
        last = i;
    }
    if (last >= 0)
        hv += (rx - p[2 * last]) * (ry - besty);
    free(p);
    return hv;
}

#include "nas/rank.h"

#include <math.h>

int nas_kendall_tau_b(const double *x, const double *y, int n, double *tau, err_t *err)
{
    if (n < 2)
        return err_set(err, FN_EINVAL, "kendall tau-b: needs at least 2 pairs, got %d", n);
    for (int i = 0; i < n; i++)
        if (!isfinite(x[i]) || !isfinite(y[i]))
            return err_set(err, FN_EINVAL, "kendall tau-b: value %d is not finite", i);
    /* counts in doubles: exact up to 2^53 pairs, far past any n this is run on */
    double conc = 0, disc = 0, tx = 0, ty = 0;
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++) {
            int dx = (x[i] > x[j]) - (x[i] < x[j]), dy = (y[i] > y[j]) - (y[i] < y[j]);
            tx += dx == 0;
            ty += dy == 0;
            if (dx * dy > 0)
                conc++;
            else if (dx * dy < 0)
                disc++;
        }
    double pairs = (double)n * (n - 1) / 2;
    if (tx == pairs || ty == pairs)
        return err_set(err, FN_EINVAL, "kendall tau-b: undefined when %s is constant", tx == pairs ? "x" : "y");
    *tau = (conc - disc) / sqrt((pairs - tx) * (pairs - ty));
    return 0;
}

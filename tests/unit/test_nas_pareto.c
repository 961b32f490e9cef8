/* nas/pareto: non-dominated sorting and crowding distance against hand-computed fronts, and
 * the 2-objective hypervolume against hand-computed areas and a grid count. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdlib.h>

#include "common/rng.h"
#include "nas/pareto.h"

/* A(1,5) B(2,3) H(3,2) C(4,1) | D(3,4) F(2,6) | E(5,5) */
static const double pts[] = {1, 5, 2, 3, 3, 2, 4, 1, 3, 4, 2, 6, 5, 5};

static void test_sort(void **state)
{
    (void)state;
    int rank[7];
    assert_int_equal(nas_pareto_sort(pts, 7, 2, rank), 3);
    int want[7] = {0, 0, 0, 0, 1, 1, 2};
    for (int i = 0; i < 7; i++)
        assert_int_equal(rank[i], want[i]);
    assert_true(nas_pareto_dominates(pts + 2, pts + 8, 2));  /* B dominates D */
    assert_false(nas_pareto_dominates(pts + 2, pts + 2, 2)); /* not itself */
    assert_false(nas_pareto_dominates(pts + 0, pts + 2, 2)); /* A and B trade off */
    /* equal points do not dominate each other: one front */
    double eq[] = {1, 1, 1, 1, 2, 2};
    assert_int_equal(nas_pareto_sort(eq, 3, 2, rank), 2);
    assert_int_equal(rank[0], 0);
    assert_int_equal(rank[1], 0);
    assert_int_equal(rank[2], 1);
    /* three objectives: (1,2,3) (2,1,3) (3,3,1) trade off; (2,2,3) is dominated by (1,2,3) */
    double three[] = {1, 2, 3, 2, 1, 3, 3, 3, 1, 2, 2, 3};
    assert_int_equal(nas_pareto_sort(three, 4, 3, rank), 2);
    assert_int_equal(rank[3], 1);
    assert_int_equal(nas_pareto_sort(pts, 7, 0, rank), -1);
}

static void test_crowding(void **state)
{
    (void)state;
    int f0[4] = {0, 1, 2, 3}, f1[2] = {4, 5};
    double d[4];
    nas_pareto_crowding(pts, 2, f0, 4, d);
    /* x: A1 B2 H3 C4, range 3: B (3-1)/3, H (4-2)/3; y: C1 H2 B3 A5, range 4: H (3-1)/4, B (5-2)/4 */
    assert_true(isinf(d[0]) && isinf(d[3]));
    assert_float_equal(d[1], 2.0 / 3 + 3.0 / 4, 1e-12);
    assert_float_equal(d[2], 2.0 / 3 + 2.0 / 4, 1e-12);
    nas_pareto_crowding(pts, 2, f1, 2, d);
    assert_true(isinf(d[0]) && isinf(d[1]));
    /* a zero range adds nothing: the middle point gets only the other objective's gap */
    double flat[] = {0, 1, 1, 1, 2, 1};
    int all[3] = {0, 1, 2};
    nas_pareto_crowding(flat, 2, all, 3, d);
    assert_float_equal(d[1], 1.0, 1e-12);
}

static void test_hypervolume(void **state)
{
    (void)state;
    double p[] = {0.2, 0.6, 0.5, 0.3, 0.8, 0.1};
    /* 0.3 x 0.4 + 0.3 x 0.7 + 0.2 x 0.9 */
    assert_float_equal(nas_hypervolume2(p, 3, 1, 1), 0.51, 1e-12);
    /* a dominated point, a point outside the box, a point on its edge: no change */
    double q[] = {0.2, 0.6, 0.5, 0.3, 0.8, 0.1, 0.6, 0.5, 1.2, 0.0, 1.0, 0.05, 0.5, 0.3};
    assert_float_equal(nas_hypervolume2(q, 7, 1, 1), 0.51, 1e-12);
    double o[] = {0, 0};
    assert_float_equal(nas_hypervolume2(o, 1, 1, 1), 1.0, 1e-12);
    assert_float_equal(nas_hypervolume2(o, 0, 1, 1), 0.0, 0);
    /* another reference point */
    assert_float_equal(nas_hypervolume2(p, 3, 2, 1), 0.51 + 1.0 * 0.9, 1e-12);

    /* random points on a 0.01 grid against counting the dominated grid cells */
    rng_t r;
    rng_seed(&r, 9);
    for (int trial = 0; trial < 20; trial++) {
        int n = 1 + (int)rng_below(&r, 12);
        double xy[24];
        for (int i = 0; i < 2 * n; i++)
            xy[i] = (double)rng_below(&r, 120) / 100.0; /* some fall outside (1,1) */
        long cells = 0;
        for (int cx = 0; cx < 100; cx++)
            for (int cy = 0; cy < 100; cy++) {
                int dom = 0;
                for (int i = 0; i < n && !dom; i++)
                    dom = xy[2 * i] <= cx / 100.0 + 1e-9 && xy[2 * i + 1] <= cy / 100.0 + 1e-9;
                cells += dom;
            }
        assert_float_equal(nas_hypervolume2(xy, n, 1, 1), cells / 10000.0, 1e-9);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sort),
        cmocka_unit_test(test_crowding),
        cmocka_unit_test(test_hypervolume),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

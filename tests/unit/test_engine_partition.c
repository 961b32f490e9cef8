/* engine/partition: IID and Dirichlet label-skew splits. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "engine/partition.h"

#define N 10000
#define CLASSES 10
#define PARTS 10

static uint8_t g_labels[N];

static int setup(void **state)
{
    (void)state;
    for (int i = 0; i < N; i++)
        g_labels[i] = (uint8_t)((i * 7 + i / 13) % CLASSES);
    return 0;
}

/* Every sample in exactly one part in [0, parts); returns part sizes in sizes[]. */
static void check_cover(const int *assign, int n, int parts, int *sizes)
{
    memset(sizes, 0, (size_t)parts * sizeof *sizes);
    for (int i = 0; i < n; i++) {
        assert_in_range(assign[i], 0, parts - 1);
        sizes[assign[i]]++;
    }
    long total = 0;
    for (int p = 0; p < parts; p++)
        total += sizes[p];
    assert_int_equal(total, n);
    /* engine_partition_indices agrees with assign and lists each sample once, ascending. */
    int seen = 0;
    for (int p = 0; p < parts; p++) {
        int *idx, count;
        err_t e = {0};
        assert_int_equal(engine_partition_indices(assign, n, p, &idx, &count, &e), 0);
        assert_int_equal(count, sizes[p]);
        for (int k = 0; k < count; k++) {
            assert_int_equal(assign[idx[k]], p);
            if (k)
                assert_true(idx[k] > idx[k - 1]);
        }
        seen += count;
        free(idx);
    }
    assert_int_equal(seen, n);
}

/* Mean over parts of the share of a part's samples that its two largest classes hold:
 * about 2/CLASSES for an IID split, near 1 under strong label skew. */
static double top2_share(const int *assign, int n, int parts)
{
    double sum = 0.0;
    for (int p = 0; p < parts; p++) {
        int hist[CLASSES] = {0}, tot = 0;
        for (int i = 0; i < n; i++)
            if (assign[i] == p)
                hist[g_labels[i]]++, tot++;
        int a = 0, b = 0;
        for (int c = 0; c < CLASSES; c++) {
            if (hist[c] > a)
                b = a, a = hist[c];
            else if (hist[c] > b)
                b = hist[c];
        }
        sum += tot ? (double)(a + b) / tot : 0.0;
    }
    return sum / parts;
}

static void test_iid(void **state)
{
    (void)state;
    static int a[N], b[N], c[N];
    int sizes[PARTS];
    err_t e = {0};
    int n = N - 3; /* not a multiple of PARTS */
    assert_int_equal(engine_partition_iid(n, PARTS, 42, a, &e), 0);
    check_cover(a, n, PARTS, sizes);
    int lo = n, hi = 0;
    for (int p = 0; p < PARTS; p++)
        lo = sizes[p] < lo ? sizes[p] : lo, hi = sizes[p] > hi ? sizes[p] : hi;
    assert_true(hi - lo <= 1);
    assert_int_equal(engine_partition_iid(n, PARTS, 42, b, &e), 0);
    assert_memory_equal(a, b, (size_t)n * sizeof *a);
    assert_int_equal(engine_partition_iid(n, PARTS, 43, c, &e), 0);
    assert_memory_not_equal(a, c, (size_t)n * sizeof *a);
    /* A shuffle, not blocks: the first samples do not all land in one part. */
    int first_part_same = 1;
    for (int i = 1; i < 50; i++)
        first_part_same &= a[i] == a[0];
    assert_false(first_part_same);
    assert_true(top2_share(a, N - 3, PARTS) < 0.3);
}

static void test_dirichlet_skew(void **state)
{
    (void)state;
    static int a[N], b[N], c[N], iid[N];
    int sizes[PARTS];
    err_t e = {0};
    int rc = engine_partition_dirichlet(g_labels, N, CLASSES, PARTS, 0.1, 10, 7, a, &e);
    if (rc)
        print_error("%s\n", e.msg);
    assert_int_equal(rc, 0);
    check_cover(a, N, PARTS, sizes);
    for (int p = 0; p < PARTS; p++)
        assert_true(sizes[p] >= 10);
    double skew = top2_share(a, N, PARTS);
    assert_int_equal(engine_partition_iid(N, PARTS, 7, iid, &e), 0);
    double flat = top2_share(iid, N, PARTS);
    print_message("top-2 class share per part: dirichlet(0.1) %.3f, iid %.3f\n", skew, flat);
    assert_true(skew > 0.6);
    assert_true(flat < 0.3);

    assert_int_equal(engine_partition_dirichlet(g_labels, N, CLASSES, PARTS, 0.1, 10, 7, b, &e), 0);
    assert_memory_equal(a, b, sizeof a);
    assert_int_equal(engine_partition_dirichlet(g_labels, N, CLASSES, PARTS, 0.1, 10, 8, c, &e), 0);
    assert_memory_not_equal(a, c, sizeof a);

    /* Large alpha is close to IID. */
    assert_int_equal(engine_partition_dirichlet(g_labels, N, CLASSES, PARTS, 1000.0, 10, 7, c, &e), 0);
    check_cover(c, N, PARTS, sizes);
    assert_true(top2_share(c, N, PARTS) < 0.3);
}

static void test_dirichlet_min_size(void **state)
{
    (void)state;
    static int a[N];
    int sizes[20];
    err_t e = {0};
    /* min_size only decides when to stop redrawing, so with min_size 0 we see the first draw of
     * the same stream: for this seed it leaves some part under 100 samples... */
    assert_int_equal(engine_partition_dirichlet(g_labels, N, CLASSES, 20, 0.1, 0, 2, a, &e), 0);
    check_cover(a, N, 20, sizes);
    int smallest = N;
    for (int p = 0; p < 20; p++)
        smallest = sizes[p] < smallest ? sizes[p] : smallest;
    assert_true(smallest < 100);
    /* ...and asking for 100 makes it redraw until every part has them. */
    int rc = engine_partition_dirichlet(g_labels, N, CLASSES, 20, 0.1, 100, 2, a, &e);
    if (rc)
        print_error("%s\n", e.msg);
    assert_int_equal(rc, 0);
    check_cover(a, N, 20, sizes);
    for (int p = 0; p < 20; p++)
        assert_true(sizes[p] >= 100);
    /* Exactly n / parts each under alpha 0.01 is practically impossible: bounded tries, then an error. */
    rc = engine_partition_dirichlet(g_labels, 100, CLASSES, 10, 0.01, 10, 1, a, &e);
    assert_int_equal(rc, FN_EINVAL);
    assert_non_null(strstr(e.msg, "alpha"));
}

static void test_bad_arguments(void **state)
{
    (void)state;
    static int a[N];
    err_t e = {0};
    assert_int_equal(engine_partition_iid(100, 0, 1, a, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "parts"));
    assert_int_equal(engine_partition_iid(100, -3, 1, a, &e), FN_EINVAL);
    assert_int_equal(engine_partition_iid(5, 6, 1, a, &e), FN_EINVAL);
    assert_int_equal(engine_partition_iid(0, 1, 1, a, &e), FN_EINVAL);
    assert_int_equal(engine_partition_iid(10, 2, 1, NULL, &e), FN_EINVAL);
    assert_int_equal(engine_partition_dirichlet(g_labels, N, CLASSES, 0, 0.5, 10, 1, a, &e), FN_EINVAL);
    assert_int_equal(engine_partition_dirichlet(g_labels, 5, CLASSES, 6, 0.5, 0, 1, a, &e), FN_EINVAL);
    assert_int_equal(engine_partition_dirichlet(g_labels, N, CLASSES, PARTS, 0.0, 10, 1, a, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "alpha"));
    assert_int_equal(engine_partition_dirichlet(g_labels, N, CLASSES, PARTS, -1.0, 10, 1, a, &e), FN_EINVAL);
    assert_int_equal(engine_partition_dirichlet(g_labels, N, CLASSES, PARTS, 0.5, -1, 1, a, &e), FN_EINVAL);
    assert_int_equal(engine_partition_dirichlet(g_labels, 100, CLASSES, 10, 0.5, 11, 1, a, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "min_size"));
    /* A label outside num_classes is named with its sample index. */
    assert_int_equal(engine_partition_dirichlet(g_labels, N, 5, PARTS, 0.5, 10, 1, a, &e), FN_EINVAL);
    assert_non_null(strstr(e.msg, "sample"));
    int *idx, count;
    assert_int_equal(engine_partition_indices(a, 10, -1, &idx, &count, &e), FN_EINVAL);
    /* A part with no samples is an empty list, not an error. */
    assert_int_equal(engine_partition_iid(10, 2, 1, a, &e), 0);
    assert_int_equal(engine_partition_indices(a, 10, 5, &idx, &count, &e), 0);
    assert_int_equal(count, 0);
    free(idx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_iid),
        cmocka_unit_test(test_dirichlet_skew),
        cmocka_unit_test(test_dirichlet_min_size),
        cmocka_unit_test(test_bad_arguments),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}

/* The engine's thread pool: every index of a loop runs exactly once whatever the chunking,
 * loops started from inside a loop or from several threads at once complete (serially when the
 * workers are taken), a slow chunk does not stop the others from being claimed, and
 * engine_parallel_blas holds OpenBLAS to one thread inside the loop and restores the process's
 * setting afterwards, also when two threads run such loops at once. The same hold whether the
 * workers poll between loops or sleep at once (FEDNAS_POOL_SPIN_US), and a pool whose workers
 * are polling shuts down. */
#include <cblas.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "engine/threadpool.h"

static void count(void *ctx, int64_t b, int64_t e)
{
    atomic_int *m = ctx;
    for (int64_t i = b; i < e; i++)
        atomic_fetch_add(&m[i], 1);
}

static void test_each_index_once(void **state)
{
    (void)state;
    engine_threadpool_t *p = engine_threadpool_create(3);
    assert_non_null(p);
    static atomic_int m[5000];
    const int64_t sizes[] = {1, 2, 3, 11, 12, 13, 97, 1000, 4999};
    const int64_t grains[] = {1, 4, 100};
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++)
        for (size_t gi = 0; gi < sizeof grains / sizeof grains[0]; gi++) {
            for (int i = 0; i < 5000; i++)
                atomic_store(&m[i], 0);
            engine_parallel_for(p, sizes[si], grains[gi], count, m);
            for (int64_t i = 0; i < 5000; i++)
                if (atomic_load(&m[i]) != (i < sizes[si]))
                    fail_msg("n %lld grain %lld: index %lld ran %d times", (long long)sizes[si],
                             (long long)grains[gi], (long long)i, atomic_load(&m[i]));
        }
    engine_parallel_for(p, 0, 1, count, m); /* nothing to do */
    engine_parallel_for(NULL, 10, 1, count, m); /* no pool: serial */
    for (int i = 0; i < 10; i++)
        assert_int_equal(atomic_load(&m[i]), 2);
    engine_threadpool_free(p);
}

typedef struct {
    engine_threadpool_t *p;
    atomic_int *m;
} nest_t;

static void outer(void *ctx, int64_t b, int64_t e)
{
    nest_t *n = ctx;
    for (int64_t i = b; i < e; i++) /* the workers are busy with this loop: runs serially */
        engine_parallel_for(n->p, 100, 1, count, n->m + i * 100);
}

static void test_nested_loop(void **state)
{
    (void)state;
    engine_threadpool_t *p = engine_threadpool_create(2);
    static atomic_int m[800];
    nest_t n = {p, m};
    engine_parallel_for(p, 8, 1, outer, &n);
    for (int i = 0; i < 800; i++)
        assert_int_equal(atomic_load(&m[i]), 1);
    engine_threadpool_free(p);
}

/* The pool's promise under load: chunks are claimed dynamically, so one slow chunk (a worker
 * the OS descheduled, a cache-missing part) never holds back the rest. Chunk 0 here does not
 * finish until every other item of the loop is done (or 5 s pass): with dynamic claiming the
 * other thread runs all of them meanwhile; with a fixed share per thread, the thread stuck in
 * chunk 0 would still own items nobody else may run, and chunk 0 would time out. */
typedef struct {
    atomic_int m[64];
    atomic_int others;   /* items done outside chunk 0 */
    atomic_int chunks;   /* chunks run */
    int waited_ok;       /* chunk 0 saw every other item done */
    pthread_t who[64];   /* the thread that ran the chunk starting at each index */
} slow_t;

static double mono(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void slow_first(void *ctx, int64_t b, int64_t e)
{
    slow_t *s = ctx;
    atomic_fetch_add(&s->chunks, 1);
    s->who[b] = pthread_self();
    if (b == 0) {
        const int want = 64 - (int)(e - b);
        const double deadline = mono() + 5.0;
        while (atomic_load(&s->others) < want && mono() < deadline) {
            struct timespec ts = {0, 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        s->waited_ok = atomic_load(&s->others) == want;
    } else
        atomic_fetch_add(&s->others, (int)(e - b));
    for (int64_t i = b; i < e; i++)
        atomic_fetch_add(&s->m[i], 1);
}

static void test_slow_chunk(void **state)
{
    (void)state;
    engine_threadpool_t *p = engine_threadpool_create(2);
    static slow_t s;
    engine_parallel_for(p, 64, 1, slow_first, &s);
    for (int i = 0; i < 64; i++)
        assert_int_equal(atomic_load(&s.m[i]), 1);
    assert_true(atomic_load(&s.chunks) > 2); /* more chunks than threads */
    assert_true(s.waited_ok);                /* the others were not held back by chunk 0 */
    int elsewhere = 0; /* chunks that ran on another thread than chunk 0 */
    for (int i = 1; i < 64; i++)
        elsewhere += s.who[i] && !pthread_equal(s.who[i], s.who[0]);
    assert_true(elsewhere > 0);
    engine_threadpool_free(p);
}

/* Watches the OpenBLAS thread count for about 20 us per item (long enough for another
 * thread's loop to start or end meanwhile). */
static void blas_threads_inside(void *ctx, int64_t b, int64_t e)
{
    atomic_int *seen = ctx;
    for (int64_t i = b; i < e; i++) {
        struct timespec t0, t;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        do {
            if (openblas_get_num_threads() != 1)
                atomic_fetch_add(seen, 1);
            clock_gettime(CLOCK_MONOTONIC, &t);
        } while ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) < 20000);
    }
}

typedef struct {
    engine_threadpool_t *p;
    atomic_int *bad;
} blas_job_t;

static void *blas_loops(void *arg)
{
    blas_job_t *j = arg;
    for (int r = 0; r < 200; r++)
        engine_parallel_blas(j->p, 16, 1, blas_threads_inside, j->bad);
    return NULL;
}

static void test_parallel_blas_threads(void **state)
{
    (void)state;
    engine_threadpool_t *p = engine_threadpool_create(2);
    atomic_int bad = 0;
    openblas_set_num_threads(2);
    const int before = openblas_get_num_threads();
    engine_parallel_blas(p, 16, 1, blas_threads_inside, &bad);
    assert_int_equal(atomic_load(&bad), 0);
    assert_int_equal(openblas_get_num_threads(), before);
    /* two threads' loops overlap: one thread inside, the other's restore must wait for it */
    blas_job_t j = {p, &bad};
    pthread_t t1, t2;
    pthread_create(&t1, NULL, blas_loops, &j);
    pthread_create(&t2, NULL, blas_loops, &j);
    pthread_join(t1, NULL);
    pthread_join(t2, NULL);
    assert_int_equal(atomic_load(&bad), 0);
    assert_int_equal(openblas_get_num_threads(), before);
    engine_threadpool_free(p);
}

/* count, after about 30 us of work: a loop whose submitter returned before the workers left
 * it would show items not yet counted. */
static void count_slowly(void *ctx, int64_t b, int64_t e)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    do
        clock_gettime(CLOCK_MONOTONIC, &t);
    while ((t.tv_sec - t0.tv_sec) * 1000000000L + (t.tv_nsec - t0.tv_nsec) < 30000);
    count(ctx, b, e);
}

/* Back-to-back loops (a training step's pattern): with polling, a worker usually catches the
 * next loop while polling, sometimes only after it went to sleep; either way every index of
 * every loop runs exactly once and each loop is over when engine_parallel_for returns. */
static void test_spin_settings(void **state)
{
    (void)state;
    /* NULL: not set, the default (polling only while the machine has room) */
    static const char *const spins[] = {NULL, "0", "1", "100", "100000", "-3", "junk"};
    static atomic_int m[4096];
    for (size_t si = 0; si < sizeof spins / sizeof spins[0]; si++) {
        if (spins[si])
            setenv("FEDNAS_POOL_SPIN_US", spins[si], 1);
        else
            unsetenv("FEDNAS_POOL_SPIN_US");
        for (int threads = 2; threads <= 3; threads++) {
            engine_threadpool_t *p = engine_threadpool_create(threads);
            assert_non_null(p);
            for (int i = 0; i < 4096; i++)
                atomic_store(&m[i], 0);
            for (int loop = 0; loop < 512; loop++) {
                const int64_t n = 1 + loop % 8; /* the loops' items do not overlap */
                engine_parallel_for(p, n, 1, loop % 2 ? count_slowly : count, m + (size_t)loop * 8);
                for (int64_t i = 0; i < n; i++)
                    if (atomic_load(&m[(size_t)loop * 8 + i]) != 1)
                        fail_msg("spin %s, %d threads, loop %d: index %lld ran %d times on return",
                                 spins[si] ? spins[si] : "(default)",
                                 threads, loop, (long long)i, atomic_load(&m[(size_t)loop * 8 + i]));
            }
            static atomic_int n2[800];
            nest_t nn = {p, n2};
            for (int i = 0; i < 800; i++)
                atomic_store(&n2[i], 0);
            engine_parallel_for(p, 8, 1, outer, &nn);
            for (int i = 0; i < 800; i++)
                assert_int_equal(atomic_load(&n2[i]), 1);
            engine_threadpool_free(p); /* workers polling (100 ms) or asleep: both must stop */
        }
    }
    unsetenv("FEDNAS_POOL_SPIN_US");
}

/* The default's test of the machine: polling only while no more tasks are runnable than cores. */
static void test_room(void **state)
{
    (void)state;
    assert_true(engine_threadpool_room("0.52 0.58 0.59 2/311 4242\n", 2));
    assert_true(engine_threadpool_room("0.52 0.58 0.59 1/311 4242\n", 2));
    assert_false(engine_threadpool_room("4.10 3.90 3.20 3/311 4242\n", 2)); /* one task more than cores */
    assert_false(engine_threadpool_room("9.00 9.00 9.00 12/400 17\n", 8));
    assert_true(engine_threadpool_room("9.00 9.00 9.00 8/400 17\n", 8));
    assert_false(engine_threadpool_room("", 2)); /* unreadable: no polling */
    assert_false(engine_threadpool_room("0.1 0.1 0.1 x/311 1", 2));
    assert_false(engine_threadpool_room(NULL, 2));
    assert_false(engine_threadpool_room("0.1 0.1 0.1 1/311 1", 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_each_index_once),
        cmocka_unit_test(test_nested_loop),
        cmocka_unit_test(test_slow_chunk),
        cmocka_unit_test(test_parallel_blas_threads),
        cmocka_unit_test(test_spin_settings),
        cmocka_unit_test(test_room),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

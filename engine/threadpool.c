#include "engine/threadpool.h"

#include <cblas.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define POOL_PAUSE() _mm_pause()
#else
#define POOL_PAUSE() ((void)0)
#endif

#define MAX_THREADS 256
/* A loop is cut into up to this many chunks per thread: with more chunks than threads, a
 * worker the OS has descheduled (more runnable threads than cores: several clients or
 * experiments on one machine) holds up only the chunk it is in, never a fixed share. */
#define CHUNKS_PER_THREAD 4

/* How long a worker polls for the next loop after one ends, and the submitter for the workers
 * to leave its loop, before sleeping on a condition variable (FEDNAS_POOL_SPIN_US=N: N us, 0
 * never; by default POOL_SPIN_AUTO_US while the machine has room, see below). A training step is
 * about 16 loops back to back with microseconds between them (the caller spends 1.5-3% of its
 * CPU time outside loops: plain3, CNN and dwsep at batch 10 and 256), so a worker that sleeps
 * after each loop joins the next one a wake-up late; on a virtual machine waking an idle core can
 * take longer than a small batch's loop. Polling keeps it awake, as OpenMP runtimes do. On this
 * 2-core machine shared with other jobs (load 4-6) polling 100 us cost 20% more CPU per loop and did not shorten the loops (a pool
 * micro-benchmark and engine_cpu, alternating), and yielding while polling made the loops longer;
 * on the idle machine (load 0.4, engine_cpu without PyTorch, 2 alternating rounds) 100 us trained
 * batch 10 faster (CNN +14-15%, plain3 +40%, dwsep +23-30%), batch 64 by 4-9%, and batch 256 from
 * -5% to +6%, at about the same CPU time per sample at batch 10. So it pays only while the job
 * has the cores to itself. By default the pool therefore polls POOL_SPIN_AUTO_US only while no
 * more tasks are runnable on the machine than it has cores (the running count of /proc/loadavg,
 * which counts the pool's own running and polling threads, read at most every POOL_ROOM_NS),
 * and sleeps at once otherwise. */
#define POOL_SPIN_AUTO_US 100
#define POOL_ROOM_NS 50000000L /* 50 ms */

/* One loop at a time runs on the workers. Chunks are fixed ranges of the index space and are
 * claimed in any order by whoever is free (an atomic counter), so which thread runs a chunk
 * varies but what each chunk computes does not. A worker joins a loop only while it is open;
 * the submitter closes it once every chunk is claimed and waits only for the workers that
 * joined, so a worker that wakes late finds the loop closed and never touches its context. */
struct engine_threadpool {
    int n; /* workers including the caller */
    pthread_t th[MAX_THREADS];
    pthread_mutex_t mu;
    pthread_mutex_t submit; /* held by the thread whose loop the workers run */
    pthread_cond_t work, done;
    /* written under mu; atomic so that polling threads may read them without it */
    atomic_ulong gen;  /* bumped for each loop */
    atomic_int open;   /* the current loop still takes helpers */
    atomic_int active; /* workers inside the current loop */
    atomic_int stop;
    long spin_ns;      /* polling time before sleeping */
    int spin_auto;     /* spin_ns only while the machine has room (FEDNAS_POOL_SPIN_US not set) */
    engine_parallel_fn fn;
    void *ctx;
    int64_t total, chunk, nchunks;
    atomic_llong next; /* next chunk to claim */
};

static void run_chunks(engine_threadpool_t *p, engine_parallel_fn fn, void *ctx, int64_t total, int64_t chunk,
                       int64_t nchunks)
{
    for (;;) {
        int64_t c = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
        if (c >= nchunks)
            return;
        int64_t b = c * chunk, e = b + chunk < total ? b + chunk : total;
        fn(ctx, b, e);
    }
}

static long mono_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long)t.tv_sec * 1000000000L + t.tv_nsec;
}

/* A worker with nothing to do: a new open loop or stop to act on (read without the lock; the
 * caller re-checks under it). */
static int worker_called(engine_threadpool_t *p, unsigned long seen)
{
    return atomic_load_explicit(&p->stop, memory_order_acquire) ||
           (atomic_load_explicit(&p->gen, memory_order_acquire) != seen &&
            atomic_load_explicit(&p->open, memory_order_acquire));
}

int engine_threadpool_room(const char *loadavg, int cpus)
{
    double a1, a5, a15;
    int running, total;
    if (!loadavg || cpus < 1 || sscanf(loadavg, "%lf %lf %lf %d/%d", &a1, &a5, &a15, &running, &total) != 5)
        return 0;
    return running >= 1 && running <= cpus;
}

/* Whether the machine has a core for every runnable task (engine_threadpool_room of
 * /proc/loadavg), read at most every POOL_ROOM_NS by whichever thread asks first; no when it
 * cannot be read. */
static int machine_room(void)
{
    static atomic_long next_read;
    static atomic_int room;
    const long now = mono_ns(), due = atomic_load_explicit(&next_read, memory_order_relaxed);
    if (now >= due && atomic_compare_exchange_strong(&next_read, &(long){due}, now + POOL_ROOM_NS)) {
        char buf[128] = "";
        FILE *f = fopen("/proc/loadavg", "r");
        if (f) {
            if (!fgets(buf, sizeof buf, f))
                buf[0] = '\0';
            fclose(f);
        }
        atomic_store_explicit(&room, engine_threadpool_room(buf, (int)sysconf(_SC_NPROCESSORS_ONLN)),
                              memory_order_relaxed);
    }
    return atomic_load_explicit(&room, memory_order_relaxed);
}

/* Polls until pred(p, arg) or spin_ns pass; returns pred's last value. The clock is read once
 * per 64 pauses (a pause is tens of cycles). */
static int spin_until(engine_threadpool_t *p, int (*pred)(engine_threadpool_t *, unsigned long), unsigned long arg)
{
    if (p->spin_ns <= 0 || (p->spin_auto && !machine_room()))
        return pred(p, arg);
    const long end = mono_ns() + p->spin_ns;
    for (;;) {
        for (int i = 0; i < 64; i++) {
            if (pred(p, arg))
                return 1;
            POOL_PAUSE();
        }
        if (mono_ns() >= end)
            return pred(p, arg);
    }
}

static int workers_left(engine_threadpool_t *p, unsigned long unused)
{
    (void)unused;
    return atomic_load_explicit(&p->active, memory_order_acquire) == 0;
}

static void *worker(void *arg)
{
    engine_threadpool_t *p = arg;
    unsigned long seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        if (!p->stop && (p->gen == seen || !p->open)) {
            pthread_mutex_unlock(&p->mu);
            spin_until(p, worker_called, seen);
            pthread_mutex_lock(&p->mu);
        }
        while (!p->stop && (p->gen == seen || !p->open))
            pthread_cond_wait(&p->work, &p->mu);
        if (p->stop)
            break;
        seen = p->gen;
        p->active++;
        engine_parallel_fn fn = p->fn;
        void *ctx = p->ctx;
        int64_t total = p->total, chunk = p->chunk, nchunks = p->nchunks;
        pthread_mutex_unlock(&p->mu);
        run_chunks(p, fn, ctx, total, chunk, nchunks);
        pthread_mutex_lock(&p->mu);
        if (--p->active == 0 && !p->open)
            pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

engine_threadpool_t *engine_threadpool_create(int threads)
{
    if (threads <= 0)
        threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (threads < 1)
        threads = 1;
    if (threads > MAX_THREADS)
        threads = MAX_THREADS;
    engine_threadpool_t *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->n = threads;
    const char *sp = getenv("FEDNAS_POOL_SPIN_US");
    p->spin_auto = !(sp && *sp);
    p->spin_ns = 1000L * (p->spin_auto ? POOL_SPIN_AUTO_US : atol(sp));
    if (p->spin_ns < 0)
        p->spin_ns = 0;
    if (p->spin_ns > 100000000L) /* 100 ms: beyond that it only burns a core */
        p->spin_ns = 100000000L;
    atomic_init(&p->next, 0);
    atomic_init(&p->gen, 0);
    atomic_init(&p->open, 0);
    atomic_init(&p->active, 0);
    atomic_init(&p->stop, 0);
    pthread_mutex_init(&p->mu, NULL);
    pthread_mutex_init(&p->submit, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->done, NULL);
    for (int i = 1; i < threads; i++)
        if (pthread_create(&p->th[i], NULL, worker, p) != 0) {
            p->n = i;
            break;
        }
    return p;
}

void engine_threadpool_free(engine_threadpool_t *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stop = 1;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++)
        pthread_join(p->th[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->submit);
    pthread_cond_destroy(&p->work);
    pthread_cond_destroy(&p->done);
    free(p);
}

int engine_threadpool_size(const engine_threadpool_t *p) { return p ? p->n : 1; }

void engine_parallel_for(engine_threadpool_t *p, int64_t n, int64_t grain, engine_parallel_fn fn, void *ctx)
{
    if (n <= 0)
        return;
    if (grain < 1)
        grain = 1;
    int64_t nchunks = p ? (int64_t)p->n * CHUNKS_PER_THREAD : 1;
    if (n / grain < nchunks)
        nchunks = n / grain;
    /* Another thread's loop holds the workers (two models training in one process, or a
     * kernel calling back in): run this one serially rather than wait or interleave. */
    if (nchunks <= 1 || p->n <= 1 || pthread_mutex_trylock(&p->submit) != 0) {
        fn(ctx, 0, n);
        return;
    }
    int64_t chunk = (n + nchunks - 1) / nchunks;
    nchunks = (n + chunk - 1) / chunk;
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->total = n;
    p->chunk = chunk;
    p->nchunks = nchunks;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    p->open = 1;
    p->gen++;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    run_chunks(p, fn, ctx, n, chunk, nchunks);
    pthread_mutex_lock(&p->mu);
    p->open = 0;
    if (p->active > 0) { /* a worker still in its last chunk: poll, then sleep */
        pthread_mutex_unlock(&p->mu);
        spin_until(p, workers_left, 0);
        pthread_mutex_lock(&p->mu);
    }
    while (p->active > 0)
        pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
    pthread_mutex_unlock(&p->submit);
}

/* OpenBLAS's thread count is process-wide: loops in several threads share one setting, so a
 * depth count decides who saves it and who restores it. */
static pthread_mutex_t blas_mu = PTHREAD_MUTEX_INITIALIZER;
static int blas_depth, blas_saved;

void engine_parallel_blas(engine_threadpool_t *p, int64_t n, int64_t grain, engine_parallel_fn fn, void *ctx)
{
    if (n <= 0)
        return;
    pthread_mutex_lock(&blas_mu);
    if (blas_depth++ == 0) {
        blas_saved = openblas_get_num_threads();
        if (blas_saved != 1)
            openblas_set_num_threads(1);
    }
    pthread_mutex_unlock(&blas_mu);
    engine_parallel_for(p, n, grain, fn, ctx);
    pthread_mutex_lock(&blas_mu);
    if (--blas_depth == 0 && blas_saved != 1)
        openblas_set_num_threads(blas_saved);
    pthread_mutex_unlock(&blas_mu);
}

static pthread_once_t default_once = PTHREAD_ONCE_INIT;
static engine_threadpool_t *default_pool;

static void make_default(void)
{
    const char *s = getenv("FEDNAS_THREADS");
    default_pool = engine_threadpool_create(s ? atoi(s) : 0);
}

engine_threadpool_t *engine_threadpool_default(void)
{
    pthread_once(&default_once, make_default);
    return default_pool;
}

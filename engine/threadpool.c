#include "engine/threadpool.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#define MAX_THREADS 256

struct engine_threadpool {
    int n; /* workers including the caller */
    pthread_t th[MAX_THREADS];
    pthread_mutex_t mu;
    pthread_mutex_t submit; /* held by the thread whose loop the workers run */
    pthread_cond_t work, done;
    unsigned long gen; /* bumped for each job */
    int pending;       /* workers still running the current job */
    int stop;
    engine_parallel_fn fn;
    void *ctx;
    int64_t total, chunk;
};

typedef struct {
    engine_threadpool_t *p;
    int id;
} worker_arg_t;

static void *worker(void *arg)
{
    worker_arg_t *w = arg;
    engine_threadpool_t *p = w->p;
    unsigned long seen = 0;
    for (;;) {
        pthread_mutex_lock(&p->mu);
        while (!p->stop && p->gen == seen)
            pthread_cond_wait(&p->work, &p->mu);
        if (p->stop) {
            pthread_mutex_unlock(&p->mu);
            free(w);
            return NULL;
        }
        seen = p->gen;
        engine_parallel_fn fn = p->fn;
        void *ctx = p->ctx;
        int64_t b = (int64_t)w->id * p->chunk, e = b + p->chunk;
        if (e > p->total)
            e = p->total;
        pthread_mutex_unlock(&p->mu);
        if (b < e)
            fn(ctx, b, e);
        pthread_mutex_lock(&p->mu);
        if (--p->pending == 0)
            pthread_cond_signal(&p->done);
        pthread_mutex_unlock(&p->mu);
    }
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
    pthread_mutex_init(&p->mu, NULL);
    pthread_mutex_init(&p->submit, NULL);
    pthread_cond_init(&p->work, NULL);
    pthread_cond_init(&p->done, NULL);
    for (int i = 1; i < threads; i++) {
        worker_arg_t *a = malloc(sizeof *a);
        if (!a) {
            p->n = i;
            break;
        }
        a->p = p;
        a->id = i;
        if (pthread_create(&p->th[i], NULL, worker, a) != 0) {
            free(a);
            p->n = i;
            break;
        }
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
    int parts = p ? p->n : 1;
    if (n / grain < parts)
        parts = (int)(n / grain);
    /* Another thread's loop holds the workers (two models training in one process, or a
     * kernel calling back in): run this one serially rather than wait or interleave. */
    if (parts <= 1 || pthread_mutex_trylock(&p->submit) != 0) {
        fn(ctx, 0, n);
        return;
    }
    int64_t chunk = (n + parts - 1) / parts;
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->total = n;
    p->chunk = chunk;
    p->pending = p->n - 1;
    p->gen++;
    pthread_cond_broadcast(&p->work);
    pthread_mutex_unlock(&p->mu);
    fn(ctx, 0, chunk < n ? chunk : n);
    pthread_mutex_lock(&p->mu);
    while (p->pending > 0)
        pthread_cond_wait(&p->done, &p->mu);
    pthread_mutex_unlock(&p->mu);
    pthread_mutex_unlock(&p->submit);
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

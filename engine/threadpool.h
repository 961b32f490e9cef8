/* threadpool: a fixed pool of workers for data-parallel loops (the batch dimension of conv,
 * blocks of a matrix product, elementwise ops). It is the only source of parallelism in the
 * CPU kernels: their sgemm calls run inside the pool's items with OpenBLAS held to one thread
 * (engine_parallel_blas), because OpenBLAS's own threads spin for a while after each call and,
 * on a machine with as many workers as cores, would fight the pool for the same cores.
 * Between jobs workers may poll for the next one for FEDNAS_POOL_SPIN_US microseconds (default
 * 0: none; threadpool.c says why), then sleep on a condition variable. Work is split into fixed contiguous
 * ranges by index; which thread runs a range varies, what it computes does not, so results do
 * not depend on timing (kernels that sum across ranges keep one partial sum per range).
 * Safe to call from several threads: a loop submitted while the workers are busy with another
 * thread's loop runs serially in its caller. */
#ifndef FEDNAS_ENGINE_THREADPOOL_H
#define FEDNAS_ENGINE_THREADPOOL_H

#include <stdint.h>

typedef struct engine_threadpool engine_threadpool_t;

/* fn handles items [begin, end). */
typedef void (*engine_parallel_fn)(void *ctx, int64_t begin, int64_t end);

/* threads <= 0: one per online core. NULL when threads cannot be started. */
engine_threadpool_t *engine_threadpool_create(int threads);
void engine_threadpool_free(engine_threadpool_t *p);
int engine_threadpool_size(const engine_threadpool_t *p);
/* Runs fn over [0, n) split into fixed chunks (up to 4 per thread, each at least `grain` items)
 * that the calling thread and the workers claim as they come free; returns when all are done.
 * One chunk or p NULL runs serially in the caller. */
void engine_parallel_for(engine_threadpool_t *p, int64_t n, int64_t grain, engine_parallel_fn fn, void *ctx);
/* As engine_parallel_for, for items that call OpenBLAS: while the loop runs (in any thread),
 * OpenBLAS is limited to one thread, so each sgemm runs on the worker that calls it; the
 * process's OpenBLAS setting is restored when the last such loop ends. */
void engine_parallel_blas(engine_threadpool_t *p, int64_t n, int64_t grain, engine_parallel_fn fn, void *ctx);
/* The process-wide pool the CPU kernels use, created on first use (FEDNAS_THREADS overrides). */
engine_threadpool_t *engine_threadpool_default(void);

/* Whether a machine whose /proc/loadavg reads `loadavg` has a core for every runnable task (its
 * fourth field, running/total, against cpus): the pool polls between loops by default only
 * then (threadpool.c). 0 for text it cannot parse. Exposed for tests. */
int engine_threadpool_room(const char *loadavg, int cpus);

#endif

/* threadpool: a fixed pool of workers for data-parallel loops (im2col/col2im, elementwise ops,
 * the batch dimension). Workers sleep on a condition variable between jobs, so they do not
 * compete with OpenBLAS's own threads, which run sgemm: the two never run at the same time
 * (a kernel either calls sgemm or runs a parallel loop), which avoids oversubscription.
 * Work is split into fixed contiguous ranges by index, so results do not depend on timing.
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
/* Runs fn over [0, n) split into at most size() chunks of at least `grain` items; the calling
 * thread takes the first chunk. Returns when all are done. p NULL runs serially. */
void engine_parallel_for(engine_threadpool_t *p, int64_t n, int64_t grain, engine_parallel_fn fn, void *ctx);
/* The process-wide pool the CPU kernels use, created on first use (FEDNAS_THREADS overrides). */
engine_threadpool_t *engine_threadpool_default(void);

#endif

/* graph: define-by-run autograd. Every op called on a graph runs at once (eager) and, while
 * gradients are enabled and one of its inputs needs a gradient, records itself on the graph's
 * tape; engine_graph_backward walks the tape backwards. Tensors live in the graph's arena and
 * die at engine_graph_reset, so each step may build a different graph (a supernet sampling a
 * path, an LSTM whose hidden size changed) with nothing to rebuild or free.
 *
 * Errors in op calls (mismatched shapes, out of memory) do not abort: the op returns NULL,
 * the graph remembers the first error, later ops given NULL return NULL, and the caller checks
 * engine_graph_error once at the end of the step. */
#ifndef FEDNAS_ENGINE_GRAPH_H
#define FEDNAS_ENGINE_GRAPH_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/rng.h"
#include "engine/arena.h"
#include "engine/tensor.h"
#include "engine/threadpool.h"

typedef struct engine_graph engine_graph_t;

/* Memory the graph has used, in bytes (peaks over its life). */
typedef struct engine_graph_mem {
    size_t arena_peak;    /* activations and their gradients, per step */
    size_t scratch_peak;  /* im2col/col2im buffers, reused by every conv call */
    size_t tape_nodes_peak;
} engine_graph_mem_t;

engine_graph_t *engine_graph_create(size_t arena_bytes, uint64_t seed);
void engine_graph_free(engine_graph_t *g);
/* Forgets the tape and every tensor made since the last reset; keeps the memory for reuse. */
void engine_graph_reset(engine_graph_t *g);

/* Gradient mode (on at creation). Off, ops record nothing and outputs need no gradient
 * (evaluation, the teacher of a distillation). Returns the previous mode. */
int engine_graph_set_grad(engine_graph_t *g, int enabled);
int engine_graph_grad_enabled(const engine_graph_t *g);

/* A new float32 (or other dtype) tensor in the arena, uninitialised, not on the tape. */
engine_tensor_t *engine_graph_tensor(engine_graph_t *g, engine_dtype_t dtype, int ndim, const int64_t *shape);
/* A leaf tensor viewing caller memory: an input batch (grad NULL) or a parameter (grad points
 * into the gradient blob and backward accumulates there, +=). */
engine_tensor_t *engine_graph_view(engine_graph_t *g, void *data, float *grad, engine_dtype_t dtype, int ndim,
                                   const int64_t *shape);

/* Backpropagates from `root`. seed NULL: root must have one element and its gradient is 1
 * (a loss); otherwise seed holds d(objective)/d(root), numel(root) floats. Parameter gradients
 * accumulate (+=) into their blobs, so N micro-batches accumulate without extra code. */
int engine_graph_backward(engine_graph_t *g, engine_tensor_t *root, const float *seed, err_t *err);

/* The first error an op hit since the last reset (0 if none); copies it into err. */
int engine_graph_error(const engine_graph_t *g, err_t *err);
void engine_graph_mem(const engine_graph_t *g, engine_graph_mem_t *m);

/* Per-op hook for the profiler (engine/profile.h): called with backward 0 when an op that
 * records itself on the tape has just run its forward kernel, and with 1 after each backward
 * kernel. fn NULL turns it off (the default). Ops that do not record (gradients off) are not
 * seen. */
typedef void (*engine_graph_trace_fn)(void *ctx, const engine_tensor_t *t, int backward);
void engine_graph_set_trace(engine_graph_t *g, engine_graph_trace_fn fn, void *ctx);

/* ---- for op implementations (engine/ops*.c) ---- */
int engine_graph_fail(engine_graph_t *g, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
engine_arena_t *engine_graph_arena(engine_graph_t *g);
/* A buffer reused by every call (grows only); valid until the next call. */
void *engine_graph_scratch(engine_graph_t *g, size_t bytes);
rng_t *engine_graph_rng(engine_graph_t *g);
engine_threadpool_t *engine_graph_pool(engine_graph_t *g);
/* Appends t to the tape (the ops module decides when). */
int engine_graph_record(engine_graph_t *g, engine_tensor_t *t);
/* t's gradient, allocated zeroed in the arena on first use; NULL on out of memory. */
float *engine_graph_grad(engine_graph_t *g, engine_tensor_t *t);

#endif

#include "engine/graph.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "engine/ops.h"

struct engine_graph {
    engine_arena_t arena;
    engine_tensor_t **tape;
    size_t ntape, cap, tape_peak;
    int grad_enabled;
    err_t err;
    void *scratch;
    size_t scratch_size;
    rng_t rng;
    engine_threadpool_t *pool;
    engine_graph_trace_fn trace; /* engine/profile.c's per-op hook; NULL (the default) costs one test */
    void *trace_ctx;
};

void engine_graph_set_trace(engine_graph_t *g, engine_graph_trace_fn fn, void *ctx)
{
    g->trace = fn;
    g->trace_ctx = ctx;
}

engine_graph_t *engine_graph_create(size_t arena_bytes, uint64_t seed)
{
    engine_graph_t *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    engine_arena_init(&g->arena, arena_bytes);
    g->grad_enabled = 1;
    rng_seed(&g->rng, seed);
    g->pool = engine_threadpool_default();
    return g;
}

void engine_graph_free(engine_graph_t *g)
{
    if (!g)
        return;
    engine_arena_free(&g->arena);
    free(g->tape);
    free(g->scratch);
    free(g);
}

void engine_graph_reset(engine_graph_t *g)
{
    g->ntape = 0;
    g->err.code = 0;
    g->err.msg[0] = 0;
    engine_arena_reset(&g->arena);
}

int engine_graph_set_grad(engine_graph_t *g, int enabled)
{
    int old = g->grad_enabled;
    g->grad_enabled = enabled != 0;
    return old;
}

int engine_graph_grad_enabled(const engine_graph_t *g) { return g->grad_enabled; }

int engine_graph_fail(engine_graph_t *g, int code, const char *fmt, ...)
{
    if (g->err.code == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(g->err.msg, sizeof g->err.msg, fmt, ap);
        va_end(ap);
        g->err.code = code;
    }
    return code;
}

int engine_graph_error(const engine_graph_t *g, err_t *err)
{
    if (g->err.code && err)
        *err = g->err;
    return g->err.code;
}

static engine_tensor_t *new_node(engine_graph_t *g)
{
    engine_tensor_t *t = engine_arena_alloc(&g->arena, sizeof *t);
    if (!t) {
        engine_graph_fail(g, FN_ENOMEM, "out of memory for a tensor header");
        return NULL;
    }
    memset(t, 0, sizeof *t);
    return t;
}

engine_tensor_t *engine_graph_tensor(engine_graph_t *g, engine_dtype_t dtype, int ndim, const int64_t *shape)
{
    if (ndim < 1 || ndim > ENGINE_MAX_DIMS) {
        engine_graph_fail(g, FN_EINVAL, "a tensor has 1..%d dimensions, not %d", ENGINE_MAX_DIMS, ndim);
        return NULL;
    }
    for (int i = 0; i < ndim; i++)
        if (shape[i] < 1) {
            engine_graph_fail(g, FN_EINVAL, "tensor dimension %d is %lld; every extent must be >= 1", i,
                              (long long)shape[i]);
            return NULL;
        }
    engine_tensor_t *t = new_node(g);
    if (!t)
        return NULL;
    engine_tensor_set_shape(t, dtype, ndim, shape);
    t->data = engine_arena_alloc(&g->arena, engine_tensor_bytes(t));
    if (!t->data) {
        engine_graph_fail(g, FN_ENOMEM, "out of memory for a %zu-byte tensor", engine_tensor_bytes(t));
        return NULL;
    }
    return t;
}

engine_tensor_t *engine_graph_view(engine_graph_t *g, void *data, float *grad, engine_dtype_t dtype, int ndim,
                                   const int64_t *shape)
{
    if (ndim < 1 || ndim > ENGINE_MAX_DIMS) {
        engine_graph_fail(g, FN_EINVAL, "a tensor has 1..%d dimensions, not %d", ENGINE_MAX_DIMS, ndim);
        return NULL;
    }
    engine_tensor_t *t = new_node(g);
    if (!t)
        return NULL;
    engine_tensor_set_shape(t, dtype, ndim, shape);
    t->data = data;
    t->grad = grad;
    t->requires_grad = grad != NULL;
    return t;
}

int engine_graph_record(engine_graph_t *g, engine_tensor_t *t)
{
    if (g->ntape == g->cap) {
        size_t cap = g->cap ? 2 * g->cap : 256;
        engine_tensor_t **nt = realloc(g->tape, cap * sizeof *nt);
        if (!nt)
            return engine_graph_fail(g, FN_ENOMEM, "out of memory for the tape (%zu nodes)", cap);
        g->tape = nt;
        g->cap = cap;
    }
    g->tape[g->ntape++] = t;
    if (g->ntape > g->tape_peak)
        g->tape_peak = g->ntape;
    if (g->trace) /* ops record right after their forward kernel: this marks its end */
        g->trace(g->trace_ctx, t, 0);
    return 0;
}

float *engine_graph_grad(engine_graph_t *g, engine_tensor_t *t)
{
    if (!t->grad) {
        t->grad = engine_arena_calloc(&g->arena, (size_t)engine_tensor_numel(t) * sizeof(float));
        if (!t->grad)
            engine_graph_fail(g, FN_ENOMEM, "out of memory for a gradient");
    }
    return t->grad;
}

int engine_graph_backward(engine_graph_t *g, engine_tensor_t *root, const float *seed, err_t *err)
{
    if (g->err.code)
        return engine_graph_error(g, err);
    if (!root)
        return err_set(err, FN_EINVAL, "engine_graph_backward: root is NULL");
    if (!root->requires_grad)
        return err_set(err, FN_EINVAL, "engine_graph_backward: the root does not depend on any parameter "
                                       "(or was computed with gradients off)");
    int64_t n = engine_tensor_numel(root);
    if (!seed && n != 1)
        return err_set(err, FN_EINVAL, "engine_graph_backward: the root has %lld elements; pass a seed gradient "
                                       "or reduce it to a scalar loss", (long long)n);
    float *gr = engine_graph_grad(g, root);
    if (!gr)
        return engine_graph_error(g, err);
    for (int64_t i = 0; i < n; i++)
        gr[i] += seed ? seed[i] : 1.0f;
    const engine_backend_t *be = engine_backend_cpu();
    /* Only nodes up to the root matter; later ones (metrics, other heads) have no gradient yet. */
    size_t end = g->ntape;
    for (size_t i = 0; i < g->ntape; i++)
        if (g->tape[i] == root) {
            end = i + 1;
            break;
        }
    for (size_t i = end; i-- > 0;) {
        engine_tensor_t *t = g->tape[i];
        if (!t->grad)
            continue; /* nothing downstream needed it */
        if (engine_profile_enabled()) {
            struct timespec a, b;
            clock_gettime(CLOCK_MONOTONIC, &a);
            be->backward[t->op](g, t);
            clock_gettime(CLOCK_MONOTONIC, &b);
            engine_profile_add((engine_op_t)t->op, 1, (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec));
        } else {
            be->backward[t->op](g, t);
        }
        if (g->trace)
            g->trace(g->trace_ctx, t, 1);
        if (g->err.code)
            return engine_graph_error(g, err);
    }
    return 0;
}

engine_arena_t *engine_graph_arena(engine_graph_t *g) { return &g->arena; }
rng_t *engine_graph_rng(engine_graph_t *g) { return &g->rng; }
engine_threadpool_t *engine_graph_pool(engine_graph_t *g) { return g->pool; }

void *engine_graph_scratch(engine_graph_t *g, size_t bytes)
{
    if (bytes > g->scratch_size) {
        free(g->scratch);
        g->scratch = aligned_alloc(64, (bytes + 63) / 64 * 64);
        g->scratch_size = g->scratch ? bytes : 0;
        if (!g->scratch)
            engine_graph_fail(g, FN_ENOMEM, "out of memory for %zu bytes of convolution scratch", bytes);
    }
    return g->scratch;
}

void engine_graph_mem(const engine_graph_t *g, engine_graph_mem_t *m)
{
    m->arena_peak = g->arena.peak;
    m->scratch_peak = g->scratch_size;
    m->tape_nodes_peak = g->tape_peak;
}

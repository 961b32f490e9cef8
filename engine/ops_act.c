/* CPU kernels: elementwise activations and dropout (parallel over elements when large). */
#include <math.h>

#include "engine/ops_cpu.h"

typedef struct {
    engine_tensor_t *t;
    float *dx;
    int kind;
    int fresh; /* dx not written yet: store instead of add */
} act_job_t;

enum { K_RELU, K_GELU, K_SIGMOID, K_TANH };

static void act_fwd_range(void *ctx, int64_t b, int64_t e)
{
    act_job_t *j = ctx;
    const float *x = j->t->src[0]->data;
    float *y = j->t->data;
    switch (j->kind) {
    case K_RELU:
        for (int64_t i = b; i < e; i++)
            y[i] = x[i] > 0.0f ? x[i] : 0.0f;
        break;
    case K_GELU:
        for (int64_t i = b; i < e; i++)
            y[i] = 0.5f * x[i] * (1.0f + erff(x[i] * (float)M_SQRT1_2));
        break;
    case K_SIGMOID:
        for (int64_t i = b; i < e; i++)
            y[i] = 1.0f / (1.0f + expf(-x[i]));
        break;
    case K_TANH:
        for (int64_t i = b; i < e; i++)
            y[i] = tanhf(x[i]);
        break;
    }
}

static void act_bwd_range(void *ctx, int64_t b, int64_t e)
{
    act_job_t *j = ctx;
    const float *x = j->t->src[0]->data, *y = j->t->data, *dy = j->t->grad;
    float *dx = j->dx;
    /* A first gradient is stored: adding to a zeroed buffer would cost a pass and a read more. */
    const int fresh = j->fresh;
#define ACC(i, v) (dx[i] = (fresh ? 0.0f : dx[i]) + (v))
    switch (j->kind) {
    case K_RELU:
        for (int64_t i = b; i < e; i++)
            ACC(i, x[i] > 0.0f ? dy[i] : 0.0f);
        break;
    case K_GELU:
        for (int64_t i = b; i < e; i++) {
            float cdf = 0.5f * (1.0f + erff(x[i] * (float)M_SQRT1_2));
            float pdf = expf(-0.5f * x[i] * x[i]) * 0.3989422804014327f;
            ACC(i, dy[i] * (cdf + x[i] * pdf));
        }
        break;
    case K_SIGMOID:
        for (int64_t i = b; i < e; i++)
            ACC(i, dy[i] * y[i] * (1.0f - y[i]));
        break;
    case K_TANH:
        for (int64_t i = b; i < e; i++)
            ACC(i, dy[i] * (1.0f - y[i] * y[i]));
        break;
    }
#undef ACC
}

static void act_fwd(engine_graph_t *g, engine_tensor_t *t, int kind)
{
    act_job_t j = {t, NULL, kind, 0};
    engine_parallel_for(engine_graph_pool(g), engine_tensor_numel(t), CPU_PAR_GRAIN, act_fwd_range, &j);
}

static void act_bwd(engine_graph_t *g, engine_tensor_t *t, int kind)
{
    act_job_t j = {t, NULL, kind, 0};
    j.dx = cpu_src_grad_out(g, t, 0, &j.fresh);
    if (j.dx)
        engine_parallel_for(engine_graph_pool(g), engine_tensor_numel(t), CPU_PAR_GRAIN, act_bwd_range, &j);
}

void cpu_relu_fwd(engine_graph_t *g, engine_tensor_t *t) { act_fwd(g, t, K_RELU); }
void cpu_relu_bwd(engine_graph_t *g, engine_tensor_t *t) { act_bwd(g, t, K_RELU); }
void cpu_gelu_fwd(engine_graph_t *g, engine_tensor_t *t) { act_fwd(g, t, K_GELU); }
void cpu_gelu_bwd(engine_graph_t *g, engine_tensor_t *t) { act_bwd(g, t, K_GELU); }
void cpu_sigmoid_fwd(engine_graph_t *g, engine_tensor_t *t) { act_fwd(g, t, K_SIGMOID); }
void cpu_sigmoid_bwd(engine_graph_t *g, engine_tensor_t *t) { act_bwd(g, t, K_SIGMOID); }
void cpu_tanh_fwd(engine_graph_t *g, engine_tensor_t *t) { act_fwd(g, t, K_TANH); }
void cpu_tanh_bwd(engine_graph_t *g, engine_tensor_t *t) { act_bwd(g, t, K_TANH); }

/* The mask is drawn serially from the graph's RNG, so a run is reproducible for any thread count. */
void cpu_dropout_fwd(engine_graph_t *g, engine_tensor_t *t)
{
    const int64_t n = engine_tensor_numel(t);
    const float *x = t->src[0]->data;
    float *y = t->data, p = t->fp[0];
    if (!t->ip[0] || p <= 0.0f) {
        for (int64_t i = 0; i < n; i++)
            y[i] = x[i];
        t->saved = NULL;
        return;
    }
    uint8_t *mask = engine_arena_alloc(engine_graph_arena(g), (size_t)n);
    if (!mask) {
        engine_graph_fail(g, FN_ENOMEM, "dropout: out of memory");
        return;
    }
    t->saved = mask;
    rng_t *r = engine_graph_rng(g);
    const float scale = 1.0f / (1.0f - p);
    for (int64_t i = 0; i < n; i++) {
        mask[i] = rng_uniform(r) >= p;
        y[i] = mask[i] ? x[i] * scale : 0.0f;
    }
}

void cpu_dropout_bwd(engine_graph_t *g, engine_tensor_t *t)
{
    float *dx = cpu_src_grad(g, t, 0);
    if (!dx)
        return;
    const int64_t n = engine_tensor_numel(t);
    const uint8_t *mask = t->saved;
    const float scale = mask ? 1.0f / (1.0f - t->fp[0]) : 1.0f;
    for (int64_t i = 0; i < n; i++)
        if (!mask || mask[i])
            dx[i] += t->grad[i] * scale;
}

/* CPU kernels: reshape (a view), add, mul, concat and slice. */
#include <string.h>

#include "engine/ops_cpu.h"

void cpu_reshape_fwd(engine_graph_t *g, engine_tensor_t *t) { (void)g, (void)t; /* shares src's data */ }

void cpu_reshape_bwd(engine_graph_t *g, engine_tensor_t *t)
{
    int fresh;
    float *dx = cpu_src_grad_out(g, t, 0, &fresh);
    if (!dx)
        return;
    const int64_t n = engine_tensor_numel(t);
    if (fresh)
        memcpy(dx, t->grad, (size_t)n * sizeof *dx);
    else
        for (int64_t i = 0; i < n; i++)
            dx[i] += t->grad[i];
}

void cpu_add_fwd(engine_graph_t *g, engine_tensor_t *t)
{
    (void)g;
    const int64_t n = engine_tensor_numel(t);
    const float *a = t->src[0]->data, *b = t->src[1]->data;
    float *y = t->data;
    for (int64_t i = 0; i < n; i++)
        y[i] = a[i] + b[i];
}

void cpu_add_bwd(engine_graph_t *g, engine_tensor_t *t)
{
    const int64_t n = engine_tensor_numel(t);
    for (int s = 0; s < 2; s++) {
        float *d = cpu_src_grad(g, t, s);
        if (d)
            for (int64_t i = 0; i < n; i++)
                d[i] += t->grad[i];
    }
}

void cpu_mul_fwd(engine_graph_t *g, engine_tensor_t *t)
{
    (void)g;
    const int64_t n = engine_tensor_numel(t);
    const float *a = t->src[0]->data, *b = t->src[1]->data;
    float *y = t->data;
    for (int64_t i = 0; i < n; i++)
        y[i] = a[i] * b[i];
}

void cpu_mul_bwd(engine_graph_t *g, engine_tensor_t *t)
{
    const int64_t n = engine_tensor_numel(t);
    const float *a = t->src[0]->data, *b = t->src[1]->data;
    float *da = cpu_src_grad(g, t, 0), *db = cpu_src_grad(g, t, 1);
    if (da)
        for (int64_t i = 0; i < n; i++)
            da[i] += t->grad[i] * b[i];
    if (db)
        for (int64_t i = 0; i < n; i++)
            db[i] += t->grad[i] * a[i];
}

/* Extents before the axis (outer) and from it on, per unit of the axis (inner). */
static void split_axis(const engine_tensor_t *t, int axis, int64_t *outer, int64_t *inner)
{
    *outer = 1;
    *inner = 1;
    for (int i = 0; i < axis; i++)
        *outer *= t->ne[i];
    for (int i = axis + 1; i < t->ndim; i++)
        *inner *= t->ne[i];
}

/* Concat keeps its inputs in t->saved (an array of ip[0] tensors); ip[1] is the axis. */
void cpu_concat_fwd(engine_graph_t *g, engine_tensor_t *t)
{
    (void)g;
    engine_tensor_t **xs = t->saved;
    const int n = t->ip[0], axis = t->ip[1];
    int64_t outer, inner;
    split_axis(t, axis, &outer, &inner);
    const int64_t row = t->ne[axis] * inner;
    int64_t off = 0;
    for (int k = 0; k < n; k++) {
        const int64_t len = xs[k]->ne[axis] * inner;
        for (int64_t o = 0; o < outer; o++)
            memcpy((float *)t->data + o * row + off, (const float *)xs[k]->data + o * len, (size_t)len * sizeof(float));
        off += len;
    }
}

void cpu_concat_bwd(engine_graph_t *g, engine_tensor_t *t)
{
    engine_tensor_t **xs = t->saved;
    const int n = t->ip[0], axis = t->ip[1];
    int64_t outer, inner;
    split_axis(t, axis, &outer, &inner);
    const int64_t row = t->ne[axis] * inner;
    int64_t off = 0;
    for (int k = 0; k < n; k++) {
        const int64_t len = xs[k]->ne[axis] * inner;
        float *d = xs[k]->requires_grad ? engine_graph_grad(g, xs[k]) : NULL;
        if (d)
            for (int64_t o = 0; o < outer; o++)
                for (int64_t i = 0; i < len; i++)
                    d[o * len + i] += t->grad[o * row + off + i];
        off += len;
    }
}

/* ip[0] axis, ip[1] start. */
void cpu_slice_fwd(engine_graph_t *g, engine_tensor_t *t)
{
    (void)g;
    const engine_tensor_t *x = t->src[0];
    const int axis = t->ip[0];
    int64_t outer, inner;
    split_axis(x, axis, &outer, &inner);
    const int64_t xrow = x->ne[axis] * inner, len = t->ne[axis] * inner, off = t->ip[1] * inner;
    for (int64_t o = 0; o < outer; o++)
        memcpy((float *)t->data + o * len, (const float *)x->data + o * xrow + off, (size_t)len * sizeof(float));
}

void cpu_slice_bwd(engine_graph_t *g, engine_tensor_t *t)
{
    float *dx = cpu_src_grad(g, t, 0);
    if (!dx)
        return;
    const engine_tensor_t *x = t->src[0];
    const int axis = t->ip[0];
    int64_t outer, inner;
    split_axis(x, axis, &outer, &inner);
    const int64_t xrow = x->ne[axis] * inner, len = t->ne[axis] * inner, off = t->ip[1] * inner;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < len; i++)
            dx[o * xrow + off + i] += t->grad[o * len + i];
}

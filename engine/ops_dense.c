/* CPU kernels: linear (OpenBLAS sgemm). */
#include <cblas.h>
#include <string.h>

#include "engine/ops_cpu.h"

void cpu_linear_fwd(engine_graph_t *g, engine_tensor_t *t)
{
    (void)g;
    const engine_tensor_t *x = t->src[0], *W = t->src[1], *b = t->src[2];
    const int OUT = (int)W->ne[0], IN = (int)W->ne[1];
    const int M = (int)(engine_tensor_numel(x) / IN);
    float *y = t->data;
    if (b)
        for (int r = 0; r < M; r++)
            memcpy(y + (size_t)r * OUT, b->data, (size_t)OUT * sizeof *y);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, OUT, IN, 1.0f, x->data, IN, W->data, IN, b ? 1.0f : 0.0f,
                y, OUT);
}

void cpu_linear_bwd(engine_graph_t *g, engine_tensor_t *t)
{
    const engine_tensor_t *x = t->src[0], *W = t->src[1];
    const int OUT = (int)W->ne[0], IN = (int)W->ne[1];
    const int M = (int)(engine_tensor_numel(x) / IN);
    const float *dy = t->grad;
    float *dx = cpu_src_grad(g, t, 0), *dW = cpu_src_grad(g, t, 1), *db = cpu_src_grad(g, t, 2);
    if (dW)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, OUT, IN, M, 1.0f, dy, OUT, x->data, IN, 1.0f, dW, IN);
    if (db)
        for (int r = 0; r < M; r++)
            for (int o = 0; o < OUT; o++)
                db[o] += dy[(size_t)r * OUT + o];
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, IN, OUT, 1.0f, dy, OUT, W->data, IN, 1.0f, dx, IN);
}

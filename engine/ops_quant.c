/* CPU kernels: fake quantization (quantization-aware training). The forward rounds x to the int8
 * runtime's activation grid, x -> (clamp(rint(x / s) + zp, 0, 255) - zp) * s, the values the
 * int8 kernels will see; the backward is the straight-through estimator, the gradient passed
 * unchanged where x fell inside the grid's range and zero where it was clamped (Jacob et al.
 * 2018; PyTorch's fake_quantize_per_tensor_affine). fp: scale, zero point. */
#include <math.h>

#include "engine/ops_cpu.h"

void cpu_fakequant_fwd(engine_graph_t *g, engine_tensor_t *t)
{
    (void)g;
    const int64_t n = engine_tensor_numel(t);
    const float *x = t->src[0]->data;
    float *y = t->data;
    const float s = t->fp[0], zp = t->fp[1];
    for (int64_t i = 0; i < n; i++) {
        float q = rintf(x[i] / s) + zp;
        q = q < 0.0f ? 0.0f : q > 255.0f ? 255.0f : q;
        y[i] = (q - zp) * s;
    }
}

void cpu_fakequant_bwd(engine_graph_t *g, engine_tensor_t *t)
{
    float *dx = cpu_src_grad(g, t, 0);
    if (!dx)
        return;
    const int64_t n = engine_tensor_numel(t);
    const float *x = t->src[0]->data, *dy = t->grad;
    const float s = t->fp[0], zp = t->fp[1];
    for (int64_t i = 0; i < n; i++) {
        float q = rintf(x[i] / s) + zp;
        if (q >= 0.0f && q <= 255.0f)
            dx[i] += dy[i];
    }
}

/* ops_cpu: internal to the engine. The CPU kernels, one pair (forward, backward) per op,
 * defined in ops_<family>.c and gathered into the CPU backend's table in ops.c. */
#ifndef FEDNAS_ENGINE_OPS_CPU_H
#define FEDNAS_ENGINE_OPS_CPU_H

#include "engine/ops.h"

#define CPU_KERNELS(name) \
    void cpu_##name##_fwd(engine_graph_t *g, engine_tensor_t *t); \
    void cpu_##name##_bwd(engine_graph_t *g, engine_tensor_t *t);

CPU_KERNELS(linear)
CPU_KERNELS(conv2d)
CPU_KERNELS(maxpool2d)
CPU_KERNELS(avgpool2d)
CPU_KERNELS(global_avgpool)
CPU_KERNELS(batchnorm)
CPU_KERNELS(layernorm)
CPU_KERNELS(relu)
CPU_KERNELS(gelu)
CPU_KERNELS(sigmoid)
CPU_KERNELS(tanh)
CPU_KERNELS(dropout)
CPU_KERNELS(reshape)
CPU_KERNELS(add)
CPU_KERNELS(mul)
CPU_KERNELS(concat)
CPU_KERNELS(slice)
CPU_KERNELS(softmax_xent)
CPU_KERNELS(sigmoid_bce)
CPU_KERNELS(mse)
CPU_KERNELS(kl_div)
CPU_KERNELS(softmax_xent_soft)

/* Gradient of src i of t when it needs one (allocated on first use), else NULL. */
static inline float *cpu_src_grad(engine_graph_t *g, engine_tensor_t *t, int i)
{
    engine_tensor_t *s = t->src[i];
    return s && s->requires_grad ? engine_graph_grad(g, s) : NULL;
}

/* Elementwise loops go parallel above this many elements. */
#define CPU_PAR_GRAIN 16384

#endif
